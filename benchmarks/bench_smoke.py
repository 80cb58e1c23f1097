"""Benchmark: wall time and peak memory of the default smoke replication (`snakemake --cores 2`).

Runs the DAG in a fresh work directory (default: a temporary one), samples the RSS of every process of
the run every 0.2 s, and prints the wall time, the peak RSS of any single job process, and how many distinct
training jobs ran for how many (card, method, seed) requests.
    python benchmarks/bench_smoke.py [--work-dir DIR] [--keep] [-- extra snakemake args]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def requested_jobs(extra: list[str]) -> int:
    """How many (card, method, seed) training jobs the cards of the run ask for (before content keying)."""
    from harness.config import list_papers, load_card
    from harness.plan import jobs

    cfg = dict(x.split("=", 1) for x in extra if "=" in x)
    tier = cfg.get("tier", "smoke")
    paper = cfg.get("paper", "entropy_mechanism")
    papers = [p for p in list_papers() if tier in load_card(p)["tiers"]] if paper == "all" else paper.split(",")
    return sum(len(jobs({"paper": p, "tier": tier})) for p in papers)


def step_profile(results: list[Path]) -> str:
    """Mean optimizer-step time, and the share of it spent generating: TRL generates on the first step of every
    ``steps_per_generation`` (the others only update), so generation = generating step - updating step."""
    gen, upd = [], []
    for res in results:
        r = json.loads(res.read_text())
        spg = int(r["job"]["trl"].get("steps_per_generation") or 1)
        times = [(m["step"], m["step_time"]) for m in r["metrics"] if "step_time" in m]
        for step, t in times[1:]:  # the first step also warms up
            (gen if (step - 1) % spg == 0 else upd).append(t)
    if not gen:
        return "step profile: no step times"
    g, u = sum(gen) / len(gen), (sum(upd) / len(upd) if upd else 0.0)
    if not upd:
        return f"step profile: {g:.2f} s per step (every step generates)"
    spg_mean = (len(gen) + len(upd)) / len(gen)
    per_step = (g + (spg_mean - 1) * u) / spg_mean
    share = (g - u) / spg_mean / per_step
    return (f"step profile: {per_step:.2f} s per optimizer step on average; generating steps {g:.2f} s, updating "
            f"steps {u:.2f} s: generation {100 * share:.0f} %, update {100 - 100 * share:.0f} % of training time")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="bench-smoke-"))
    cmd = ["snakemake", "--cores", str(a.cores), "--config", f"work_dir={work}", *a.extra]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    parent = psutil.Process(proc.pid)
    peak: dict[str, float] = {}
    while proc.poll() is None:
        try:
            for p in parent.children(recursive=True):
                try:
                    cmdline = " ".join(p.cmdline())
                    if "harness" in cmdline:
                        rss = p.memory_info().rss / 2**20
                        key = " ".join(cmdline.split()[1:4])
                        peak[key] = max(peak.get(key, 0.0), rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.time() - t0
    print(f"\nsnakemake exit code: {proc.returncode}")
    print(f"wall time: {wall:.1f} s ({wall / 60:.2f} min) on {a.cores} cores")
    if peak:
        print(f"peak RSS of any job process: {max(peak.values()):.0f} MiB (sampled every 0.2 s)")
    results = sorted(work.glob("jobs/*/*/*/seed*/result.json"))
    for res in results:
        r = json.loads(res.read_text())
        print(f"  {r['job']['method']:>14} {r['job']['job_key']} seed {r['job']['seed']:>3}: "
              f"{r['wall_seconds']:6.1f} s, ru_maxrss {r['peak_rss_mb']:.0f} MiB")
    print(step_profile(results))
    asked = requested_jobs(a.extra)
    print(f"training jobs: {len(results)} distinct, for {asked} (card, method, seed) requests "
          f"(identical resolved jobs train once)")
    if not a.keep and a.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
