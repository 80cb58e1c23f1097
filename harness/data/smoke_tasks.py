"""The smoke tier's tasks, by name (``tiers.<tier>.data.task``): what a smoke job needs from its task.

* ``addition`` -- two-digit addition answered in 2-3 tokens (:mod:`harness.data.smoke`; fast; the first smoke task);
* ``reasoning`` -- chains of additions with a think phase and a ``\\boxed{}`` answer (:mod:`harness.data.reasoning`);
* ``reasoning_calc`` -- the same with a calculator tool the model may call (environment tokens masked from the loss);
* ``instruct`` -- instructions with 2-4 checkable constraints (:mod:`harness.data.instruct`; Light-IF);
* ``spec_dialogue`` -- one clarifying question about a hidden specification (:mod:`harness.data.spec_dialogue`; Nous).

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


def _reasoning(tool: bool) -> SmokeTask:
    from harness.data import reasoning as R

    def splits(d):
        if d.n_train is None:
            raise ConfigError("data.n_train is required for the reasoning tasks (training problems)")
        train, val = R.split(d.n_val or 512, d.n_train, d.split_seed)
        return R.rows(train), R.rows(val)

    def pretrain_batch(rng: random.Random, train_rows, pre, bs: int):
        out = []
        for _ in range(bs):  # fresh problems (held-out prompts excluded), so pre-training does not memorise them
            p = R.sample_problem(rng)
            while p.prompt in _heldout_prompts:
                p = R.sample_problem(rng)
            pieces, _ = R.trace(p, rng, noise=pre.noise, check_rate=pre.check_rate,
                                tool_rate=pre.tool_rate if tool else 0.0)
            out.append((p.prompt, pieces))
        return out

    _heldout_prompts: set[str] = set()

    def splits_and_remember(d):
        train, val = splits(d)
        _heldout_prompts.clear()
        _heldout_prompts.update(r["prompt"] for r in val)
        return train, val

    return SmokeTask("reasoning_calc" if tool else "reasoning", tuple(R.VOCAB), 160, R.build_tokenizer,
                     splits_and_remember, pretrain_batch, R.boxed_reward, R.is_correct, R.answer_of,
                     phases=R.phases, environment=R.CalcEnvironment if tool else None,
                     planning_words=R.PLANNING_WORDS)


SMOKE_TASKS = {"addition": lambda: _addition(), "reasoning": lambda: _reasoning(False),
               "reasoning_calc": lambda: _reasoning(True),
               "spec_dialogue": lambda: _import("spec_dialogue").smoke_task(),
               "instruct": lambda: _import("instruct").smoke_task()}


def _import(module: str):
    import importlib

    return importlib.import_module(f"harness.data.{module}")


def smoke_task(name: str) -> SmokeTask:
    if name not in SMOKE_TASKS:
        raise ConfigError(f"unknown smoke task {name!r}; valid: {', '.join(SMOKE_TASKS)}")
    return SMOKE_TASKS[name]()
