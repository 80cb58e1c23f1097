"""What a training job leaves behind, whichever trainer ran it (GRPO: :mod:`harness.train.job`; DPO:
:mod:`harness.train.dpo`, :mod:`harness.train.dpo_pairs`; SFT: :mod:`harness.train.sft`): the final policy under ``JOB/model``, ``metrics.jsonl`` and the content-hashed
``result.json`` the eval, verdict and pin steps read, and the MLflow run."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from harness.results import atomic_write_json, atomic_write_text


def save_policy(out_dir: Path, model, tok) -> None:
    """The final policy under ``out_dir/model``, for the eval jobs (held-out set and the tier's benchmarks),
    written atomically."""
    from harness.results import atomic_dir

    with atomic_dir(out_dir / "model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)


def finish_policy(out_dir: Path, model, tok, *, save_model: bool) -> None:
    """The end of a DPO or SFT job's training: the final policy saved (unless ``save_model`` is False), and the
    TRL ``output_dir`` (``out_dir/trainer``, created up front by transformers) removed when nothing was written."""
    if save_model:
        save_policy(out_dir, model, tok)
    trainer_dir = out_dir / "trainer"
    if trainer_dir.is_dir() and not os.listdir(trainer_dir):
        trainer_dir.rmdir()


def train_result(job: dict, *, trainer: str, trl_args: dict, dataset_digests: dict, t_start: float,
                 **fields) -> dict:
    """A ``train_result`` record of a DPO or SFT job: the shared header (job, provenance, trainer, TRL arguments'
    digest, dataset digests), the trainer's own ``fields`` (metrics, heldout, ...), then wall time, peak memory and
    the creation time, in that order."""
    from harness.results import content_hash, provenance

    return {"kind": "train_result", "schema_version": 1, "job": job, **provenance(), "trainer": trainer,
            "trl_args_digest": content_hash(trl_args), "dataset_digests": dataset_digests, **fields,
            "wall_seconds": round(time.time() - t_start, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(out_dir: Path, result: dict, *, trl_args: dict, mlflow_uri: str | None) -> dict:
    """Write a job's ``metrics.jsonl`` and ``result.json`` (atomically, content-hashed), then log the run to MLflow
    when ``mlflow_uri`` is given; a tracking failure is recorded in the result, never raised (the files stay)."""
    job, metrics = result["job"], result["metrics"]
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    path = atomic_write_json(out_dir / "result.json", result, hashed=True)
    if mlflow_uri:
        try:
            from harness.track import log_job

            rid = log_job(uri=mlflow_uri, job=job, trl_args=trl_args, metrics=metrics, evals=result["heldout"],
                          artifacts=[path, out_dir / "metrics.jsonl"], dataset_digests=result["dataset_digests"],
                          tags={"job_key": job["job_key"], "tier": job["tier"], "method": job["method"],
                                "seed": int(job["seed"]), "config_hash": job["config_hash"],
                                "git_commit": result["git_commit"]})
            result["mlflow_run_id"], result["mlflow_experiment_id"] = rid
        except Exception as e:  # tracking must never lose results
            result["tracking_error"] = f"{type(e).__name__}: {e}"
            print(f"warning: MLflow tracking failed ({result['tracking_error']}); results are in {path}",
                  file=sys.stderr)
        atomic_write_json(out_dir / "result.json", result, hashed=True)
    return result
