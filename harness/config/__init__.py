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
TIERS = ("smoke", "cpu-real", "small", "paper")


class ConfigError(ValueError):
    """Bad configuration or input; the message is one line naming the valid choices."""


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


def validate_run_config(cfg: dict) -> dict:
    _validate(cfg, _schema("schema.json"), "config")
    card = load_card(cfg["paper"])
    if cfg["tier"] not in card["tiers"]:
        raise ConfigError(f"paper {cfg['paper']!r} has no tier {cfg['tier']!r}; valid: {', '.join(card['tiers'])}")
    for m in cfg.get("methods") or []:
        if m not in card["methods"]:
            raise ConfigError(f"paper {cfg['paper']!r} has no method {m!r}; valid: {', '.join(card['methods'])}")
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
    return card


def load_card(paper: str) -> dict:
    return copy.deepcopy(_load_card_cached(paper))
