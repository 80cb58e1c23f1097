"""Entropy atlas: does a method beat the baseline's reward-entropy curve, or only move along it?

For every (paper, tier) verdict's runs: fit ``R = -a exp(H) + b`` on the baseline's held-out points (seeds pooled);
for each method take its late-training points (the last ``late_fraction`` of evaluations) and their residuals against
that curve. A two-level bootstrap (seeds, then points within a seed) gives a 95 % CI of the mean residual:
``beats_curve`` (CI above 0), ``below_curve`` (CI below 0) or ``along_curve`` (CI contains 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.claims.law import fit_law, law

CLASSES = ("beats_curve", "along_curve", "below_curve")


def late_points(run: dict, late_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    ev = run["heldout"]
    n = max(1, int(round(late_fraction * len(ev))))
    late = ev[-n:]
    return np.array([e["entropy"] for e in late]), np.array([e["sampled_acc"] for e in late])


def classify(method_runs: list[dict], base_fit, *, late_fraction: float = 0.3, n_boot: int = 2000,
             seed: int = 0) -> dict:
    resid = []
    for r in method_runs:
        h, acc = late_points(r, late_fraction)
        resid.append(acc - law(h, base_fit.a, base_fit.b))
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        seeds = rng.integers(0, len(resid), len(resid))
        boots[i] = np.mean([rng.choice(resid[s], len(resid[s])).mean() for s in seeds])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    mean = float(np.mean([x.mean() for x in resid]))
    verdict = "beats_curve" if lo > 0 else "below_curve" if hi < 0 else "along_curve"
    return {"verdict": verdict, "mean_residual": mean, "ci95": [float(lo), float(hi)], "seeds": len(resid),
            "late_points_per_seed": [len(x) for x in resid]}


def atlas_for(results: list[dict], baseline: str, late_fraction: float = 0.3) -> dict:
    base = [r for r in results if r["job"]["method"] == baseline]
    pts = lambda rs, k: [e[k] for r in rs for e in r["heldout"]]  # noqa: E731
    base_fit = fit_law(pts(base, "entropy"), pts(base, "sampled_acc"))
    out = {"baseline": baseline, "baseline_fit": base_fit.to_dict(),
           "pooled_fit": fit_law(pts(results, "entropy"), pts(results, "sampled_acc")).to_dict(), "methods": {}}
    for m in sorted({r["job"]["method"] for r in results} - {baseline}):
        runs = [r for r in results if r["job"]["method"] == m]
        entry = classify(runs, base_fit, late_fraction=late_fraction)
        try:
            entry["own_fit"] = fit_law(pts(runs, "entropy"), pts(runs, "sampled_acc")).to_dict()
        except Exception:  # too few points for a fit of its own
            entry["own_fit"] = None
        out["methods"][m] = entry
    return out


def pinned_runs(results_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """(paper, tier) -> the runs its verdict judged, under a results or work dir (joined by content hash)."""
    from harness.config import ConfigError
    from harness.results.store import replications

    out = {}
    for key, rep in replications(results_dir, ConfigError).items():
        runs = sorted(rep["train"], key=lambda r: f"{r['job']['method']}-seed{r['job']['seed']}")
        if runs:
            out[key] = runs
    return out


def build_atlas(groups: dict[tuple[str, str], list[dict]], out_json: Path, out_png: Path) -> dict:
    """``groups``: (paper, tier) -> result dicts of its runs (pinned results or a fresh run's)."""
    from harness.config import load_card
    from harness.report.plots import atlas_plot
    from harness.results import atomic_write_json

    pages = {}
    for (paper, tier), runs in sorted(groups.items()):
        baseline = load_card(paper)["baseline"]
        if not any(r["job"]["method"] == baseline for r in runs):
            continue
        pages[f"{paper}/{tier}"] = {"paper": paper, "tier": tier, **atlas_for(runs, baseline), "runs": runs}
    atlas = {"kind": "entropy_atlas", "schema_version": 1,
             "pages": {k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in pages.items()}}
    atomic_write_json(out_json, atlas, hashed=True)
    atlas_plot(pages, out_png)
    return atlas
