"""Claim checks of rep_geometry (arXiv 2509.23024): they read ``analysis_result`` files of
:mod:`harness.analyze.geometry` (RankMe and alpha-ReQ of one checkpoint on a fixed probe set), never torch.

The analyses reach a check as ``analyses`` (the verdict's analysis inputs); eval inputs that are analysis results
(``kind: analysis_result``) are read too, so the check works whichever list the verdict passes them in.
"""
from __future__ import annotations

from harness.claims.registry import check
from harness.claims.stats import seed_side_verdict

METRICS = ("rankme", "alpha_req")
DIRECTIONS = ("lower", "higher")


def geometry_records(records) -> list[dict]:
    """The per-checkpoint geometry analyses among ``records`` (any mix of result dicts; a card's collected file
    contributes the records under its ``result.checkpoints``)."""
    out = []
    for r in records or []:
        if not (isinstance(r, dict) and r.get("kind") == "analysis_result" and r.get("analysis") == "geometry"):
            continue
        out += geometry_records((r.get("result") or {}).get("checkpoints")) if "checkpoints" in (
            r.get("result") or {}) else [r]
    return out


@check("geometry_vs_base")
def geometry_vs_base(results, method, metric, direction, min_seeds=2, *, analyses=None, evals=None):
    """``metric`` (``rankme`` or ``alpha_req``) of ``method``'s final checkpoints is ``direction`` (``lower`` or
    ``higher``) than the base model's, on the same probe protocol: per seed the difference checkpoint - base, a 95 %
    t-interval over seeds; reproduced when it lies on the claimed side of 0 (>= ``min_seeds`` seeds),
    not_reproduced when on the other side, else inconclusive. ``not_run`` when no geometry analysis of ``method``
    exists (e.g. a stage that is not built)."""
    from harness.results.protocol import diff_fields

    if metric not in METRICS:
        raise ValueError(f"geometry_vs_base: unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"geometry_vs_base: unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    recs = geometry_records([*(analyses or []), *(evals or [])])
    mine = [r for r in recs if (r.get("source") or {}).get("method") == method]
    base = [r for r in recs if (r.get("source") or {}).get("method") == "base"]
    if not mine:
        return "not_run", {"reason": f"no geometry analysis of {method}'s checkpoints"}
    if not base:
        return "inconclusive", {"reason": "no geometry analysis of the base model"}
    ref = (mine + base)[0]
    for r in mine + base:
        if r.get("protocol_hash") != ref.get("protocol_hash"):
            fields = diff_fields(ref.get("settings") or {}, r.get("settings") or {})
            return "inconclusive", {"reason": "geometry analyses under different protocols: "
                                              f"{', '.join(fields) or 'protocol_hash'}"}
    base_models = sorted({r["result"].get("model_sha256") for r in base})
    if len(base_models) != 1:
        return "inconclusive", {"reason": f"{len(base_models)} different base models analysed; expected one"}
    base_value = float(base[0]["result"][metric])
    per_seed: dict[int, list[float]] = {}
    for r in mine:
        per_seed.setdefault(int(r["source"].get("seed", -1)), []).append(float(r["result"][metric]))
    values = {s: sum(v) / len(v) for s, v in sorted(per_seed.items())}
    diffs = [v - base_value for v in values.values()]
    sign = -1 if direction == "lower" else +1
    numbers = {"metric": metric, "direction": direction, "base": base_value, "per_seed": values,
               "diff": sum(diffs) / len(diffs), "n_seeds": len(diffs), "protocol_hash": ref.get("protocol_hash"),
               "base_model_sha256": base_models[0]}
    return seed_side_verdict(diffs, sign, numbers, min_seeds, "t-interval over seeds of (checkpoint - base)")
