"""Cost of DLER's dynamic sampling (refill of zero-variance groups) per training step, against GRPO, side by side.

    python benchmarks/bench_dler_sampling.py [--tier smoke-reasoning] [--steps 6] [--repeats 2] [--model-dir DIR]
                                             [--full-model] [--threads 1] [--out FILE.json]

Both methods train ``--steps`` optimizer steps with the dler card's settings of ``--tier`` (the same base model, data
and seed; interleaved repeats, the order rotated by one per repeat). By default the base model is the tiny test model
(hidden 32, one layer, 40 pre-training steps on the tier's task: seconds), which answers few prompts, so groups of
equal rewards, and with them refills, are common; ``--full-model`` pre-trains the tier's own model instead (minutes to
tens of minutes) and ``--model-dir`` reuses a pre-trained one (e.g. a pinned smoke base model).

Per method and run: seconds per optimizer step (TRL ``step_time``), seconds per generation step spent generating and
scoring (``_score_batch``: every round of a refill included), completions generated per generation step, and for
dler the refill statistics it logs (``dler/resample_rounds``, ``dler/extra_generations``, ``dler/unfilled_frac``,
``dler/frac_groups_dropped``). Prints a table (and writes the numbers to ``--out`` when given). Keep runs short:
this is a cost probe, not a training run.
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

TINY_MODEL = {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
METHODS = ("grpo", "dler")
DLER_KEYS = ("dler/resample_rounds", "dler/extra_generations", "dler/unfilled_frac", "dler/frac_groups_dropped")


def base_model(job: dict, model_dir: Path, full: bool) -> None:
    from harness.train.pretrain import pretrain

    model = job["model"] if full else TINY_MODEL
    pre = job["pretrain"] if full else {**job["pretrain"], "steps": 40}
    pretrain(model_dir, model, pre, job["data"], log=lambda *a, **k: None)


def run_once(job: dict, model_dir: Path, tmp: Path, steps: int) -> dict:
    """One short training run; per-step and per-generation costs."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback, set_seed
    from trl import GRPOConfig

    from harness.data.load import load_model_and_data
    from harness.methods.registry import get_method
    from harness.train.job import task_hooks
    from harness.train.trainer import HarnessGRPOTrainer

    set_seed(int(job["seed"]))
    model, tok, train_rows, _val, reward_fn, _score = load_model_and_data(job, model_dir, Path("."))
    rows: list[dict] = []

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "step_time" in logs:
                rows.append(dict(logs))

    trl_kwargs = {**job["trl"], "max_steps": steps}
    args = GRPOConfig(output_dir=str(tmp / "trainer"), seed=int(job["seed"]), data_seed=int(job["seed"]),
                      logging_steps=1, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      bf16=trl_kwargs.pop("bf16", False),
                      gradient_checkpointing=trl_kwargs.pop("gradient_checkpointing", False), disable_tqdm=True,
                      **trl_kwargs)
    trainer = HarnessGRPOTrainer(model=model, reward_funcs=[reward_fn], args=args,
                                 train_dataset=Dataset.from_list(train_rows), processing_class=tok, callbacks=[Logs()],
                                 method=get_method(job["method"]), hparams=job["hparams"],
                                 method_seed=int(job["seed"]), **task_hooks(job, tok))
    trainer.remove_callback(PrinterCallback)
    gen = {"calls": 0, "seconds": 0.0, "completions": 0, "outer": 0}
    score, outer = trainer._score_batch, trainer._generate_and_score_completions

    def timed_score(inputs):
        t = time.perf_counter()
        out = score(inputs)
        gen["seconds"] += time.perf_counter() - t
        gen["calls"] += 1
        gen["completions"] += len(inputs)
        return out

    def counted(inputs):
        if trainer.model.training:
            gen["outer"] += 1
        return outer(inputs)

    trainer._score_batch, trainer._generate_and_score_completions = timed_score, counted
    trainer.train()
    n_gen = max(gen["outer"], 1)
    out = {"s_per_step": statistics.fmean(float(r["step_time"]) for r in rows),
           "generation_steps": gen["outer"], "gen_s_per_generation_step": gen["seconds"] / n_gen,
           "completions_per_generation_step": gen["completions"] / n_gen,
           "batches_per_generation_step": gen["calls"] / n_gen}
    for k in DLER_KEYS:
        vals = [float(r[k]) for r in rows if k in r]
        if vals:
            out[k] = statistics.fmean(vals)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tier", default="smoke-reasoning", help="tier of the dler card whose settings are used")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (keep it small)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--full-model", action="store_true", help="pre-train the tier's own model (slow)")
    ap.add_argument("--model-dir", default=None, help="pre-trained base model to use (pre-trained there if missing)")
    ap.add_argument("--out", default="", help="JSON file for the numbers ('' : print only)")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import transformers

    from harness.plan import resolve_job

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(a.threads)
    jobs = {m: resolve_job("dler", a.tier, m, a.seed) for m in METHODS}
    if not a.full_model:
        jobs = {m: {**j, "model": TINY_MODEL} for m, j in jobs.items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-dler-"))
    model_dir = Path(a.model_dir) if a.model_dir else tmp / "base"
    if not (model_dir / "config.json").exists():
        t = time.time()
        base_model(jobs["grpo"], model_dir, a.full_model)
        print(f"pre-trained the base model in {time.time() - t:.0f} s", file=sys.stderr)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for r in range(a.repeats):
        order = METHODS[r % 2:] + METHODS[:r % 2]
        for m in order:
            runs[m].append(run_once(jobs[m], model_dir, tmp / f"{m}{r}", a.steps))
            print(f"repeat {r + 1}/{a.repeats} {m}: {runs[m][-1]['s_per_step']:.3f} s/step", file=sys.stderr)

    def mean(m, k):
        vals = [x[k] for x in runs[m] if k in x]
        return statistics.fmean(vals) if vals else float("nan")

    keys = ["s_per_step", "gen_s_per_generation_step", "completions_per_generation_step",
            "batches_per_generation_step", *DLER_KEYS]
    label = f"model {a.model_dir}" if a.model_dir else ("tier model" if a.full_model else "tiny model")
    print(f"\n{a.tier}, {label}, {a.steps} steps x {a.repeats} repeats, {a.threads} thread(s)")
    print(f"{'':38} {'grpo':>10} {'dler':>10} {'dler/grpo':>10}")
    for k in keys:
        g, d = mean("grpo", k), mean("dler", k)
        ratio = d / g if g == g and g else float("nan")
        print(f"{k:38} {g:10.3f} {d:10.3f} {ratio:10.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"kind": "dler_sampling_benchmark", "tier": a.tier, "steps": a.steps,
                                           "repeats": a.repeats, "threads": a.threads, "full_model": a.full_model,
                                           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
