"""What a training job leaves behind, whichever trainer ran it (GRPO: :mod:`harness.train.job`; DPO:
:mod:`harness.train.dpo`): the final policy under ``JOB/model``, ``metrics.jsonl`` and the content-hashed
``result.json`` the eval, verdict and pin steps read, and the MLflow run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.results import atomic_write_json, atomic_write_text


def save_policy(out_dir: Path, model, tok) -> None:
    """The final policy under ``out_dir/model``, for the eval jobs (held-out set and the tier's benchmarks),
    written atomically."""
    from harness.results import atomic_dir

    with atomic_dir(out_dir / "model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)


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
