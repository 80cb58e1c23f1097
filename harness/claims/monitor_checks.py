"""Claim checks on the training monitors (``monitor/...`` rows of a run's per-step metrics, logged by
``harness.train.monitors``; used by the daa_overopt and reasoning_utility cards). They read result dicts only.

- ``train_metric_change``: does a logged training metric move between the start and the end of training?
- ``monitor_leads_heldout``: does a change of a training metric precede the next change of a held-out measure?
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.claims.registry import check

DIRECTIONS = ("down", "up")
MODES = ("ratio", "diff")
EXPECT = ("positive", "negative")


def _runs(results, methods):
    return sorted((r for r in results if r["job"]["method"] in methods),
                  key=lambda r: (r["job"]["method"], r["job"]["seed"]))


@check("train_metric_change")
def train_metric_change(results, method, metric, direction, threshold, mode="ratio", window=0.25, min_seeds=3):
    """Per seed of ``method``: the mean of ``metric`` over the last ``window`` of the logged steps against the mean over
    the first ``window`` (steps s0..s1 that logged it: first = steps <= s0 + window (s1 - s0), last = steps >=
    s1 - window (s1 - s0)). ``mode`` "ratio" (last / first) or "diff" (last - first); ``direction`` "down" passes when
    ratio <= threshold (diff <= -threshold), "up" when ratio >= threshold (diff >= threshold). Reproduced when every
    seed passes (at least ``min_seeds`` seeds), not_reproduced when one fails, else inconclusive."""
    if direction not in DIRECTIONS:
        raise ValueError(f"train_metric_change: unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if mode not in MODES:
        raise ValueError(f"train_metric_change: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if not 0 < window <= 0.5:
        raise ValueError(f"train_metric_change: window must be in (0, 0.5], got {window}")
    per_seed = {}
    for r in _runs(results, [method]):
        rows = [(m["step"], m[metric]) for m in r["metrics"] if m.get(metric) is not None]
        if len(rows) < 2:
            continue
        s0, s1 = rows[0][0], rows[-1][0]
        first = float(np.mean([v for s, v in rows if s <= s0 + window * (s1 - s0)]))
        last = float(np.mean([v for s, v in rows if s >= s1 - window * (s1 - s0)]))
        change = last / first if mode == "ratio" else last - first
        if mode == "ratio" and first == 0:
            change = float("nan")
        bound = -threshold if (mode == "diff" and direction == "down") else threshold
        ok = change <= bound if direction == "down" else change >= bound  # NaN fails
        per_seed[r["job"]["seed"]] = {"first": first, "last": last, mode: change, "n_steps": len(rows),
                                      "ok": bool(ok)}
    numbers = {"per_seed": per_seed, "metric": metric, "direction": direction, "mode": mode,
               "threshold": threshold, "window": window}
    if not per_seed:
        return "inconclusive", {**numbers, "reason": f"no run of {method} logged {metric} on two steps or more"}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= min_seeds else "inconclusive"), numbers


def lead_pairs(run: dict, metric: str, heldout_key: str) -> list[tuple[float, float]]:
    """(x_j, y_j) of one run: held-out evaluations at steps e_0 < e_1 < ...; window j = the training steps in
    (e_{j-1}, e_j]; x_j = mean of ``metric`` over window j minus its mean over window j-1; y_j = the held-out value at
    e_{j+1} minus the one at e_j (the change in the window after). Windows without a logged value give no pair."""
    ev = sorted(run["heldout"], key=lambda e: e["step"])
    steps = [e["step"] for e in ev]
    rows = [(m["step"], m[metric]) for m in run["metrics"] if m.get(metric) is not None]
    means = []
    for j in range(1, len(steps)):
        vals = [v for s, v in rows if steps[j - 1] < s <= steps[j]]
        means.append(float(np.mean(vals)) if vals else None)  # means[j - 1]: window j
    out = []
    for j in range(2, len(steps) - 1):
        a, b = means[j - 2], means[j - 1]
        if a is not None and b is not None:
            out.append((b - a, float(ev[j + 1][heldout_key]) - float(ev[j][heldout_key])))
    return out


@check("monitor_leads_heldout")
def monitor_leads_heldout(results, methods, metric, heldout_key, expect="positive", min_pairs=12):
    """Does a change of a training metric precede a change of a held-out measure in the same direction
    (:func:`lead_pairs`, pooled over the runs of ``methods``)? Pearson r with its 95 % CI: reproduced when the CI lies
    on the ``expect`` side of 0, not_reproduced when on the other side, else inconclusive (also with fewer than
    ``min_pairs`` pairs or a constant series). Per-run r is reported too."""
    if expect not in EXPECT:
        raise ValueError(f"monitor_leads_heldout: unknown expect {expect!r}; valid: {', '.join(EXPECT)}")
    xs, ys, per_run = [], [], {}
    for r in _runs(results, list(methods)):
        pairs = lead_pairs(r, metric, heldout_key)
        if len(pairs) >= 3 and np.std([p[0] for p in pairs]) > 0 and np.std([p[1] for p in pairs]) > 0:
            per_run[f"{r['job']['method']}/seed{r['job']['seed']}"] = float(
                stats.pearsonr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
        xs += [p[0] for p in pairs]
        ys += [p[1] for p in pairs]
    numbers = {"pairs": len(xs), "metric": metric, "heldout_key": heldout_key, "expect": expect,
               "per_run_r": per_run}
    if len(xs) < min_pairs or np.std(xs) == 0 or np.std(ys) == 0:
        return "inconclusive", {**numbers, "reason": f"{len(xs)} window pairs (need {min_pairs}) or a constant series"}
    res = stats.pearsonr(xs, ys)
    lo, hi = (float(x) for x in res.confidence_interval(0.95))
    numbers.update(pearson_r=float(res.statistic), r_95ci=[lo, hi], p_value=float(res.pvalue))
    good, bad = (lo > 0, hi < 0) if expect == "positive" else (hi < 0, lo > 0)
    return ("reproduced" if good else "not_reproduced" if bad else "inconclusive"), numbers
