"""Where result files live and how a replication's files are found again (pinned ``results/`` and a ``work/`` dir
share the layout):

- ``jobs/<tier>/<method>/<job_key>/seed<seed>/result.json`` (+ ``evals/<benchmark>.json``): a training job and its
  checkpoint's evaluations, stored once however many cards use the job;
- ``base-evals/<tier>/<key>/<benchmark>.json``: the untrained model's evaluations;
- ``<paper>/<tier>/verdict.json`` (work: ``verdicts/<paper>/<tier>/``): a card's verdict, which lists the content
  hashes of the runs (``inputs``) and evaluations (``eval_inputs``) it judged;
- ``models/<key>/`` (work: ``models/<key>/base/``): a smoke tier's pre-trained base model, keyed by what defines it
  (:func:`base_model_key`); pinned so that a fresh clone restores it instead of pre-training again, with a
  ``MANIFEST.json`` of its files' hashes.

A replication is joined through its verdict's hashes, never through paths or MLflow: :func:`replications`.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.results.packing import read_result

SKIP_NAMES = {"manifest.json", "MANIFEST.json", "leaderboard.json", "atlas.json", "job.json"}


def base_model_key(job: dict) -> str:
    """Directory name of a job's base model: ``smoke-<hash of model, pretrain, data>`` (shared by every card and
    method whose base model is the same), ``hf-<hash of model>``, or ``sft-<hash of model>`` for a hub model with a
    cold start."""
    from harness.results import config_hash

    if job["model"]["kind"] == "smoke":
        return "smoke-" + config_hash({k: job.get(k) for k in ("model", "pretrain")} | {"data": job.get("data")})[:12]
    if job["model"].get("cold_start"):  # the hub model fine-tuned first (harness.train.cold_start)
        return "sft-" + config_hash(job["model"])[:12]
    return "hf-" + config_hash(job["model"])[:12]


def read_json(path: Path, error: type[Exception] = ValueError) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None


def result_files(root: str | Path):
    """(path, record) of every train result, eval result, task report and verdict under ``root`` (releases
    excluded); packed metrics come unpacked (:mod:`harness.results.packing`)."""
    root = Path(root)
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root)
        if rel.parts[0] == "releases" or p.name in SKIP_NAMES or any(part.startswith(".") for part in rel.parts):
            continue
        r = read_result(p)
        if isinstance(r, dict) and r.get("kind") in ("train_result", "eval_result", "verdict", "task_report"):
            yield p, r


def replications(root: str | Path, error: type[Exception] = ValueError) -> dict[tuple[str, str], dict]:
    """(paper, tier) -> {"verdict": [verdict], "train": [runs it judged], "evals": [evaluations it judged]}.

    Each evaluation gets ``source.paper``/``source.tier`` of the replication it is read for (a shared GRPO run's
    evaluation belongs to every card that used it)."""
    root = Path(root)
    by_hash, verdicts = {}, []
    for p, r in result_files(root):
        if r["kind"] == "verdict":
            verdicts.append((p, r))
        elif r.get("content_hash"):
            r["_file"] = p.relative_to(root).as_posix()  # where it was read (not part of its hashed content)
            by_hash[r["content_hash"]] = r
    out: dict[tuple[str, str], dict] = {}
    for p, v in verdicts:
        key = (v["paper"], v["tier"])
        if key in out:
            raise error(f"two verdicts of {key[0]} [{key[1]}] under {root}: {p} and another")
        missing = [h for h in [*v.get("inputs", []), *v.get("eval_inputs", [])] if h not in by_hash]
        if missing:
            raise error(f"{p}: lists result hashes not found under {root}: {', '.join(h[:12] for h in missing[:3])}")
        evals = [{**by_hash[h], "source": {**(by_hash[h].get("source") or {}), "paper": v["paper"],
                                           "tier": v["tier"]}} for h in v.get("eval_inputs", [])]
        out[key] = {"verdict": [v], "train": [by_hash[h] for h in v.get("inputs", [])], "evals": evals}
    return dict(sorted(out.items()))
