"""Benchmark: the cost of portable CPU numerics (harness/config/numerics.py) on this machine.

Trains the same smoke job for a few steps with the portable kernels (AVX2, the default) and with the machine's own
(``RLVR_CPU_NUMERICS=native``), alternating, each in a fresh process. It prints the kernels each used, the mean
seconds per optimizer step and the ratio, and whether the two gave the same per-step metrics (they should not on an
AVX-512 machine). Measure on a quiet machine: both variants run in this one call, so load hits both alike.

    python benchmarks/bench_cpu_numerics.py [--tier smoke-reasoning] [--steps 6] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.config import numerics

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from pathlib import Path
import harness  # applies (or, with RLVR_CPU_NUMERICS=native, skips) the portable kernels first
import torch
from harness.plan import resolve_job
from harness.train.job import run_job
from harness.train.pretrain import pretrain
tier, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
job = resolve_job("entropy_mechanism", tier, "grpo", 1)
job["trl"] = {**job["trl"], "max_steps": steps}
job["eval"] = {**job["eval"], "every_steps": 10 ** 6, "n_val": 8}
pretrain(out / "base", job["model"], {**job["pretrain"], "steps": 20}, job["data"], log=lambda *_: None)
r = run_job(job, model_dir=out / "base", out_dir=out / "job", data_dir=Path(sys.argv[4]), mlflow_uri=None, threads=1)
step = [m["step_time"] for m in r["metrics"] if "step_time" in m]
print(json.dumps({"kernels": torch.backends.cpu.get_cpu_capability(), "step_s": step,
                  "entropy": [m.get("entropy") for m in r["metrics"]]}))
"""


def run_once(mode: str, tier: str, steps: int, data_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    env["RLVR_CPU_NUMERICS"] = mode
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "-c", CHILD, tier, str(steps), d, data_dir], env=env, cwd=ROOT,
                           capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"the {mode} run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="smoke-reasoning")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {"portable": [], "native": []}
    for i in range(a.repeats):
        for mode in ("portable", "native") if i % 2 == 0 else ("native", "portable"):
            print(f"repeat {i + 1}/{a.repeats}: {mode} ...", file=sys.stderr, flush=True)
            runs[mode].append(run_once(mode, a.tier, a.steps, a.data_dir))
    mean = {m: statistics.mean(s for r in rs for s in r["step_s"][1:] or r["step_s"]) for m, rs in runs.items()}
    print(f"{'numerics':<10} {'kernels':<8} {'s/step':>8}")
    for m, rs in runs.items():
        print(f"{m:<10} {rs[0]['kernels']:<8} {mean[m]:8.3f}")
    print(f"portable / native: {mean['portable'] / mean['native']:.3f}x per step "
          f"({a.tier}, {a.steps} steps x {a.repeats} repeats, first step of each run left out)")
    same = runs["portable"][0]["entropy"] == runs["native"][0]["entropy"]
    print(f"same per-step entropy with both: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
