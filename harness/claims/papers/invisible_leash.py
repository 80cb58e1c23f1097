"""Claim checks of The Invisible Leash (arXiv 2507.14843): they read the ``support`` analysis
(:mod:`harness.analyze.support`: a card's pass@k evaluations of the base model and RL checkpoints, grouped by
(method, training length), with per-seed, per-problem ``n_correct``, answer-level and token-level entropy and
support class) as plain data, never the evaluations themselves. rlvr_boundary's checks
(:mod:`harness.claims.papers.rlvr_boundary`) read the same analysis through the helpers here.

Every comparison with the base model is a paired difference over the same held-out problems (checkpoint seeds
resampled, problems resampled once per draw and shared: :func:`harness.claims.stats.paired_difference`), judged
on its 95 % CI; a checkpoint group with fewer than ``min_seeds`` seeds is inconclusive (seed variance unknown).

Parameters the DAG reads (rules/passk.smk: which checkpoints, n, ks, the analysis's ``k`` and ``threshold``,
``steps`` and variants) are accepted and ignored here: the check takes n, ks and the support setting from the
analysis.
"""
from __future__ import annotations

import numpy as np

from harness.claims.registry import check

ANALYSIS = "support"
#: what a missing analysis means (the DAG wiring: rules/passk.smk support_of, listed by analyses_of)
NOT_WIRED = ("no support analysis among this verdict's inputs (rules/passk.smk writes "
             "analysis/<paper>/<tier>/support.json; rules/analyze.smk analyses_of must list support_of(wc))")


def support_analysis(analyses) -> tuple[dict | None, dict | None]:
    """(the support analysis's ``result``, None), or (None, numbers of a not_run / inconclusive verdict)."""
    found = [a for a in analyses or [] if a.get("analysis") == ANALYSIS]
    if not found:
        return None, {"verdict": "not_run", "reason": NOT_WIRED}
    if len(found) > 1:
        return None, {"verdict": "inconclusive", "reason": f"{len(found)} support analyses; the check reads one"}
    return found[0]["result"], None


def group(res: dict, method: str, steps=None) -> tuple[dict | None, str | None]:
    """The checkpoint group of ``method`` (at ``steps``, one value or a one-element list; default: its only group,
    else its longest training), or (None, why)."""
    mine = [g for g in res["checkpoints"] if g["method"] == method]
    if isinstance(steps, (list, tuple)):
        steps = steps[0] if len(steps) == 1 else None
    if steps is not None:
        mine = [g for g in mine if g["train_steps"] == steps]
    if not mine:
        return None, f"no pass@k evaluation of {method}" + (f" at {steps} steps" if steps else "") + \
            " in the support analysis"
    return max(mine, key=lambda g: g["train_steps"] or 0), None


def support_group(analyses, method: str, steps=None) -> tuple[dict | None, dict | None, tuple[str, dict] | None]:
    """(the support analysis's ``result``, ``method``'s checkpoint group, None), or (None, None, the verdict to
    return): not_run without the analysis, inconclusive without the group (see :func:`group`)."""
    res, why = support_analysis(analyses)
    if res is None:
        return None, None, (why.pop("verdict"), why)
    g, miss = group(res, method, steps)
    if g is None:
        return None, None, ("inconclusive", {"reason": miss})
    return res, g, None


def pass_at(counts, n: int, k: int) -> np.ndarray:
    """(S, P) per-problem unbiased pass@k of a (S, P) matrix of correct-sample counts."""
    from harness.results.estimators import pass_at_k

    table = np.array([pass_at_k(n, c, k) for c in range(n + 1)])
    return table[np.asarray(counts, int)]


def vs_base(res: dict, g: dict, field: str, k: int | None = None) -> dict:
    """Checkpoint group minus base model on a per-problem field (``n_correct`` -> pass@k at ``k``): the paired
    difference with its CI, and both means."""
    from harness.claims.stats import paired_difference

    a, b = np.array(g["per_seed"][field], float), np.array(res["base"]["per_seed"][field], float)
    if field == "n_correct":
        a, b = pass_at(a, res["n"], k), pass_at(b, res["n"], k)
    d = paired_difference(a, b)
    return {"diff": d["diff"], "ci": d["ci"], "checkpoint": float(a.mean()), "base": float(b.mean())}


def _side(d: dict, margin: float = 0.0) -> str:
    """Where a difference's CI lies relative to ``margin``: 'above', 'below' or 'zero' (it contains it)."""
    lo, hi = d["ci"]
    return "above" if lo > margin else "below" if hi < margin else "zero"


def _few_seeds(g: dict, min_seeds: int) -> str | None:
    s = len(g["seeds"])
    return f"{s} seed(s) of {g['method']}: seed-to-seed variance unknown (needs >= {min_seeds})" if s < min_seeds \
        else None


@check("passk_crossover")
def passk_crossover(results, method, k_small=1, k_large=None, margin=0.005, steps=None, min_seeds=2, n=None,
                    ks=None, k=None, threshold=None, *, analyses=None):
    """RL above the base model at small k, at or below it at large k: reproduced when the CI of (checkpoint - base)
    pass@``k_small`` lies above 0 and the CI of pass@``k_large`` (default: the largest k) lies at or below
    ``margin`` (its upper bound <= margin: "at or below" with an equivalence margin); not reproduced when RL is
    below the base at ``k_small`` or above ``margin`` at ``k_large`` (CIs), else inconclusive."""
    res, g, missing = support_group(analyses, method, steps)
    if missing:
        return missing
    kl = int(k_large or res["ks"][-1])
    if not (1 <= int(k_small) <= kl <= res["n"]):
        raise ValueError(f"passk_crossover: need 1 <= k_small <= k_large <= n = {res['n']}, got {k_small}, {kl}")
    small, large = vs_base(res, g, "n_correct", int(k_small)), vs_base(res, g, "n_correct", kl)
    numbers = {"method": method, "train_steps": g["train_steps"], "seeds": g["seeds"], "n": res["n"],
               f"pass@{k_small}": small, f"pass@{kl}": large, "margin": margin}
    few = _few_seeds(g, min_seeds)
    if few:
        return "inconclusive", {**numbers, "reason": few}
    if small["ci"][1] < 0 or large["ci"][0] > margin:
        return "not_reproduced", numbers
    if small["ci"][0] > 0 and large["ci"][1] <= margin:
        return "reproduced", numbers
    return "inconclusive", {**numbers, "reason": f"a CI straddles its bound (pass@{k_small}: 0, pass@{kl}: {margin})"}


@check("support_shrinks")
def support_shrinks(results, method, steps=None, min_seeds=2, n=None, ks=None, k=None, threshold=None, *,
                    analyses=None):
    """Shrinkage outweighs expansion: the share of problems the base model solves and the checkpoint does not
    (base_only) exceeds the share the checkpoint solves and the base does not (rl_only), at the analysis's support
    k and threshold; per (seed, problem) ``1[base_only] - 1[rl_only]``, mean with the stratified bootstrap CI:
    above 0 reproduced, below 0 not reproduced, else inconclusive."""
    from harness.claims.stats import cell

    res, g, missing = support_group(analyses, method, steps)
    if missing:
        return missing
    cls = np.array(g["per_seed"]["support"])
    names = res["classes"]
    d = (cls == names.index("base_only")).astype(float) - (cls == names.index("rl_only")).astype(float)
    c = cell(d)
    numbers = {"method": method, "train_steps": g["train_steps"], "seeds": g["seeds"], "k": res["support_k"],
               "threshold": res["threshold"], "diff": c["mean"], "ci": c["ci"],
               "shares": {x: g["support"]["shares"][x]["mean"] for x in names}, "counts": g["support"]["counts"]}
    few = _few_seeds(g, min_seeds)
    if few:
        return "inconclusive", {**numbers, "reason": few}
    side = _side(c)
    if side == "zero":
        return "inconclusive", {**numbers, "reason": f"the 95 % CI [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] of "
                                                    "base-only minus RL-only contains 0"}
    return ("reproduced" if side == "above" else "not_reproduced"), numbers


@check("answer_entropy_falls")
def answer_entropy_falls(results, method, token_tolerance=0.1, steps=None, min_seeds=2, n=None, ks=None, k=None,
                         threshold=None, *, analyses=None):
    """Answer-level entropy falls while token-level entropy stays flat or rises: reproduced when the CI of
    (checkpoint - base) answer entropy lies below 0 and the CI of the token-entropy difference lies above
    ``-token_tolerance`` x the base model's token entropy; not reproduced when answer entropy rises (CI above 0) or
    token entropy falls by more than that (CI below), else inconclusive."""
    res, g, missing = support_group(analyses, method, steps)
    if missing:
        return missing
    ans, tok = vs_base(res, g, "answer_entropy"), vs_base(res, g, "token_entropy")
    tol = float(token_tolerance) * tok["base"]
    numbers = {"method": method, "train_steps": g["train_steps"], "seeds": g["seeds"], "answer_entropy": ans,
               "token_entropy": tok, "token_tolerance": token_tolerance, "token_bound": -tol}
    few = _few_seeds(g, min_seeds)
    if few:
        return "inconclusive", {**numbers, "reason": few}
    if ans["ci"][0] > 0 or tok["ci"][1] < -tol:
        return "not_reproduced", numbers
    if ans["ci"][1] < 0 and tok["ci"][0] >= -tol:
        return "reproduced", numbers
    return "inconclusive", {**numbers, "reason": "a CI straddles its bound (answer entropy: 0, token entropy: "
                                                 f"{-tol:+.4f})"}
