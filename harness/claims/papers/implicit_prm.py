"""Claim checks of the implicit PRM (arXiv 2412.01981), smoke tier: they read result files only."""
from __future__ import annotations

from harness.claims.registry import check


@check("implicit_prm_bon_above_mean")
def implicit_prm_bon_above_mean(results, method, first_fraction=1.0):
    """Best-of-N re-ranking by the PRM beats a random pick: per seed and training step, the verifier outcome of the
    group's top-PRM sample (``implicit_prm/bon_outcome``, mean over the step's groups) minus the groups' mean outcome
    (``implicit_prm/mean_outcome``), over the first ``first_fraction`` of the logged steps; matrices (seeds, steps)
    of both, paired over steps, stratified bootstrap CI of the difference (harness.claims.stats.direction_verdict:
    CI above 0 reproduced, below 0 not reproduced, else inconclusive)."""
    import numpy as np

    from harness.claims.stats import direction_verdict

    rows = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        m = [x for x in r["metrics"] if "implicit_prm/bon_outcome" in x and "implicit_prm/mean_outcome" in x]
        if m:
            rows[r["job"]["seed"]] = {x["step"]: (x["implicit_prm/bon_outcome"], x["implicit_prm/mean_outcome"])
                                      for x in m}
    if not rows:
        return "inconclusive", {"reason": f"no runs of {method} logging implicit_prm/bon_outcome"}
    steps = sorted(set.intersection(*(set(v) for v in rows.values())))
    if steps:
        cut = steps[0] + first_fraction * (steps[-1] - steps[0])
        steps = [s for s in steps if s <= cut]
    if not steps:
        return "inconclusive", {"reason": "the seeds share no logged step"}
    bon = np.array([[rows[s][t][0] for t in steps] for s in rows])
    mean = np.array([[rows[s][t][1] for t in steps] for s in rows])
    v = direction_verdict(bon, mean)
    numbers = {k: v[k] for k in v if k != "verdict"}
    numbers.update(bon_mean=float(bon.mean()), sampled_mean=float(mean.mean()), n_steps=len(steps),
                   seeds=sorted(rows), per_seed_diff={s: float((bon[i] - mean[i]).mean()) for i, s in enumerate(rows)})
    return v["verdict"], numbers
