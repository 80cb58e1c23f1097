"""Agent evaluations declared in ``config/agents.yaml`` and run from the DAG (``rules/agents.smk``).

Each entry of ``evaluations`` names a model (a tier's ``model`` block: ``kind: hf`` with an offline ``local``
source), an environment and split, a fixed list of game ids, and the evaluation settings of
:func:`harness.evaluate.agent.evaluate_agent`. :func:`agent_spec` turns an entry into the spec the DAG writes
(``tier``, ``model``, ``pretrain``, ``data``, ``eval``: the blocks ``harness.plan.base_eval_key`` hashes, so an agent
evaluation is filed like any base-model evaluation, ``base-evals/<tier>/<key>/agent.json``);
:func:`harness.evaluate.agent.run_spec` runs one from that file (:func:`env_factory`, :func:`load_model`).
``workers`` is not in the spec: it changes the speed, not the episodes.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from harness.config import REPO_ROOT, ConfigError
from harness.envs.agent import TEMPLATES

CONFIG = REPO_ROOT / "config" / "agents.yaml"
ENVS = ("alfworld", "household")
#: eval block: field -> (types, required); None is allowed only for max_episode_tokens
EVAL_FIELDS = {"k": (int,), "temperature": (int, float), "max_turns": (int,), "max_new_tokens_per_turn": (int,),
               "template": (str,), "max_episode_tokens": (int, type(None)), "seed": (int,),
               "invalid_penalty": (int, float)}
ENTRY_FIELDS = ("tier", "model", "env", "games", "eval", "workers")


def load_config(path: str | os.PathLike = CONFIG) -> dict[str, dict]:
    """``evaluations`` of the agents config, every entry checked (errors name the file and the entry's field)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing agents config: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    evals = (data or {}).get("evaluations") if isinstance(data, dict) else None
    if not isinstance(evals, dict) or not evals:
        raise ConfigError(f"{path}: needs a non-empty mapping 'evaluations: {{name: entry}}'")
    for name, entry in evals.items():
        _check_entry(f"{path}: evaluations/{name}", name, entry)
    return evals


def _check_entry(where: str, name: str, e) -> None:
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ConfigError(f"{where}: the name must be letters, digits and underscores")
    if not isinstance(e, dict):
        raise ConfigError(f"{where}: must be a mapping with {', '.join(ENTRY_FIELDS)}")
    unknown, missing = sorted(set(e) - set(ENTRY_FIELDS)), [f for f in ENTRY_FIELDS[:5] if f not in e]
    if unknown or missing:
        raise ConfigError(f"{where}: unknown fields {unknown} / missing {missing}; valid: {', '.join(ENTRY_FIELDS)}")
    from harness.config import TIERS

    if e["tier"] not in TIERS:
        raise ConfigError(f"{where}/tier: {e['tier']!r}; valid: {', '.join(TIERS)}")
    if not isinstance(e["model"], dict) or e["model"].get("kind") != "hf" or not e["model"].get("name"):
        raise ConfigError(f"{where}/model: needs kind: hf and a name (the tier's model block)")
    env = e["env"]
    if not isinstance(env, dict) or env.get("name") not in ENVS or not isinstance(env.get("split"), str):
        raise ConfigError(f"{where}/env: needs name (one of {', '.join(ENVS)}) and split")
    games = e["games"]
    if not isinstance(games, list) or not games or not all(isinstance(g, str) for g in games) \
            or len(set(games)) != len(games):
        raise ConfigError(f"{where}/games: a non-empty list of distinct game ids")
    ev = e["eval"]
    if not isinstance(ev, dict) or set(ev) != set(EVAL_FIELDS):
        raise ConfigError(f"{where}/eval: needs exactly {', '.join(EVAL_FIELDS)}, got {sorted(ev or {})}")
    for f, types in EVAL_FIELDS.items():
        if not isinstance(ev[f], types) or isinstance(ev[f], bool):
            raise ConfigError(f"{where}/eval/{f}: {ev[f]!r} is not {' or '.join(t.__name__ for t in types)}")
    if ev["template"] not in TEMPLATES:
        raise ConfigError(f"{where}/eval/template: {ev['template']!r}; valid: {', '.join(TEMPLATES)}")
    w = e.get("workers", 0)
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise ConfigError(f"{where}/workers: an integer >= 0 (0: environments in the main process), got {w!r}")


def agent_spec(entry: dict) -> dict:
    """What defines one evaluation (what its key hashes): tier, model, no pre-training, the games, the settings."""
    return {"tier": entry["tier"], "model": entry["model"], "pretrain": None,
            "data": {"env": dict(entry["env"]), "games": list(entry["games"])}, "eval": dict(entry["eval"])}


def check_spec(spec, where: str) -> dict:
    """An agent spec (:func:`agent_spec`'s shape, e.g. read from a file) checked like a config entry."""
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), dict) or "eval" not in spec:
        raise ConfigError(f"{where}: not an agent spec (needs tier, model, data: {{env, games}}, eval)")
    entry = {"tier": spec.get("tier"), "model": spec.get("model"), "env": spec["data"].get("env"),
             "games": spec["data"].get("games"), "eval": spec["eval"]}
    _check_entry(where, "spec", entry)
    return spec


def env_factory(env: dict, data_dir: str | os.PathLike | None = None):
    """A picklable zero-argument factory of the spec's environment (``env``: name, split, and the environment's
    own keyword arguments, e.g. ``max_steps``)."""
    kw = {k: v for k, v in env.items() if k not in ("name", "split")}
    if env["name"] == "alfworld":
        from harness.envs.alfworld import ALFWorldEnv

        return functools.partial(ALFWorldEnv, env["split"], data_dir=data_dir, **kw)
    if env["name"] == "household":
        from harness.envs.household import HouseholdEnv

        return functools.partial(HouseholdEnv, env["split"], **kw)
    raise ConfigError(f"unknown environment {env['name']!r}; valid: {', '.join(ENVS)}")


def load_model(model_dir: str | os.PathLike, threads: int = 1):
    """(model in eval mode, tokenizer with a pad token) from a prepared model directory (``harness prepare-model``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(threads))
    if not Path(model_dir, "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok
