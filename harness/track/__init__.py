"""MLflow tracking: one run per job, grouped per tier (jobs are shared by every card that asks for them). Failures never lose results.

Default store: ``sqlite:///<work_dir>/mlflow.db`` inside the project (git-ignored), no server needed;
``MLFLOW_TRACKING_URI`` overrides it. ``mlflow ui --backend-store-uri <uri>`` shows it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
import warnings
from pathlib import Path


def default_uri(work_dir: str | Path) -> str:
    return "sqlite:///" + str((Path(work_dir) / "mlflow.db").resolve())


def tracking_uri(work_dir: str | Path, configured: str | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or default_uri(work_dir)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextlib.contextmanager
def _store_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):]).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def log_job(*, uri: str, job: dict, trl_args: dict, metrics: list[dict], evals: list[dict],
            artifacts: list[Path], dataset_digests: dict, tags: dict) -> tuple[str, str]:
    """Log a finished job; returns (run id, experiment id). Raises on failure (the caller reports it)."""
    import mlflow
    from mlflow.entities import Metric, Param

    mlflow.set_tracking_uri(uri)
    exp_name = f"jobs/{job['tier']}"
    # parallel jobs race to create the SQLite schema and the experiment: serialise that with a file lock
    # next to the database, and retry for stores we cannot lock (servers, databases elsewhere)
    with _store_lock(uri):
        for attempt in range(6):
            try:
                exp = mlflow.set_experiment(exp_name)
                break
            except Exception:
                if attempt == 5:
                    raise
                time.sleep(0.5 * (attempt + 1))
    client = mlflow.MlflowClient(uri)
    run = client.create_run(exp.experiment_id, run_name=f"{job['method']}/{job['job_key']}/seed{job['seed']}",
                            tags={k: str(v) for k, v in tags.items()})
    rid = run.info.run_id
    try:
        from harness.results import package_versions

        params = {**{f"versions.{k}": v for k, v in package_versions().items()},
                  **{f"job.{k}": v for k, v in _flatten({k: v for k, v in job.items() if k != "trl"}).items()},
                  **{f"trl.{k}": v for k, v in _flatten(trl_args).items()}}
        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(rid, params=items[i:i + 100])
        now = int(time.time() * 1000)
        ms = []
        for row in metrics:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v == v:
                    ms.append(Metric(k.replace("/", "/"), float(v), now, int(row["step"])))
        for row in evals:
            for k, v in row.items():
                if k not in ("step", "seconds"):
                    ms.append(Metric(f"heldout/{k}", float(v), now, int(row["step"])))
        for i in range(0, len(ms), 1000):
            client.log_batch(rid, metrics=ms[i:i + 1000])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pandas as pd

            for name, digest in dataset_digests.items():
                ds = mlflow.data.from_pandas(pd.DataFrame({"digest": [digest]}), name=name, digest=digest[:36])
                with mlflow.start_run(run_id=rid):
                    mlflow.log_input(ds, context="training" if "train" in name else "eval")
        for a in artifacts:
            if Path(a).exists():
                client.log_artifact(rid, str(a))
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    return rid, exp.experiment_id


def log_verdict_artifacts(uri: str, run_ids: list[str], files: list[Path]) -> list[str]:
    """Attach the replication's verdict and plots to each job's run; returns the errors (never raises)."""
    errors = []
    try:
        import mlflow

        client = mlflow.MlflowClient(uri)
        for rid in run_ids:
            for f in files:
                client.log_artifact(rid, str(f), artifact_path="replication")
    except Exception as e:  # tracking never blocks results
        errors.append(f"{type(e).__name__}: {e}")
    return errors
