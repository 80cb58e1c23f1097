"""Agent evaluation: ``k`` episodes of every held-out game, played by :func:`harness.evaluate.episodes.run_episodes`,
scored by the game (``won``), written as an ``eval_result`` (:mod:`harness.evaluate.record`).

**Numbers** (one benchmark entry, named ``<env>_<split>``: every number in it is on that split, which the entry
also states; verl-agent's in-distribution split is valid_seen, ours valid_unseen: never compare across splits):

- ``success_rate``: the share of all ``G x k`` episodes won (mean-of-k); with a two-level bootstrap CI (games, then
  the ``k`` episodes of each drawn game). ``metrics`` holds the held-out evaluation's names for the same matrix:
  ``avg@k`` (= success rate), ``pass@1``, ``pass@k`` (best-of-k: the share of games won at least once), or
  ``greedy_acc`` at temperature 0 (then ``k`` must be 1); ``pass_at`` the unbiased pass@j for j = 1, 2, 4, ..., k.
- ``per_task_type``: the same success rate and CI per ALFWorld task type (all six named; ``n_games`` 0 and value
  None for a type without games).
- ``episodes``: per-episode means with a CI over games (each game's mean over its ``k`` episodes, games resampled):
  untagged turns (``invalid_actions``), tagged actions the game does not know (``unknown_actions``), turns, game
  steps, model and environment tokens, the share truncated (ended by ``max_turns`` or ``max_episode_tokens``
  before the game said done), and the reward.
- ``per_problem``: per game, its task type, wins and every episode (won, steps, turns, actions, counts).

**Protocol** (hashed): the environment's own protocol (``env.protocol()``: split, manifest digest, versions, step
budget), the game ids, the template (name and text), the chat template's sha256, the budgets, sampling (pure
temperature sampling: top_p 1, top_k 0, stop at ``</action>``), the reward and the seed. The model is not part of
it (two models under one protocol hash are comparable).

``python -m harness.evaluate.agent --spec SPEC --model-dir DIR --out OUT`` runs one evaluation from a spec file
(what ``rules/agents.smk`` writes from ``config/agents.yaml``: :mod:`harness.evaluate.agent_spec`): :func:`run_spec`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from harness.envs.agent import TEMPLATES, WIN_REWARD, Template
from harness.envs.base import TASK_TYPES, TextEnv
from harness.evaluate import metrics as M
from harness.results.estimators import pass_at_k, powers_of_two

#: per-episode statistics (name -> how it is read off an Episode)
EPISODE_STATS: dict[str, Callable] = {
    "invalid_actions": lambda e: e.invalid_actions, "unknown_actions": lambda e: e.unknown_actions,
    "turns": lambda e: e.turns, "steps": lambda e: e.steps, "model_tokens": lambda e: sum(e.env_mask),
    "env_tokens": lambda e: len(e.env_mask) - sum(e.env_mask), "truncated": lambda e: float(e.truncated),
    "reward": lambda e: e.reward,
}


def _entry(value: float | None, ci, method: str) -> dict:
    return {"value": None if value is None else float(value),
            "ci": None if ci is None else [float(ci[0]), float(ci[1])], "ci_level": 1 - M.DEFAULT_ALPHA,
            "ci_method": method}


#: what the environment receives from a turn, per parser (the protocol's ``action``)
ACTION_RULES = {"action": "first <action>...</action> of a turn, stripped; none: invalid, steps with ''",
                "whole_turn": "the whole turn; the environment reads the call (a turn without one: the final answer)"}


def _env_reward(eps) -> dict:
    """``mean_env_reward``: the mean of the environment's own episode scores, for an environment that gives them
    (``Step.info["reward"]``); nothing otherwise."""
    scores = [e.env_reward for e in eps if e.env_reward is not None]
    return {"mean_env_reward": float(np.mean(scores)), "n_env_rewards": len(scores)} if scores else {}


def _template(template: Template | str) -> tuple[str | None, Template]:
    if isinstance(template, Template):
        return next((n for n, t in TEMPLATES.items() if t == template), None), template
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)} (or a Template)")
    return template, TEMPLATES[template]


def _check(env_factory, game_ids: Sequence[str], split: str, k: int, temperature: float) -> dict:
    """The environment's protocol, after checking the settings against it."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if temperature < 0 or (temperature == 0 and k != 1):
        raise ValueError(f"temperature must be >= 0, and 0 (greedy) only with k = 1; got temperature {temperature}, "
                         f"k {k}")
    if not game_ids or len(set(game_ids)) != len(game_ids):
        raise ValueError("game_ids must be a non-empty list without repeats (k sets the episodes per game)")
    env: TextEnv = env_factory()
    try:
        envp, known = env.protocol(), set(env.game_ids())
    finally:
        env.close()
    if envp.get("split") != split:
        raise ValueError(f"split {split!r} is not the environment's: it serves {envp.get('split')!r}")
    unknown = [g for g in game_ids if g not in known]
    if unknown:
        raise KeyError(f"{len(unknown)} game id(s) not in the {split} environment, e.g. {unknown[0]!r}")
    return envp


