"""Claim checks of AEPO (arXiv 2510.08141), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("aepo_heldout_entropy_near_target")
def aepo_heldout_entropy_near_target(results, method, baseline, target, max_rel_dev, last_evals=5):
    """Per seed: over the last ``last_evals`` held-out evaluations, the method's mean entropy is closer to ``target``
    than the baseline's (same seed) AND within ``max_rel_dev`` x target of it. Reproduced when every paired seed
    passes (>= 2 seeds); inconclusive without a pair."""
    import numpy as np

    if not target > 0 or not max_rel_dev > 0:
        raise ValueError(f"aepo_heldout_entropy_near_target: target and max_rel_dev must be > 0, got {target!r}, "
                         f"{max_rel_dev!r}")
    by_seed = lambda name: {r["job"]["seed"]: r for r in results if r["job"]["method"] == name}  # noqa: E731
    runs, base = by_seed(method), by_seed(baseline)
    per_seed = {}
    for seed, r in sorted(runs.items()):
        if seed not in base or not r.get("heldout") or not base[seed].get("heldout"):
            continue
        h = float(np.mean([e["entropy"] for e in r["heldout"][-last_evals:]]))
        b = float(np.mean([e["entropy"] for e in base[seed]["heldout"][-last_evals:]]))
        dev, dev_b = abs(h - target), abs(b - target)
        per_seed[seed] = {"method": h, "baseline": b, "dev": dev, "baseline_dev": dev_b, "rel_dev": dev / target,
                          "ok": bool(dev < dev_b and dev <= max_rel_dev * target)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired held-out runs of {method} and {baseline}"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "target": target, "max_rel_dev": max_rel_dev}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers
