"""Statistics over seeds x problems for leaderboards and claims (rliable-style, numpy/scipy only).

A method's evaluation on one benchmark is a matrix ``M`` of shape (seeds, problems): the per-problem score of each
training seed's checkpoint (avg@k per problem: correct samples / k; greedy: 0 or 1).

- :func:`cell` mean with a 95 % CI from a *stratified two-level bootstrap*: resample seeds with replacement and,
  independently, problems with replacement (seed-to-seed and problem-to-problem variation both enter the CI).
- :func:`paired_difference` method minus baseline on the same problems: seeds resampled within each method (the
  strata), problems resampled once per draw and shared by both (paired over problems).
- :func:`iqm` interquartile mean (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice", sec. 4):
  the 25 %-trimmed mean of all (run, task) scores, ``scipy.stats.trim_mean(x, 0.25)``; :func:`iqm_ci` with
  rliable's stratified bootstrap (runs resampled within each task).
- :func:`probability_of_improvement` P(X > Y) (same paper, sec. 4.3): per task the Mann-Whitney U statistic of X's
  runs against Y's runs divided by n*m (ties count 1/2), averaged over tasks.

Verdicts (four outcomes, shared by the leaderboard and the card claims):

- :func:`direction_verdict` for "the method beats the baseline": ``reproduced`` when the CI of the difference
  excludes 0 on the claimed side, ``not_reproduced`` when it excludes 0 on the other side, ``inconclusive`` when it
  contains 0 (or fewer than two seeds: seed variance unknown), with an estimate of how many seeds would decide it;
  ``not_run`` without data.
- :func:`value_verdict` for "the paper's number": ``reproduced`` when the reported value lies inside our CI and the
  CI is narrow enough to mean it (half-width <= ``tolerance``), ``not_reproduced`` when it lies outside,
  ``inconclusive`` when it lies inside a CI wider than that; ``not_run`` without data.
- :func:`seed_side_verdict` for "one number per seed lies on the claimed side of 0" (an analysis's per-seed values,
  no problems to resample): reproduced, not reproduced or inconclusive on a Student-t interval over seeds
  (:func:`t_interval`).

The "how many more seeds" estimate assumes the CI half-width shrinks as 1/sqrt(seeds) (the seed term dominates);
it is a planning figure, reported as such. With two seeds the bootstrap over seeds sees only two values and so
under-states seed-to-seed variance; verdicts resting on two seeds deserve a third before they are quoted.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

DEFAULT_ITERS = 2000
ALPHA = 0.05
MAX_SEEDS_REPORTED = 1000


def _m(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected a non-empty (seeds, problems) matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("scores must be finite")
    return a


def _pct(draws: np.ndarray, alpha: float) -> list[float]:
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def cell(matrix, *, iters: int = DEFAULT_ITERS, seed: int = 0, alpha: float = ALPHA) -> dict:
    """Mean over seeds and problems with its stratified two-level bootstrap CI."""
    a = _m(matrix)
    S, P = a.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, size=(iters, S))
    pi = rng.integers(0, P, size=(iters, P))
    draws = np.array([a[si[b]][:, pi[b]].mean() for b in range(iters)])
    return {"mean": float(a.mean()), "ci": _pct(draws, alpha), "n_seeds": S, "n_problems": P,
            "seed_means": [float(v) for v in a.mean(axis=1)]}


def paired_difference(method, baseline, *, iters: int = DEFAULT_ITERS, seed: int = 0,
                      alpha: float = ALPHA) -> dict:
    """mean(method) - mean(baseline) over the same problems (columns aligned), with its bootstrap CI."""
    a, b = _m(method), _m(baseline)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"method and baseline must score the same problems ({a.shape[1]} vs {b.shape[1]})")
    P = a.shape[1]
    rng = np.random.default_rng(seed)
    draws = np.empty(iters)
    for i in range(iters):
        ia = rng.integers(0, a.shape[0], a.shape[0])
        ib = rng.integers(0, b.shape[0], b.shape[0])
        jp = rng.integers(0, P, P)
        draws[i] = a[ia][:, jp].mean() - b[ib][:, jp].mean()
    return {"diff": float(a.mean() - b.mean()), "ci": _pct(draws, alpha), "n_seeds": [a.shape[0], b.shape[0]],
            "n_problems": P}


def seeds_needed(half_width: float, effect: float, n_seeds: int) -> int | None:
    """Seeds (in all) at which a CI of this half-width would exclude an effect of this size, if the half-width
    shrinks as 1/sqrt(seeds); None when the effect is 0 (no number of seeds decides it)."""
    if effect == 0 or not math.isfinite(effect):
        return None
    need = math.ceil(max(n_seeds, 1) * (half_width / abs(effect)) ** 2)
    return max(need, n_seeds + 1, 2)


def direction_verdict(method, baseline, *, sign: int = +1, iters: int = DEFAULT_ITERS, seed: int = 0,
                      alpha: float = ALPHA, min_seeds: int = 2) -> dict:
    """Does ``method`` beat ``baseline`` in the claimed direction (``sign`` +1: higher is the claim)?"""
    if method is None or baseline is None or np.size(method) == 0 or np.size(baseline) == 0:
        return {"verdict": "not_run", "reason": "no evaluation of the method or of the baseline"}
    d = paired_difference(method, baseline, iters=iters, seed=seed, alpha=alpha)
    lo, hi = (v * sign for v in d["ci"])
    lo, hi = min(lo, hi), max(lo, hi)
    n = min(d["n_seeds"])
    out = {**d, "claimed_sign": sign, "alpha": alpha}
    if lo > 0 and n >= min_seeds:
        out["verdict"] = "reproduced"
    elif hi < 0 and n >= min_seeds:
        out["verdict"] = "not_reproduced"
    else:
        half = (d["ci"][1] - d["ci"][0]) / 2
        need = seeds_needed(half, d["diff"], n)
        if n < min_seeds:
            need = max(need or min_seeds, min_seeds)
            why = f"{n} seed: seed-to-seed variance is unknown"
        else:
            why = f"the 95 % CI [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] contains 0"
        out["verdict"] = "inconclusive"
        out["seeds_needed"] = need
        out["more_seeds"] = None if need is None else need - n
        out["reason"] = why + (f"; about {need - n} more seeds per method ({need} in all) would decide it, if the CI "
                               "narrows as 1/sqrt(seeds)" if need is not None and need <= MAX_SEEDS_REPORTED
                               else "; the observed effect is ~0: more seeds would not decide the direction")
    return out


def value_verdict(matrix, reported: float, *, tolerance: float = 0.05, iters: int = DEFAULT_ITERS, seed: int = 0,
                  alpha: float = ALPHA, min_seeds: int = 2) -> dict:
    """Is the paper's reported value (same scale as the scores, e.g. 0.804) inside our CI?"""
    if matrix is None or np.size(matrix) == 0:
        return {"verdict": "not_run", "reported": reported, "reason": "no evaluation at this protocol"}
    c = cell(matrix, iters=iters, seed=seed, alpha=alpha)
    lo, hi = c["ci"]
    half = (hi - lo) / 2
    out = {**c, "reported": float(reported), "tolerance": tolerance}
    if not lo <= reported <= hi:
        out["verdict"] = "not_reproduced" if c["n_seeds"] >= min_seeds else "inconclusive"
        if c["n_seeds"] < min_seeds:
            out["seeds_needed"], out["reason"] = min_seeds, "one seed: seed-to-seed variance is unknown"
    elif half <= tolerance and c["n_seeds"] >= min_seeds:
        out["verdict"] = "reproduced"
    else:
        need = max(seeds_needed(half, tolerance, c["n_seeds"]) or min_seeds, min_seeds)
        out.update(verdict="inconclusive", seeds_needed=need, more_seeds=need - c["n_seeds"],
                   reason=f"reported value inside a CI of half-width {half:.3f} > tolerance {tolerance}; about "
                          f"{need - c['n_seeds']} more seeds would narrow it to the tolerance")
    return out


