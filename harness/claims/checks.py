"""Generic claim checks on training runs and checkpoint evaluations (entropy curves, the entropy law, covariance
correlations, evaluation against the baseline). They read result dicts only."""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.claims.law import early_late_prediction, fit_law
from harness.claims.registry import check


def _runs(results, method):
    return sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"])


def _series(run, key="entropy"):
    ev = run["heldout"]
    return np.array([e["step"] for e in ev], float), np.array([e[key] for e in ev], float)


@check("entropy_drop")
def entropy_drop(results, method, min_drop, min_early_share, early_fraction):
    per_seed = {}
    for r in _runs(results, method):
        steps, h = _series(r)
        drop = (h[0] - h[-1]) / h[0]
        cut = steps[0] + early_fraction * (steps[-1] - steps[0])
        h_cut = np.interp(cut, steps, h)
        early_share = (h[0] - h_cut) / (h[0] - h[-1]) if h[0] != h[-1] else float("nan")
        per_seed[r["job"]["seed"]] = {"H_start": h[0], "H_end": h[-1], "relative_drop": drop,
                                      "early_share_of_drop": early_share,
                                      "ok": bool(drop >= min_drop and early_share >= min_early_share)}
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method}"}
    ok = [v["ok"] for v in per_seed.values()]
    verdict = "reproduced" if all(ok) else "not_reproduced"
    if len(per_seed) < 2 and verdict == "reproduced":
        verdict = "inconclusive"
    return verdict, {"per_seed": per_seed}


