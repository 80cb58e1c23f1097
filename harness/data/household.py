"""The smoke agent task ``household``: multi-turn episodes of the smoke household game (:mod:`harness.envs.household`)
for a tiny word-level model trained from scratch in the DAG (issue 14).

It stands in for ALFWorld at smoke tier only: same action grammar, task types and goal conditions, one small room.

* **Rows.** A row's prompt is a game id (``household-train-<i>``, ``household-valid-<i>``); the rollout
  (:func:`harness.train.episodes.make_rollout_func`) plays the game, one completion per episode with the
  environment's replies masked (``env_mask`` 0). Training games: ``data.n_train`` of the ``train`` split; held out:
  ``data.n_val`` of the ``valid`` split (different generator seeds; a valid game may still coincide with a train
  game, as ALFWorld's seen/unseen games share room layouts: the task report counts how many do).
* **Prompt shape.** :data:`harness.envs.agent.OBSERVATION`: the observation only, no admissible-action list (a list
  would triple the episode's length); the model writes ``<action> go to desk 1 </action>`` and must take object
  and receptacle names from what it has read. No ``<think>`` tags (nothing to think about at this size).
* **Tokenizer.** Word level over the game's closed vocabulary (:func:`harness.envs.household.vocabulary`): every
  word is one token, with and without a leading space (so a sentence is about one token per word), plus the tags
  and single characters.
* **Pre-training.** Scripted expert episodes: at each turn the expert's next action (a shortest plan from the
  current state, :func:`~harness.envs.household.expert_plan`) or, with probability ``pretrain.noise``, a random
  admissible action other than the expert's; the episode goes on from wherever that led (the expert replans), so
  the base model has seen recoveries, and sometimes wastes steps: room for RL. The loss is on the model's turns
  only (the environment's replies are labelled like the rollout's ``env_mask``).
* **Reward.** verl-agent's episode reward (:func:`harness.envs.agent.episode_reward`): ``10 * won - 0.1 *``
  untagged turns.
"""
from __future__ import annotations

import random
from functools import lru_cache

from harness.config import ConfigError
from harness.envs.agent import OBSERVATION, TAGS, EpisodeSpec, action_text, agent_reward
from harness.envs.household import HouseholdEnv, expert_plan, vocabulary

#: game knobs (harness.envs.household.generate): three receptacles, one distractor, no spare target; plans take
#: 3-10 actions (mean ~6: bench_household_env.py)
GAME = dict(n_receptacles=3, n_distractors=1, max_extra_targets=0)
MAX_TURNS = 12                 # model turns per episode; also the game's step budget (ALFWorld: 50)
MAX_NEW_TOKENS_PER_TURN = 12   # the longest action turn is 9 tokens ("<action> take apple 1 from countertop 1 </action>")
MAX_EPISODE_TOKENS = 384       # prompt + completion; the tiny model's context (every 12-turn episode fits: a test)
INVALID_PENALTY = 0.1          # per untagged turn (verl-agent's invalid-action penalty coefficient when enabled)
SPLITS = ("train", "valid")    # training games, held-out games
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def _env(split: str, n_games: int) -> HouseholdEnv:
    return HouseholdEnv(split, n_games, max_steps=MAX_TURNS, **GAME)


def env_for(split: str, game_ids: list[str]) -> HouseholdEnv:
    """The task's environment for ``split``, knowing every id up to the largest of ``game_ids``."""
    return _env(split, 1 + max(int(g.rsplit("-", 1)[1]) for g in game_ids))


EPISODES = EpisodeSpec(env=env_for, template="observation", max_turns=MAX_TURNS,
                       max_new_tokens_per_turn=MAX_NEW_TOKENS_PER_TURN, max_episode_tokens=MAX_EPISODE_TOKENS,
                       invalid_penalty=INVALID_PENALTY, train_split=SPLITS[0], heldout_split=SPLITS[1])