def evaluate_agent(model, tok, env_factory: Callable[[], TextEnv], game_ids: Sequence[str], *, split: str, k: int,
                   temperature: float, max_turns: int, max_new_tokens_per_turn: int, template: Template | str,
                   max_episode_tokens: int | None, seed: int, invalid_penalty: float = 0.0, workers: int = 0,
                   source: Mapping | None = None, model_dir=None, benchmark: str | None = None,
                   bootstrap_iters: int = M.DEFAULT_ITERS, reward: str | None = None) -> dict:
    """Play ``k`` episodes of each of ``game_ids`` (environments from ``env_factory``, which must serve ``split``)
    and return the ``eval_result`` (module docstring; not written: :func:`harness.evaluate.record.write_record`).
    ``template``: a :class:`Template` or a name in :data:`TEMPLATES`; ``workers``: environment worker processes;
    ``source``: who the model is (``{"method": "base", "tier": ...}``); ``benchmark``: the entry's name (default
    ``<env>_<split>``)."""
    import torch

    from harness.evaluate.episodes import run_episodes
    from harness.evaluate.record import bench_entry, eval_record
    from harness.results import content_hash
    from harness.results.protocol import protocol_fields

    t0 = time.time()
    tname, tmpl = _template(template)
    envp = _check(env_factory, game_ids, split, k, temperature)
    sampling = {"do_sample": temperature > 0, "temperature": float(temperature), "top_p": 1.0, "top_k": 0,
                "stop": list(tmpl.stops)}
    with torch.no_grad():
        batch = run_episodes(model, tok, env_factory, list(game_ids), num_generations=k, max_turns=max_turns,
                             max_new_tokens_per_turn=max_new_tokens_per_turn, temperature=temperature,
                             invalid_penalty=invalid_penalty, seed=seed, template=tmpl,
                             max_episode_tokens=max_episode_tokens, workers=workers,
                             generation_kwargs={"top_p": 1.0, "top_k": 0} if temperature > 0 else None)
    eps = batch.episodes
    groups = [eps[g * k:(g + 1) * k] for g in range(len(game_ids))]
    won = np.array([[float(e.won) for e in grp] for grp in groups])
    name = benchmark or f"{re.sub(r'-v[0-9]+$', '', str(envp.get('env') or envp.get('generator') or 'agent'))}_{split}"
    fields = protocol_fields(
        benchmark=name, data_sha256=content_hash({"env": envp, "game_ids": list(game_ids)}),
        problems={"split": split, "n_games": len(game_ids), "game_ids_sha256": content_hash(list(game_ids))},
        prompt_template=json.dumps({"name": tname, "first": tmpl.first, "turn": tmpl.turn}, sort_keys=True),
        chat_template=getattr(tok, "chat_template", None), sampling=sampling, max_gen_toks=max_new_tokens_per_turn,
        k=k, verifier={"name": "env_won",
                       "reward": reward or f"{WIN_REWARD:g} * won - invalid_penalty * invalid_turns"},
        seeds={"eval": int(seed)}, max_length=max_episode_tokens, task_version=1,
        extra={"env": envp, "game_ids": list(game_ids), "template": tname, "max_turns": int(max_turns),
               "invalid_penalty": float(invalid_penalty), "episode": "one completion per episode, whole history",
               "action": ACTION_RULES[tmpl.parser], **tmpl.format_fields(),
               **({"reward": reward} if reward else {})})
    summary = M.summarize(won, greedy=temperature == 0, iters=bootstrap_iters, seed=seed)
    rate = summary["metrics"]["greedy_acc" if temperature == 0 else "avg@k"]
    entry = bench_entry(
        task=name, k=k, summary=summary, protocol=fields, per_problem=_per_game(groups), split=split,
        n_games=len(game_ids), n_episodes=len(eps), success_rate=rate,
        pass_at={str(j): float(np.mean([pass_at_k(k, int(c), j) for c in won.sum(axis=1)]))
                 for j in powers_of_two(k)},
        per_task_type=_per_type(groups, won, bootstrap_iters, seed),
        **_env_reward(eps),
        episodes=_episode_stats(groups, bootstrap_iters, seed),
        timing={**batch.timing, "episodes_per_hour": round(len(eps) / max(time.time() - t0, 1e-9) * 3600, 1)})
    settings = {"split": split, "k": k, "temperature": temperature, "max_turns": max_turns,
                "max_new_tokens_per_turn": max_new_tokens_per_turn, "max_episode_tokens": max_episode_tokens,
                "template": tname, "seed": seed, "invalid_penalty": invalid_penalty, "workers": workers,
                "bootstrap_iters": bootstrap_iters}
    return eval_record(benchmarks={name: entry}, protocol={name: fields}, source=source, settings=settings,
                       model_dir=model_dir, t0=t0)


