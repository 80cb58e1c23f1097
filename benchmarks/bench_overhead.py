"""Per-step cost of every registered method against the harness's ``grpo`` and a vanilla TRL ``GRPOTrainer``.

    python benchmarks/bench_overhead.py [--steps 40] [--repeats 3] [--methods a,b,...] [--model-dir DIR]
                                        [--tier smoke|smoke-reasoning] [--out benchmarks/overhead.json] [--no-vanilla]

Every method trains ``--steps`` optimizer steps at its card's ``--tier`` settings (default ``smoke``: the addition
task; ``smoke-reasoning`` for methods that need chains, phases or the calculator; ``smoke-agent`` for the agent
methods, multi-turn episodes of the household game) on the same pre-trained smoke model of that tier (pre-trained
from the ``grpo`` job's model/pretrain/data settings when ``--model-dir`` lacks one), in this process, ``--threads``
torch threads, with the task's hooks (phases, tool environment, episode rollout) as the DAG's job passes them. ``vanilla_trl`` is plain ``trl.GRPOTrainer`` (no harness subclass) with
the ``grpo`` job's ``GRPOConfig``, model, data and reward. Repeats are interleaved: each repeat runs every method once
(round robin, the order rotated by one per repeat), so machine noise hits all methods alike. Per run the figure is the
mean TRL ``step_time`` (seconds per optimizer step, generation included) after ``--warmup`` steps, and the completion
tokens sampled per generation batch: a method's own ``<paper>/tokens_generated`` metric where it logs one (rollout
methods that branch, re-sample or discard), else TRL's ``completions/mean_length`` times the batch's completions.

Writes the data to ``--out`` (machine, date, commit, steps, repeats, torch threads, s/step per repeat, limit per
method; ``skipped``: each method not measured, with why: another trainer, another task than the baseline's, no job at
``--tier``, an upstream input missing, or a failure to train here) and prints the table. Methods with upstream inputs
(one-shot RLVR's ranking, Implicit PRM's model) take them from ``--work-dir``, a DAG work dir that made them. The README's overhead table is generated from that file by ``harness readme``.
Limits (x ``grpo``): 1.10 for reward-level methods (issue 12), 1.15 for mask/weight methods (loss/advantage; issue 4),
1.5 for methods that need full-vocabulary logits (issue 4); rollout- and data-level methods generate more by design
and report their figure without a limit (issues 12-13).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import git_commit, machine  # noqa: E402  (benchmarks/machine.py)

VANILLA = "vanilla_trl"
ROOT = Path(__file__).resolve().parents[1]


def harness_api() -> SimpleNamespace:
    """The harness entry points used here. The fallback is the flat layout before the package move (commit 32bf990),
    so the same script measures both sides of that move (issue 9)."""
    try:
        from harness.data.load import load_model_and_data
        from harness.methods.registry import all_methods, get_method
        from harness.plan import resolve_job
        from harness.train.trainer import HarnessGRPOTrainer
    except ImportError:
        from harness.config import resolve_job
        from harness.registry import all_methods, get_method
        from harness.train import _load_model_and_data as load_model_and_data
        from harness.trainer import HarnessGRPOTrainer
    try:
        from harness.train.job import task_hooks
    except ImportError:  # before the task hooks (issues 11-14)
        task_hooks = None
    import harness
    from harness.config import list_papers, load_card

    return SimpleNamespace(root=Path(harness.__file__).resolve().parents[1], load_model_and_data=load_model_and_data,
                           all_methods=all_methods, get_method=get_method, resolve_job=resolve_job,
                           HarnessGRPOTrainer=HarnessGRPOTrainer, list_papers=list_papers, load_card=load_card,
                           task_hooks=task_hooks)


def pretrain_base(api: SimpleNamespace, model_dir: Path, job: dict) -> None:
    """The tier's base model, from the ``grpo`` job's settings (every method of a tier starts from it)."""
    try:
        from harness.train.pretrain import pretrain
    except ImportError:
        from harness.smoke import pretrain
    import inspect

    card = api.load_card("entropy_mechanism")["tiers"]["smoke"]
    if "pretrain_cfg" in inspect.signature(pretrain).parameters:  # since issue 11: the task comes from data
        pretrain(model_dir, job["model"], job["pretrain"], job["data"], log=lambda *a, **k: None)
    else:  # older checkouts (side-by-side comparisons)
        pretrain(model_dir, {**card["model"], **card["pretrain"]}, card["data"]["split_seed"], card["data"]["n_val"],
                 log=lambda *a, **k: None)


def smoke_job(api: SimpleNamespace, method: str, papers: dict[str, str], tier: str = "smoke") -> dict:
    """The method's job at ``tier`` from its card (TRL baselines without a card: the entropy_mechanism grpo job with
    the method's TRL settings)."""
    if method in papers:
        return api.resolve_job(papers[method], tier, method, 42)
    job = api.resolve_job("entropy_mechanism", tier, "grpo", 42)
    spec = api.get_method(method)
    hp = spec.resolve()
    return {**job, "method": method, "hparams": hp,
            "trl": {**job["trl"], **spec.trl_overrides, **(hp if spec.point == "config" else {})}}


