"""Claim checks of DLER (arXiv 2510.15110), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("dler_late_metric_vs_baseline")
def dler_late_metric_vs_baseline(results, method, baseline, key, direction, start_fraction=0.5, margin=0.0):
    """Per seed: the mean of a logged training metric over the steps after ``start_fraction`` of training, method
    minus baseline (same seed), is < -``margin`` (direction "lower") or > ``margin`` ("higher"). Reproduced when
    every paired seed passes (>= 2 seeds); inconclusive when the baseline's window mean is 0 and direction is
    "lower" (nothing to undercut) or no pair logs ``key``."""
    import numpy as np

    if direction not in ("lower", "higher"):
        raise ValueError(f"dler_late_metric_vs_baseline: unknown direction {direction!r}; valid: lower, higher")

    def late_mean(run):
        rows = [m for m in run["metrics"] if key in m]
        if not rows:
            return None
        last = max(m["step"] for m in run["metrics"])
        vals = [m[key] for m in rows if m["step"] > start_fraction * last]
        return float(np.mean(vals)) if vals else None

    by_seed = lambda name: {r["job"]["seed"]: r for r in results if r["job"]["method"] == name}  # noqa: E731
    runs, base = by_seed(method), by_seed(baseline)
    per_seed = {}
    for seed, r in sorted(runs.items()):
        if seed not in base:
            continue
        a, b = late_mean(r), late_mean(base[seed])
        if a is None or b is None:
            continue
        d = a - b
        per_seed[seed] = {"method": a, "baseline": b, "diff": d,
                          "ok": bool(d < -margin if direction == "lower" else d > margin)}
    numbers = {"per_seed": per_seed, "key": key, "direction": direction, "start_fraction": start_fraction,
               "margin": margin}
    if not per_seed:
        return "inconclusive", {**numbers, "reason": f"no paired runs of {method} and {baseline} logging {key}"}
    if not all(v["ok"] for v in per_seed.values()):
        if direction == "lower" and all(v["baseline"] == 0 for v in per_seed.values()):
            return "inconclusive", {**numbers, "reason": f"{baseline} has {key} = 0 in the window"}
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers
