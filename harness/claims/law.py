"""The empirical law R = -a * exp(H) + b (Entropy Mechanism, arXiv 2505.22617, abstract / Sec. 3)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import curve_fit


def law(h, a, b):
    return -a * np.exp(h) + b


@dataclass
class LawFit:
    a: float
    b: float
    r2: float
    ceiling: float  # predicted R at H = 0, i.e. b - a
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def fit_law(h, r) -> LawFit:
    h, r = np.asarray(h, float), np.asarray(r, float)
    if len(h) < 3:
        raise ValueError(f"need at least 3 (entropy, reward) points to fit the law, got {len(h)}")
    # R is linear in (exp(H), 1): least squares gives the exact optimum; curve_fit refines from there
    X = np.stack([-np.exp(h), np.ones_like(h)], 1)
    (a0, b0), *_ = np.linalg.lstsq(X, r, rcond=None)
    (a, b), _ = curve_fit(law, h, r, p0=(a0, b0), maxfev=10000)
    ss_res = float(np.sum((r - law(h, a, b)) ** 2))
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return LawFit(a=float(a), b=float(b), r2=r2, ceiling=float(b - a), n=len(h))


def early_late_prediction(h, r, steps, early_fraction: float) -> dict:
    """Fit on the evaluations of the first ``early_fraction`` of training, predict the rest (RMSE, MAE)."""
    h, r, steps = (np.asarray(x, float) for x in (h, r, steps))
    cut = steps.min() + early_fraction * (steps.max() - steps.min())
    early, late = steps <= cut, steps > cut
    if early.sum() < 3 or late.sum() < 1:
        return {"early_points": int(early.sum()), "late_points": int(late.sum()), "rmse": None, "mae": None}
    f = fit_law(h[early], r[early])
    err = r[late] - law(h[late], f.a, f.b)
    return {"early_points": int(early.sum()), "late_points": int(late.sum()), "early_fit": f.to_dict(),
            "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
