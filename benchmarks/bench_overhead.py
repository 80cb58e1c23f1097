"""Per-step overhead of each method against plain GRPO at the same (smoke-tier) settings, measured in one run.

    python benchmarks/bench_overhead.py [--steps 40] [--methods a,b,...] [--model-dir DIR]

Trains every method for ``--steps`` optimizer steps on the same pre-trained smoke model, one after another in this
process (one thread), and prints the mean TRL ``step_time`` (seconds per optimizer step, generation included)
and the ratio to GRPO. Limits from issue 4: 1.15x for mask/weight methods, 1.5x for full-vocabulary ones.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

FULL_VOCAB = {"siren", "lp_reg"}


def main() -> int:
    import torch

    from harness.data import smoke

    from harness.train import job as train
    from harness.config import list_papers, load_card
    from harness.plan import resolve_job
    from harness.methods.registry import all_methods, get_method

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--model-dir", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    card = load_card("entropy_mechanism")["tiers"]["smoke"]
    model_dir = Path(a.model_dir) if a.model_dir else tmp / "base"
    if not a.model_dir:
        smoke.pretrain(model_dir, {**card["model"], **card["pretrain"]}, card["data"]["split_seed"], card["data"]["n_val"])
    papers = {}
    for p in list_papers():
        for m in load_card(p)["methods"]:
            papers.setdefault(m, p)
    methods = a.methods.split(",") if a.methods else ["grpo"] + [m for m in all_methods() if m != "grpo"]
    rows = {}
    for m in methods:
        paper = papers.get(m)

        def rj(p, t, meth, s, **kw):
            if paper:
                j = resolve_job(paper, "smoke", meth, s, **kw)
            else:  # TRL baselines without a card of their own
                j = resolve_job("entropy_mechanism", "smoke", "grpo", s, **kw)
                spec = get_method(meth)
                j["method"], j["hparams"] = meth, spec.resolve()
                j["trl"].update({**spec.trl_overrides, **j["hparams"]})
            j["eval"] = {**j["eval"], "every_steps": 10**9}
            return j

        train.resolve_job = rj
        r = train.run_job(paper or "entropy_mechanism", "smoke", m, 42, model_dir=model_dir, out_dir=tmp / m,
                          data_dir=Path("."), mlflow_uri=None, trl_overrides={"max_steps": a.steps})
        times = [x["step_time"] for x in r["metrics"] if "step_time" in x][4:]
        rows[m] = statistics.fmean(times)  # mean: half the steps include generation (steps_per_generation=2)
    base = rows.get("grpo")
    print(f"\n{'method':<18}{'s/step':>10}{'x grpo':>9}  limit")
    for m, t in rows.items():
        limit = 1.5 if m in FULL_VOCAB else 1.15
        ratio = t / base if base else float("nan")
        flag = "" if ratio <= limit or m == "grpo" else "  OVER"
        print(f"{m:<18}{t:>10.4f}{ratio:>9.2f}  {limit}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
