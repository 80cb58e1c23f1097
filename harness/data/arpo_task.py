"""The real-model agent task ``arpo_tools`` (``data.task: arpo_tools``): GRPO on ARPO's tool-integrated reasoning
set, one completion per episode (:mod:`harness.train.episodes`), for the paper tiers of ARPO and AEPO (agentic),
whose released runs train on it (ARPO/scripts/ARPO_7B_Reasoning_1node.sh; AEPO/scripts/AEPO_Qwen25_7B_DeepResearch.sh
at RUC-NLPIR/ARPO, read as multi-agent-deep-research/ARPO@ff66660).

* **Rows.** A row's prompt is a question id (``<set>-<index>``) and its answer the ground truth: the environment
  scores. ``data.train`` / ``data.val`` name a set: a file ``<data_dir>/arpo_reasoning/<name>.parquet`` or
  ``.jsonl`` in the authors' verl layout (their ``rl_datasets/train_10k.parquet`` and ``valid.parquet``), or, when
  that file is absent and ``data.hub`` is set, that hub dataset's split ``<name>`` (users with the hub:
  ``dongguanting/ARPO-RL-Reasoning-10K``). ``n_train`` / ``n_val``: the first rows (null: all).
  :mod:`harness.data.arpo_reasoning` reads and checks them (a bad file names the file and the row).
* **Episodes.** :class:`harness.envs.toolqa.ToolQAEnv` over the rows in use: ``<python>`` through the harness's
  sandbox, ``<search>`` through ``data.search`` (:func:`search_backend`), the tool result appended inline as the
  authors do (template ``arpo_tools``: :data:`harness.envs.agent.ARPO_TOOLS`), ``data.max_tool_calls`` calls per
  episode (the authors' ``call_limit``).
* **Reward.** The authors' ``deep_research.compute_score`` of the whole response (:mod:`harness.verify.arpo_reward`),
  given by the environment (``Step.info["reward"]``), through :func:`harness.envs.agent.agent_reward`.
  **Scoring**: by playing episodes, never by matching a completion.
"""
from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path

from harness.config import ConfigError
from harness.envs.agent import EpisodeSpec, agent_reward, check_turn_settings  # noqa: F401 (the task's reward)

FOLDER = "arpo_reasoning"
REWARD = ("ARPO deep_research.compute_score of the whole response (F1 of the boxed answer, +0.1 with both tools, "
          "-1 on a format error; harness.verify.arpo_reward) - invalid_penalty * invalid_turns")


def check(d, where: str = "data") -> None:
    """The data block of an arpo_tools job (ConfigError naming the field)."""
    try:
        for key in ("train", "val"):
            name = getattr(d, key)
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                raise ConfigError(f"data.{key}: the arpo_tools task needs a set name (a file stem under "
                                  f"<data_dir>/{FOLDER}/, or a hub split with data.hub), got {name!r}")
        check_turn_settings(d, parser="whole_turn", refusal="reads <action> tags; the arpo_tools environment reads "
                            "whole tool-call turns (template arpo_tools)")
        if d.max_tool_calls < 0:
            raise ConfigError(f"data.max_tool_calls must be >= 0, got {d.max_tool_calls}")
        _search_kind(d.search)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _search_kind(spec: str | None) -> str | None:
    if spec is None:
        return None
    kind, sep, arg = spec.partition(":")
    if not sep or not arg or kind not in ("local", "class"):
        raise ConfigError(f"data.search: {spec!r}; valid: null (search calls answered with an error), "
                          "local:<folder under data_dir> (BM25 over .txt/.md files), class:<module>.<Class> "
                          "(your SearchBackend, built without arguments)")
    return kind


def search_backend(spec: str | None, data_dir: str | os.PathLike):
    """The :class:`~harness.envs.tools.SearchBackend` of ``data.search`` (see :func:`_search_kind`), or None."""
    kind = _search_kind(spec)
    if kind is None:
        return None
    arg = spec.partition(":")[2]
    if kind == "local":
        from harness.envs.tools import LocalCorpusSearch

        folder = Path(data_dir) / arg
        if not folder.is_dir():
            raise ConfigError(f"data.search: no folder {folder}")
        return LocalCorpusSearch(folder)
    module, _, name = arg.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"data.search: cannot import {arg!r} ({type(e).__name__}: {e})") from None
    return cls()


@functools.lru_cache(maxsize=8)
def _rows(name: str, data_dir: str, hub: str | None) -> tuple[dict, ...]:
    from harness.data import arpo_reasoning

    root = Path(data_dir) / FOLDER
    found = next((root / f"{name}{ext}" for ext in (".parquet", ".jsonl") if (root / f"{name}{ext}").is_file()), None)
    if found is not None:
        return tuple(arpo_reasoning.read_file(found))
    if hub:
        return tuple(arpo_reasoning.load_hub(hub, split=name))
    raise ConfigError(f"no ARPO reasoning set {name!r}: looked for {root / name}.parquet and .jsonl (the authors' "
                      f"ARPO/rl_datasets/*.parquet, commit {arpo_reasoning.COMMIT[:7]}); or set data.hub "
                      f"({arpo_reasoning.HUB_ID})")


def rows(d, data_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): question ids of the two sets, cut to n_train / n_val; the answer is the
    ground truth (for the record: the environment scores)."""
    check(d)
    train = _rows(d.train, str(data_dir), d.hub)[: d.n_train]
    val = _rows(d.val, str(data_dir), d.hub)[: d.n_val]
    return ([{"prompt": r["id"], "answer": r["answer"]} for r in train],
            [{"prompt": r["id"], "answer": r["answer"]} for r in val])


def make_env(split: str, game_ids: list[str], *, data_dir: str, hub: str | None, search: str | None,
             max_tool_calls: int):
    """A :class:`~harness.envs.toolqa.ToolQAEnv` over set ``split``'s rows with ids in ``game_ids`` (the protocol's
    rows digest covers exactly the questions played)."""
    from harness.envs.toolqa import ToolQAEnv

    wanted = set(game_ids)
    use = [r for r in _rows(split, data_dir, hub) if r["id"] in wanted]
    unknown = wanted - {r["id"] for r in use}
    if unknown:
        raise ConfigError(f"question ids not in the ARPO set {split!r}: {sorted(unknown)[:3]}")
    return ToolQAEnv(use, search=search_backend(search, data_dir), max_tool_calls=max_tool_calls, split=split)


def episode_spec(d, data_dir: str | os.PathLike) -> EpisodeSpec:
    """How the job plays ARPO's tool-integrated episodes (``d``: its parsed :class:`~harness.config.tiers.DataSpec`)."""
    check(d)
    env = functools.partial(make_env, data_dir=str(data_dir), hub=d.hub, search=d.search,
                            max_tool_calls=d.max_tool_calls)  # picklable: worker processes
    return EpisodeSpec(env=env, template=d.template, max_turns=d.max_turns,
                       max_new_tokens_per_turn=d.max_new_tokens_per_turn, max_episode_tokens=d.max_episode_tokens,
                       invalid_penalty=d.invalid_penalty, train_split=d.train, heldout_split=d.val, reward=REWARD)


def no_scorer(completion: str, answer: str) -> bool:
    raise TypeError("the arpo_tools task is scored by playing episodes (the environment scores the whole response), "
                    "not by matching a completion against an answer")
