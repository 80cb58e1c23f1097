"""Claim checks of Differential Information (arXiv 2505.23761): they read the ``did_drift`` analysis
(:mod:`harness.analyze.did_drift`: per DPO run the final DID entropy, chosen/rejected drift and DPO fit), never
torch. Statistics over seeds: a 95 % t-interval (seeds are the replicates; ``min_seeds`` of them needed)."""
from __future__ import annotations

from harness.claims.analyses import one_analysis
from harness.claims.registry import check
from harness.claims.stats import seed_side_verdict

DIRECTIONS = ("higher", "lower")


def _per_seed(a: dict, method: str, metric: str) -> dict[int, float]:
    return {v["seed"]: float(v["final"][metric]) for v in a["result"]["runs"].values()
            if v["method"] == method and v["final"].get(metric) is not None}


def _side(values: list[float], direction: str, numbers: dict, min_seeds: int):
    """Verdict of "the values are ``direction`` than 0" from their t-interval over seeds."""
    if direction not in DIRECTIONS:
        raise ValueError(f"diff_info check: direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    numbers.update(mean=sum(values) / len(values) if values else None, n_seeds=len(values))
    return seed_side_verdict(values, 1 if direction == "higher" else -1, numbers, min_seeds)


@check("diff_info_final")
def diff_info_final(results, analysis, metric, method, direction, min_seeds=2, *, analyses=None):
    """``method``'s final probe value ``metric`` (e.g. ``chosen_drift``) is ``direction`` (higher/lower) than 0:
    t-interval over seeds on that side of 0 (reproduced), on the other (not reproduced), else inconclusive."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return missing
    per = _per_seed(a, method, metric)
    if not per:
        return "not_run", {"reason": f"no run of {method} in the {analysis} analysis"}
    numbers = {"metric": metric, "method": method, "direction": direction, "per_seed": per,
               "analysis_hash": a.get("content_hash")}
    return _side(list(per.values()), direction, numbers, min_seeds)


@check("diff_info_paired")
def diff_info_paired(results, analysis, metric, method, baseline, direction, min_seeds=2, *, analyses=None):
    """Per seed run by both methods, ``metric(method) - metric(baseline)`` at the final probe is ``direction`` than
    0 (t-interval over the paired seeds)."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return missing
    m, b = _per_seed(a, method, metric), _per_seed(a, baseline, metric)
    if not m or not b:
        return "not_run", {"reason": f"no run of {method if not m else baseline} in the {analysis} analysis"}
    seeds = sorted(set(m) & set(b))
    diffs = {s: m[s] - b[s] for s in seeds}
    numbers = {"metric": metric, "method": method, "baseline": baseline, "direction": direction,
               "per_seed": {s: {method: m[s], baseline: b[s], "diff": diffs[s]} for s in seeds},
               "analysis_hash": a.get("content_hash")}
    return _side(list(diffs.values()), direction, numbers, min_seeds)


@check("diff_info_fits_pairs")
def diff_info_fits_pairs(results, analysis, methods, min_accuracy, min_seeds=2, *, analyses=None):
    """Every run of ``methods`` fits its pairs: TRL's preference accuracy over the second half of the steps
    >= ``min_accuracy``. Reproduced when all do (each method with >= ``min_seeds`` seeds), not reproduced when one
    does not."""
    a, missing = one_analysis(analyses, analysis)
    if missing:
        return missing
    runs = {k: v for k, v in a["result"]["runs"].items() if v["method"] in methods}
    table = {k: {"reward_accuracy_last_half": v["dpo"]["reward_accuracy_last_half"], "pairs": v["pairs"]["pairs"],
                 "ok": bool(v["dpo"]["reward_accuracy_last_half"] >= min_accuracy)} for k, v in sorted(runs.items())}
    numbers = {"min_accuracy": min_accuracy, "runs": table, "analysis_hash": a.get("content_hash")}
    if not runs:
        return "not_run", {"reason": f"no run of {', '.join(methods)} in the {analysis} analysis"}
    if not all(t["ok"] for t in table.values()):
        return "not_reproduced", numbers
    few = [m for m in methods if sum(v["method"] == m for v in runs.values()) < min_seeds]
    if few:
        numbers["reason"] = f"fewer than {min_seeds} seeds of {', '.join(few)}"
        return "inconclusive", numbers
    return "reproduced", numbers
