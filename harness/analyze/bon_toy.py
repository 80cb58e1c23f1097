r"""Best-of-N against the KL-optimal policy on the paper's toy, exactly (arXiv 2404.01730: a memoryless language model
and a linear reward; no training, no inputs).

Setting. A response is ``L`` tokens drawn independently from ``p`` over a vocabulary (``token_probs``); the reward
is linear, the sum of per-token rewards (``token_rewards``, non-negative integers, so the sequence reward takes the
integer levels ``0 .. L max r``). Per length ``L`` of ``lengths``:

- KL-constrained RL, the exponential tilt (:mod:`harness.analyze.bon`): for a memoryless model and a linear reward
  it factorises into per-token tilts ``p_lam(v) ~ p(v) e^(lam r(v))``, so per token ``KL/L = KL(p_lam || p)`` and
  ``reward/L = E_{p_lam}[r]``; the per-token curve does not depend on ``L``;
- best-of-N, exactly over the reward levels (their distribution is the ``L``-fold convolution of the token
  reward's), for real ``N`` from 1 to ``exp(L (kl_rate_max + 0.5))``, ``grid_points`` values spaced in ``log N``,
  and the ``ns`` the card names (the shared card's ``N in 1..64``).

The paper's asymptotic result is in the sequence length: with ``N = exp(L delta)`` best-of-N's per-token KL and
reward approach the tilted policy's, so the two reward-vs-KL curves meet as ``L`` grows. Measured per ``L``: the gap
``tilted reward/L - best-of-N reward/L`` at the same per-token KL, at each grid point whose per-token KL lies in
``[kl_rate_min, kl_rate_max]`` (the tilt's reward at that KL by root finding, scipy ``brentq``); the maximum gap
over the window is the curve distance. The gap is never negative (the tilt is the optimum at its KL; a negative
value beyond ``1e-9`` is a numerical error the result reports). The ``log N - (N - 1)/N`` reference is recorded per
point; here it is an upper bound of the exact KL (the levels tie).

Command line (the DAG's ``rules/analyze.smk``; settings as in :mod:`harness.analyze.cliff`)::

    python -m harness.analyze.bon_toy --settings '{"lengths": [4, 16]}' --out bon_toy.json [--source paper=P,tier=T]
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from harness.analyze.bon import bon_curve
from harness.analyze.cardargs import check_keys
from harness.analyze.record import analysis_record, write_analysis

NAME = "bon_toy"


@dataclass(frozen=True)
class ToySettings:
    """The toy and the grids (the card's ``tiers.<tier>.analysis.bon_toy`` block; every key optional)."""
    token_probs: list = field(default_factory=lambda: [0.5, 0.3, 0.2])  #: p over the vocabulary
    token_rewards: list = field(default_factory=lambda: [0, 1, 2])      #: r(v), non-negative integers
    lengths: list = field(default_factory=lambda: [4, 16, 64, 256])     #: sequence lengths L
    kl_rate_min: float = 0.02                                          #: window of per-token KL (nats/token)
    kl_rate_max: float = 0.4
    ns: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  #: N values recorded as such
    grid_points: int = 400                                             #: log N grid per length


def parse_settings(raw: dict | None) -> ToySettings:
    """Settings with defaults filled in; a bad value raises ValueError naming what is valid."""
    s = ToySettings(**check_keys(raw, [f.name for f in fields(ToySettings)], NAME))
    p = np.asarray(s.token_probs, float)
    if p.ndim != 1 or p.size < 2 or np.any(p <= 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-9):
        raise ValueError(f"bon_toy settings: token_probs must be >= 2 positive probabilities summing to 1, got "
                         f"{s.token_probs!r}")
    r = s.token_rewards
    if (not isinstance(r, list) or len(r) != p.size
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in r) or len(set(r)) < 2):
        raise ValueError(f"bon_toy settings: token_rewards must be {p.size} non-negative integers (one per token; "
                         f"at least two different), got {r!r}")
    for k in ("lengths", "ns"):
        v = getattr(s, k)
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                       for x in v):
            raise ValueError(f"bon_toy settings: {k} must be a non-empty list of integers >= 1, got {v!r}")
    kmax = float(-np.log(p[np.asarray(r) == max(r)].sum()))  # the tilt's per-token KL as lam -> infinity
    if not 0 < s.kl_rate_min < s.kl_rate_max < kmax:
        raise ValueError(f"bon_toy settings: need 0 < kl_rate_min < kl_rate_max < {kmax:.4g} (the largest per-token "
                         f"KL any policy of this toy reaches), got {s.kl_rate_min!r}, {s.kl_rate_max!r}")
    if not isinstance(s.grid_points, int) or s.grid_points < 10:
        raise ValueError(f"bon_toy settings: grid_points must be an integer >= 10, got {s.grid_points!r}")
    return ToySettings(token_probs=p.tolist(), token_rewards=list(r), lengths=sorted(set(s.lengths)),
                       kl_rate_min=float(s.kl_rate_min), kl_rate_max=float(s.kl_rate_max), ns=sorted(set(s.ns)),
                       grid_points=s.grid_points)


def tilt(p: np.ndarray, r: np.ndarray, lam: float) -> tuple[float, float]:
    """Per-token (KL(p_lam || p), E_{p_lam}[r]) of the tilt ``p_lam ~ p e^(lam r)``."""
    z = lam * r
    z = z - z.max()
    q = p * np.exp(z)
    q /= q.sum()
    return float(np.sum(q * np.log(q / p))), float(q @ r)


def tilt_reward_at(p: np.ndarray, r: np.ndarray, kl_rate: float) -> float:
    """The tilt's per-token reward at per-token KL ``kl_rate`` (the frontier; ``lam >= 0`` by root finding)."""
    from scipy.optimize import brentq

    if kl_rate <= 0:
        return float(p @ r)
    hi = 1.0
    while tilt(p, r, hi)[0] < kl_rate:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"per-token KL {kl_rate} is beyond what the tilt reaches")
    lam = brentq(lambda x: tilt(p, r, x)[0] - kl_rate, 0.0, hi, xtol=1e-13, rtol=1e-13)
    return tilt(p, r, lam)[1]


def levels(p: np.ndarray, r: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, values) of the sequence reward's levels 0 .. L max r (levels of probability 0 dropped)."""
    token = np.zeros(int(r.max()) + 1)
    np.add.at(token, r.astype(int), p)
    dist = np.array([1.0])
    for _ in range(length):
        dist = np.convolve(dist, token)
    keep = dist > 0
    return dist[keep] / dist[keep].sum(), np.arange(dist.size, dtype=float)[keep]


def compute(s: ToySettings) -> dict:
    p, r = np.asarray(s.token_probs), np.asarray(s.token_rewards, float)
    out = {}
    for L in s.lengths:
        probs, values = levels(p, r, L)
        log_n = np.linspace(0.0, L * (s.kl_rate_max + 0.5), s.grid_points)
        grid = bon_curve(probs, values, np.exp(log_n))
        named = bon_curve(probs, values, s.ns)
        kl_rate = np.asarray(grid["kl"]) / L
        bon_rate = np.asarray(grid["reward"]) / L
        tilted = np.array([tilt_reward_at(p, r, k) for k in kl_rate])
        gap = tilted - bon_rate
        win = (kl_rate >= s.kl_rate_min) & (kl_rate <= s.kl_rate_max)
        if not win.any():
            raise ValueError(f"bon_toy: no best-of-N grid point of length {L} has a per-token KL in the window")
        out[str(L)] = {
            "length": L, "log_n": log_n.tolist(), "kl_rate": kl_rate.tolist(), "bon_reward_rate": bon_rate.tolist(),
            "tilt_reward_rate": tilted.tolist(), "gap": gap.tolist(),
            "kl_formula_rate": (np.asarray(grid["kl_formula"]) / L).tolist(),
            "max_gap": float(gap[win].max()), "mean_gap": float(gap[win].mean()), "points_in_window": int(win.sum()),
            "min_gap": float(gap.min()), "ns": {str(n): {"kl": k, "reward": v, "kl_formula": f} for n, k, v, f in
                                                 zip(s.ns, named["kl"], named["reward"], named["kl_formula"])},
        }
    gaps = [out[str(L)]["max_gap"] for L in s.lengths]
    return {"lengths": out, "length_order": list(s.lengths), "max_gap_by_length": gaps,
            "gap_decreasing": bool(all(b < a for a, b in zip(gaps, gaps[1:]))),
            "shrink": gaps[-1] / gaps[0] if gaps[0] > 0 else None,
            "never_above_optimum": bool(min(out[str(L)]["min_gap"] for L in s.lengths) >= -1e-9),
            "tilt_base_rate": float(p @ r)}


def run(settings: dict | None, out: str | Path, source: dict | None = None) -> dict:
    """Compute and write the analysis result file; returns the record as written."""
    t0 = time.time()
    s = parse_settings(settings)
    return write_analysis(analysis_record(NAME, asdict(s), compute(s), source=source,
                                          wall_seconds=time.time() - t0), out)


def _summary(r: dict) -> list[str]:
    return [f"L={L:>4}: max per-token reward gap (tilted - best-of-N) at matched KL {g:.5f}"
            for L, g in zip(r["result"]["length_order"], r["result"]["max_gap_by_length"])]


def main(argv=None) -> int:
    from harness.analyze.cardargs import card_command

    return card_command(NAME, __doc__, argv, lambda settings, source, a: run(settings, a.out, source=source),
                        _summary)


if __name__ == "__main__":
    sys.exit(main())