def with_upstream(job: dict, work_dir: str | None) -> str | None:
    """Give a job its upstream inputs from ``work_dir`` (the hyperparameters of those names, as
    ``harness.train.job.run_job`` sets them); the reason it cannot run when one is missing, else None."""
    for name, spec in job["upstream"].items():
        if work_dir is None:
            return f"needs an upstream input ({name}: {spec['path']}): pass --work-dir of a DAG run that made it"
        path = Path(work_dir) / spec["path"]
        if not path.exists():
            return f"upstream input {name} missing: {path} (made by the DAG's {spec['kind']} rule)"
        job["hparams"] = {**job["hparams"], name: str(path.resolve())}
    return None


def not_comparable(spec, job: dict, base_job: dict) -> str | None:
    """Why a method's per-step time is not comparable with the ``grpo`` run of this benchmark (else None): another
    trainer (no GRPO step), or another task than the baseline's (other prompts, another base model)."""
    trainer = getattr(spec, "trainer", "grpo") if spec is not None else "grpo"
    if trainer != "grpo":
        return f"trained with TRL's {trainer.upper()}Trainer: no GRPO step to compare"
    task, base_task = (job.get("data") or {}).get("task"), (base_job.get("data") or {}).get("task")
    if task != base_task:
        return f"its task is {task!r}, the grpo baseline's {base_task!r} (another base model)"
    return None