def t_interval(values: list[float], alpha: float = ALPHA) -> list[float]:
    """Student-t interval of the mean of a few per-seed values (seeds are the replicates), in plain floats: one
    arithmetic for every check that judges one number per seed, so their verdicts agree to the last digit."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def seed_side_verdict(values: list[float], sign: int, numbers: dict, min_seeds: int,
                      ci_method: str = "t-interval over seeds") -> tuple[str, dict]:
    """Is the mean of per-seed ``values`` on the claimed side of 0 (``sign`` +1: above, -1: below)? Reproduced when
    its 95 % :func:`t_interval` lies on that side, not reproduced when on the other, inconclusive when it contains 0
    or with fewer than ``min_seeds`` seeds (seed variance unknown). Adds the interval (or the reason) to ``numbers``
    and returns ``(verdict, numbers)``."""
    if len(values) < min_seeds:
        numbers["reason"] = f"{len(values)} seed(s): seed-to-seed variance unknown (needs >= {min_seeds})"
        return "inconclusive", numbers
    lo, hi = t_interval(values)
    numbers.update(ci=[lo, hi], ci_level=0.95, ci_method=ci_method)
    side_lo, side_hi = sorted((lo * sign, hi * sign))
    if side_lo > 0:
        return "reproduced", numbers
    if side_hi < 0:
        return "not_reproduced", numbers
    numbers["reason"] = f"the 95 % CI [{lo:+.4g}, {hi:+.4g}] contains 0"
    return "inconclusive", numbers


# ---------------------------------------------------------------------------
# rliable's aggregate metrics over (runs, tasks)
# ---------------------------------------------------------------------------

def iqm(scores) -> float:
    """Interquartile mean of a (runs, tasks) score matrix: the 25 %-trimmed mean of all its entries."""
    return float(sps.trim_mean(np.asarray(scores, dtype=float).ravel(), 0.25))


def _stratified(scores: np.ndarray, rng) -> np.ndarray:
    """Resample runs with replacement within each task (column), as rliable's StratifiedBootstrap does."""
    R, T = scores.shape
    idx = rng.integers(0, R, size=(R, T))
    return scores[idx, np.arange(T)[None, :]]


