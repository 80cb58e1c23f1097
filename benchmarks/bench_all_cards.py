"""Benchmark (from measurements already made): the cost of the all-cards smoke run of one tier, summed from the
wall seconds every pinned job and checkpoint evaluation recorded when it ran.

A full `snakemake --cores 2 --config paper=all tier=<tier>` run takes hours on the 2-core CI-class machine, so this
script reads what each step measured instead of re-running it: per card, the distinct training jobs its verdict
reads (shared jobs counted once overall), their training wall time (`result.json` wall_seconds, which includes the
periodic held-out evaluation), their checkpoint evaluations (`evals/*.json` wall_seconds) and the base model's.
It prints the serial total and the 2-job-parallel estimate (`--cores 2`, one torch thread per job: total / 2).
Pre-training is not counted (pinned base models are restored, not trained). The jobs ran under varying load, so
the figures carry that noise.
    python benchmarks/bench_all_cards.py [--tier smoke-reasoning] [--results-dir results]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", default="smoke-reasoning")
    ap.add_argument("--results-dir", default=str(ROOT / "results"))
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from harness.results.store import replications

    root = Path(a.results_dir)
    by_hash = {}
    for p in sorted((root / "jobs" / a.tier).rglob("result.json")):
        r = json.loads(p.read_text())
        evals = [json.loads(e.read_text()).get("wall_seconds") or 0.0
                 for e in sorted((p.parent / "evals").glob("*.json"))]
        by_hash[r["content_hash"]] = (p.parent, float(r.get("wall_seconds") or 0.0), sum(evals))
    base = sum((json.loads(e.read_text()).get("wall_seconds") or 0.0)
               for e in sorted((root / "base-evals" / a.tier).rglob("*.json")) if e.name != "task_report.json")
    seen: set[str] = set()
    rows = []
    for (paper, tier), rep in replications(root).items():
        if tier != a.tier:
            continue
        mine = [h for h in rep["verdict"][0].get("inputs", []) if h in by_hash]
        new = [h for h in mine if h not in seen]
        seen.update(mine)
        train = sum(by_hash[h][1] for h in new)
        ev = sum(by_hash[h][2] for h in new)
        rows.append((paper, len(mine), len(new), train, ev))
    print("| card | jobs read | jobs first trained here | train min | checkpoint eval min |")
    print("|---|---|---|---|---|")
    for paper, n, k, t, e in rows:
        print(f"| {paper} | {n} | {k} | {t / 60:.1f} | {e / 60:.1f} |")
    total = sum(r[3] + r[4] for r in rows) + base
    print(f"\n{a.tier}: {len(rows)} cards, {len(seen)} distinct jobs; serial {total / 60:.1f} min "
          f"(base-model evaluations {base / 60:.1f} min); --cores 2 estimate {total / 120:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
