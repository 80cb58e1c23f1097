"""Claim checks of EMPO (arXiv 2504.05812), smoke tier: a label-free method is judged against the untrained base
model and, as the paper does, by whether it *matches* a method trained with labels. They read result dicts only."""
from __future__ import annotations

import numpy as np

from harness.claims.registry import check


def _scores(evals, method, benchmark):
    from harness.claims.stats import score_matrix

    return score_matrix(evals or [], method, benchmark)


@check("empo_eval_above_base")
def empo_eval_above_base(results, method, benchmark="heldout", *, evals=None):
    """The final checkpoints of ``method`` score higher on ``benchmark`` than the untrained base model (the eval record
    whose source method is ``base``: one model, evaluated once). Per-problem scores paired over problems; 95 % CI of
    the difference from a bootstrap over the method's seeds and the problems (the base has no seed variance: one
    model). Reproduced when the CI is above 0 with >= 2 seeds, not reproduced when below 0, else inconclusive."""
    from harness.claims.stats import aligned, paired_difference

    m, b = _scores(evals, method, benchmark), _scores(evals, "base", benchmark)
    if m is None or b is None:
        return "inconclusive", {"reason": f"no {benchmark} evaluation of {method if m is None else 'the base model'}"}
    am, ab = aligned(m, b)
    d = paired_difference(am, ab)
    lo, hi = d["ci"]
    per_seed = {int(s): float(am[i].mean() - ab.mean()) for i, s in enumerate(m["seeds"])}
    numbers = {"diff": d["diff"], "ci": d["ci"], "method_mean": float(am.mean()), "base_mean": float(ab.mean()),
               "per_seed_diff": per_seed, "n_problems": d["n_problems"], "protocol_hash": m["protocol_hash"]}
    if len(per_seed) < 2:
        return "inconclusive", {**numbers, "reason": "one seed: seed-to-seed variance is unknown"}
    if lo > 0:
        return "reproduced", numbers
    if hi < 0:
        return "not_reproduced", numbers
    return "inconclusive", numbers


@check("empo_eval_matches_baseline")
def empo_eval_matches_baseline(results, method, baseline, margin, benchmark="heldout", *, evals=None):
    """Non-inferiority: ``method``'s final checkpoints are at most ``margin`` (absolute, the score's scale) below
    ``baseline``'s on ``benchmark``. 95 % CI of method - baseline (stratified bootstrap, harness.claims.stats):
    reproduced when its lower end is above -margin, not reproduced when its upper end is below -margin, else
    inconclusive; both need >= 2 seeds of each."""
    from harness.claims.stats import aligned, paired_difference

    m, b = _scores(evals, method, benchmark), _scores(evals, baseline, benchmark)
    if m is None or b is None:
        return "inconclusive", {"reason": f"no {benchmark} evaluation of {method if m is None else baseline}'s "
                                          "checkpoints (eval jobs missing)"}
    am, ab = aligned(m, b)
    d = paired_difference(am, ab)
    lo, hi = d["ci"]
    numbers = {"diff": d["diff"], "ci": d["ci"], "margin": margin, "method_mean": float(am.mean()),
               "baseline_mean": float(ab.mean()), "seeds": {method: m["seeds"], baseline: b["seeds"]},
               "protocol_hash": m["protocol_hash"]}
    if min(d["n_seeds"]) < 2:
        return "inconclusive", {**numbers, "reason": "fewer than 2 seeds: seed-to-seed variance is unknown"}
    if lo > -margin:
        return "reproduced", numbers
    if hi < -margin:
        return "not_reproduced", numbers
    return "inconclusive", numbers


@check("empo_train_metric_drop")
def empo_train_metric_drop(results, method, metric, window_fraction, min_rel_drop, min_seeds=2):
    """Per seed: the mean of a logged training metric over the last ``window_fraction`` of the logged steps is at
    least ``min_rel_drop`` (relative) below its mean over the first ``window_fraction``; reproduced when every seed
    passes (>= ``min_seeds`` seeds), not reproduced when one fails. The Spearman correlation of the metric with the
    step is reported per seed (how steady the fall is)."""
    from scipy import stats

    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        rows = [m for m in r["metrics"] if metric in m]
        if len(rows) < 4:
            continue
        steps = np.array([m["step"] for m in rows], float)
        vals = np.array([m[metric] for m in rows], float)
        span = steps[-1] - steps[0]
        early = float(vals[steps <= steps[0] + window_fraction * span].mean())
        late = float(vals[steps >= steps[-1] - window_fraction * span].mean())
        drop = (early - late) / early if early else float("nan")
        rho = float(stats.spearmanr(steps, vals).statistic) if vals.std() > 0 else float("nan")
        per_seed[r["job"]["seed"]] = {"early": early, "late": late, "relative_drop": drop, "spearman_vs_step": rho,
                                      "ok": bool(drop >= min_rel_drop)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging {metric}"}
    numbers = {"per_seed": per_seed, "metric": metric, "min_rel_drop": min_rel_drop}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= min_seeds else "inconclusive"), numbers
