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
from harness.results import atomic_write_json, content_hash, provenance
from harness.train.outputs import write_result


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


def task_hooks(job: dict, tok, train_rows: list[dict] | None = None, data_dir: str | Path | None = None) -> dict:
    """The smoke task's per-token phases and environment, and (tasks that play episodes: the smoke household, the
    real alfworld task over ``data_dir``) the episode rollout over ``train_rows``' games, as trainer keyword
    arguments (none for other tasks)."""
    import functools

    from harness.data.load import episodes_of

    task = _smoke_task_of(job)
    out = {}
    if task is not None and task.phases is not None:
        out["phase_fn"] = functools.partial(task.phases, tok)
    if task is not None and task.environment is not None:
        out["environment"] = task.environment
    spec = episodes_of(job, data_dir)
    if spec is not None:
        from harness.envs.agent import TEMPLATES
        from harness.train.episodes import make_rollout_func

        ids = [r["prompt"] for r in train_rows or []]
        if not ids:
            raise ConfigError(f"task {job['data']['task']!r} plays episodes: task_hooks needs the training rows "
                              "(game ids)")
        out["rollout_func"] = make_rollout_func(
            lambda: spec.env(spec.train_split, ids), max_turns=spec.max_turns,
            max_new_tokens_per_turn=spec.max_new_tokens_per_turn, invalid_penalty=spec.invalid_penalty,
            template=TEMPLATES[spec.template], max_episode_tokens=spec.max_episode_tokens)
        from harness.evaluate.branching import EpisodeSettings  # issue 14: episodes a method plays itself (ARPO)

        out["episodes"] = EpisodeSettings(lambda: spec.env(spec.train_split, ids), TEMPLATES[spec.template],
                                          spec.max_turns, spec.max_new_tokens_per_turn, spec.max_episode_tokens,
                                          spec.invalid_penalty)
    return out


def periodic_eval(job: dict, tok, held: list[dict], ev, *, seed: int, score, sink, hooks: dict,
                  data_dir: str | Path | None = None):
    """The held-out evaluation callback of a GRPO job: :class:`PeriodicEval` (prompts and answers), or
    :class:`EpisodeEval` for a task that plays episodes (rows are game ids)."""
    from harness.data.load import episodes_of
    from harness.train.callbacks import EpisodeEval, PeriodicEval

    spec = episodes_of(job, data_dir)
    if spec is not None:
        return EpisodeEval(tok, spec, [r["prompt"] for r in held], every_steps=ev.every_steps,
                           temperature=ev.temperature, seed=seed, sink=sink)
    return PeriodicEval(tok, [r["prompt"] for r in held], [r["answer"] for r in held], score=score,
                        every_steps=ev.every_steps, temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                        seed=seed, sink=sink, environment=hooks.get("environment"))


def _smoke_task_of(job: dict):
    if job["model"]["kind"] != "smoke":
        return None
    from harness.config.tiers import DataSpec
    from harness.data.smoke_tasks import smoke_task

    return smoke_task(parse_setting(DataSpec, job["data"], "job data").task)


def upstream_paths(job: dict, job_file: str | Path, overrides: dict | None = None) -> dict[str, Path]:
    """Absolute paths of a job's upstream inputs (``job["upstream"]``, :mod:`harness.plan`): each artifact's path is
    relative to the work dir, which is the job file's folder minus the job's own directory (``jobs/<tier>/...``).
    ``overrides`` (name -> path, ``harness train --upstream``) take precedence; a missing artifact is a ConfigError."""
    overrides = {k: Path(v) for k, v in (overrides or {}).items()}
    specs = job.get("upstream") or {}
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise ConfigError(f"--upstream {unknown[0]}: the job has no upstream input of that name; valid: "
                          f"{', '.join(specs) or '(none)'}")
    out = {}
    here = Path(job_file).resolve().parent
    # harness.plan.job_dir: <work dir>/{jobs,recorded}/<tier>/<method>/<job_key>/seed<seed>/job.json
    rel = (job["tier"], job["method"], job["job_key"], f"seed{job['seed']}")
    for name, spec in specs.items():
        if name in overrides:
            path = overrides[name]
        elif here.parts[-4:] == rel and here.parents[3].name in ("jobs", "recorded"):
            path = here.parents[4] / spec["path"]
        else:
            raise ConfigError(f"{job_file}: not in the work dir layout (jobs/{'/'.join(rel)}/job.json): pass "
                              f"--upstream {name}=<path of {spec['path']}>")
        if not path.exists():
            raise ConfigError(f"upstream input {name!r} of the job: missing {path} (produced by the DAG's "
                              f"{spec['kind']} rule)")
        out[name] = path.resolve()
    return out


def _history_rows(job: dict, train_rows: list[dict]) -> list[dict]:
    """A ranking run's training rows: the first ``history.n_train`` rows (null: all), each with its ``row_index``."""
    n = job["history"].get("n_train")
    if n is not None and n > len(train_rows):
        raise ConfigError(f"history n_train {n} exceeds the tier's {len(train_rows)} training rows")
    return [{**r, "row_index": i} for i, r in enumerate(train_rows[:n])]