def iqm_ci(scores, *, iters: int = DEFAULT_ITERS, seed: int = 0, alpha: float = ALPHA) -> dict:
    s = _m(scores)
    rng = np.random.default_rng(seed)
    draws = np.array([iqm(_stratified(s, rng)) for _ in range(iters)])
    return {"value": iqm(s), "ci": _pct(draws, alpha), "n_runs": s.shape[0], "n_tasks": s.shape[1]}


def probability_of_improvement(x, y) -> float:
    """P(X > Y): per task U / (n*m) of X's runs against Y's runs (ties 1/2), averaged over tasks.
    ``x`` and ``y`` are (runs, tasks) matrices with the same tasks (columns)."""
    x, y = _m(x), _m(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same tasks ({x.shape[1]} vs {y.shape[1]})")
    per_task = []
    for t in range(x.shape[1]):
        u = sps.mannwhitneyu(x[:, t], y[:, t], alternative="two-sided", method="asymptotic").statistic
        per_task.append(u / (x.shape[0] * y.shape[0]))
    return float(np.mean(per_task))


def probability_of_improvement_ci(x, y, *, iters: int = DEFAULT_ITERS, seed: int = 0, alpha: float = ALPHA) -> dict:
    x, y = _m(x), _m(y)
    rng = np.random.default_rng(seed)
    draws = np.array([probability_of_improvement(_stratified(x, rng), _stratified(y, rng)) for _ in range(iters)])
    return {"value": probability_of_improvement(x, y), "ci": _pct(draws, alpha)}


def per_seed_scores(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """(seeds, tasks) matrix of per-seed mean scores from one (seeds, problems) matrix per task (benchmark).
    Tasks with fewer seeds are skipped by the caller; all must have the same seeds here."""
    cols = [_m(m).mean(axis=1) for m in matrices]
    n = {len(c) for c in cols}
    if len(n) != 1:
        raise ValueError(f"tasks have different numbers of seeds: {sorted(n)}")
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------------------
# eval_result files -> (seeds, problems) matrices
# ---------------------------------------------------------------------------

#: a card's name for a job's held-out entries, whatever its task: text tasks' evaluations name them so, games' name
#: them ``<task>_heldout`` and ``<task>_heldout_greedy`` (harness.evaluate.heldout)
HELDOUT_NAMES = ("heldout", "heldout_greedy")


def entry_name(e: dict, benchmark: str) -> str | None:
    """The entry of eval_result ``e`` a claim's ``benchmark`` names: itself, or for ``heldout``/``heldout_greedy``
    the one ``<task>_heldout``/``<task>_heldout_greedy`` entry of a game's evaluation; None if it has none."""
    names = e.get("benchmarks") or {}
    if benchmark in names:
        return benchmark
    hits = [n for n in names if benchmark in HELDOUT_NAMES and n.endswith("_" + benchmark)]
    return hits[0] if len(hits) == 1 else None


def score_matrix(evals: Sequence[dict], method: str, benchmark: str) -> dict | None:
    """The (seeds, problems) per-problem scores (correct samples / k) of ``method``'s checkpoints on ``benchmark``
    from eval_result dicts whose ``source`` names the method and training seed; None if there are none.

    Raises :class:`harness.results.protocol.ProtocolMismatch` if the seeds were evaluated under different protocols, and
    ValueError if they scored different problems."""
    from harness.results.protocol import assert_same_protocol

    rows = sorted(((int(e["source"].get("seed") or 0), e) for e in evals
                   if (e.get("source") or {}).get("method") == method and entry_name(e, benchmark)),
                  key=lambda t: t[0])
    if not rows:
        return None
    benchmark = entry_name(rows[0][1], benchmark)
    views = [{"protocol": e["protocol"]["benchmarks"][benchmark],
              "protocol_hash": e["benchmarks"][benchmark]["protocol_hash"]} for _, e in rows]
    h = assert_same_protocol(views)
    ids = [p["id"] for p in rows[0][1]["benchmarks"][benchmark]["per_problem"]]
    mat = []
    for s, e in rows:
        b = e["benchmarks"][benchmark]
        got = {p["id"]: p["n_correct"] / b["k"] for p in b["per_problem"]}
        if set(got) != set(ids):
            raise ValueError(f"{method} seed {s} scored different {benchmark} problems than seed {rows[0][0]}")
        mat.append([got[i] for i in ids])
    return {"seeds": [s for s, _ in rows], "ids": ids, "matrix": np.array(mat), "protocol_hash": h,
            "protocol": views[0]["protocol"]}


def aligned(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Two score matrices restricted to the problems both scored, columns in the same order."""
    from harness.results.protocol import assert_same_protocol

    assert_same_protocol([{"protocol": a["protocol"], "protocol_hash": a["protocol_hash"]},
                          {"protocol": b["protocol"], "protocol_hash": b["protocol_hash"]}])
    pos = {i: j for j, i in enumerate(b["ids"])}
    cols = [(j, pos[i]) for j, i in enumerate(a["ids"]) if i in pos]
    return a["matrix"][:, [c[0] for c in cols]], b["matrix"][:, [c[1] for c in cols]]
