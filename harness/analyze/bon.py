r"""Best-of-N and KL-constrained RL in closed form (Asymptotics of Language Model Alignment, arXiv 2404.01730): the
curves :mod:`harness.analyze.bon_toy` and :mod:`harness.analyze.reward_kl` draw. Numbers only (numpy/scipy).

Best-of-N with ties. Let the reward of a response take levels ``v_0 < ... < v_m`` with probabilities ``P(k)`` under
the reference ``p`` and CDF ``F(k)``. Best-of-N keeps the highest-reward of ``N`` samples, ties broken uniformly at
random, so inside a level it keeps ``p``'s proportions and the level of the kept response has
``P_N(k) = F(k)^N - F(k-1)^N``. Hence, exactly (the within-level factors cancel)::

    KL(pi_BoN || p) = sum_k P_N(k) log(P_N(k) / P(k)),      E_BoN[r] = sum_k P_N(k) v_k.

``log N - (N - 1) / N`` (:func:`bon_kl_formula`) is this KL when no two responses tie (a continuous reward: the
kept rank ``u = F`` is Beta(N, 1), ``KL = E log(N u^(N-1)) = log N + (N - 1) E log u = log N - (N - 1)/N``); with ties
it is an upper bound (merging responses into levels is a data-processing step; Beirami et al., arXiv 2401.01879), so
it is an x-axis reference only (the shared card's pitfall). ``N`` may be any real ``>= 1`` (``F^N`` is a CDF).

KL-constrained RL. The optimum of ``max E_phi[r]`` s.t. ``KL(phi || p) <= Delta`` is the exponential tilt
``phi_lam(y) ~ p(y) exp(lam r(y))`` with ``lam`` set by the constraint (the paper's closed form), so at its own KL no
policy has a higher expected reward: the *frontier*. For a binary reward (correct or not) with success rate ``s``
per prompt both families change only the mass of the two levels: best-of-N gives ``1 - (1 - s)^N``, the tilt
``s e^lam / (s e^lam + 1 - s)``, and each has ``KL = kl(q || s)`` (:func:`kl_bernoulli`); over prompts the tilt keeps
one ``lam`` for all (the KL-optimal allocation), best-of-N one ``N``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_TINY = 1e-300


def bon_kl_formula(n) -> np.ndarray:
    """``log N - (N - 1) / N`` (nats), the best-of-N KL without ties; an upper bound with them."""
    n = np.asarray(n, float)
    if np.any(n < 1):
        raise ValueError(f"best-of-N needs N >= 1, got {np.min(n)}")
    return np.log(n) - (n - 1) / n


def kl_bernoulli(q, s) -> np.ndarray:
    """``KL(Bern(q) || Bern(s))`` in nats, elementwise (0 log 0 = 0; ``inf`` where q puts mass s lacks)."""
    q, s = np.broadcast_arrays(np.asarray(q, float), np.asarray(s, float))
    out = np.zeros(q.shape)
    for a, b in ((q, s), (1 - q, 1 - s)):
        pos = a > 0
        with np.errstate(divide="ignore"):
            out[pos] += a[pos] * (np.log(a[pos]) - np.log(b[pos]))
    return out


def bon_levels(probs: Sequence[float], n) -> np.ndarray:
    """``P_N(k) = F(k)^N - F(k-1)^N`` for reward levels of probabilities ``probs`` (ascending reward), for each
    ``N`` of ``n`` (rows); computed from the upper tails so that ``F`` near 1 and huge ``N`` stay exact."""
    p = np.asarray(probs, float)
    if p.ndim != 1 or p.size < 1 or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-9):
        raise ValueError("level probabilities must be a non-empty 1-D distribution (non-negative, summing to 1)")
    n = np.atleast_1d(np.asarray(n, float))
    if np.any(n < 1):
        raise ValueError(f"best-of-N needs N >= 1, got {np.min(n)}")
    cum = np.cumsum(p)                                              # F(k), exact where small
    tail = np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])    # 1 - F(k), exact where small
    with np.errstate(divide="ignore"):
        log_f = np.where(cum <= 0.5, np.log(cum), np.log1p(-np.minimum(tail, 1.0)))  # log F(k); F(top) = 1
    log_f_prev = np.concatenate([[-np.inf], log_f[:-1]])            # log F(k - 1)
    a = n[:, None] * log_f[None, :]
    b = n[:, None] * log_f_prev[None, :]
    with np.errstate(invalid="ignore"):
        out = np.exp(a) * -np.expm1(b - a)                           # F^N - F_prev^N, no cancellation
    out[:, p == 0] = 0.0
    return out


def bon_curve(probs: Sequence[float], values: Sequence[float], n) -> dict:
    """Exact best-of-N over reward levels (module docstring): per ``N``, ``kl`` (nats), ``reward`` and the
    ``kl_formula`` reference."""
    p, v = np.asarray(probs, float), np.asarray(values, float)
    if p.shape != v.shape:
        raise ValueError(f"one reward value per level: {v.shape} values for {p.shape} levels")
    if np.any(np.diff(v) <= 0):
        raise ValueError("reward levels must be strictly increasing")
    pn = bon_levels(p, n)
    pos = (pn > 0) & (p[None, :] > 0)
    kl = np.where(pos, pn * (np.log(np.where(pos, pn, 1.0)) - np.log(np.where(p > 0, p, 1.0))[None, :]), 0.0).sum(1)
    n = np.atleast_1d(np.asarray(n, float))
    return {"n": n.tolist(), "kl": np.maximum(kl, 0.0).tolist(), "reward": (pn @ v).tolist(),
            "kl_formula": bon_kl_formula(n).tolist()}


def bon_binary(success, n) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-N with a binary reward over prompts of success rates ``success``: (mean reward, mean KL) per ``N``
    (ties broken uniformly: the kept response is a uniform correct one if any of the N is)."""
    s = np.asarray(success, float)
    n = np.atleast_1d(np.asarray(n, float))
    q = 1.0 - (1.0 - s[None, :]) ** n[:, None]
    return q.mean(1), kl_bernoulli(q, s[None, :]).mean(1)


