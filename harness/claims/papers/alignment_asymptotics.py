"""Claim checks of Asymptotics of Language Model Alignment (arXiv 2404.01730): they read the ``bon_toy`` analysis
(:mod:`harness.analyze.bon_toy`, the memoryless toy in closed form) and the ``reward_kl`` curve file
(:mod:`harness.analyze.reward_kl`: each GRPO checkpoint's KL to the base and reward, with the best-of-N and
KL-optimal rewards at its KL), never torch."""
from __future__ import annotations

from harness.claims.analyses import one_analysis
from harness.claims.registry import check
from harness.claims.stats import t_interval

CURVES = {"bon": "gap_bon", "tilt": "above_optimum"}
MODES = ("within", "not_above")


@check("bon_toy_convergence")
def bon_toy_convergence(results, analysis="bon_toy", max_shrink=0.5, *, analyses=None):
    """The toy's largest per-token reward gap (KL-optimal minus best-of-N at matched per-token KL) falls strictly
    over the lengths, the last length's is at most ``max_shrink`` times the first's, and no best-of-N point lies above
    the optimum: reproduced; otherwise not reproduced."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return missing
    r = a["result"]
    numbers = {"analysis_hash": a.get("content_hash"), "lengths": r["length_order"],
               "max_gap_by_length": r["max_gap_by_length"], "gap_decreasing": r["gap_decreasing"],
               "shrink": r["shrink"], "max_shrink": max_shrink, "never_above_optimum": r["never_above_optimum"]}
    if len(r["length_order"]) < 2:
        numbers["reason"] = "needs at least two lengths"
        return "inconclusive", numbers
    ok = r["gap_decreasing"] and r["shrink"] is not None and r["shrink"] <= max_shrink and r["never_above_optimum"]
    return ("reproduced" if ok else "not_reproduced"), numbers


def _runs(analyses, analysis: str, methods) -> tuple[dict | None, dict[str, list[dict]], tuple[str, dict] | None]:
    """(the ``reward_kl`` analysis, each of ``methods``' checkpoints in seed order, None), or (None, {}, the verdict
    to return) when the analysis or a method's checkpoints are missing."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return None, {}, missing
    runs = a["result"]["runs"].values()
    per = {m: sorted((v for v in runs if v["method"] == m), key=lambda v: v["seed"]) for m in methods}
    absent = [m for m, v in per.items() if not v]
    if absent:
        return None, {}, ("not_run", {"reason": f"no checkpoint of {', '.join(absent)} in the {analysis} analysis"})
    return a, per, None


@check("reward_kl_sweep")
def reward_kl_sweep(results, analysis, methods, min_ratio, min_seeds=2, *, analyses=None):
    """GRPO's KL to the base (mean over seeds) falls strictly as beta rises over ``methods`` (ordered by their
    recorded beta), and the smallest beta's KL is at least ``min_ratio`` times the largest's."""
    a, per, missing = _runs(analyses, analysis, methods)
    if missing:
        return missing
    table = {m: {"beta": v[0]["beta"], "seeds": [x["seed"] for x in v], "kl": sum(x["kl"] for x in v) / len(v),
                 "per_seed": {x["seed"]: x["kl"] for x in v}} for m, v in per.items()}
    order = sorted(table, key=lambda m: table[m]["beta"])
    kls = [table[m]["kl"] for m in order]
    numbers = {"analysis_hash": a.get("content_hash"), "by_beta": {m: table[m] for m in order}, "min_ratio": min_ratio}
    few = [m for m in order if len(table[m]["seeds"]) < min_seeds]
    if few:
        numbers["reason"] = f"fewer than {min_seeds} seeds of {', '.join(few)}"
        return "inconclusive", numbers
    numbers["ratio"] = kls[0] / kls[-1] if kls[-1] > 0 else None
    falling = all(b < a_ for a_, b in zip(kls, kls[1:]))
    ok = falling and (kls[-1] <= 0 or kls[0] / kls[-1] >= min_ratio)
    numbers["strictly_falling"] = falling
    return ("reproduced" if ok else "not_reproduced"), numbers


@check("reward_kl_frontier")
def reward_kl_frontier(results, analysis, curve, methods, tolerance, mode, min_seeds=2, *, analyses=None):
    """Checkpoints against a curve at their own KL. ``curve``: ``bon`` (gap = best-of-N reward minus the run's) or
    ``tilt`` (gap = the run's reward minus the KL-optimal reward: above the optimum). ``mode`` ``not_above``: every
    run's gap <= ``tolerance`` (reproduced), else not reproduced; ``within``: per method the t-interval over seeds of
    the gap inside [-tolerance, +tolerance] for every method (reproduced), wholly outside it for some method (not
    reproduced), else inconclusive."""
    if curve not in CURVES or mode not in MODES:
        raise ValueError(f"reward_kl_frontier: curve must be one of {', '.join(CURVES)} and mode one of "
                         f"{', '.join(MODES)}, got {curve!r}, {mode!r}")
    a, per, missing = _runs(analyses, analysis, methods)
    if missing:
        return missing
    key = CURVES[curve]
    numbers = {"analysis_hash": a.get("content_hash"), "curve": curve, "mode": mode, "tolerance": tolerance,
               "by_method": {m: {"beta": v[0]["beta"], "per_seed": {x["seed"]: {"kl": x["kl"], "reward": x["reward"],
                                                                                 key: x[key]} for x in v}}
                             for m, v in per.items()}}
    few = [m for m, v in per.items() if len(v) < min_seeds]
    if mode == "not_above":
        bad = sorted(f"{m}/seed{x['seed']}" for m, v in per.items() for x in v if x[key] > tolerance)
        numbers["runs_above"] = bad
        if bad:
            return "not_reproduced", numbers
        if few:
            numbers["reason"] = f"fewer than {min_seeds} seeds of {', '.join(few)}"
            return "inconclusive", numbers
        return "reproduced", numbers
    if few:
        numbers["reason"] = f"fewer than {min_seeds} seeds of {', '.join(few)}"
        return "inconclusive", numbers
    inside, outside = [], []
    for m, v in per.items():
        lo, hi = t_interval([x[key] for x in v])
        numbers["by_method"][m].update(mean=sum(x[key] for x in v) / len(v), ci=[lo, hi])
        inside.append(-tolerance <= lo and hi <= tolerance)
        if lo > tolerance or hi < -tolerance:
            outside.append(m)
    numbers["ci_method"] = "t-interval over seeds (95 %)"
    if outside:
        numbers["outside"] = outside
        return "not_reproduced", numbers
    if all(inside):
        return "reproduced", numbers
    numbers["reason"] = "some interval straddles the tolerance band"
    return "inconclusive", numbers
