"""``harness`` verbs about base models: pre-train a smoke model (or restore its pin), resolve a real model, and
measure what a smoke task offers RL on a base model (``harness task-report``)."""
from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError


def _model_spec(a, need: tuple[str, ...]) -> dict:
    """A base model's spec (``models/<key>/spec.json``: what its key hashes) or a resolved job holding it."""
    import json

    try:
        spec = json.loads(Path(a.spec).read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing model spec: {a.spec}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{a.spec}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = [k for k in need if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise ConfigError(f"{a.spec}: not a model spec or job (missing {', '.join(missing)})")
    return spec


def cmd_pretrain(a) -> int:
    import torch

    from harness.train.pretrain import pretrain

    torch.set_num_threads(a.threads)
    job = _model_spec(a, ("model", "pretrain", "data"))
    if job["model"]["kind"] != "smoke":
        raise ConfigError(f"{a.spec}: model kind {job['model']['kind']!r}; pretrain is for 'smoke'")
    if a.pinned_root:
        from harness.train.pretrain import restore_pinned

        src = restore_pinned(job, Path(a.out), Path(a.pinned_root))
        if src is not None:
            print(f"restored the pinned base model {src} into {a.out} (its files' hashes match its MANIFEST.json)")
            return 0
    pretrain(a.out, job["model"], job["pretrain"], job["data"])
    return 0


def cmd_task_report(a) -> int:
    from harness.evaluate.heldout import check_job
    from harness.evaluate.task_report import run_task_report

    # a base model's spec (base-evals/<tier>/<key>/spec.json: model, data, eval) or a resolved job
    r = run_task_report(check_job(a.job), Path(a.model_dir), Path(a.out_dir), k=a.k, n=a.n, threads=a.threads)
    for name, c in r["checks"].items():
        rng = f"[{'' if c['low'] is None else c['low']}, {'' if c['high'] is None else c['high']}]"
        print(f"{'ok  ' if c['ok'] else 'MISS'} {name:<30} {c['value']!s:<22} expected {rng}")
    print(f"task report in {a.out_dir}")
    return 0


def cmd_prepare_model(a) -> int:
    from harness.data.realdata import prepare_model

    print(f"model ready in {prepare_model(_model_spec(a, ('model',))['model'], Path(a.out))}")
    return 0


def cmd_cold_start(a) -> int:
    from harness.train.cold_start import run_cold_start

    r = run_cold_start(_model_spec(a, ("model",))["model"], Path(a.out), Path(a.data_dir), a.threads)["cold_start"]
    print(f"cold start: {r['rows_trained']}/{r['rows_read']} rows trained ({r['skipped'] or 'none'} skipped, "
          f"{r['truncated']} truncated), {r['steps']} steps, {r['wall_seconds']} s -> {a.out}")
    return 0
