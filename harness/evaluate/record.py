"""One builder for evaluation results (``kind: eval_result``): the held-out evaluator
(:mod:`harness.evaluate.heldout`) and the lm-eval evaluator (:mod:`harness.evaluate.lmeval`) both write through it.

Field set of an ``eval_result`` (top level):

- ``kind`` (``"eval_result"``), ``schema_version`` (1)
- ``model_dir``: the checkpoint directory as an absolute path (``None`` for a ready model object without one)
- ``source``: what the checkpoint is, for leaderboards and claims (keys among ``method``, ``seed``, ``tier``,
  ``job_key``, ``paper``; ``method: base`` is the untrained model), or ``None`` when unknown
- ``benchmarks``: benchmark name -> entry, each with at least ``task``, ``n_problems``, ``k``, ``metrics``
  (metric -> value, ci, ci_level, ci_method), ``bootstrap``, ``per_problem`` (``[{id, n_correct, ...}]``) and
  ``protocol_hash`` (the hash of ``protocol.benchmarks[name]``); producers may add fields (lm-eval: verdict
  status counts, exclusions, response lengths, the generated task YAML)
- ``protocol``: ``{"benchmarks": {name: protocol fields}}`` (:func:`harness.results.protocol.protocol_fields`)
  and ``protocol_hash`` (its hash)
- ``settings``: the evaluator's own settings (k, temperature, max tokens, seed, ...)
- ``wall_seconds``: seconds since the evaluation started, rounded to 2 decimals
- ``created``: UTC time of the result, ISO ``%Y-%m-%dT%H:%M:%SZ``
- ``provenance``: :func:`harness.results.provenance` (git commit, package versions, hardware)
- ``content_hash``: added when written (:func:`write_record`)

Producer extras sit at the top level next to these (lm-eval: ``model_load_seconds``, ``generation_seconds``,
``generated_tokens``, ``tokens_per_second``, ``tokens_note``); an extra may not replace a field above.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from harness.config import ConfigError

RESULT_KIND = "eval_result"
SCHEMA_VERSION = 1
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: keys of a ``source`` (``--source k=v,...``); ``method`` is required
SOURCE_KEYS = ("paper", "tier", "method", "seed", "job_key")
CORE_FIELDS = ("kind", "schema_version", "model_dir", "source", "benchmarks", "protocol", "protocol_hash", "settings",
               "wall_seconds", "created", "provenance", "content_hash")
ENTRY_FIELDS = ("task", "n_problems", "k", "metrics", "bootstrap", "per_problem", "protocol_hash")


def seconds(t0: float) -> float:
    """Seconds since ``t0``, rounded the way every eval result rounds its timings."""
    return round(time.time() - t0, 2)


def bench_entry(*, task: str, k: int, summary: Mapping, per_problem: list, protocol: Mapping, **extra) -> dict:
    """One ``benchmarks[name]`` entry: ``summary`` is :func:`harness.evaluate.metrics.summarize`'s output,
    ``protocol`` the benchmark's protocol fields (hashed here); ``extra`` adds producer-specific fields."""
    from harness.results.protocol import protocol_hash

    clash = sorted(set(extra) & set(ENTRY_FIELDS))
    if clash:
        raise ValueError(f"benchmark entry extras may not replace {clash}")
    return {"task": task, "n_problems": len(per_problem), "k": int(k), "metrics": summary["metrics"],
            "bootstrap": summary["bootstrap"], "per_problem": per_problem, "protocol_hash": protocol_hash(protocol),
            **extra}


def eval_record(*, benchmarks: Mapping[str, dict], protocol: Mapping[str, dict], source: Mapping | None,
                settings: Mapping[str, Any], model_dir: str | os.PathLike | None, t0: float,
                extra: Mapping[str, Any] | None = None) -> dict:
    """The ``eval_result`` dict (field set in the module docstring). ``benchmarks`` are :func:`bench_entry` dicts,
    ``protocol`` maps the same names to their protocol fields; ``t0`` is ``time.time()`` at the start."""
    from harness.results import provenance
    from harness.results.protocol import protocol_hash

    if list(benchmarks) != list(protocol):
        raise ValueError(f"benchmarks {list(benchmarks)} and protocols {list(protocol)} differ")
    for name, entry in benchmarks.items():
        if entry["protocol_hash"] != protocol_hash(protocol[name]):
            raise ValueError(f"{name}: entry protocol_hash does not match its protocol fields")
    clash = sorted(set(extra or {}) & set(CORE_FIELDS))
    if clash:
        raise ValueError(f"eval_result extras may not replace {clash}")
    proto = {"benchmarks": dict(protocol)}
    return {
        "kind": RESULT_KIND, "schema_version": SCHEMA_VERSION,
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve()),
        "source": dict(source) if source else None,
        "benchmarks": dict(benchmarks), "protocol": proto, "protocol_hash": protocol_hash(proto),
        "settings": dict(settings), "wall_seconds": seconds(t0),
        "created": time.strftime(CREATED_FORMAT, time.gmtime()), "provenance": provenance(),
        **dict(extra or {}),
    }


def write_record(result: dict, out: str | os.PathLike | None) -> dict:
    """Write ``result`` atomically with its content hash; returns what is on disk (or ``result`` when no ``out``)."""
    from harness.results import atomic_write_json

    if out is None:
        return result
    atomic_write_json(out, result, hashed=True)
    return json.loads(Path(out).read_text())


def parse_source(text: str | None) -> dict | None:
    """``--source method=M[,seed=S,tier=T,job_key=K,paper=P]`` as a dict (seed an int); None for no text."""
    if not text:
        return None
    try:
        src = dict(kv.split("=", 1) for kv in text.split(","))
    except ValueError:
        raise ConfigError(f"--source {text!r}: expected method=M[,seed=S,tier=T,job_key=K,paper=P]") from None
    if set(src) - set(SOURCE_KEYS) or "method" not in src:
        raise ConfigError(f"--source {text!r}: keys are {', '.join(SOURCE_KEYS)} (method required)")
    if "seed" in src:
        try:
            src["seed"] = int(src["seed"])
        except ValueError:
            raise ConfigError(f"--source {text!r}: seed must be an integer") from None
    return src


def format_benchmarks(result: dict) -> list[str]:
    """One line per benchmark: n, k and each metric with its CI."""
    return [f"{b:<22} n={r['n_problems']:<4} k={r['k']:<3} " + "  ".join(
        f"{m}={v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for m, v in r["metrics"].items())
        for b, r in result["benchmarks"].items()]
