"""The smoke tier's tasks, by name (``tiers.<tier>.data.task``): what a smoke job needs from its task.

* ``addition`` -- two-digit addition answered in 2-3 tokens (:mod:`harness.data.smoke`; fast; the first smoke task);
* ``reasoning`` -- chains of additions with a think phase and a ``\\boxed{}`` answer (:mod:`harness.data.reasoning`);
* ``reasoning_calc`` -- the same with a calculator tool the model may call (environment tokens masked from the loss);
* ``instruct`` -- instructions with 2-4 checkable constraints (:mod:`harness.data.instruct`; Light-IF);
* ``spec_dialogue`` -- one clarifying question about a hidden specification (:mod:`harness.data.spec_dialogue`; Nous);
* ``household`` -- multi-turn episodes of the smoke household game (:mod:`harness.data.household`; agent papers).

A task gives the tokenizer, the model's context size, the train/held-out rows, pre-training examples, the reward
function and scorer, per-token phases, and (tool tasks) the environment. Unknown names are a ConfigError naming the
valid ones.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from harness.config import ConfigError


@dataclass(frozen=True)
class SmokeTask:
    name: str
    vocab: tuple[str, ...]
    max_positions: int                       # the tiny model's context (prompt + completion)
    build_tokenizer: Callable
    splits: Callable                         # (DataSpec) -> (train rows, held-out rows)
    pretrain_batch: Callable                 # (rng, train rows, PretrainSpec, batch size) -> [(prompt, [(text, env)])]
    reward: Callable                         # TRL reward function (completions, answer, **kw) -> [float]
    score: Callable[[str, str], bool]        # (completion, answer) -> correct?
    vote_key: Callable[[str], str | None]    # the answer a completion commits to (maj@k votes)
    phases: Callable | None = None           # (tokenizer, completion ids) -> phase per token
    environment: Callable | None = None      # (tokenizer, prompt length) -> a LogitsProcessor environment
    planning_words: tuple[str, ...] = ()
    scorer: str | None = None                # the held-out scorer's name in the protocol (None: boxed/exact match)
    episodes: object | None = None           # multi-turn tasks: a harness.envs.agent.EpisodeSpec (rows are game
                                             # ids; rollouts and the held-out evaluation play episodes)


def _addition() -> SmokeTask:
    from harness.data import smoke

    def splits(d):
        train, val = smoke.split_pairs(d.n_val, d.split_seed)
        return smoke.rows(train), smoke.rows(val)

    def pretrain_batch(rng: random.Random, train_rows, pre, bs: int):
        # the original loop's order of random draws: the whole batch of pairs first, then noise per example
        batch = [train_rows[rng.randrange(len(train_rows))] for _ in range(bs)]
        out = []
        for row in batch:
            a, b = (int(x) for x in row["prompt"][:-1].split("+"))
            tgt = a + b if rng.random() >= pre.noise else smoke.corrupt(a + b, rng)
            out.append((row["prompt"], [(str(tgt), False)]))
        return out

    return SmokeTask("addition", tuple(smoke.VOCAB), 32, smoke.build_tokenizer, splits, pretrain_batch,
                     smoke.exact_match_reward, lambda c, a: c.strip() == a, lambda c: c.strip())


def generated_splits(task: str, split: Callable, draw: Callable, prompt_of: Callable, target: Callable,
                     ) -> tuple[Callable, Callable]:
    """(splits, pretrain_batch) of a task whose examples are generated: ``split(n_val, n_train, seed)`` gives the
    (train, held-out) rows, and pre-training draws fresh examples (``draw(rng)``), redrawing any whose prompt
    (``prompt_of``) is held out, so pre-training never memorises the held-out set; ``target(item, rng, pre)`` is the
    example's list of ``(text, written by the environment)`` pieces. The held-out prompts are those of the last
    ``splits`` call (a job calls it before pre-training)."""
    heldout: set[str] = set()

    def splits(d):
        if d.n_train is None:
            raise ConfigError(f"data.n_train is required for the {task} task (the number of training prompts)")
        train, val = split(d.n_val or 512, d.n_train, d.split_seed)
        heldout.clear()
        heldout.update(r["prompt"] for r in val)
        return train, val

    def pretrain_batch(rng: random.Random, train_rows, pre, bs: int):
        out = []
        for _ in range(bs):
            item = draw(rng)
            while prompt_of(item) in heldout:
                item = draw(rng)
            out.append((prompt_of(item), target(item, rng, pre)))
        return out

    return splits, pretrain_batch


def _reasoning(tool: bool) -> SmokeTask:
    from harness.data import reasoning as R

    def split(n_val, n_train, seed):
        train, val = R.split(n_val, n_train, seed)
        return R.rows(train), R.rows(val)

    def target(p, rng, pre):
        return R.trace(p, rng, noise=pre.noise, check_rate=pre.check_rate, tool_rate=pre.tool_rate if tool else 0.0)[0]

    name = "reasoning_calc" if tool else "reasoning"
    splits, pretrain_batch = generated_splits(name, split, R.sample_problem, lambda p: p.prompt, target)
    return SmokeTask(name, tuple(R.VOCAB), 160, R.build_tokenizer, splits, pretrain_batch, R.boxed_reward,
                     R.is_correct, R.answer_of, phases=R.phases, environment=R.CalcEnvironment if tool else None,
                     planning_words=R.PLANNING_WORDS)


SMOKE_TASKS = {"addition": lambda: _addition(), "reasoning": lambda: _reasoning(False),
               "reasoning_calc": lambda: _reasoning(True),
               "spec_dialogue": lambda: _import("spec_dialogue").smoke_task(),
               "instruct": lambda: _import("instruct").smoke_task(),
               "household": lambda: _import("household").smoke_task()}


def _import(module: str):
    import importlib

    return importlib.import_module(f"harness.data.{module}")


def smoke_task(name: str) -> SmokeTask:
    if name not in SMOKE_TASKS:
        raise ConfigError(f"unknown smoke task {name!r}; valid: {', '.join(SMOKE_TASKS)}")
    return SMOKE_TASKS[name]()
