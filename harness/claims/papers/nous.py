"""Claim checks of Nous (arXiv 2510.27410), smoke tier on the spec_dialogue task: the information-gain reward should
cut redundant questions below the base model's and raise the information gained per question above GRPO's with the
binary "informative question" reward. They read result dicts (logged training metrics, held-out evaluations) only.

Seed-level statistics: a 95 % t interval over the seeds' values (3 seeds: t = 4.30), so a claim needs the effect in
every seed *and* an interval that excludes the threshold; the held-out comparison with the base model uses the
project's paired bootstrap over seeds and problems (:mod:`harness.claims.stats`).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.claims.registry import check

DIRECTIONS = ("lower", "higher")


def _direction(name: str, direction: str) -> int:
    if direction not in DIRECTIONS:
        raise ValueError(f"{name}: unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return 1 if direction == "higher" else -1


def _by_seed(results, method):
    return {r["job"]["seed"]: r for r in results if r["job"]["method"] == method}


def _window(run, metric, lo_frac, hi_frac):
    """Mean of a logged training metric over the logged steps in [lo_frac, hi_frac] of the run's last step."""
    rows = [m for m in run["metrics"] if metric in m]
    if not rows:
        return None
    last = max(m["step"] for m in run["metrics"])
    vals = [m[metric] for m in rows if lo_frac * last <= m["step"] <= hi_frac * last]
    return float(np.mean(vals)) if vals else None


def _seed_verdict(diffs: dict, sign: int, margin: float, min_seeds: int) -> tuple[str, dict]:
    """Every seed's signed difference beyond ``margin`` and the t interval of the mean beyond it: reproduced; a seed
    short of it: not reproduced; too few seeds: inconclusive."""
    v = np.array(list(diffs.values()), float)
    numbers = {"mean_diff": float(v.mean()) if len(v) else None}
    if len(v) >= 2:
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        numbers["diff_95ci"] = [float(v.mean() - half), float(v.mean() + half)]
    ok = [sign * d > margin for d in v]
    if len(v) < min_seeds:
        return "inconclusive", {**numbers, "reason": f"{len(v)} seed(s); the claim needs {min_seeds}"}
    if not all(ok):
        return "not_reproduced", numbers
    lo, hi = numbers["diff_95ci"]
    return ("reproduced" if (lo > margin if sign > 0 else hi < -margin) else "inconclusive"), numbers


@check("nous_train_metric_shift")
def nous_train_metric_shift(results, method, metric, direction, window_fraction=0.1, margin=0.0, min_seeds=2):
    """Per seed: mean of a logged training metric over the last ``window_fraction`` of training minus its mean over
    the first ``window_fraction`` (the base model's samples, before the updates have moved it), signed by
    ``direction``, beyond ``margin`` in every seed, with the 95 % t interval over seeds beyond it too."""
    sign = _direction("nous_train_metric_shift", direction)
    per_seed, diffs = {}, {}
    for seed, r in sorted(_by_seed(results, method).items()):
        early, late = _window(r, metric, 0.0, window_fraction), _window(r, metric, 1 - window_fraction, 1.0)
        if early is None or late is None:
            continue
        diffs[seed] = late - early
        per_seed[seed] = {"early": early, "late": late, "diff": late - early,
                          "ok": bool(sign * (late - early) > margin)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging {metric}"}
    verdict, numbers = _seed_verdict(diffs, sign, margin, min_seeds)
    return verdict, {"per_seed": per_seed, "metric": metric, "direction": direction, "margin": margin, **numbers}


@check("nous_late_metric_vs_baseline")
def nous_late_metric_vs_baseline(results, method, baseline, metric, direction, start_fraction=0.5, margin=0.0,
                                 min_seeds=2):
    """Per seed: mean of a logged training metric after ``start_fraction`` of training, method minus baseline (same
    seed), signed by ``direction``, beyond ``margin`` in every seed, with the 95 % t interval over seeds beyond it."""
    sign = _direction("nous_late_metric_vs_baseline", direction)
    runs, base = _by_seed(results, method), _by_seed(results, baseline)
    per_seed, diffs = {}, {}
    for seed, r in sorted(runs.items()):
        if seed not in base:
            continue
        a, b = _window(r, metric, start_fraction, 1.0), _window(base[seed], metric, start_fraction, 1.0)
        if a is None or b is None:
            continue
        diffs[seed] = a - b
        per_seed[seed] = {"method": a, "baseline": b, "diff": a - b, "ok": bool(sign * (a - b) > margin)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired runs of {method} and {baseline} logging {metric}"}
    verdict, numbers = _seed_verdict(diffs, sign, margin, min_seeds)
    return verdict, {"per_seed": per_seed, "metric": metric, "direction": direction, "margin": margin, **numbers}


@check("nous_eval_above_base")
def nous_eval_above_base(results, method, benchmark="heldout", *, evals=None):
    """The final checkpoints of ``method`` score higher on ``benchmark`` than the untrained base model (eval record of
    source method ``base``; spec_dialogue: the share of informative moves, so fewer redundant questions and premature
    answers). 95 % CI of the paired difference (bootstrap over the method's seeds and the problems): reproduced when
    above 0 with >= 2 seeds, not reproduced when below 0, else inconclusive."""
    from harness.claims.stats import aligned, paired_difference, score_matrix

    m, b = score_matrix(evals or [], method, benchmark), score_matrix(evals or [], "base", benchmark)
    if m is None or b is None:
        return "inconclusive", {"reason": f"no {benchmark} evaluation of {method if m is None else 'the base model'}"}
    am, ab = aligned(m, b)
    d = paired_difference(am, ab)
    lo, hi = d["ci"]
    numbers = {"diff": d["diff"], "ci": d["ci"], "method_mean": float(am.mean()), "base_mean": float(ab.mean()),
               "per_seed_diff": {int(s): float(am[i].mean() - ab.mean()) for i, s in enumerate(m["seeds"])},
               "protocol_hash": m["protocol_hash"]}
    if len(m["seeds"]) < 2:
        return "inconclusive", {**numbers, "reason": "one seed: seed-to-seed variance is unknown"}
    return ("reproduced" if lo > 0 else "not_reproduced" if hi < 0 else "inconclusive"), numbers
