"""Forking tokens: "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
LLM Reasoning" (Wang et al., arXiv 2506.01939), Sec. 4: the policy-gradient loss is kept only on the top-rho
highest-entropy tokens of the batch (rho = 0.2).

TRL 1.16 implements this as ``GRPOConfig.top_entropy_quantile`` (``GRPOTrainer.get_high_entropy_mask``), so the
method is configuration only. Authors' code: Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR @ 6f5dda6f
``verl/trainer/ppo/core_algos.py`` ``get_global_entropy_top_mask`` (called per micro-batch from
``verl/workers/actor/dp_actor.py:461``), flag ``actor.entropy_top_ratio=0.2`` in
``recipe/rlvr_with_high_entropy_tokens_only/run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh``.

Differences between TRL and the authors' code (tests/test_method_forking_tokens.py checks each on fixed tensors):

- Selection. Authors: ``torch.topk`` of ``k = ceil(rho * n)`` valid tokens. TRL: tokens with
  ``H >= torch.quantile(H_valid, 1 - rho)`` (linear interpolation), i.e. ``1 + floor(rho * (n - 1))`` tokens for
  distinct entropies. The two agree whenever ``frac(rho * n) >= rho`` or ``rho * n`` is an integer, hence for every n
  at rho = 0.2 (the paper's value); otherwise TRL keeps one token fewer (e.g. rho = 0.3, n = 4: 1 vs 2). Ties at
  the threshold: TRL keeps all of them, topk an arbitrary subset.
- Normalisation (the card's pitfall). Authors: verl "token-mean" over the KEPT tokens
  (``agg_loss(mask * entropy_top_mask)``). TRL: the mask multiplies ``per_token_loss`` and the run's ``loss_type``
  normaliser still counts ALL valid tokens, so with bnpo the loss and gradient are ``n_kept / n_valid`` (~rho)
  times the authors'. We keep TRL's normalisation (no code of ours in the loss). Under Adam a constant factor
  nearly cancels (only Adam's eps and the gradient-norm clip see it); the factor varies a little between
  micro-batches (ceil), which the authors' normalisation does not have.
- Scope. Authors: per micro-batch per GPU. TRL: per micro-batch, gathered across processes. Identical on one
  process (all tiers but ``paper``).
- Entropy: both use the current policy's full-vocabulary entropy of the same forward pass (temperature-scaled).
- Baseline: the paper trains DAPO (clip-higher 0.28, dual clip c = 10, dynamic sampling, overlong shaping); TRL has
  no dual clip and no dynamic sampling, so the smoke and paper tiers compare against GRPO with the same clip range.

Diagnostics: a config method runs TRL's own loss, so the trainer logs ``method/frac_tokens_touched`` as 0.0 for it
(the trainer only fills it from advantage hooks); the fraction actually trained is ~rho by construction (see the
card). The claim checks registered at the bottom are generic (held-out metric vs baseline, train-metric bounds,
train-metric vs baseline, metric/entropy-change correlation) and are used by the steer, bapo and d3s cards too.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.claims import check
from harness.registry import HParam, register_config

CODE = "Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR@6f5dda6 verl/trainer/ppo/core_algos.py get_global_entropy_top_mask"

register_config(
    "forking_tokens", paper="forking_tokens",
    source=f"arXiv 2506.01939 Sec. 4 (train on top-20% entropy tokens); {CODE}; "
           "TRL 1.16 GRPOConfig.top_entropy_quantile / GRPOTrainer.get_high_entropy_mask",
    description="policy gradient only on the top-rho highest-entropy tokens (TRL top_entropy_quantile)",
    hparams={
        "top_entropy_quantile": HParam(
            0.2, "fraction of valid tokens kept (rho)",
            "rho: share of the micro-batch's valid tokens, by current-policy entropy, that keep their policy-gradient "
            "loss (TRL field name; the authors' entropy_top_ratio); the loss normaliser still counts all valid tokens",
            "arXiv 2506.01939 abstract/Sec. 4 rho=20%; run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh:142 "
            "entropy_top_ratio=0.2"),
    },
)


# --------------------------------------------------------------------------------------------------------------
# Generic claim checks (used by the forking_tokens, steer, bapo and d3s cards)
# --------------------------------------------------------------------------------------------------------------
def _by_seed(results, method):
    return {r["job"]["seed"]: r for r in results if r["job"]["method"] == method}


def _heldout_mean(run, key, skip_first=True):
    ev = run["heldout"][1:] if skip_first else run["heldout"]
    return float(np.mean([e[key] for e in ev]))


@check("heldout_vs_baseline")
def heldout_vs_baseline(results, method, baseline, key, min_diff):
    """Per seed: mean over held-out evaluations after step 0 of ``key`` (method - baseline) >= ``min_diff``.
    Reproduced when every paired seed passes (>= 2 seeds), not_reproduced when any fails."""
    runs, base = _by_seed(results, method), _by_seed(results, baseline)
    per_seed = {}
    for s, r in sorted(runs.items()):
        if s in base:
            m, b = _heldout_mean(r, key), _heldout_mean(base[s], key)
            per_seed[s] = {"method": m, "baseline": b, "diff": m - b, "ok": bool(m - b >= min_diff)}
    if not per_seed:
        return "inconclusive", {"reason": f"no paired runs of {method} and {baseline}"}
    numbers = {"per_seed": per_seed, "mean_diff": float(np.mean([v["diff"] for v in per_seed.values()])),
               "key": key, "min_diff": min_diff}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers


@check("train_metric_bounds")
def train_metric_bounds(results, method, key, lo, hi, min_share=1.0):
    """Share of logged training steps (all runs of ``method``) where lo <= metric <= hi is >= ``min_share``."""
    vals = [m[key] for r in results if r["job"]["method"] == method for m in r["metrics"] if key in m]
    if not vals:
        return "inconclusive", {"reason": f"{method} logged no {key}"}
    v = np.asarray(vals, float)
    share = float(((v >= lo) & (v <= hi)).mean())
    numbers = {"steps": len(v), "share_in_bounds": share, "min": float(v.min()), "max": float(v.max()),
               "mean": float(v.mean())}
    return ("reproduced" if share >= min_share else "not_reproduced"), numbers


@check("train_metric_vs_baseline")
def train_metric_vs_baseline(results, method, baseline, key, min_ratio, fraction=1.0):
    """Per seed: mean of a training metric over the first ``fraction`` of the steps, method / baseline >=
    ``min_ratio`` in every seed (>= 2 seeds)."""
    runs, base = _by_seed(results, method), _by_seed(results, baseline)

    def mean_first(run):
        rows = [m for m in run["metrics"] if key in m]
        if not rows:
            return float("nan")
        last = rows[0]["step"] + fraction * (rows[-1]["step"] - rows[0]["step"])
        return float(np.mean([m[key] for m in rows if m["step"] <= last]))

    per_seed = {}
    for s, r in sorted(runs.items()):
        if s in base:
            m, b = mean_first(r), mean_first(base[s])
            per_seed[s] = {"method": m, "baseline": b, "ratio": m / b if b else float("nan"),
                           "ok": bool(b and m / b >= min_ratio)}
    if not per_seed or any(np.isnan(v["method"]) or np.isnan(v["baseline"]) for v in per_seed.values()):
        return "inconclusive", {"reason": f"no paired runs logging {key}", "per_seed": per_seed}
    numbers = {"per_seed": per_seed, "key": key, "fraction": fraction}
    if not all(v["ok"] for v in per_seed.values()):
        return "not_reproduced", numbers
    return ("reproduced" if len(per_seed) >= 2 else "inconclusive"), numbers


@check("train_metric_entropy_corr")
def train_metric_entropy_corr(results, method, key, expect="negative"):
    """Pearson r between a per-step training metric at step s and the train-batch entropy change from s to s+1,
    pooled over the runs of ``method``; reproduced when the 95 % CI excludes 0 on the expected side."""
    xs, ys = [], []
    for r in results:
        if r["job"]["method"] != method:
            continue
        rows = [m for m in r["metrics"] if key in m and "entropy" in m]
        for a, b in zip(rows, rows[1:]):
            if b["step"] == a["step"] + 1:
                xs.append(a[key]); ys.append(b["entropy"] - a["entropy"])
    if len(xs) < 20 or np.std(xs) == 0:
        return "inconclusive", {"reason": f"only {len(xs)} step pairs (or constant {key})"}
    res = stats.pearsonr(xs, ys)
    lo, hi = res.confidence_interval(0.95)
    numbers = {"pearson_r": float(res.statistic), "r_95ci": [float(lo), float(hi)], "p_value": float(res.pvalue),
               "pairs": len(xs), "expect": expect}
    good, bad = (hi < 0, lo > 0) if expect == "negative" else (lo > 0, hi < 0)
    if good:
        return "reproduced", numbers
    if bad:
        return "not_reproduced", numbers
    return "inconclusive", numbers