@lru_cache(maxsize=1)
def _tokens() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(vocabulary in id order, multi-character words) of the word-level tokenizer."""
    base = vocabulary()
    text = OBSERVATION.first + OBSERVATION.turn + action_text("x")
    chars = sorted({t for t in base if len(t) == 1} | {c for c in text if c not in "{}"} | set("0123456789 "))
    alpha = [t for t in base if t[0].isalpha()] + [*"0123456789"]
    words = sorted({t for t in base if len(t) > 1} | {" " + t for t in alpha} | set(TAGS) | {" " + t for t in TAGS})
    vocab = tuple(dict.fromkeys([*SPECIALS, *chars, *words]))
    return vocab, tuple(w for w in words if len(w) > 1)


def build_tokenizer():
    from harness.data.wordlevel import word_level_tokenizer

    vocab, words = _tokens()
    return word_level_tokenizer(list(vocab), list(words))


def _content(game) -> tuple:
    """A game without its id: two ids with the same content are the same game."""
    return (game.task_type, game.task, game.room, game.receptacles, game.objects, game.start)


def splits(d) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): the first ``n_val`` games of ``valid`` (default 60: ten per task type), and
    the first ``n_train`` games of ``train`` whose content is none of the held-out games' (the small room makes
    coincidences possible: 2 of the first 2,002 training ids repeat one of the 60 held-out games). A row's
    ``prompt`` is the game id; ``answer`` is empty (no label: the game decides)."""
    if d.n_train is None:
        raise ConfigError("data.n_train is required for the household task (the number of training games)")
    n_val = d.n_val or 60
    val_env = _env(SPLITS[1], n_val)
    held = {_content(val_env.game(g)) for g in val_env.game_ids()}
    train: list[dict] = []
    i = 0
    while len(train) < d.n_train:
        block = _env(SPLITS[0], i + 2 * d.n_train)
        for gid in block.game_ids()[i:]:
            if len(train) < d.n_train and _content(block.game(gid)) not in held:
                train.append({"prompt": gid, "answer": ""})
        i += 2 * d.n_train
    return train, [{"prompt": g, "answer": ""} for g in val_env.game_ids()]


def expert_episode(env: HouseholdEnv, game_id: str, rng: random.Random, noise: float
                   ) -> tuple[str, list[tuple[str, bool]], bool]:
    """(first prompt, [(text, written by the environment)], won) of one scripted episode on ``game_id``: the expert's
    next action, or with probability ``noise`` a random other admissible action, for at most :data:`MAX_TURNS`
    turns; the pieces are exactly what a rollout's completion holds (model turn, reply, ...; no reply after the
    last turn)."""
    tmpl = OBSERVATION
    step = env.reset(game_id)
    game = env.game(game_id)
    prompt, pieces = tmpl.render(step, env.task, first=True), []
    plan = expert_plan(game)
    for turn in range(MAX_TURNS):
        action = plan.pop(0)
        if rng.random() < noise:
            others = [a for a in step.admissible if a != action]
            if others:
                action = rng.choice(others)
                plan = None  # replan from wherever it leads
        pieces.append((action_text(action), False))
        step = env.step(action)
        if step.done or turn == MAX_TURNS - 1:
            break
        pieces.append((tmpl.render(step, env.task, first=False), True))
        if plan is None:
            plan = expert_plan(game, env.state)
    return prompt, pieces, step.won


def pretrain_batch(rng: random.Random, train_rows, pre, bs: int):
    env = env_for(SPLITS[0], [r["prompt"] for r in train_rows])
    out = []
    for _ in range(bs):
        prompt, pieces, _won = expert_episode(env, train_rows[rng.randrange(len(train_rows))]["prompt"], rng,
                                              pre.noise)
        out.append((prompt, pieces))
    return out


def _no_scorer(completion: str, answer: str) -> bool:
    raise TypeError("the household task is scored by playing episodes (harness.evaluate.episodes), not by "
                    "matching a completion against an answer")


def smoke_task():
    from harness.data.smoke_tasks import SmokeTask

    vocab, _ = _tokens()
    return SmokeTask("household", vocab, MAX_EPISODE_TOKENS, build_tokenizer, splits, pretrain_batch, agent_reward,
                     _no_scorer, lambda c: None, scorer="episode_won", episodes=EPISODES)

