"""Claim checks of HAPO (arXiv 2509.16591), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("hapo_metric_range")
def hapo_metric_range(results, method, key, lo, hi):
    """Per seed: the mean of training metric ``key`` over all logged steps lies in [lo, hi] (>= 2 seeds)."""
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        vals = [m[key] for m in r["metrics"] if key in m]
        if vals:
            v = sum(vals) / len(vals)
            per_seed[r["job"]["seed"]] = {"mean": v, "min": min(vals), "max": max(vals), "steps": len(vals),
                                          "ok": bool(lo <= v <= hi)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging {key}"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "key": key, "bounds": [lo, hi]}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers


@check("hapo_rollout_temperature")
def hapo_rollout_temperature(results, method, **_):
    """The per-token temperature is applied (logged factor); the paired constant-T comparison is not implemented."""
    if any("hapo/temperature_factor_mean" in m for r in results if r["job"]["method"] == method for m in r["metrics"]):
        return "inconclusive", {"reason": "temperature factors logged but no comparison implemented"}
    return "not_run", {"reason": "no temperature factor was logged: the rollout hook did not run (vLLM rollouts, or "
                                 "no rollout after the first)"}
