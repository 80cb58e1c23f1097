"""STEER: "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective" (arXiv 2510.10150): each token's
policy-gradient loss is re-weighted by lambda = f(|Omega|), where Omega is the first-order estimate of the entropy
change that token's update causes; tokens with a large estimated change are down-weighted (floor lambda_min).

Ported from the authors' code, zz-haooo/STEER @ b31df71652cd103ddc3512656a430c39ba15dd13,
``verl/trainer/ppo/core_algos.py``: ``compute_token_weights`` and ``compute_policy_loss_with_entropy``
(``loss_mode=entropy_control``); defaults from ``run/run_exp.sh`` (exp mode, token_weight_min 0.8,
token_weight_max 1.0, clip 0.2 / 0.28, dual clip c = 10)::

    x      = clamp(pi_theta(y_t), 1e-8, 1 - 1e-8)          (no gradient)
    Omega  = A / clamp(pi_old(y_t), 1e-8, 1) * x (1 - x) (ln x + H_t)
    exp:     k = -ln(lambda_min) / max(max_valid |Omega|, 0.02);  lambda = clamp(exp(-k |Omega|), lambda_min, 1)
    linear:  lambda = lambda_max - (|Omega| - min|Omega|) (lambda_max - lambda_min) / (max|Omega| - min|Omega|)
    loss_t = dual_clip_ppo_t * lambda_t           (then the run's loss_type normaliser; the authors use token-mean)

Choices and deviations (also in replications/steer/card.yaml):

- H_t: the authors pass the OLD policy's entropy (computed in the old-log-prob pass, ``ray_trainer.py:1214``),
  x uses the current log-prob. We use the trainer's current-policy entropy of the same forward pass (TRL's, no
  extra pass): identical on the first micro-step after each generation (on-policy), O(learning rate) apart after.
- max |Omega| (inside k) is taken over the valid tokens of the micro-batch, as the authors (per micro-batch, per
  GPU); one process here.
- The authors clamp log(ratio) to [-20, 20] before exp; we do not (only matters for |log ratio| > 20).
- Non-finite Omega is set to 0 as in the authors' code.
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import TokenContext, masked_mean, ppo_clipped_loss
from harness.methods.registry import HParam, register_loss

CODE = "zz-haooo/STEER@b31df71 verl/trainer/ppo/core_algos.py"


def steer_omega(ctx: TokenContext) -> torch.Tensor:
    """Omega_{i,t} (detached), 0 on invalid tokens (authors' ``compute_token_weights`` 'metric' before abs)."""
    with torch.no_grad():
        x = torch.clamp(torch.exp(ctx.logps.detach()), 1e-8, 1.0 - 1e-8)
        old_p = torch.clamp(torch.exp(ctx.old_logps), 1e-8, 1.0)
        omega = ctx.advantages / old_p * (x * (1 - x)) * (torch.log(x) + ctx.entropies.detach())
        omega = torch.where(torch.isfinite(omega), omega, torch.zeros_like(omega))
        return omega * (ctx.mask > 0)


def steer_weights(omega: torch.Tensor, mask: torch.Tensor, *, lambda_min: float, lambda_max: float,
                  omega_floor: float, mode: str) -> torch.Tensor:
    """lambda_{i,t} from |Omega| (no gradient); 0 on invalid tokens."""
    valid = mask > 0
    a = omega.abs()
    w = torch.zeros_like(a)
    if not bool(valid.any()):
        return w
    av = a[valid]
    if mode == "exp":
        k = -math.log(lambda_min) / max(float(av.max()), omega_floor)
        wv = torch.clamp(torch.exp(-k * av), min=lambda_min, max=1.0)
    elif mode == "linear":
        lo, hi = float(av.min()), float(av.max())
        if hi > lo:
            wv = lambda_max - (av - lo) * ((lambda_max - lambda_min) / (hi - lo))
        else:
            wv = torch.full_like(av, (lambda_min + lambda_max) / 2)
        wv = torch.clamp(wv, min=lambda_min, max=lambda_max)
    else:
        raise ValueError(f"steer mode must be 'exp' or 'linear', got {mode!r}")
    w[valid] = wv
    return w


def dual_clip_ppo_loss(ctx: TokenContext, eps_low: float, eps_high: float, clip_ratio_c: float):
    """verl's dual-clip PPO surrogate: the PPO loss, and for A < 0 at most -A * c. Returns (loss, clipped mask,
    dual-clipped mask)."""
    pg, clipped = ppo_clipped_loss(ctx, eps_low, eps_high)
    pg3 = -ctx.advantages * clip_ratio_c
    neg = ctx.advantages < 0
    dual = neg & (pg > pg3) & (ctx.mask > 0)
    return torch.where(neg, torch.minimum(pg3, pg), pg), clipped, dual


@register_loss(
    "steer", paper="steer",
    source=f"arXiv 2510.10150 (STEER, Omega estimator); {CODE} compute_token_weights / "
           "compute_policy_loss_with_entropy; run/run_exp.sh",
    hparams={
        "lambda_min": HParam(0.8, "weight (dimensionless)", "floor of the per-token weight lambda",
                             "run/run_exp.sh token_weight_min=0.8; README"),
        "lambda_max": HParam(1.0, "weight (dimensionless)", "ceiling of lambda in linear mode (exp mode is capped "
                             "at 1 regardless, as the authors' code)", "run/run_exp.sh token_weight_max=1.0"),
        "omega_floor": HParam(0.02, "|Omega| units (advantage x nats / probability)",
                              "floor on max|Omega| inside k = -ln(lambda_min)/max(max|Omega|, floor)",
                              "core_algos.py compute_token_weights: torch.maximum(metric_max, 0.02)"),
        "mode": HParam("exp", "'exp' or 'linear'", "weight mapping of |Omega|",
                       "run/run_exp.sh linear=False (exp); run/run_linear.sh linear=True"),
        "clip_ratio_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", "run/run_exp.sh clip_ratio_low=0.2"),
        "clip_ratio_high": HParam(0.28, "ratio offset", "PPO clip 1 + eps_high (DAPO clip-higher)",
                                  "run/run_exp.sh clip_ratio_high=0.28"),
        "clip_ratio_c": HParam(10.0, "ratio", "dual-clip bound: for A < 0 the loss is at most -A * c",
                               "run/run_exp.sh clip_ratio_c=10.0"),
    },
)
def steer(ctx: TokenContext, *, lambda_min: float, lambda_max: float, omega_floor: float, mode: str,
          clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float):
    """STEER: dual-clip PPO loss times a per-token weight lambda(|Omega|) in [lambda_min, 1]."""
    omega = steer_omega(ctx)
    w = steer_weights(omega, ctx.mask, lambda_min=lambda_min, lambda_max=lambda_max, omega_floor=omega_floor,
                      mode=mode)
    pg, clipped, dual = dual_clip_ppo_loss(ctx, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    valid = ctx.mask > 0
    n = max(ctx.n_valid, 1)
    wv = w[valid] if bool(valid.any()) else torch.ones(1)
    metrics = {
        "method/frac_tokens_touched": int(((w != 1.0) & valid).sum()) / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "steer/mean_weight": float(wv.mean()),
        "steer/min_weight": float(wv.min()),
        "steer/max_weight": float(wv.max()),
        "steer/omega_mean": float(masked_mean(omega, ctx.mask)),
        "steer/omega_abs_max": float(omega.abs().max()),
        "steer/frac_dual_clipped": int(dual.sum()) / n,
    }
    return pg * w, metrics
