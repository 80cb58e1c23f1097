"""Claim checks of "RLVR capability boundary: shrinkage, expansion, or both?" (arXiv 2510.04028): the large-k
pass@k gap to the base model over training length, read from the ``support`` analysis
(:mod:`harness.analyze.support`; checkpoints of one method at several training lengths are its groups by
``train_steps``) with the helpers of :mod:`harness.claims.papers.invisible_leash`.

The gap at a training length is (checkpoint - base) pass@``k_large`` (default: the analysis's largest k), a paired
difference over the same problems with its 95 % CI; its *side* is ``below`` (CI below 0), ``above`` (CI above 0) or
``zero`` (contains 0).
"""
from __future__ import annotations

from harness.claims.papers.invisible_leash import _few_seeds, _side, support_analysis, vs_base
from harness.claims.registry import check


def gaps(res: dict, method: str, k_large: int, steps=None) -> dict[int, dict]:
    """Training length -> the large-k gap of ``method``'s checkpoints (with ``side`` and ``seeds``), by length."""
    out = {}
    for g in sorted((g for g in res["checkpoints"] if g["method"] == method), key=lambda g: g["train_steps"] or 0):
        if steps and g["train_steps"] not in steps:
            continue
        d = vs_base(res, g, "n_correct", k_large)
        out[int(g["train_steps"] or 0)] = {**d, "side": _side(d), "seeds": g["seeds"], "_group": g}
    return out


def _public(table: dict) -> dict:
    return {str(s): {k: v for k, v in d.items() if k != "_group"} for s, d in table.items()}


def _k_large(res: dict, k_large) -> int:
    k = int(k_large or res["ks"][-1])
    if not 1 <= k <= res["n"]:
        raise ValueError(f"k_large must be in 1..n = {res['n']}, got {k}")
    return k


@check("passk_gap_sign_change")
def passk_gap_sign_change(results, method, k_large=None, steps=None, min_seeds=2, n=None, ks=None, k=None,
                          threshold=None, *, analyses=None):
    """The large-k gap to the base model first becomes negative, then turns positive over training length:
    reproduced when some length's gap lies below 0 and a later one's above 0 (CIs). Not reproduced when there is no
    such pair and either every length's gap lies above 0 (no shrinkage stage) or the longest length's lies below 0
    (no recovery within the tier's lengths); else inconclusive (needs >= 2 lengths, each with >= min_seeds seeds)."""
    res, why = support_analysis(analyses)
    if res is None:
        return why.pop("verdict"), why
    kl = _k_large(res, k_large)
    table = gaps(res, method, kl, steps)
    numbers = {"method": method, "k": kl, "n": res["n"], "gaps": _public(table)}
    if len(table) < 2:
        return "inconclusive", {**numbers, "reason": f"{len(table)} training length(s) of {method} in the support "
                                                     "analysis; a sign change needs at least 2"}
    few = [_few_seeds(d["_group"], min_seeds) for d in table.values()]
    if any(few):
        return "inconclusive", {**numbers, "reason": next(f for f in few if f)}
    sides = [d["side"] for d in table.values()]
    lengths = list(table)
    pair = next(((a, b) for i, a in enumerate(lengths) for b in lengths[i + 1:]
                 if table[a]["side"] == "below" and table[b]["side"] == "above"), None)
    if pair:
        return "reproduced", {**numbers, "negative_at": pair[0], "positive_at": pair[1]}
    if all(s == "above" for s in sides):
        return "not_reproduced", {**numbers, "reason": "the gap lies above 0 at every length: no shrinkage stage"}
    if sides[-1] == "below":
        return "not_reproduced", {**numbers, "reason": f"the gap still lies below 0 at {lengths[-1]} steps and no "
                                                       "earlier shrinkage turned positive"}
    return "inconclusive", {**numbers, "reason": f"gap sides by length: {dict(zip(lengths, sides))}"}


@check("passk_gap_holds_longer")
def passk_gap_holds_longer(results, method, baseline, k_large=None, steps=None, min_seeds=2, n=None, ks=None,
                           k=None, threshold=None, *, analyses=None):
    """``method`` keeps pass@k at large k at or above the base model for longer than ``baseline``: with the first
    training length at which a method's gap lies below 0 (CI) as its drop, reproduced when the baseline drops and
    ``method`` drops later or never; not reproduced when ``method`` drops no later than the baseline (or drops and
    the baseline never does); inconclusive when neither drops, or the two were not evaluated at the same lengths."""
    res, why = support_analysis(analyses)
    if res is None:
        return why.pop("verdict"), why
    kl = _k_large(res, k_large)
    mine, base = gaps(res, method, kl, steps), gaps(res, baseline, kl, steps)
    numbers = {"method": method, "baseline": baseline, "k": kl, "n": res["n"],
               "gaps": {method: _public(mine), baseline: _public(base)}}
    if not mine or sorted(mine) != sorted(base):
        return "inconclusive", {**numbers, "reason": f"training lengths differ ({sorted(mine)} vs {sorted(base)})"}
    few = [_few_seeds(d["_group"], min_seeds) for d in [*mine.values(), *base.values()]]
    if any(few):
        return "inconclusive", {**numbers, "reason": next(f for f in few if f)}
    drop = {m: next((s for s, d in t.items() if d["side"] == "below"), None) for m, t in ((method, mine),
                                                                                          (baseline, base))}
    numbers["first_drop"] = drop
    if drop[baseline] is not None and (drop[method] is None or drop[method] > drop[baseline]):
        return "reproduced", numbers
    if drop[method] is not None:
        return "not_reproduced", numbers
    return "inconclusive", {**numbers, "reason": "neither drops below the base model at the tier's lengths"}