def run_job(job: dict, *, model_dir: Path, out_dir: Path, data_dir: Path, mlflow_uri: str | None,
            threads: int = 1, save_model: bool = True, upstream: dict[str, Path] | None = None) -> dict:
    """Train one resolved job (``harness.plan.resolve_job``'s dict, as stored in ``job.json``). ``upstream``: the
    absolute paths of its upstream inputs (:func:`upstream_paths`), given to the method as the hyperparameters of
    those names. A job with ``history`` (a ranking run) also writes ``train_history.json``. A job whose method is
    DPO-trained (``Method.trainer == "dpo"``) runs :func:`harness.train.dpo.run_dpo_job` and an SFT-trained one
    (``"sft"``) :func:`harness.train.sft.run_sft_job` (TRL's SFTTrainer on the task's gold chains) instead of the
    GRPO trainer, with the same outputs."""
    from harness.methods.registry import get_method

    trainer = get_method(job["method"]).trainer
    if trainer in ("dpo", "sft"):
        if trainer == "dpo":
            from harness.train.dpo import run_dpo_job as run
        else:
            from harness.train.sft import run_sft_job as run
        return run(job, model_dir=model_dir, out_dir=out_dir, data_dir=data_dir, mlflow_uri=mlflow_uri,
                   threads=threads, save_model=save_model, upstream=upstream)
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    from harness.data.load import load_model_and_data
    from harness.train.callbacks import MetricsRecorder
    from harness.train.monitors import monitors_for_job
    from harness.methods.registry import get_method
    from harness.train.trainer import HarnessGRPOTrainer
    from harness.train.resumable import AttrState
    from harness.train.resume import Checkpointer

    method, seed = job["method"], int(job["seed"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out_dir, job)  # <out_dir>/checkpoints; another job's checkpoint fails here (issue 16)
    t_start = time.time()
    set_seed(seed)
    model, tok, train_rows, val_rows, reward_fn, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    recorder = None
    if job.get("history") is not None:
        from harness.data.selection import HistoryRecorder

        train_rows = _history_rows(job, train_rows)
        recorder = HistoryRecorder(int(job["trl"].get("num_generations", 8)))
    hparams = dict(job["hparams"])
    missing = sorted(set(job.get("upstream") or {}) - set(upstream or {}))
    if missing:
        raise ConfigError(f"job {job['job_key']}: upstream input {missing[0]!r} has no path (harness train finds it "
                          "from the job file's place in the work dir, or --upstream name=path)")
    hparams.update({k: str(v) for k, v in (upstream or {}).items()})
    digests = {"train": content_hash(train_rows), "heldout": content_hash(val_rows)}

    metrics: list[dict] = []
    evals: list[dict] = []

    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    hooks = task_hooks(job, tok, train_rows, data_dir)  # the smoke task's phases, environment; episode rollouts
    cb_eval = periodic_eval(job, tok, val_rows[: ev.n_val], ev, seed=seed, score=score, sink=evals.append,
                            hooks=hooks, data_dir=data_dir)
    cb_metrics = MetricsRecorder(metrics)
    from harness.config.backend import grpo_vllm_args

    # vLLM rollouts (trl.use_vllm) only on a GPU with vllm installed; server mode's URL from $RLVR_VLLM_SERVER_URL
    trl_kwargs = grpo_vllm_args(job["trl"], cuda_available=torch.cuda.is_available(), env=os.environ)
    args = GRPOConfig(output_dir=str(out_dir / "trainer"), seed=seed, data_seed=seed, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      bf16=trl_kwargs.pop("bf16", False), gradient_checkpointing=trl_kwargs.pop("gradient_checkpointing", False),
                      disable_tqdm=False, **trl_kwargs)
    trainer = HarnessGRPOTrainer(model=model, reward_funcs=[reward_fn], args=args,
                                 train_dataset=Dataset.from_list(train_rows), processing_class=tok,
                                 callbacks=[cb_metrics, cb_eval], method=get_method(method),
                                 hparams=hparams, method_seed=seed, history=recorder,
                                 monitors=monitors_for_job(job, tok), **hooks)
    parts = {"metrics": cb_metrics, "heldout": cb_eval}  # restored from the last checkpoint, if any
    if recorder is not None:
        parts["history"] = AttrState(recorder, ("history", "rows"))
    trainer.train(resume_from_checkpoint=ckpt.attach(trainer, **parts))
    if save_model:  # every process (DeepSpeed ZeRO-3 / FSDP gather the weights), the main one writes
        trainer.save_final_policy(out_dir, tok)
    wall = time.time() - t_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "kind": "train_result", "schema_version": 1, "job": job, **provenance(),
        "trl_args_digest": content_hash(args.to_dict()), "dataset_digests": digests,
        "metrics": metrics, "heldout": evals, "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    acc = trainer.accelerator
    if acc.num_processes > 1:  # accelerate launch (harness.plan.launch); one-process results are unchanged
        result["launch"] = {"num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type.value)}
    if not acc.is_main_process:  # the main process writes the job's outputs and tracks the run
        return result
    if recorder is not None:
        result["train_history_digest"] = content_hash(recorder.to_dict())
        atomic_write_json(out_dir / "train_history.json", recorder.to_dict())
    if upstream:
        result["upstream_digests"] = {k: content_hash(Path(p).read_text()) if Path(p).is_file() else None
                                      for k, p in sorted(upstream.items())}
    result = write_result(out_dir, result, trl_args=args.to_dict(), mlflow_uri=mlflow_uri)
    ckpt.clear()  # the results are written: the checkpoints are no longer needed
    return result


def main_train(a) -> int:
    try:
        job = load_job(a.job)
        up = upstream_paths(job, a.job, dict(kv.split("=", 1) for kv in getattr(a, "upstream", None) or []))
        r = run_job(job, model_dir=Path(a.model_dir), out_dir=Path(a.out), data_dir=Path(a.data_dir),
                    mlflow_uri=a.mlflow_uri, threads=a.threads, upstream=up)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = r["heldout"][-1] if r["heldout"] else {}
    j = r["job"]
    print(f"done {j['tier']}/{j['method']}/{j['job_key']}/seed{j['seed']}: {r['wall_seconds']} s, peak {r['peak_rss_mb']} MB, "
          f"held-out sampled acc {last.get('sampled_acc')}, entropy {last.get('entropy')}")
    return 0
