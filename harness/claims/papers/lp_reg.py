"""Claim checks of Lp-Reg (arXiv 2510.03222), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("lp_reg_active")
def lp_reg_active(results, method, min_share_steps):
    """Per seed: share of logged training steps with at least one regularised token >= ``min_share_steps``."""
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        rows = [m["lp_reg/n_selected"] for m in r["metrics"] if "lp_reg/n_selected" in m]
        if rows:
            share = sum(v > 0 for v in rows) / len(rows)
            per_seed[r["job"]["seed"]] = {"share_steps_active": share, "mean_selected": sum(rows) / len(rows),
                                          "ok": bool(share >= min_share_steps)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging lp_reg/n_selected"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "min_share_steps": min_share_steps}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers
