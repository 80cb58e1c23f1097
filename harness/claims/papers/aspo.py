"""Claim checks of ASPO / "Understanding Tool-Integrated Reasoning" (arXiv 2508.19201): they read the pass@k
evaluations (``passk.json``, :mod:`harness.evaluate.passk`: one ``<task>_passk`` benchmark, per-problem ``pass``
estimates in the order of ``ks`` and, for tool tasks, ``first_call_pos``) as plain data.

``passk_above_baseline`` is general (any task, any k list): ``method``'s checkpoints evaluated on ``benchmark``
against ``baseline``'s on ``baseline_benchmark`` (default: the same benchmark); the two may be different tasks over
the same held-out problems (the tool and text variants of the reasoning task: the protocol's ``data_sha256`` must
agree).

Parameters ``n``, ``ks``, ``method_variant`` and ``baseline_variant`` are read by rules/passk.smk (what to sample and
which jobs to evaluate: a variant is the card's job with blocks changed, :func:`harness.evaluate.passk.apply_variant`);
the checks take n and the k list from the evaluations themselves."""
from __future__ import annotations

import numpy as np

from harness.claims.registry import check


def _records(evals, method: str, benchmark: str) -> list[tuple[int, dict, dict]]:
    """(seed, benchmark entry, protocol fields) of ``method``'s checkpoints on ``benchmark``, by seed."""
    rows = [(int((e.get("source") or {}).get("seed") or 0), e["benchmarks"][benchmark],
             e["protocol"]["benchmarks"][benchmark]) for e in evals
            if (e.get("source") or {}).get("method") == method and benchmark in e.get("benchmarks", {})]
    return sorted(rows, key=lambda t: t[0])


def _matrix(rows, field: str, j: int | None = None) -> np.ndarray:
    """(seeds, problems) of a per-problem field (column ``j`` of a list field); NaN where it is null."""
    out = []
    for _, entry, _ in sorted(rows, key=lambda t: t[0]):
        pp = sorted(entry["per_problem"], key=lambda p: p["id"])
        vals = [p.get(field) if j is None else p[field][j] for p in pp]
        out.append([np.nan if v is None else float(v) for v in vals])
    return np.array(out, float)


def _same_problems(a, b) -> str | None:
    da = {p["data_sha256"] for _, _, p in a} | {p["data_sha256"] for _, _, p in b}
    ids = {tuple(sorted(x["id"] for x in e["per_problem"])) for _, e, _ in [*a, *b]}
    if len(da) > 1 or len(ids) > 1:
        return "the evaluations scored different held-out problems (data_sha256 or problem ids differ)"
    return None


@check("passk_above_baseline")
def passk_above_baseline(results, method, baseline, benchmark, baseline_benchmark=None, n=None, ks=None,
                         method_variant=None, baseline_variant=None, *, evals=None):
    """pass@k of ``method`` above ``baseline`` at every k of the evaluation: per k, the difference of the means
    over seeds and problems with a stratified bootstrap CI (harness.claims.stats.direction_verdict). Reproduced when
    every k's CI is above 0, not reproduced when any k's CI is below 0, else inconclusive (a k where both are at
    the ceiling, pass@k = 1 on every problem, leaves it inconclusive: no support difference is visible there)."""
    from harness.claims.stats import direction_verdict

    bb = baseline_benchmark or benchmark
    a, b = _records(evals or [], method, benchmark), _records(evals or [], baseline, bb)
    if not a or not b:
        return "inconclusive", {"reason": f"no pass@k evaluation of {method if not a else baseline} on "
                                          f"{benchmark if not a else bb} (rules/passk.smk targets missing)"}
    why = _same_problems(a, b)
    if why:
        return "inconclusive", {"reason": why}
    ks = a[0][1]["ks"]
    if any(e["ks"] != ks for _, e, _ in [*a, *b]) or len({e["k"] for _, e, _ in [*a, *b]}) > 1:
        return "inconclusive", {"reason": "the evaluations used different n or k lists"}
    per_k, verdicts = {}, []
    for j, k in enumerate(ks):
        v = direction_verdict(_matrix(a, "pass", j), _matrix(b, "pass", j), seed=j)
        per_k[f"pass@{k}"] = {x: v[x] for x in ("diff", "ci", "verdict", "reason") if x in v}
        per_k[f"pass@{k}"].update(method=float(_matrix(a, "pass", j).mean()), baseline=float(_matrix(b, "pass", j).mean()))
        verdicts.append(v["verdict"])
    numbers = {"per_k": per_k, "n_samples": a[0][1]["k"], "ks": ks, "n_problems": a[0][1]["n_problems"],
               "seeds": {method: [s for s, _, _ in a], baseline: [s for s, _, _ in b]},
               "benchmarks": {method: benchmark, baseline: bb}}
    if all(v == "reproduced" for v in verdicts):
        return "reproduced", numbers
    if any(v == "not_reproduced" for v in verdicts):
        return "not_reproduced", numbers
    return "inconclusive", numbers


@check("aspo_first_call_earlier")
def aspo_first_call_earlier(results, method, baseline, benchmark, n=None, ks=None, *, evals=None):
    """The first tool call comes earlier under ``method`` than under ``baseline``: per held-out problem, the mean
    completion-token index of the first call over the pass@k samples that call (``first_call_pos``), on the
    problems where every checkpoint of both has one; difference of the means with a stratified bootstrap CI
    (below 0: reproduced, above 0: not reproduced, else inconclusive)."""
    from harness.claims.stats import direction_verdict

    a, b = _records(evals or [], method, benchmark), _records(evals or [], baseline, benchmark)
    if not a or not b:
        return "inconclusive", {"reason": f"no pass@k evaluation of {method if not a else baseline} on {benchmark}"}
    if "first_call_pos" not in a[0][1]["per_problem"][0]:
        return "inconclusive", {"reason": f"{benchmark} records no tool calls (no tool environment)"}
    ma, mb = _matrix(a, "first_call_pos"), _matrix(b, "first_call_pos")
    keep = ~(np.isnan(ma).any(0) | np.isnan(mb).any(0))
    if not keep.any():
        return "inconclusive", {"reason": "no problem on which every checkpoint of both methods calls the tool"}
    v = direction_verdict(ma[:, keep], mb[:, keep], sign=-1)
    numbers = {x: v[x] for x in v if x != "verdict"}
    numbers.update(method_mean=float(ma[:, keep].mean()), baseline_mean=float(mb[:, keep].mean()),
                   problems_used=int(keep.sum()), problems=int(keep.size),
                   tool_use={method: float(np.mean([e.get("tool_use", 0.0) for _, e, _ in a])),
                             baseline: float(np.mean([e.get("tool_use", 0.0) for _, e, _ in b]))})
    return v["verdict"], numbers
