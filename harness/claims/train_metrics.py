"""Generic checks on logged training metrics and held-out curves of a method against its baseline (used by the
forking_tokens, steer, bapo, d3s, canon, copo, egpo, hicra and riskpo cards)."""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.claims.registry import check


def _by_seed(results, method):
    return {r["job"]["seed"]: r for r in results if r["job"]["method"] == method}


def _heldout_mean(run, key, skip_first=True):
    ev = run["heldout"][1:] if skip_first else run["heldout"]
    return float(np.mean([e[key] for e in ev]))


@check("heldout_vs_baseline")
def heldout_vs_baseline(results, method, baseline, key, min_diff):
    """Per seed: mean over held-out evaluations after step 0 of ``key`` (method - baseline) >= ``min_diff``.
    Reproduced when every paired seed passes (>= 2 seeds), not_reproduced when any fails."""
    runs, base = _by_seed(results, method), _by_seed(results, baseline)
    per_seed = {}
    for s, r in sorted(runs.items()):
        if s in base:
            m, b = _heldout_mean(r, key), _heldout_mean(base[s], key)
            per_seed[s] = {"method": m, "baseline": b, "diff": m - b, "ok": bool(m - b >= min_diff)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired runs of {method} and {baseline}"}
    numbers = {"per_seed": per_seed, "mean_diff": float(np.mean([v["diff"] for v in per_seed.values()])),
               "key": key, "min_diff": min_diff}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers


@check("train_metric_bounds")
def train_metric_bounds(results, method, key, lo, hi, min_share=1.0):
    """Share of logged training steps (all runs of ``method``) where lo <= metric <= hi is >= ``min_share``."""
    vals = [m[key] for r in results if r["job"]["method"] == method for m in r["metrics"] if key in m]
    if not vals:
        return "inconclusive", {"reason": f"{method} logged no {key}"}
    v = np.asarray(vals, float)
    share = float(((v >= lo) & (v <= hi)).mean())
    numbers = {"steps": len(v), "share_in_bounds": share, "min": float(v.min()), "max": float(v.max()),
               "mean": float(v.mean())}
    return ("reproduced" if share >= min_share else "not_reproduced"), numbers


@check("train_metric_vs_baseline")
def train_metric_vs_baseline(results, method, baseline, key, min_ratio, fraction=1.0):
    """Per seed: mean of a training metric over the first ``fraction`` of the steps, method / baseline >=
    ``min_ratio`` in every seed (>= 2 seeds)."""
    runs, base = _by_seed(results, method), _by_seed(results, baseline)

    def mean_first(run):
        rows = [m for m in run["metrics"] if key in m]
        if not rows:
            return float("nan")
        last = rows[0]["step"] + fraction * (rows[-1]["step"] - rows[0]["step"])
        return float(np.mean([m[key] for m in rows if m["step"] <= last]))

    per_seed = {}
    for s, r in sorted(runs.items()):
        if s in base:
            m, b = mean_first(r), mean_first(base[s])
            per_seed[s] = {"method": m, "baseline": b, "ratio": m / b if b else float("nan"),
                           "ok": bool(b and m / b >= min_ratio)}
    if not per_seed or any(np.isnan(v["method"]) or np.isnan(v["baseline"]) for v in per_seed.values()):
        return "inconclusive", {"reason": f"no paired runs logging {key}", "per_seed": per_seed}
    numbers = {"per_seed": per_seed, "key": key, "fraction": fraction}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers


@check("train_metric_entropy_corr")
def train_metric_entropy_corr(results, method, key, expect="negative"):
    """Pearson r between a per-step training metric at step s and the train-batch entropy change from s to s+1,
    pooled over the runs of ``method``; reproduced when the 95 % CI excludes 0 on the expected side."""
    xs, ys = [], []
    for r in results:
        if r["job"]["method"] != method:
            continue
        rows = [m for m in r["metrics"] if key in m and "entropy" in m]
        for a, b in zip(rows, rows[1:]):
            if b["step"] == a["step"] + 1:
                xs.append(a[key]); ys.append(b["entropy"] - a["entropy"])
    if len(xs) < 20 or np.std(xs) == 0:
        return "inconclusive", {"reason": f"only {len(xs)} step pairs (or constant {key})"}
    res = stats.pearsonr(xs, ys)
    lo, hi = res.confidence_interval(0.95)
    numbers = {"pearson_r": float(res.statistic), "r_95ci": [float(lo), float(hi)], "p_value": float(res.pvalue),
               "pairs": len(xs), "expect": expect}
    good, bad = (hi < 0, lo > 0) if expect == "negative" else (lo > 0, hi < 0)
    if good:
        return "reproduced", numbers
    if bad:
        return "not_reproduced", numbers
    return "inconclusive", numbers


@check("train_metric_window")
def train_metric_window(results, method, metric, op, threshold, start_fraction=0.0, min_seeds=2):
    """Per seed, the mean of a logged training metric over the steps after ``start_fraction`` of training
    satisfies ``op`` (">=", "<=", "abs_le" (|mean - target| <= tol, threshold = [target, tol])) in every seed."""
    per_seed = {}
    for seed, r in sorted(_by_seed(results, method).items()):
        rows = [m for m in r["metrics"] if metric in m]
        if not rows:
            continue
        last = max(m["step"] for m in r["metrics"])
        vals = [m[metric] for m in rows if m["step"] > start_fraction * last]
        v = float(np.mean(vals))
        if op == ">=":
            ok = v >= threshold
        elif op == "<=":
            ok = v <= threshold
        elif op == "abs_le":
            ok = abs(v - threshold[0]) <= threshold[1]
        else:
            raise ValueError(f"train_metric_window: unknown op {op!r}")
        per_seed[seed] = {"mean": v, "n_steps": len(vals), "ok": bool(ok)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method} logging {metric}"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "metric": metric, "op": op, "threshold": threshold}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= min_seeds else "inconclusive"), numbers


@check("heldout_last_vs_baseline")
def heldout_last_vs_baseline(results, method, baseline, key, direction, last_evals=5, margin=0.0):
    """Per seed, the mean held-out ``key`` over the last ``last_evals`` evaluations of ``method`` minus the
    baseline's (same seed) is > margin (direction "higher") or < -margin ("lower"), in every seed."""
    base = _by_seed(results, baseline)
    per_seed = {}
    for seed, r in sorted(_by_seed(results, method).items()):
        if seed not in base:
            continue
        a = np.mean([e[key] for e in r["heldout"][-last_evals:]])
        b = np.mean([e[key] for e in base[seed]["heldout"][-last_evals:]])
        d = float(a - b)
        ok = d > margin if direction == "higher" else d < -margin
        per_seed[seed] = {"method": float(a), "baseline": float(b), "diff": d, "ok": bool(ok)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired runs of {method} and {baseline}"}
    ok = [v["ok"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "mean_diff": float(np.mean([v["diff"] for v in per_seed.values()]))}
    if not all(ok):
        return "not_reproduced", numbers
    return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers
