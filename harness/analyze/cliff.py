r"""The policy cliff (arXiv 2507.20150), exactly, on a multi-reward bandit: no training.

Setting. ``K`` arms, ``M`` reward components: arm ``a`` has reward vector ``R[a]`` (``rewards``, K x M). Reward
weights ``w + eps d`` (``weights``, ``direction``) give the effective reward ``r_eps = R w + eps v`` with
``v = R d``. At ``eps = 0`` at least two arms are tied optimal (the degenerate case the paper's cliff needs; checked).
For each ``eps`` of a symmetric grid through 0 (``n_eps`` points, odd, in ``[-eps_max, eps_max]``):

- unregularised optimum (``tau = 0``): ``argmax_a r_eps[a]``, ties split evenly (the maximum-entropy optimal
  policy: uniform on the optimal set ``A_eps``; arms within ``tie_tol`` of the maximum count as tied);
- entropy-regularised optimum of ``E_pi[r] + tau H(pi)``, for each ``tau`` in ``taus``:
  ``pi_tau(eps) = softmax(r_eps / tau)``.

Policy change, against the ``eps = 0`` policy of the same ``tau``: ``KL(pi_eps || pi_0)`` (null where infinite),
total variation ``TV = ||pi_eps - pi_0||_1 / 2``, and the rate of the ``target_arm`` ("the behaviour").

Closed forms (recorded in the result; the tests check the grid against them):

- Without the bonus, the map jumps at 0. With ``A_0`` the tied set (``m = |A_0|``), the right limit is uniform on
  ``A_+ = argmax_{a in A_0} v[a]`` and the left limit uniform on ``A_- = argmin_{a in A_0} v[a]`` (for ``eps`` small
  enough that no other arm catches up), so for every small ``eps > 0``: ``KL(pi_eps || pi_0) = log(m / |A_+|)``,
  ``TV(pi_eps, pi_0) = 1 - |A_+| / m`` (and the same with ``A_-`` for ``eps < 0``); across 0,
  ``TV(pi_{0-}, pi_{0+}) = 1`` when ``A_+`` and ``A_-`` are disjoint. Two tied arms and ``v`` separating them:
  KL = log 2, TV to the tie = 1/2, the target rate steps 0 -> 1/2 -> 1. No grid is fine enough to smooth it.
- With the bonus the map is smooth: ``d pi / d eps = (1/tau) (diag(pi) - pi pi^T) v``, so
  ``||d pi / d eps||_1 = (1/tau) sum_a pi[a] |v[a] - pi.v| <= span(v) / (2 tau) <= ||v||_inf / tau``
  (a mean absolute deviation of values in an interval of length ``span(v) = max v - min v`` is at most half of it;
  equality at two arms with ``pi = (1/2, 1/2)``). Hence the Lipschitz bound
  ``||pi_tau(eps) - pi_tau(eps')||_1 <= |eps - eps'| span(v) / (2 tau)``, a constant of order ``1/tau``: continuity
  restored, at the price of a policy that stays stochastic (``pi_tau(0)`` is uniform on the tied arms in the limit
  ``tau -> 0``, and ``pi_tau(eps) -> argmax`` for fixed ``eps != 0``). Near 0,
  ``KL(pi_eps || pi_0) = eps^2 Var_{pi_0}(v) / (2 tau^2) + O(eps^3)``.

Command line (the DAG's ``rules/analyze.smk``; settings as JSON, a JSON file, or ``<paper>:<tier>`` reading the
card's ``tiers.<tier>.analysis.cliff`` block)::

    python -m harness.analyze.cliff --settings '{"taus": [0.05]}' --out cliff.json [--source paper=P,tier=T]
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from harness.analyze.cardargs import check_keys
from harness.analyze.record import analysis_record, write_analysis

NAME = "cliff"


@dataclass(frozen=True)
class CliffSettings:
    """The bandit and the grid (the card's ``tiers.<tier>.analysis.cliff`` block; every key optional)."""
    #: arm -> reward components (K x M); default: two arms tied at effective reward 1, a third at 0.6
    rewards: list = field(default_factory=lambda: [[1.0, 0.0], [0.0, 1.0], [0.3, 0.3]])
    weights: list = field(default_factory=lambda: [1.0, 1.0])      #: w (M)
    direction: list = field(default_factory=lambda: [1.0, -1.0])   #: d (M): weights move as w + eps d
    eps_max: float = 0.05                                          #: grid half-width (units of the weights)
    n_eps: int = 101                                               #: grid points, odd (0 is one of them)
    taus: list = field(default_factory=lambda: [0.02, 0.05, 0.1])  #: entropy coefficients (> 0)
    target_arm: int = 0                                            #: the arm whose rate is "the behaviour"
    tie_tol: float = 1e-9                                          #: arms this close to the maximum are tied


def parse_settings(raw: dict | None) -> CliffSettings:
    """Settings from a card block or JSON, defaults filled in; a bad value raises ValueError naming what is valid."""
    s = CliffSettings(**check_keys(raw, [f.name for f in fields(CliffSettings)], NAME))
    try:
        R = np.asarray(s.rewards, float)
        w, d, taus = (np.asarray(x, float) for x in (s.weights, s.direction, s.taus))
    except (TypeError, ValueError) as e:
        raise ValueError(f"cliff settings: rewards, weights, direction and taus must be numbers ({e})") from None
    if R.ndim != 2 or R.shape[0] < 2 or R.shape[1] < 1:
        raise ValueError(f"cliff settings: rewards must be a K x M matrix with K >= 2 arms, got shape {R.shape}")
    if w.shape != (R.shape[1],) or d.shape != (R.shape[1],):
        raise ValueError(f"cliff settings: weights and direction need {R.shape[1]} entries (one per reward "
                         f"component, the columns of rewards), got {w.shape[0] if w.ndim else 1} and "
                         f"{d.shape[0] if d.ndim else 1}")
    if not np.all(np.isfinite(R)) or not np.all(np.isfinite(w)) or not np.all(np.isfinite(d)):
        raise ValueError("cliff settings: rewards, weights and direction must be finite")
    if not isinstance(s.n_eps, int) or isinstance(s.n_eps, bool) or s.n_eps < 3 or s.n_eps % 2 == 0:
        raise ValueError(f"cliff settings: n_eps must be an odd integer >= 3 (so that eps = 0 is on the grid), "
                         f"got {s.n_eps!r}")
    if not (isinstance(s.eps_max, (int, float)) and s.eps_max > 0 and math.isfinite(s.eps_max)):
        raise ValueError(f"cliff settings: eps_max must be a positive number, got {s.eps_max!r}")
    if taus.ndim != 1 or taus.size == 0 or not np.all(taus > 0) or not np.all(np.isfinite(taus)):
        raise ValueError(f"cliff settings: taus must be a non-empty list of positive entropy coefficients "
                         f"(tau = 0, the unregularised optimum, is always computed), got {s.taus!r}")
    if not isinstance(s.target_arm, int) or not 0 <= s.target_arm < R.shape[0]:
        raise ValueError(f"cliff settings: target_arm must be an arm index in 0..{R.shape[0] - 1}, "
                         f"got {s.target_arm!r}")
    if not (isinstance(s.tie_tol, (int, float)) and s.tie_tol >= 0):
        raise ValueError(f"cliff settings: tie_tol must be >= 0, got {s.tie_tol!r}")
    r0 = R @ w
    tied = _optimal_set(r0, s.tie_tol)
    if tied.sum() < 2:
        raise ValueError(f"cliff settings: the effective reward R w = {np.round(r0, 6).tolist()} has one optimal arm "
                         f"({int(np.argmax(r0))}); the cliff needs at least two tied optimal arms at eps = 0")
    return CliffSettings(rewards=R.tolist(), weights=w.tolist(), direction=d.tolist(), eps_max=float(s.eps_max),
                         n_eps=s.n_eps, taus=taus.tolist(), target_arm=s.target_arm, tie_tol=float(s.tie_tol))


def _optimal_set(r: np.ndarray, tol: float) -> np.ndarray:
    return r >= r.max() - tol * max(1.0, abs(float(r.max())))


def argmax_policy(r: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """The unregularised optimum: uniform on the arms within ``tol`` of the maximum."""
    opt = _optimal_set(np.asarray(r, float), tol)
    return opt / opt.sum()


def softmax_policy(r: np.ndarray, tau: float) -> np.ndarray:
    """The optimum of ``E_pi[r] + tau H(pi)``: ``softmax(r / tau)`` (shifted by the maximum: no overflow)."""
    z = (np.asarray(r, float) - np.max(r)) / tau
    e = np.exp(z)
    return e / e.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p || q)`` in nats; ``inf`` when ``p`` puts mass where ``q`` has none."""
    m = p > 0
    if np.any(q[m] == 0):
        return math.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def _curve(policies: np.ndarray, eps: np.ndarray, i0: int, target: int) -> dict:
    p0 = policies[i0]
    steps_l1 = np.abs(np.diff(policies, axis=0)).sum(1) / np.diff(eps)
    return {
        "policy": policies.tolist(),
        "kl_to_eps0": [kl(p, p0) for p in policies],
        "tv_to_eps0": [tv(p, p0) for p in policies],
        "target_rate": policies[:, target].tolist(),
        "jump_tv": tv(policies[i0 - 1], policies[i0 + 1]),  # across 0, between the grid neighbours of eps = 0
        "jump_target_rate": float(policies[i0 + 1, target] - policies[i0 - 1, target]),
        "max_l1_slope": float(steps_l1.max()),  # max over grid steps of ||pi_{i+1} - pi_i||_1 / (eps_{i+1} - eps_i)
    }


def closed_form(s: CliffSettings) -> dict:
    """The module docstring's closed forms for these settings (limits at 0 without the bonus; slope, curvature and
    Lipschitz bound with it)."""
    R, w, d = np.asarray(s.rewards), np.asarray(s.weights), np.asarray(s.direction)
    r0, v = R @ w, R @ d
    tied = np.flatnonzero(_optimal_set(r0, s.tie_tol))
    vt = v[tied]
    up, down = tied[np.isclose(vt, vt.max())], tied[np.isclose(vt, vt.min())]
    right, left = np.zeros(len(r0)), np.zeros(len(r0))
    right[up], left[down] = 1 / len(up), 1 / len(down)
    out = {"effective_reward_at_0": r0.tolist(), "v": v.tolist(), "tied_arms": tied.tolist(),
           "unregularised": {"right_limit": right.tolist(), "left_limit": left.tolist(),
                             "kl_right": math.log(len(tied) / len(up)), "kl_left": math.log(len(tied) / len(down)),
                             "tv_right": 1 - len(up) / len(tied), "tv_left": 1 - len(down) / len(tied),
                             "jump_tv": tv(left, right),
                             "jump_target_rate": float(right[s.target_arm] - left[s.target_arm])},
           "regularised": {}}
    span = float(v.max() - v.min())
    for tau in s.taus:
        p = softmax_policy(r0, tau)
        mean = float(p @ v)
        out["regularised"][_tau_key(tau)] = {
            "tau": tau, "lipschitz_bound_l1": span / (2 * tau), "lipschitz_bound_l1_inf": float(np.abs(v).max()) / tau,
            "slope_l1_at_0": float(np.sum(p * np.abs(v - mean))) / tau,
            "kl_curvature_at_0": float(p @ (v - mean) ** 2) / tau ** 2,  # KL ~ curvature * eps^2 / 2
        }
    return out


def _tau_key(tau: float) -> str:
    return f"tau={tau:g}"


def compute(s: CliffSettings) -> dict:
    """Every policy of the grid, its change against eps = 0, and the closed forms (see the module docstring)."""
    R, w, d = np.asarray(s.rewards), np.asarray(s.weights), np.asarray(s.direction)
    eps = np.linspace(-s.eps_max, s.eps_max, s.n_eps)
    i0 = s.n_eps // 2
    eps[i0] = 0.0  # exactly
    rs = (R @ w)[None, :] + eps[:, None] * (R @ d)[None, :]
    curves = {"unregularised": {"tau": 0.0, **_curve(np.stack([argmax_policy(r, s.tie_tol) for r in rs]), eps, i0,
                                                        s.target_arm)}}
    cf = closed_form(s)
    for tau in s.taus:
        c = _curve(np.stack([softmax_policy(r, tau) for r in rs]), eps, i0, s.target_arm)
        bound = cf["regularised"][_tau_key(tau)]["lipschitz_bound_l1"]
        curves[_tau_key(tau)] = {"tau": tau, **c, "lipschitz_bound_l1": bound,
                                 "within_lipschitz_bound": bool(c["max_l1_slope"] <= bound * (1 + 1e-9))}
    return {"eps": eps.tolist(), "eps_step": float(eps[1] - eps[0]), "curves": curves, "closed_form": cf}


def run(settings: dict | None, out: str | Path, source: dict | None = None) -> dict:
    """Compute and write the analysis result file; returns the record as written."""
    t0 = time.time()
    s = parse_settings(settings)
    result = compute(s)
    return write_analysis(analysis_record(NAME, asdict(s), result, source=source,
                                          wall_seconds=time.time() - t0), out)


def settings_arg(text: str) -> tuple[dict, dict]:
    """``--settings``: a JSON object, a JSON file, or ``<paper>:<tier>`` (the card's ``analysis.cliff`` block).
    Returns (settings, source)."""
    from harness.analyze.cardargs import settings_arg as card_settings

    return card_settings(text, NAME)


def _summary(r: dict) -> list[str]:
    return [f"{key:<14} jump across 0: TV {c['jump_tv']:.4f}, target rate {c['jump_target_rate']:+.4f}; "
            f"max ||d pi||_1 / d eps {c['max_l1_slope']:.3f}"
            + (f" (bound {c['lipschitz_bound_l1']:.3f})" if "lipschitz_bound_l1" in c else "")
            for key, c in r["result"]["curves"].items()]


def main(argv=None) -> int:
    from harness.analyze.cardargs import card_command

    return card_command(NAME, __doc__, argv, lambda settings, source, a: run(settings, a.out, source=source),
                        _summary)


if __name__ == "__main__":
    sys.exit(main())