def run_once(api: SimpleNamespace, job: dict, *, vanilla: bool, model_dir: Path, tmp: Path, steps: int,
             warmup: int) -> tuple[float, float | None]:
    """(mean seconds per optimizer step, mean completion tokens sampled per generation batch) of one training run
    (the first ``warmup`` steps dropped; see the module docstring for the token count)."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    set_seed(int(job["seed"]))
    model, tok, train_rows, _val, reward_fn, _score = api.load_model_and_data(job, model_dir, Path("."))
    times: list[float] = []
    tokens: list[float] = []
    per_batch = int(job["trl"]["per_device_train_batch_size"]) * int(job["trl"].get("steps_per_generation") or 1)

    class StepTimes(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "step_time" in logs:
                times.append(float(logs["step_time"]))
                # a method's own per-update count; not tree/tokens_generated (branching rollouts: a mean per leaf)
                own = [v for k, v in logs.items() if k.endswith("/tokens_generated") and not k.startswith("tree/")]
                if own:
                    tokens.append(float(own[0]))
                elif "completions/mean_length" in logs:
                    tokens.append(float(logs["completions/mean_length"]) * per_batch)

    trl_kwargs = {**job["trl"], "max_steps": steps}
    # as harness.train.job.run_job builds it (no periodic eval: it is switched off in the benchmark)
    args = GRPOConfig(output_dir=str(tmp / "trainer"), seed=int(job["seed"]), data_seed=int(job["seed"]),
                      logging_steps=1, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      bf16=trl_kwargs.pop("bf16", False),
                      gradient_checkpointing=trl_kwargs.pop("gradient_checkpointing", False),
                      disable_tqdm=True, **trl_kwargs)
    common = dict(model=model, reward_funcs=[reward_fn], args=args, train_dataset=Dataset.from_list(train_rows),
                  processing_class=tok, callbacks=[StepTimes()])
    if vanilla:
        trainer = GRPOTrainer(**common)
    else:
        # the task's phases, tool environment and episode rollout, as the DAG's job passes them (none for addition)
        hooks = api.task_hooks(job, tok, train_rows) if api.task_hooks else {}
        trainer = api.HarnessGRPOTrainer(**common, method=api.get_method(job["method"]), hparams=job["hparams"],
                                         method_seed=int(job["seed"]), **hooks)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print every log dict
    trainer.train()
    if len(times) <= warmup:
        raise RuntimeError(f"{job['method']}: {len(times)} step times logged, need more than --warmup {warmup}")
    # means: only every steps_per_generation-th step generates (TRL logs the last generation's lengths every step)
    return statistics.fmean(times[warmup:]), (statistics.fmean(tokens[warmup:]) if len(tokens) > warmup else None)


def command_line(argv: list[str]) -> str:
    """The command as a shell would take it, without ``--note`` (the README shows the note on its own)."""
    import shlex

    args, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--note":
            skip = True
        elif not x.startswith("--note="):
            args.append(x)
    return shlex.join(["python", "benchmarks/bench_overhead.py", *args])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (each runs every method once)")
    ap.add_argument("--warmup", type=int, default=4, help="steps dropped at the start of each run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--tier", default="smoke", help="the cards' tier whose settings each method runs (smoke, "
                    "smoke-reasoning, smoke-agent: episodes of the household game; with --no-vanilla)")
    ap.add_argument("--no-vanilla", action="store_true", help=f"skip the plain TRL GRPOTrainer ({VANILLA})")
    ap.add_argument("--note", default=None, help="why this run was made (shown above its table in the README)")
    ap.add_argument("--baseline-card", default="entropy_mechanism",
                    help="the card whose grpo job (at --tier) is the baseline, its task and base model every method's "
                         "(e.g. light_if: the instruct task; nous: spec_dialogue); methods of another task are skipped")
    ap.add_argument("--model-dir", default=None,
                    help="pre-trained smoke model (pre-trained there when missing; default: a temporary one)")
    ap.add_argument("--work-dir", default=None,
                    help="a DAG work dir holding the jobs' upstream inputs (upstream/<kind>/<key>/...: a ranking, a "
                         "PRM): a method that needs one gets its path there, as `harness train` gives it")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "overhead.json"),
                    help="JSON the README table is generated from ('' to write none)")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)
    api = harness_api()
    registered = api.all_methods()
    methods = a.methods.split(",") if a.methods else ["grpo"] + [m for m in registered if m != "grpo"]
    # each method's job from a card that has --tier (the agent cards have only smoke-agent); the grpo baseline from
    # --baseline-card where it has the tier (entropy_mechanism: every smoke run of this benchmark), else the first card
    papers: dict[str, str] = {}
    without_tier: dict[str, str] = {}
    for p in api.list_papers():
        card = api.load_card(p)
        for m in card["methods"]:
            (papers if a.tier in card.get("tiers", {}) else without_tier).setdefault(m, p)
    if a.tier in api.load_card(a.baseline_card).get("tiers", {}):
        papers["grpo"] = a.baseline_card
    papers = {**without_tier, **papers}
    base_job = smoke_job(api, "grpo", papers, a.tier)
    jobs, skipped = {}, {}
    for m in methods:
        try:
            job = smoke_job(api, m, papers, a.tier)
        except Exception as e:  # e.g. a card without this tier (the agent cards: smoke-agent)
            skipped[m] = f"no {a.tier} job: {e}"
            continue
        if job.get("upstream"):
            missing = with_upstream(job, a.work_dir)
            if missing:
                skipped[m] = missing
                continue
        reason = not_comparable(registered.get(m), job, base_job)
        if reason:
            skipped[m] = reason
        else:
            jobs[m] = job
    if not a.no_vanilla:
        jobs[VANILLA] = base_job
    names = list(jobs)

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    model_dir = Path(a.model_dir) if a.model_dir else tmp / "base"
    if not (model_dir / "config.json").exists():
        pretrain_base(api, model_dir, base_job)
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, list[float | None]] = {n: [] for n in names}
    order = []
    t0 = time.time()
    for r in range(a.repeats):
        k = r % len(names)
        order.append(names[k:] + names[:k])
        for n in order[-1]:
            if n in skipped:
                continue
            try:
                t, tok = run_once(api, jobs[n], vanilla=n == VANILLA, model_dir=model_dir, tmp=tmp / n,
                                  steps=a.steps, warmup=a.warmup)
            except Exception as e:  # a method that cannot train here (e.g. needs an upstream file): named, not hidden
                if n in ("grpo", VANILLA):
                    raise
                skipped[n] = f"failed to train: {type(e).__name__}: {str(e)[:200]}"
                print(f"repeat {r + 1}/{a.repeats} {n:<18} skipped ({skipped[n]})", file=sys.stderr, flush=True)
                continue
            times[n].append(t)
            tokens[n].append(tok)
            print(f"repeat {r + 1}/{a.repeats} {n:<18} {t:.4f} s/step"
                  + (f", {tok:.0f} completion tokens/update" if tok is not None else ""), file=sys.stderr, flush=True)

    def limit(n: str) -> float | None:
        if n in ("grpo", VANILLA):
            return None
        spec = registered[n]
        if {"logits", "old_logits"} & set(spec.needs):
            return 1.5
        if {"rollout", "data"} & set(spec.hooks):
            return None  # generates more by design: the figure is reported, with its tokens per update
        return 1.10 if set(spec.hooks) == {"reward"} else 1.15

    data = {
        "kind": "overhead_benchmark", "schema_version": 1,
        "command": command_line(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": git_commit(api.root),
        "machine": {**machine(), "loadavg_1min_start": round(load_start[0], 2),
                    "loadavg_1min_end": round(os.getloadavg()[0], 2)},
        "settings": f"{a.tier} tier of each method's card (TRL baselines without a card: entropy_mechanism's)",
        "tier": a.tier,
        "steps": a.steps, "warmup_steps": a.warmup, "repeats": a.repeats, "torch_threads": a.threads,
        "wall_seconds": round(time.time() - t0, 1), "baseline": "grpo", "reference": VANILLA, "order": order,
        **({"note": a.note} if a.note else {}),
        "methods": {n: {"s_per_step": [round(t, 5) for t in times[n]], "limit": limit(n),
                        "full_vocabulary": limit(n) == 1.5,
                        "tokens_per_update": [None if t is None else round(t, 1) for t in tokens[n]]}
                    for n in names if n not in skipped},
        "skipped": skipped,
    }
    if a.out:
        Path(a.out).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {a.out}", file=sys.stderr)
    try:
        from harness.report.status import overhead_table
    except ImportError:  # the layout before the package move: the JSON only
        print(json.dumps(data["methods"], indent=1))
    else:
        print(overhead_table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
