"""Claim checks of SIREN (arXiv 2509.25133), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("siren_anchor_tracking")
def siren_anchor_tracking(results, method, max_rel_dev, last_fraction):
    """Per seed: over the last ``last_fraction`` of the logged steps, |mean(siren/masked_topp_entropy) - anchor| /
    anchor <= ``max_rel_dev``; reproduced when every seed passes (>= 2 seeds)."""
    import numpy as np

    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        rows = [m for m in r["metrics"] if "siren/masked_topp_entropy" in m and "siren/anchor" in m]
        if not rows:
            continue
        cut = rows[0]["step"] + (1 - last_fraction) * (rows[-1]["step"] - rows[0]["step"])
        late = [m for m in rows if m["step"] >= cut]
        h = float(np.mean([m["siren/masked_topp_entropy"] for m in late]))
        a = float(late[-1]["siren/anchor"])
        dev = abs(h - a) / a if a else float("inf")
        per_seed[r["job"]["seed"]] = {"anchor": a, "late_masked_entropy": h, "rel_dev": dev,
                                      "first_masked_entropy": rows[0]["siren/masked_topp_entropy"],
                                      "ok": bool(dev <= max_rel_dev)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging siren/masked_topp_entropy"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "max_rel_dev": max_rel_dev}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers
