"""Claim checks of Light-IF (arXiv 2508.03178), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check

DENSE, BINARY = "task/nonzero_adv_groups_dense", "task/nonzero_adv_groups_binary"


@check("light_if_signal_gap")
def light_if_signal_gap(results, method, margin, end_fraction=1.0):
    """Per seed: over the logged training steps up to ``end_fraction`` of the run, the mean share of groups with a
    non-zero advantage under the dense reward (fraction of constraints) minus that under the all-or-nothing reward,
    both measured on the same completions by the instruct task's reward (``task/nonzero_adv_groups_dense`` /
    ``..._binary``), is >= ``margin``. Reproduced when every seed passes (>= 2 seeds)."""
    import numpy as np

    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        rows = [m for m in r["metrics"] if DENSE in m and BINARY in m]
        if not rows:
            continue
        last = max(m["step"] for m in r["metrics"])
        window = [m for m in rows if m["step"] <= end_fraction * last] or rows[:1]
        dense = float(np.mean([m[DENSE] for m in window]))
        binary = float(np.mean([m[BINARY] for m in window]))
        per_seed[r["job"]["seed"]] = {"dense": dense, "binary": binary, "gap": dense - binary,
                                      "n_steps": len(window), "ok": bool(dense - binary >= margin)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging {DENSE} and {BINARY}"}
    numbers = {"per_seed": per_seed, "margin": margin, "end_fraction": end_fraction,
               "mean_gap": float(np.mean([v["gap"] for v in per_seed.values()]))}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers
