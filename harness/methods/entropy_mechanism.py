"""Clip-Cov and KL-Cov: "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models"
(Cui et al., arXiv 2505.22617), Sec. 4 (covariance-based entropy control).

Ported from the authors' code, PRIME-RL/Entropy-Mechanism-of-RL @ 88505792fd97a11993445e93195145e3c1181955,
``verl/trainer/ppo/core_algos.py``: ``compute_policy_loss_clip_cov`` and ``compute_policy_loss_kl_cov``.
Covariance tokens are selected per micro-batch ("local" selection, as in the authors' code, see issue #20
of their repo), the random Clip-Cov subset comes from the trainer's seeded generator.
"""
from __future__ import annotations

import torch

from harness.methods.context import TokenContext, masked_mean, ppo_clipped_loss
from harness.methods.registry import HParam, register_loss

CODE = "PRIME-RL/Entropy-Mechanism-of-RL@8850579 verl/trainer/ppo/core_algos.py"


@register_loss(
    "clip_cov", paper="entropy_mechanism",
    source=f"arXiv 2505.22617 Sec. 4.2 (Clip-Cov); {CODE} compute_policy_loss_clip_cov",
    hparams={
        "clip_cov_ratio": HParam(2e-4, "fraction of valid tokens", "share of the micro-batch's valid tokens whose "
                                 "gradient is detached (at least 1 token, max(1, floor(ratio*N)))",
                                 "recipe/dapo/7b_clip_cov.sh clip_cov_ratio=0.0002"),
        "clip_cov_lb": HParam(1.0, "covariance c_i (nats x advantage units)", "lower bound on c_i for candidates",
                              "core_algos.py clip_cov_lb=1.0"),
        "clip_cov_ub": HParam(5.0, "covariance c_i (nats x advantage units)", "upper bound on c_i for candidates",
                              "core_algos.py clip_cov_ub=5.0"),
        "clip_ratio_low": HParam(1.0, "ratio offset", "PPO clip 1-eps_low; the Clip-Cov scripts set 1 (clip "
                                 "effectively off, ratio clamp [0, 2])", "7b_clip_cov.sh clip_ratio_low=1"),
        "clip_ratio_high": HParam(1.0, "ratio offset", "PPO clip 1+eps_high; the Clip-Cov scripts set 1",
                                  "7b_clip_cov.sh clip_ratio_high=1"),
    },
)
def clip_cov(ctx: TokenContext, *, clip_cov_ratio: float, clip_cov_lb: float, clip_cov_ub: float,
             clip_ratio_low: float, clip_ratio_high: float):
    """Clip-Cov: detach the gradient of a random subset of tokens whose cov(logp, A) lies in (lb, ub)."""
    pg_loss, clipped = ppo_clipped_loss(ctx, clip_ratio_low, clip_ratio_high)
    valid = ctx.mask > 0
    cov = ctx.token_cov()
    candidates = (cov > clip_cov_lb) & (cov < clip_cov_ub) & valid & ~clipped
    idx = torch.nonzero(candidates)                       # row-major, as the authors' torch.nonzero
    n_drop = max(int(clip_cov_ratio * ctx.n_valid), 1)
    if len(idx) > 0:
        perm = torch.randperm(len(idx), generator=ctx.generator)
        idx = idx[perm[: min(n_drop, len(idx))]]
    corr = torch.ones_like(pg_loss)
    corr[idx[:, 0], idx[:, 1]] = 0.0
    n = max(ctx.n_valid, 1)
    metrics = {
        "method/frac_tokens_touched": len(idx) / n,
        "clip_cov/frac_candidates": int(candidates.sum()) / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "ppo_kl": float(masked_mean(ctx.old_logps - ctx.logps.detach(), ctx.mask)),
    }
    return pg_loss * corr, metrics


@register_loss(
    "kl_cov", paper="entropy_mechanism", requires_off_policy=True,
    source=f"arXiv 2505.22617 Sec. 4.2 (KL-Cov); {CODE} compute_policy_loss_kl_cov",
    hparams={
        "k_percent": HParam(0.2, "percent of valid tokens (0.2 means 0.2 %; verl's kl_cov_ratio = k_percent/100)",
                            "share of valid tokens with the largest cov(logp, A) that get the |logp - logp_old| "
                            "penalty (at least 1 token)", "recipe/dapo/7b_kl_cov.sh k_percent=0.2 (32B: 0.02)"),
        "ppo_kl_coef": HParam(1.0, "loss units per nat", "beta, weight of |logp - logp_old| on selected tokens",
                              "7b_kl_cov.sh ppo_kl_coef=1"),
    },
)
def kl_cov(ctx: TokenContext, *, k_percent: float, ppo_kl_coef: float):
    """KL-Cov: add beta*|logp - logp_old| on the top-k% tokens by cov(logp, A); no ratio clipping."""
    ratio = ctx.ratio
    abs_kl = (ctx.logps - ctx.old_logps).abs()
    loss = -ctx.advantages * ratio
    valid = ctx.mask > 0
    cov_valid = ctx.token_cov()[valid]                    # row-major order of valid tokens
    selected = torch.zeros_like(valid)
    k = min(k_percent, len(cov_valid))
    if k != 0 and len(cov_valid) > 0:
        n_sel = max(1, int(len(cov_valid) * k / 100))
        top = torch.topk(cov_valid, n_sel, largest=True).indices
        flat_valid = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
        selected.view(-1)[flat_valid[top]] = True
    loss = torch.where(selected, loss + ppo_kl_coef * abs_kl, loss)
    n = max(ctx.n_valid, 1)
    metrics = {
        "method/frac_tokens_touched": int(selected.sum()) / n,
        "clip_ratio/region_mean": 0.0,                     # KL-Cov has no ratio clipping
        "kl_cov/abs_kl_mean": float(masked_mean(abs_kl.detach(), ctx.mask)),
        "ppo_kl": float(masked_mean(ctx.old_logps - ctx.logps.detach(), ctx.mask)),
    }
    return loss, metrics
