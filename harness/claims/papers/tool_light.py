"""Claim checks of Tool-Light (arXiv 2509.23285), smoke tier: they read the DPO jobs' per-stage records
(``result["stages"]`` and ``result["base_probe"]``, written by :mod:`harness.train.dpo`), so a verdict cites both
stages."""
from __future__ import annotations

from harness.claims.registry import check

POLICIES = ("base", "stage1", "stage2")


def _probe(run: dict, policy: str) -> dict | None:
    if policy == "base":
        return run.get("base_probe")
    stages = {s["stage"]: s for s in run.get("stages") or []}
    st = stages.get(int(policy[-1]))
    return st["probe"] if st else None


def _verdict(per_seed: dict, numbers: dict, what: str):
    if not per_seed:
        return "inconclusive", {"reason": f"no DPO runs with per-stage records ({what})"}
    numbers["per_seed"] = per_seed
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers


@check("tool_light_stage_probe")
def tool_light_stage_probe(results, method, key, a, b, direction, margin=0.0):
    """Per seed: the held-out probe's ``key`` (sampled_acc, calls_per_response, mean_length) of policy ``a`` against
    policy ``b`` (base, stage1, stage2): ``a - b > margin`` (direction higher) or ``a - b < -margin`` (lower);
    ``direction: not_lower``: ``a - b >= -margin``. Reproduced when every seed passes (>= 2 seeds)."""
    for p in (a, b):
        if p not in POLICIES:
            raise ValueError(f"tool_light_stage_probe: unknown policy {p!r}; valid: {', '.join(POLICIES)}")
    if direction not in ("higher", "lower", "not_lower"):
        raise ValueError(f"tool_light_stage_probe: direction must be higher, lower or not_lower, got {direction!r}")
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        pa, pb = _probe(r, a), _probe(r, b)
        if pa is None or pb is None:
            continue
        d = pa[key] - pb[key]
        ok = d > margin if direction == "higher" else (d < -margin if direction == "lower" else d >= -margin)
        per_seed[r["job"]["seed"]] = {a: pa[key], b: pb[key], "diff": d, "ok": bool(ok)}
    return _verdict(per_seed, {"key": key, "a": a, "b": b, "direction": direction, "margin": margin}, key)


@check("tool_light_tree_efficiency")
def tool_light_tree_efficiency(results, method, stage=1, min_ratio=1.0):
    """Per seed, in ``stage``'s sampling: questions with a correct trace per 1,000 generated tokens, entropy-guided
    tree (new tokens only: branch prefixes are copied) over vanilla rollouts, >= ``min_ratio``."""
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        st = {s["stage"]: s for s in r.get("stages") or []}.get(stage)
        if st is None:
            continue
        smp = st["sampling"]
        t, v = smp.get("tree_solved_per_1k_tokens"), smp.get("vanilla_solved_per_1k_tokens")
        if t is None or not v:
            continue
        per_seed[r["job"]["seed"]] = {"tree": t, "vanilla": v, "ratio": t / v,
                                      "tree_tokens": smp["tree_tokens_generated"],
                                      "vanilla_tokens": smp["vanilla_tokens_generated"], "ok": bool(t / v >= min_ratio)}
    return _verdict(per_seed, {"stage": stage, "min_ratio": min_ratio}, "sampling")


@check("tool_light_stages_fit_pairs")
def tool_light_stages_fit_pairs(results, method, min_accuracy):
    """Per seed and stage: DPO's preference accuracy (chosen's implicit reward above the rejected's, TRL's
    ``rewards/accuracies``) over the second half of the stage's steps >= ``min_accuracy``, in both stages."""
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        st = r.get("stages") or []
        if len(st) < 2:
            continue
        acc = {f"stage{s['stage']}": s["dpo"]["reward_accuracy_last_half"] for s in st}
        per_seed[r["job"]["seed"]] = {**acc, "pairs": {f"stage{s['stage']}": s["pairs"]["pairs"] for s in st},
                                      "ok": bool(all(v >= min_accuracy for v in acc.values()))}
    return _verdict(per_seed, {"min_accuracy": min_accuracy}, "dpo")
