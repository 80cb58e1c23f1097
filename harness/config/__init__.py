"""Run configuration and replication cards: loading, JSON-schema validation, per-job resolution.

Every error is a :class:`ConfigError` with a one-line message that names what is valid.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml


#: project root holding config/, replications/ and results/ (RLVR_HARNESS_ROOT overrides, e.g. for a test copy)
REPO_ROOT = Path(os.environ.get("RLVR_HARNESS_ROOT") or Path(__file__).resolve().parents[2]).resolve()
TIERS = ("smoke", "smoke-reasoning", "smoke-agent", "cpu-real", "small", "paper")  # derived/overlaid: harness.config.derived


from harness.config.errors import ConfigError  # noqa: E402 (one class for the package and its submodules)


def _schema(name: str) -> dict:
    schema = json.loads((REPO_ROOT / "config" / name).read_text())
    if name == "card.schema.json":  # the tier blocks' properties come from their dataclasses (one home per setting)
        from harness.config.tiers import BLOCKS, json_schema

        props = schema["$defs"]["tier"]["properties"]
        for block, cls in BLOCKS.items():
            generated = json_schema(cls)
            if block == "benchmarks":
                generated = {"type": "object", "description": props[block].get("description", ""),
                             "additionalProperties": generated}
            props[block] = generated
        overlay = copy.deepcopy(schema["$defs"]["tier"])  # a card's block for a derived tier states only differences
        overlay.pop("required", None)
        schema["$defs"]["tier_overlay"] = overlay
        released = schema["properties"].get("released")  # released checkpoints (harness.config.released)
        if released:
            rp = released["properties"]
            rp["benchmarks"]["additionalProperties"] = copy.deepcopy(props["benchmarks"]["additionalProperties"])
            rp["resources"] = {**props["resources"], "description": rp["resources"].get("description", "")}
    return schema


def _validate(obj: Any, schema: dict, where: str) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    if not errors:
        return
    err = errors[0]
    path = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        sub = schema
        for p in err.absolute_path:
            sub = sub.get("properties", {}).get(p) or sub.get("additionalProperties") or {}
            if "$ref" in sub:
                sub = schema["$defs"][sub["$ref"].split("/")[-1]]
        allowed = sorted(sub.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        hint = difflib.get_close_matches(extra[0], allowed, n=1) if extra else []
        raise ConfigError(f"{where}: unknown key {extra[0]!r} at {path}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; valid keys: {', '.join(allowed)}")
    raise ConfigError(f"{where}: {path}: {err.message}")


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing file: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None


#: command-line spellings of "no value" (Snakemake's ``--config`` passes ``null`` through as text)
_NULLS = ("null", "none", "~", "")


def _coerce(value: Any, spec: dict) -> Any:
    """One run-config value as its schema property types it; a value that does not convert is returned unchanged
    (the schema then rejects it with a one-line error)."""
    types = spec.get("type") or []
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(value, str):
        text = value.strip()
        if "null" in types and text.lower() in _NULLS:
            return None
        if "array" in types:
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError:
                    return value
            else:  # a comma-separated list, as `paper=` takes one
                value = [p.strip() for p in text.split(",") if p.strip()]
        elif "integer" in types and text.lstrip("+-").isdigit():
            return int(text)
        elif "number" in types:
            try:
                return float(text) if not text.lstrip("+-").isdigit() else int(text)
            except ValueError:
                return value
    if "array" in types and value is not None and not isinstance(value, (list, dict)):
        value = [value]  # seeds=42: one seed
    if isinstance(value, list) and "array" in types:
        return [_coerce(v, spec.get("items") or {}) for v in value]
    if (types == ["string"] or types == ["string", "null"]) and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return str(value)  # Snakemake reads work_dir=2 as an int
    return value


def coerce_run_config(cfg: dict) -> dict:
    """The run config with its values typed as ``config/schema.json`` says, however they arrived: the one
    conversion that ``harness validate key=value`` and the Snakefile (``snakemake --config key=value``, whose
    parser hands list items and ``null`` over as strings) both go through. ``seeds=[1,2,3]``, ``seeds=42``,
    ``methods=[grpo,clip_cov]``, ``methods=grpo,clip_cov``, ``torch_threads=2`` and ``mlflow_tracking_uri=null``
    all work; keys the schema does not know are left for it to reject."""
    props = _schema("schema.json")["properties"]
    return {k: _coerce(v, props[k]) if k in props else v for k, v in cfg.items()}


def run_papers(cfg: dict) -> list[str]:
    """The cards a run config names: ``paper`` is one card id, a comma-separated list, or ``all`` (every card that has
    the tier). The one reading of ``paper`` (the DAG, ``harness validate``, ``harness pin``)."""
    paper, tier = cfg.get("paper"), cfg.get("tier")
    names = [p.strip() for p in paper.split(",") if p.strip()] if isinstance(paper, str) else [paper]
    if not names:
        raise ConfigError(f"config: paper is empty; valid: all, a comma-separated list, or one of "
                          f"{', '.join(list_papers())}")
    schema = _schema("schema.json")
    for name in names:
        _validate({**cfg, "paper": name}, schema, "config")
    if names == ["all"]:
        from harness.config.released import RELEASED_TIER

        names = [p for p in list_papers() if (load_card(p).get("released") if tier == RELEASED_TIER
                                              else tier in load_card(p)["tiers"])]
        if not names:
            raise ConfigError(f"config: no card has tier {tier!r}")
    return list(dict.fromkeys(names))


def validate_run_config(cfg: dict) -> dict:
    """The run config, coerced (:func:`coerce_run_config`) and checked against the schema and every card it names;
    an empty ``methods`` or ``seeds`` list is an error (null means all of them)."""
    from harness.config.backend import check_tier_generation
    from harness.config.released import RELEASED_TIER, released_of

    cfg = coerce_run_config(cfg)
    for paper in run_papers(cfg):
        card = load_card(paper)
        if cfg["tier"] == RELEASED_TIER:  # the card's released checkpoints: evaluated, nothing trained
            released_of(card)
            for key in ("methods", "seeds"):
                if cfg.get(key) is not None:
                    raise ConfigError(f"config: {key} does not apply to tier {RELEASED_TIER!r} (it evaluates the "
                                      f"card's released checkpoints); leave it null")
            continue
        if cfg["tier"] not in card["tiers"]:
            raise ConfigError(f"paper {paper!r} has no tier {cfg['tier']!r}; valid: {', '.join(card['tiers'])}")
        for m in cfg.get("methods") or []:
            if m not in card["methods"]:
                raise ConfigError(f"paper {paper!r} has no method {m!r}; valid: {', '.join(card['methods'])}")
        for key, valid, what in (("methods", card["methods"], "every method of the card"),
                                 ("seeds", card["tiers"][cfg["tier"]].get("seeds") or [], "the tier's seeds")):
            if cfg.get(key) == []:
                raise ConfigError(f"config: {key} is an empty list (give at least one, or null for {what}); "
                                  f"valid for {paper} [{cfg['tier']}]: {', '.join(str(v) for v in valid)}")
        # vLLM only where the tier has GPUs, consistent TRL vLLM fields (harness.config.backend)
        check_tier_generation(card["tiers"][cfg["tier"]], f"replications/{paper}/card.yaml tiers/{cfg['tier']}")
    return cfg


def load_run_config(overrides: dict | None = None, path: Path | None = None) -> dict:
    cfg = load_yaml(path or REPO_ROOT / "config" / "config.yaml")
    cfg.update(overrides or {})
    return validate_run_config(cfg)


def list_papers() -> list[str]:
    return sorted(p.parent.name for p in (REPO_ROOT / "replications").glob("*/card.yaml"))


@lru_cache(maxsize=None)
def _load_card_cached(paper: str) -> dict:
    papers = list_papers()
    if paper not in papers:
        raise ConfigError(f"unknown paper {paper!r}; valid: {', '.join(papers)}")
    path = REPO_ROOT / "replications" / paper / "card.yaml"
    card = load_yaml(path)
    _validate(card, _schema("card.schema.json"), str(path.relative_to(REPO_ROOT)))
    if card["id"] != paper:
        raise ConfigError(f"{path}: id {card['id']!r} does not match its folder {paper!r}")
    from harness.config.derived import derive_tiers

    card["tiers"] = derive_tiers(card["tiers"], REPO_ROOT, load_yaml)
    for tier, t in card["tiers"].items():  # a named cold start (config/cold_starts.yaml) -> its block
        name = (t.get("model") or {}).get("cold_start")
        if isinstance(name, str):
            recipes = load_yaml(REPO_ROOT / "config" / "cold_starts.yaml")
            if name not in recipes:
                raise ConfigError(f"{path.relative_to(REPO_ROOT)} tiers/{tier}/model/cold_start: unknown cold start "
                                  f"{name!r}; valid: {', '.join(recipes)} (config/cold_starts.yaml)")
            t["model"] = {**t["model"], "cold_start": {"name": name, **recipes[name]}}
    for tier in set(card["tiers"]) - set(load_yaml(path)["tiers"]):
        _validate({**card, "tiers": {tier: card["tiers"][tier]}}, _schema("card.schema.json"),
                  f"{path.relative_to(REPO_ROOT)} (derived tier {tier})")
    return card


def load_card(paper: str) -> dict:
    return copy.deepcopy(_load_card_cached(paper))
