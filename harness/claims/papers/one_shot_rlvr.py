"""Claim checks of 1-shot RLVR (arXiv 2504.20571), smoke tier: they read result dicts only."""
from __future__ import annotations

import numpy as np

from harness.claims.registry import check


def saturation_step(metrics: list[dict], key: str, saturation: float, window: int) -> int | None:
    """The first logged step at which the mean of ``key`` over the last ``window`` logged values is >= ``saturation``
    (None: never)."""
    rows = [(m["step"], m[key]) for m in metrics if key in m]
    for i in range(window - 1, len(rows)):
        if np.mean([v for _, v in rows[i - window + 1:i + 1]]) >= saturation:
            return int(rows[i][0])
    return None


@check("one_shot_post_saturation")
def one_shot_post_saturation(results, method, saturation=0.9, window=5, first_evals=2, last_evals=3, min_gain=0.02,
                             key="one_shot/train_acc"):
    """Post-saturation generalisation (paper Sec. 3): per seed, the training accuracy on the single example saturates
    (:func:`saturation_step`) and the held-out sampled accuracy keeps rising after it: mean of the last
    ``last_evals`` held-out evaluations minus the mean of the first ``first_evals`` at or after the saturation step
    > ``min_gain``. A seed that never saturates, or has fewer than ``first_evals + last_evals`` evaluations from
    saturation on, cannot decide. Reproduced when every deciding seed passes (>= 2 of them), not reproduced when
    one fails, else inconclusive."""
    per_seed = {}
    for r in sorted((r for r in results if r["job"]["method"] == method), key=lambda r: r["job"]["seed"]):
        seed = r["job"]["seed"]
        s = saturation_step(r["metrics"], key, saturation, window)
        if s is None:
            per_seed[seed] = {"saturation_step": None, "decides": False}
            continue
        after = [e for e in r["heldout"] if e["step"] >= s]
        if len(after) < first_evals + last_evals:
            per_seed[seed] = {"saturation_step": s, "n_evals_after": len(after), "decides": False}
            continue
        first = float(np.mean([e["sampled_acc"] for e in after[:first_evals]]))
        last = float(np.mean([e["sampled_acc"] for e in after[-last_evals:]]))
        per_seed[seed] = {"saturation_step": s, "acc_at_saturation": first, "acc_last": last, "gain": last - first,
                          "decides": True, "ok": bool(last - first > min_gain)}
    numbers = {"per_seed": per_seed, "saturation": saturation, "min_gain": min_gain}
    deciding = [v for v in per_seed.values() if v["decides"]]
    if not per_seed:
        return "inconclusive", {"reason": f"no runs of {method}"}
    if any(not v["ok"] for v in deciding):
        return "not_reproduced", numbers
    if len(deciding) >= 2:
        return "reproduced", numbers
    return "inconclusive", {**numbers, "reason": f"{len(deciding)} seed(s) saturate with enough evaluations after it"}