@check("entropy_above_baseline")
def entropy_above_baseline(results, method, baseline, min_share_above, skip_fraction):
    per_seed = {}
    base = {r["job"]["seed"]: r for r in _runs(results, baseline)}
    for r in _runs(results, method):
        b = base.get(r["job"]["seed"])
        if b is None:
            continue
        s1, h1 = _series(r)
        s0, h0 = _series(b)
        common = sorted(set(s1) & set(s0))
        d = np.array([h1[list(s1).index(s)] - h0[list(s0).index(s)] for s in common])
        keep = np.array(common) > common[0] + skip_fraction * (common[-1] - common[0])
        share = float((d[keep] > 0).mean())
        per_seed[r["job"]["seed"]] = {"final_diff": float(d[-1]), "mean_diff": float(d[keep].mean()),
                                      "share_of_evals_above": share,
                                      "ok": bool(d[-1] > 0 and share >= min_share_above)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired runs of {method} and {baseline}"}
    diffs = [v["mean_diff"] for v in per_seed.values()]
    numbers = {"per_seed": per_seed, "mean_diff_over_seeds": float(np.mean(diffs))}
    if len(diffs) >= 2:
        numbers["mean_diff_95ci"] = _t_ci(diffs)
    ok = [v["ok"] for v in per_seed.values()]
    if all(ok):
        return ("reproduced" if len(ok) >= 2 else "inconclusive"), numbers
    if not any(ok):
        return "not_reproduced", numbers
    return "not_reproduced", numbers  # "in every seed" is the claim: one failing seed refutes it


@check("law_fit")
def law_fit(results, methods, min_r2, early_fraction):
    sel = results if methods == "all" else [r for r in results if r["job"]["method"] in methods]
    h, acc, steps = [], [], []
    for r in sel:
        s, e = _series(r)
        _, a = _series(r, "sampled_acc")
        h += list(e); acc += list(a); steps += list(s)
    if len(h) < 6:
        return "inconclusive", {"reason": f"only {len(h)} points"}
    f = fit_law(h, acc)
    numbers = {"fit": f.to_dict(), "runs": len(sel), "points": len(h),
               "early_to_late": early_late_prediction(h, acc, steps, early_fraction),
               "r2_bootstrap_95ci": _bootstrap_r2(np.array(h), np.array(acc))}
    return ("reproduced" if f.r2 >= min_r2 else "not_reproduced"), numbers


@check("cov_entropy_corr")
def cov_entropy_corr(results):
    xs, ys = [], []
    for r in results:
        rows = [m for m in r["metrics"] if "cov_logp_adv/mean" in m and "entropy" in m]
        for a, b in zip(rows, rows[1:]):
            if b["step"] == a["step"] + 1:
                xs.append(a["cov_logp_adv/mean"]); ys.append(b["entropy"] - a["entropy"])
    if len(xs) < 20:
        return "inconclusive", {"reason": f"only {len(xs)} step pairs"}
    return _negative_correlation(xs, ys, pairs=len(xs))


@check("cov_entropy_window_corr")
def cov_entropy_window_corr(results):
    """Held-out entropy change between consecutive evaluations vs the mean train cov(logp, A) of the steps
    in between (all runs pooled; per-run correlations reported too)."""
    xs, ys, per_run = [], [], {}
    for r in results:
        cov = {m["step"]: m["cov_logp_adv/mean"] for m in r["metrics"] if "cov_logp_adv/mean" in m}
        ev = r["heldout"]
        rx, ry = [], []
        for a, b in zip(ev, ev[1:]):
            window = [cov[s] for s in range(a["step"] + 1, b["step"] + 1) if s in cov]
            if window:
                rx.append(float(np.mean(window))); ry.append(b["entropy"] - a["entropy"])
        if len(rx) >= 3:
            per_run[f"{r['job']['method']}/seed{r['job']['seed']}"] = float(stats.pearsonr(rx, ry).statistic)
        xs += rx; ys += ry
    if len(xs) < 10:
        return "inconclusive", {"reason": f"only {len(xs)} windows"}
    return _negative_correlation(
        xs, ys, windows=len(xs), per_run_r=per_run,
        caveat="both series trend over training; pooled r mixes that trend with the per-window effect")


def _negative_correlation(xs, ys, **extra):
    """Pearson r with its 95 % CI: reproduced when the CI is below 0, not_reproduced when above, else inconclusive."""
    res = stats.pearsonr(xs, ys)
    lo, hi = res.confidence_interval(0.95)
    numbers = {"pearson_r": float(res.statistic), "r_95ci": [float(lo), float(hi)], "p_value": float(res.pvalue),
               **extra}
    if hi < 0:
        return "reproduced", numbers
    if lo > 0:
        return "not_reproduced", numbers
    return "inconclusive", numbers


@check("eval_above_baseline")
def eval_above_baseline(results, method, baseline, benchmark="heldout", *, evals=None):
    """The final checkpoints of ``method`` score higher than ``baseline``'s on ``benchmark`` (an eval_result entry:
    ``heldout``, ``heldout_greedy`` or an lm-eval benchmark): difference of means over seeds and problems with a
    stratified bootstrap CI (harness.claims.stats.direction_verdict: CI above 0 reproduced, below 0 not reproduced,
    else inconclusive with the seeds that would decide it)."""
    from harness.claims.stats import aligned, direction_verdict, score_matrix

    m, b = score_matrix(evals or [], method, benchmark), score_matrix(evals or [], baseline, benchmark)
    if m is None or b is None:
        return "inconclusive", {"reason": f"no {benchmark} evaluation of {method if m is None else baseline}'s "
                                          "checkpoints (eval jobs missing)"}
    am, ab = aligned(m, b)
    v = direction_verdict(am, ab)
    numbers = {k: v[k] for k in v if k != "verdict"}
    numbers.update(method_mean=float(am.mean()), baseline_mean=float(ab.mean()), protocol_hash=m["protocol_hash"],
                   seeds={method: m["seeds"], baseline: b["seeds"]})
    return v["verdict"], numbers


@check("reported_average")
def reported_average(results, **params):
    return "not_run", {"reason": "full-scale claim; needs the paper tier"}


def _t_ci(values) -> list[float]:
    v = np.asarray(values, float)
    m, se = v.mean(), v.std(ddof=1) / np.sqrt(len(v))
    t = stats.t.ppf(0.975, len(v) - 1)
    return [float(m - t * se), float(m + t * se)]


def _bootstrap_r2(h, r, n=400, seed=0) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(h), len(h))
        try:
            vals.append(fit_law(h[i], r[i]).r2)
        except Exception:
            continue
    return [float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))] if vals else [None, None]