def _per_game(groups) -> list[dict]:
    return [{"id": grp[0].game_id, "task_type": grp[0].task_type, "n_correct": int(sum(e.won for e in grp)),
             "episodes": [{"won": e.won, "done": e.done, "truncated": e.truncated, "steps": e.steps, "turns": e.turns,
                           "invalid_actions": e.invalid_actions, "unknown_actions": e.unknown_actions,
                           "model_tokens": sum(e.env_mask), "env_tokens": len(e.env_mask) - sum(e.env_mask),
                           "reward": e.reward, "actions": list(e.actions)} for e in grp]} for grp in groups]


def _per_type(groups, won: np.ndarray, iters: int, seed: int) -> dict:
    out = {}
    for t in TASK_TYPES:
        rows = [g for g, grp in enumerate(groups) if grp[0].task_type == t]
        if not rows:
            out[t] = {"n_games": 0, **_entry(None, None, "no games of this type")}
            continue
        ci = M.avg_at_k_ci(won[rows], iters=iters, seed=seed)
        out[t] = {"n_games": len(rows), **_entry(won[rows].mean(), ci, "two-level bootstrap (games, then episodes)")}
    return out


def _episode_stats(groups, iters: int, seed: int) -> dict:
    out = {}
    for i, (name, f) in enumerate(EPISODE_STATS.items()):
        per_game = [np.mean([f(e) for e in grp]) for grp in groups]
        value = np.mean([f(e) for grp in groups for e in grp])
        out[name] = _entry(value, M.bootstrap_ci(per_game, iters=iters, seed=seed + i), "bootstrap over games")
    return out


def format_agent(result: dict) -> list[str]:
    """Lines to print: the success rate with its CI, per task type, and the episode means, each naming the split."""
    lines = []
    for name, b in result["benchmarks"].items():
        s, sr = b["split"], b["success_rate"]
        lines.append(f"{name}: success_rate[{s}] = {sr['value']:.3f} [{sr['ci'][0]:.3f}, {sr['ci'][1]:.3f}] "
                     f"over {b['n_games']} games x k={b['k']}; protocol {b['protocol_hash'][:12]}")
        for t in TASK_TYPES:
            v = b["per_task_type"][t]
            if v["n_games"]:
                lines.append(f"  {t:<32} success[{s}] = {v['value']:.3f} (n_games={v['n_games']})")
        lines.append("  per episode: " + "  ".join(f"{n}[{s}]={b['episodes'][n]['value']:.2f}" for n in EPISODE_STATS))
    return lines


def run_spec(spec_path: str | Path, model_dir: str | Path, out: str | Path, *, data_dir: str | Path | None = None,
             threads: int = 1, workers: int = 0) -> dict:
    """Run the evaluation a spec file describes and write its ``eval_result`` (with the spec) atomically."""
    from harness.config import ConfigError
    from harness.evaluate.agent_spec import check_spec, env_factory, load_model
    from harness.evaluate.record import write_record

    try:
        spec = json.loads(Path(spec_path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read agent spec {spec_path}: {e}") from None
    check_spec(spec, str(spec_path))
    model, tok = load_model(model_dir, threads)
    ev, env = spec["eval"], spec["data"]["env"]
    result = evaluate_agent(model, tok, env_factory(env, data_dir), spec["data"]["games"], split=env["split"],
                            **ev, workers=workers,
                            source={"method": "base", "tier": spec["tier"]}, model_dir=model_dir)
    result["spec"] = spec
    return write_record(result, out)


def main(argv: list[str] | None = None) -> int:
    from harness.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m harness.evaluate.agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="an agent evaluation spec (rules/agents.smk writes it)")
    p.add_argument("--model-dir", required=True, help="the model directory (safetensors + tokenizer)")
    p.add_argument("--out", required=True, help="the eval_result to write")
    p.add_argument("--data-dir", default=None, help="data root with alfworld/ (default $RLVR_DATA_DIR or "
                                                    "<repo>/../shared/data)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--workers", type=int, default=0, help="environment worker processes (0: in this process; the "
                   "episodes are the same either way)")
    a = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # progress per turn
    try:
        r = run_spec(a.spec, a.model_dir, a.out, data_dir=a.data_dir, threads=a.threads, workers=a.workers)
    except (ConfigError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(format_agent(r)))
    print(f"wrote {a.out} ({r['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