def tilt_binary(success, lam) -> tuple[np.ndarray, np.ndarray]:
    """The KL-optimal policy (exponential tilt ``exp(lam r)``) with a binary reward over prompts: (mean reward, mean
    KL) per ``lam >= 0``."""
    s = np.asarray(success, float)[None, :]
    lam = np.atleast_1d(np.asarray(lam, float))[:, None]
    with np.errstate(over="ignore"):
        e = np.exp(np.minimum(lam, 700.0))
    q = np.where(s > 0, s * e / (s * e + (1 - s)), 0.0)
    return q.mean(1), kl_bernoulli(q, s).mean(1)


def binary_endpoint(success) -> tuple[float, float]:
    """Where both binary curves end (N or lam to infinity): every prompt with success > 0 solved; (reward, KL)."""
    s = np.asarray(success, float)
    pos = s > 0
    return float(pos.mean()), float(np.where(pos, -np.log(np.where(pos, s, 1.0)), 0.0).mean())


def interp_reward(kl_curve, reward_curve, kl, endpoint: tuple[float, float] | None = None) -> float:
    """A curve's reward at ``kl`` (linear between its points, which rise in both coordinates); beyond its last point
    the ``endpoint``'s reward (the curve's supremum), before its first the first reward."""
    x, y = np.asarray(kl_curve, float), np.asarray(reward_curve, float)
    if endpoint is not None:
        x, y = np.append(x, endpoint[1]), np.append(y, endpoint[0])
    order = np.argsort(x, kind="stable")
    x, y = x[order], np.maximum.accumulate(y[order])
    return float(np.interp(kl, x, y))
