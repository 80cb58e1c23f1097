"""Accuracy metrics over k samples per problem, with seeded bootstrap confidence intervals.

Inputs are per-problem lists of per-sample verdicts: ``correct`` is a (P, n) 0/1 array (P problems, n samples
each; greedy: n = 1), ``answers`` the (P, n) vote keys for maj@k (hashable, ``None`` = no answer, no vote).

- avg@k: mean correctness over all P*n samples (= the unbiased pass@1 estimate).
- pass@k: Chen et al. (2021) unbiased estimator ``1 - C(n-c, k) / C(n, k)`` per problem, averaged over problems.
- maj@k: per problem the most frequent answer among the samples wins; ties go to the answer whose first
  occurrence comes first (deterministic, independent of hashing); a problem whose samples give no answer scores 0.
- greedy accuracy: mean correctness of the single greedy response.

Confidence intervals are percentile bootstrap intervals (default 95 %) with ``numpy.random.default_rng(seed)``:
over problems (resample the P problems with replacement) for every metric, and for avg@k also over samples
(two-level: resample problems, then the n samples within each drawn problem; the second level is drawn exactly as
``Binomial(n, c_i / n) / n``, which is what resampling n Bernoulli samples with replacement gives).
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

__all__ = [
    "avg_at_k", "pass_at_k", "pass_at_k_per_problem", "majority_vote", "maj_at_k", "greedy_accuracy",
    "bootstrap_ci", "avg_at_k_ci", "summarize",
]

DEFAULT_ITERS = 2000
DEFAULT_ALPHA = 0.05


def _matrix(correct) -> np.ndarray:
    a = np.asarray(correct, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"correct must be a non-empty (problems, samples) array, got shape {a.shape}")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError("correct must hold only 0/1 (False/True)")
    return a


def avg_at_k(correct) -> float:
    """Mean accuracy over all samples of all problems."""
    return float(_matrix(correct).mean())


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples (Chen et al. 2021, Fig. 3)."""
    n, c, k = int(n), int(c), int(k)
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_per_problem(correct, k: int) -> np.ndarray:
    a = _matrix(correct)
    n = a.shape[1]
    return np.array([pass_at_k(n, int(c), k) for c in a.sum(axis=1)])


def majority_vote(answers: Sequence[Sequence[Hashable | None]], correct) -> np.ndarray:
    """Per problem: is the majority answer correct? (bool array of length P)"""
    a = _matrix(correct)
    if len(answers) != a.shape[0]:
        raise ValueError(f"answers has {len(answers)} problems, correct has {a.shape[0]}")
    out = np.zeros(a.shape[0], dtype=bool)
    for i, (ans, cor) in enumerate(zip(answers, a)):
        if len(ans) != a.shape[1]:
            raise ValueError(f"problem {i}: {len(ans)} answers for {a.shape[1]} samples")
        counts: dict = {}
        first: dict = {}
        for j, x in enumerate(ans):
            if x is None:
                continue
            counts[x] = counts.get(x, 0) + 1
            first.setdefault(x, j)
        if not counts:
            continue
        best = min(counts, key=lambda x: (-counts[x], first[x]))
        out[i] = bool(cor[first[best]])
    return out


def maj_at_k(answers, correct) -> float:
    return float(majority_vote(answers, correct).mean())


def greedy_accuracy(correct) -> float:
    a = _matrix(correct)
    if a.shape[1] != 1:
        raise ValueError(f"greedy accuracy takes one response per problem, got {a.shape[1]}")
    return float(a.mean())


def _ci(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(values, *, iters: int = DEFAULT_ITERS, alpha: float = DEFAULT_ALPHA,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-problem ``values``, resampling problems."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(iters), v.size))
    return _ci(v[idx].mean(axis=1), alpha)


def avg_at_k_ci(correct, *, iters: int = DEFAULT_ITERS, alpha: float = DEFAULT_ALPHA, seed: int = 0,
                two_level: bool = True) -> tuple[float, float]:
    """CI of avg@k: problems resampled, and (``two_level``) the samples within each drawn problem too."""
    a = _matrix(correct)
    P, n = a.shape
    p_hat = a.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, P, size=(int(iters), P))
    if two_level and n > 1:
        draws = rng.binomial(n, p_hat[idx]) / n
    else:
        draws = p_hat[idx]
    return _ci(draws.mean(axis=1), alpha)


def summarize(correct, answers=None, *, greedy: bool = False, iters: int = DEFAULT_ITERS,
              alpha: float = DEFAULT_ALPHA, seed: int = 0) -> dict:
    """All metrics of one benchmark with their CIs.

    Returns ``{"n_problems", "k", "metrics": {name: {"value", "ci": [lo, hi], "ci_level", "ci_method"}}}`` with
    names ``greedy_acc`` (greedy) or ``avg@k``, ``pass@1``, ``pass@k``, ``maj@k`` (sampled; ``maj@k`` needs
    ``answers``).
    """
    a = _matrix(correct)
    P, n = a.shape
    level = 1 - alpha

    def entry(value, ci, method):
        return {"value": float(value), "ci": [ci[0], ci[1]], "ci_level": level, "ci_method": method}

    metrics = {}
    if greedy:
        metrics["greedy_acc"] = entry(greedy_accuracy(a), bootstrap_ci(a[:, 0], iters=iters, alpha=alpha, seed=seed),
                                      "bootstrap over problems")
    else:
        metrics["avg@k"] = entry(avg_at_k(a), avg_at_k_ci(a, iters=iters, alpha=alpha, seed=seed),
                                 "two-level bootstrap (problems, then samples)" if n > 1 else "bootstrap over problems")
        p1 = pass_at_k_per_problem(a, 1)
        metrics["pass@1"] = entry(p1.mean(), bootstrap_ci(p1, iters=iters, alpha=alpha, seed=seed + 1),
                                  "bootstrap over problems")
        pk = pass_at_k_per_problem(a, n)
        metrics["pass@k"] = entry(pk.mean(), bootstrap_ci(pk, iters=iters, alpha=alpha, seed=seed + 2),
                                  "bootstrap over problems")
        if answers is not None:
            mv = majority_vote(answers, a).astype(float)
            metrics["maj@k"] = entry(mv.mean(), bootstrap_ci(mv, iters=iters, alpha=alpha, seed=seed + 3),
                                     "bootstrap over problems")
    return {"n_problems": int(P), "k": int(n), "metrics": metrics,
            "bootstrap": {"iters": int(iters), "seed": int(seed), "alpha": float(alpha)}}
