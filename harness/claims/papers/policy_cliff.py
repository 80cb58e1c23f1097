"""Claim checks of The Policy Cliff (arXiv 2507.20150): they read analysis result files only.

An analysis the check reads (``analysis`` param: its name, e.g. ``cliff``, the exact bandit of
:mod:`harness.analyze.cliff`) has ``result.curves``: curve name -> ``{"tau": entropy coefficient (0: no bonus),
"jump_tv": TV distance between the policies at the grid neighbours of eps = 0, "jump_target_rate": the target
rate's change across 0, "max_l1_slope": ..., optional "lipschitz_bound_l1", "within_lipschitz_bound", and for
measured (trained) curves "n_seeds" and "jump_tv_sd", the spread over seeds}``. A sweep of trained policies that
writes curves in this form is judged by the same check: the tiny-LM sweep ``cliff_sweep``
(:mod:`harness.analyze.cliff_sweep`, the check-step rate of each final checkpoint over the reward-weight grid).
"""
from __future__ import annotations

from harness.claims.analyses import one_analysis
from harness.claims.registry import check


@check("policy_cliff_jump")
def policy_cliff_jump(results, jump_min, smooth_max, analysis="cliff", lipschitz=False, min_seeds=None,
                      analyses=None):
    """Reproduced when, in the analysis ``analysis``: every curve without the bonus (tau = 0) jumps across eps = 0
    (``jump_tv >= jump_min``) and every curve with it (tau > 0) does not (``jump_tv <= smooth_max``); with
    ``lipschitz``, each tau > 0 curve's grid slopes also stay within its Lipschitz bound. Not run when the analysis
    is not among the verdict's inputs; inconclusive without both kinds of curve, or with fewer than ``min_seeds``
    seeds behind a measured curve."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return missing
    curves = a["result"]["curves"]
    table = {k: {f: c.get(f) for f in ("tau", "jump_tv", "jump_target_rate", "max_l1_slope", "lipschitz_bound_l1",
                                       "within_lipschitz_bound", "n_seeds", "jump_tv_sd") if f in c}
             for k, c in sorted(curves.items())}
    numbers = {"analysis": analysis, "analysis_hash": a.get("content_hash"), "jump_min": jump_min,
               "smooth_max": smooth_max, "lipschitz": bool(lipschitz), "curves": table}
    flat = [k for k, c in curves.items() if float(c["tau"]) == 0.0]
    bonus = [k for k, c in curves.items() if float(c["tau"]) > 0.0]
    if not flat or not bonus:
        numbers["reason"] = "needs a curve without the bonus (tau = 0) and one with it (tau > 0)"
        return "inconclusive", numbers
    if min_seeds is not None:
        few = [k for k, c in curves.items() if int(c.get("n_seeds") or 0) < int(min_seeds)]
        if few:
            numbers["reason"] = f"fewer than {min_seeds} seeds behind {', '.join(sorted(few))}"
            return "inconclusive", numbers
    jumps = {k: curves[k]["jump_tv"] >= jump_min for k in flat}
    smooth = {k: curves[k]["jump_tv"] <= smooth_max for k in bonus}
    if lipschitz:
        smooth = {k: ok and bool(curves[k].get("within_lipschitz_bound")) for k, ok in smooth.items()}
    numbers["jumps_without_bonus"], numbers["continuous_with_bonus"] = jumps, smooth
    return ("reproduced" if all(jumps.values()) and all(smooth.values()) else "not_reproduced"), numbers
