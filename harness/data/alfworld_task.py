"""The real-model agent task ``alfworld`` (``data.task: alfworld``): GRPO on ALFWorld's text games, one completion
per episode (:mod:`harness.train.episodes`), for the paper tiers of the agent cards (SPEAR, EPO, EMPG train
Qwen2.5-Instruct models on ALFWorld with verl-agent).

* **Rows.** A row's prompt is an ALFWorld game id (``<task folder>/<trial>``) and its answer is empty: the game
  decides. Training games: the first ``data.n_train`` (null: all) of split ``data.train`` in its manifest's order;
  held out: the first ``data.n_val`` (null: all) of split ``data.val``. A split's games come from its committed
  manifest (``harness/envs/manifests/alfworld_<split>.json``: ids and sha256 of every file): only ``valid_unseen``'s
  is committed (the data at hand); with ALFWorld's data downloaded (``alfworld-download``, the current format),
  ``python -m harness.envs.alfworld --split train --data-dir D`` writes the others, checked against the official
  counts. A missing or altered game file fails before any episode, naming it.
* **Episodes.** :class:`harness.envs.alfworld.ALFWorldEnv` over the games in use, the budgets and prompt shape of the
  job's ``data`` block (:class:`harness.config.tiers.DataSpec`: template, max_turns, max_new_tokens_per_turn,
  max_episode_tokens, invalid_penalty; defaults verl-agent's), the data directory of the run (``harness train
  --data-dir``).
* **Reward.** verl-agent's episode reward (:func:`harness.envs.agent.agent_reward`): ``10 * won - invalid_penalty *``
  untagged turns. **Scoring**: by playing episodes (the held-out evaluation reports success per task type, the split
  named), never by matching a completion against an answer.
"""
from __future__ import annotations

import functools
import os

from harness.config import ConfigError
from harness.envs.agent import EpisodeSpec, agent_reward, check_turn_settings  # noqa: F401 (the task's reward)


def check(d, where: str = "data") -> None:
    """The data block of an alfworld job: ALFWorld splits and a known template (ConfigError naming the field)."""
    try:
        _split(d.train, "train"), _split(d.val, "val")
        check_turn_settings(d, parser="action", refusal="is a tool-call format; ALFWorld reads <action> tags "
                            "(verl_agent, compact, observation)")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _split(name: str | None, what: str) -> str:
    from harness.envs.alfworld import SPLIT_COUNTS

    if name not in SPLIT_COUNTS:
        raise ConfigError(f"data.{what}: the alfworld task needs an ALFWorld split, got {name!r}; valid: "
                          f"{', '.join(SPLIT_COUNTS)}")
    return name


def _manifest(split: str) -> dict:
    from harness.envs.alfworld import load_manifest, manifest_path

    path = manifest_path(split)
    if not path.is_file():
        raise ConfigError(f"no manifest of the ALFWorld {split} games ({path}); with ALFWorld's data downloaded "
                          f"(alfworld-download), write it: python -m harness.envs.alfworld --split {split} "
                          f"--data-dir <data dir>")
    return load_manifest(path)


def make_env(split: str, game_ids: list[str], *, data_dir: str | os.PathLike, max_steps: int):
    """An :class:`~harness.envs.alfworld.ALFWorldEnv` of ``split`` over ``game_ids`` only (its manifest cut to them:
    only their files are verified, and the protocol's manifest digest covers exactly the games played)."""
    from harness.envs.alfworld import ALFWorldEnv

    manifest = _manifest(split)
    wanted = set(game_ids)
    games = [g for g in manifest["games"] if g["id"] in wanted]
    unknown = wanted - {g["id"] for g in games}
    if unknown:
        raise ConfigError(f"ALFWorld game ids not in the {split} manifest: {sorted(unknown)[:3]}")
    return ALFWorldEnv(split, data_dir=data_dir, manifest={**manifest, "games": games, "count": len(games)},
                       max_steps=max_steps)


def episode_spec(d, data_dir: str | os.PathLike) -> EpisodeSpec:
    """How the job plays ALFWorld (``d``: its parsed :class:`~harness.config.tiers.DataSpec`)."""
    check(d)
    env = functools.partial(make_env, data_dir=str(data_dir), max_steps=d.max_turns)  # picklable: worker processes
    return EpisodeSpec(env=env, template=d.template, max_turns=d.max_turns,
                       max_new_tokens_per_turn=d.max_new_tokens_per_turn, max_episode_tokens=d.max_episode_tokens,
                       invalid_penalty=d.invalid_penalty, train_split=d.train, heldout_split=d.val)


def rows(d) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): game ids of the two splits, in manifest order, cut to n_train / n_val."""
    train, val = _split(d.train, "train"), _split(d.val, "val")
    ids = {s: [g["id"] for g in _manifest(s)["games"]] for s in {train, val}}
    return ([{"prompt": g, "answer": ""} for g in ids[train][: d.n_train]],
            [{"prompt": g, "answer": ""} for g in ids[val][: d.n_val]])


def no_scorer(completion: str, answer: str) -> bool:
    raise TypeError("the alfworld task is scored by playing episodes (harness.evaluate.episodes), not by matching "
                    "a completion against an answer")
