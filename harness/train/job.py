"""One training job: a resolved job (``job.json``, written once by the DAG) -> result JSON, per-step metrics, the
final policy, an MLflow run.

Called by the Snakemake ``train`` rule through ``harness train --job job.json``. Results are written atomically
before tracking, so a tracking failure never loses them.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from harness.config import ConfigError
from harness.config.tiers import EvalSpec, parse as parse_setting
from harness.results import atomic_write_json, atomic_write_text, content_hash, provenance


def load_job(path: str | Path) -> dict:
    """A job file written by the DAG (``harness.plan.resolve_job``); a missing or malformed file is a ConfigError."""
    try:
        job = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing job file: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = sorted({"tier", "method", "seed", "hparams", "trl", "model", "data", "eval", "job_key"} - set(job))
    if missing:
        raise ConfigError(f"{path}: not a resolved job (missing {', '.join(missing)})")
    return job


def task_hooks(job: dict, tok) -> dict:
    """The smoke task's per-token phases and environment, as trainer keyword arguments (none for other tasks)."""
    if job["model"]["kind"] != "smoke":
        return {}
    import functools

    from harness.data.smoke_tasks import smoke_task

    from harness.config.tiers import DataSpec

    task = smoke_task(parse_setting(DataSpec, job["data"], "job data").task)
    out = {}
    if task.phases is not None:
        out["phase_fn"] = functools.partial(task.phases, tok)
    if task.environment is not None:
        out["environment"] = task.environment
    return out


def run_job(job: dict, *, model_dir: Path, out_dir: Path, data_dir: Path, mlflow_uri: str | None,
            threads: int = 1, save_model: bool = True) -> dict:
    """Train one resolved job (``harness.plan.resolve_job``'s dict, as stored in ``job.json``)."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import GRPOConfig

    from harness.data.load import load_model_and_data
    from harness.train.callbacks import PeriodicEval
    from harness.methods.registry import get_method
    from harness.train.trainer import HarnessGRPOTrainer

    tier, method, seed = job["tier"], job["method"], int(job["seed"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    set_seed(seed)
    model, tok, train_rows, val_rows, reward_fn, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    digests = {"train": content_hash(train_rows), "heldout": content_hash(val_rows)}

    metrics: list[dict] = []
    evals: list[dict] = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                metrics.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                             if isinstance(v, (int, float))}})

    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    hooks = task_hooks(job, tok)  # the smoke task's phases and environment (trainer and held-out evaluation)
    held = val_rows[: ev.n_val]
    cb_eval = PeriodicEval(tok, [r["prompt"] for r in held], [r["answer"] for r in held], score=score,
                           every_steps=ev.every_steps, temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                           seed=seed, sink=evals.append, environment=hooks.get("environment"))
    trl_kwargs = dict(job["trl"])
    args = GRPOConfig(output_dir=str(out_dir / "trainer"), seed=seed, data_seed=seed, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      bf16=trl_kwargs.pop("bf16", False), gradient_checkpointing=trl_kwargs.pop("gradient_checkpointing", False),
                      disable_tqdm=False, **trl_kwargs)
    trainer = HarnessGRPOTrainer(model=model, reward_funcs=[reward_fn], args=args,
                                 train_dataset=Dataset.from_list(train_rows), processing_class=tok,
                                 callbacks=[Recorder(), cb_eval], method=get_method(method),
                                 hparams=job["hparams"], method_seed=seed, **hooks)
    trainer.train()
    if save_model:
        # the final policy, for the eval jobs (held-out set and the tier's benchmarks); written atomically
        from harness.results import atomic_dir

        with atomic_dir(out_dir / "model") as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
    wall = time.time() - t_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "kind": "train_result", "schema_version": 1, "job": job, **provenance(),
        "trl_args_digest": content_hash(args.to_dict()), "dataset_digests": digests,
        "metrics": metrics, "heldout": evals, "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    path = atomic_write_json(out_dir / "result.json", result, hashed=True)
    if mlflow_uri:
        try:
            from harness.track import log_job

            rid = log_job(uri=mlflow_uri, job=job, trl_args=args.to_dict(), metrics=metrics, evals=evals,
                          artifacts=[path, out_dir / "metrics.jsonl"], dataset_digests=digests,
                          tags={"job_key": job["job_key"], "tier": tier, "method": method, "seed": seed,
                                "config_hash": job["config_hash"], "git_commit": result["git_commit"]})
            result["mlflow_run_id"], result["mlflow_experiment_id"] = rid
        except Exception as e:  # tracking must never lose results
            result["tracking_error"] = f"{type(e).__name__}: {e}"
            print(f"warning: MLflow tracking failed ({result['tracking_error']}); results are in {path}",
                  file=sys.stderr)
        atomic_write_json(out_dir / "result.json", result, hashed=True)
    return result


def main_train(a) -> int:
    try:
        r = run_job(load_job(a.job), model_dir=Path(a.model_dir), out_dir=Path(a.out), data_dir=Path(a.data_dir),
                    mlflow_uri=a.mlflow_uri, threads=a.threads)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = r["heldout"][-1] if r["heldout"] else {}
    j = r["job"]
    print(f"done {j['tier']}/{j['method']}/{j['job_key']}/seed{j['seed']}: {r['wall_seconds']} s, peak {r['peak_rss_mb']} MB, "
          f"held-out sampled acc {last.get('sampled_acc')}, entropy {last.get('entropy')}")
    return 0
