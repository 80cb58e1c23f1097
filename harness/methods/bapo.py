"""BAPO: "BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced Policy Optimization with Adaptive
Clipping" (Xi et al., arXiv 2510.18927): per batch, the PPO ratio bounds (c_low, c_high) are moved along a grid
until the positive-advantage tokens' share of the clipped objective reaches a target, then the (dual-clip) PPO loss
is applied with those bounds.

VARIANT: the authors' open-source code, WooooDyy/BAPO @ 7287044444d5d578529ea464b45f090a36e8da3a,
``recipe/bapo/policy_loss.py`` (``_compute_effective_advantage``, ``compute_policy_loss_bapo``) with the defaults of
``recipe/bapo/config/bapo_trainer.yaml``. Paper, README and code disagree (shared card); we pick the code because
it is the only source that can be checked number for number (golden test) -- the paper's own runs used an internal
framework (README). What that fixes:

- target: ``adv_ratio_target`` = positive / negative contribution = 1, i.e. rho_0 = pos / (pos + neg) = 0.5
  (README: rho_0 0.5; paper per summary: 0.4 [secondary]; ``run_bapo_example.sh`` passes 0.5 to this pos/neg
  ratio, i.e. rho_0 = 1/3).
- grid: c_low 0.6 -> 0.8 step 0.05, c_high 1.2 -> 2.0 step 0.05 (README/paper: [0.6, 0.9] step 0.02 and
  [1.2, 3.0] step 0.05; example script: [0.8, 0.95] step 0.05 and [1.2, 2.0] step 0.1).
- order: c_low first, then c_high (paper per summary: c_high first; ``search_order="high_first"`` selects it).
- contribution: ``sum_{A>=0} A min(r, c_high)`` vs ``sum_{A<0} |A| max(r, c_low)`` over all valid tokens (the
  clipped objective's value; clipped tokens count although they carry no gradient). Consequence, recorded in the
  card: raising c_low INCREASES the negative contribution, so with this measure the c_low pass can never help;
  whenever the target is unmet at the start, c_low ends at its maximum and only c_high moves toward the target.
- dual clip: ``clip_ratio_c`` = 3.0 (verl actor default; neither recipe file sets it).
- scope: the authors all-reduce the two sums across data-parallel ranks; on one process (all tiers but ``paper``)
  the micro-batch sums are identical. No log-ratio clamp to [-20, 20] here (verl has one).
"""
from __future__ import annotations

import torch

from harness.methods.context import TokenContext, masked_mean
from harness.methods.steer import dual_clip_ppo_loss
from harness.methods.registry import HParam, register_loss

CODE = "WooooDyy/BAPO@7287044 recipe/bapo/policy_loss.py"
YAML = "recipe/bapo/config/bapo_trainer.yaml"


def contributions(ratio, adv, mask, c_low: float, c_high: float) -> tuple[float, float]:
    """(positive, negative) magnitudes of the clipped objective (authors' ``_compute_effective_advantage``)."""
    eff = torch.where(adv >= 0, torch.clamp(ratio, max=c_high), torch.clamp(ratio, min=c_low)) * adv * mask
    return float(eff.clamp(min=0).sum()), float((-eff.clamp(max=0)).sum())


def pos_neg_ratio(pos: float, neg: float, eps: float) -> float:
    return float("inf") if neg <= 0 else pos / (neg + eps)


def search_bounds(ratio, adv, mask, *, adv_ratio_target, ratio_lower_start, ratio_lower_max, ratio_lower_step,
                  ratio_upper_start, ratio_upper_max, ratio_upper_step, eps, search_order="low_first"):
    """Grid search of (c_low, c_high) as the authors' loop; returns (c_low, c_high, pos/neg, pos share, steps)."""
    with torch.no_grad():
        ratio, adv = ratio.detach(), adv.detach()
        lo, hi = ratio_lower_start, ratio_upper_start
        lo_max = ratio_lower_max if ratio_lower_max is not None else lo
        hi_max = ratio_upper_max if ratio_upper_max is not None else hi
        target = max(adv_ratio_target, 0.0)
        pos, neg = contributions(ratio, adv, mask, lo, hi)
        pnr = pos_neg_ratio(pos, neg, eps)
        steps = 0

        def raise_low():
            nonlocal lo, pos, neg, pnr, steps
            while pnr < target and lo < lo_max and ratio_lower_step > 0:
                lo = min(lo + ratio_lower_step, lo_max)
                pos, neg = contributions(ratio, adv, mask, lo, hi)
                pnr, steps = pos_neg_ratio(pos, neg, eps), steps + 1

        def raise_high():
            nonlocal hi, pos, neg, pnr, steps
            while pnr < target and hi < hi_max and ratio_upper_step > 0:
                hi = min(hi + ratio_upper_step, hi_max)
                pos, neg = contributions(ratio, adv, mask, lo, hi)
                pnr, steps = pos_neg_ratio(pos, neg, eps), steps + 1

        if search_order == "low_first":
            raise_low(); raise_high()
        elif search_order == "high_first":
            raise_high(); raise_low()
        else:
            raise ValueError(f"bapo search_order must be 'low_first' or 'high_first', got {search_order!r}")
        share = pos / (pos + neg) if pos + neg > 0 else 0.5
        return lo, hi, pnr, share, steps


@register_loss(
    "bapo", paper="bapo", requires_off_policy=True,
    source=f"arXiv 2510.18927 (BAPO adaptive clipping); {CODE} compute_policy_loss_bapo; {YAML}",
    hparams={
        "adv_ratio_target": HParam(1.0, "positive/negative contribution ratio (1.0 = rho_0 0.5)",
                                   "target of sum_{A>=0} A min(r, c_high) / sum_{A<0} |A| max(r, c_low)",
                                   f"{YAML} adv_ratio_target: 1 (README rho_0 = 0.5)"),
        "ratio_lower_start": HParam(0.6, "importance ratio (explicit bound, not 1 - eps)", "c_low at the start of "
                                    "each batch's search (a^-)", f"{YAML} ratio_lower_start: 0.6"),
        "ratio_lower_max": HParam(0.8, "importance ratio", "largest c_low (b^-)", f"{YAML} ratio_lower_max: 0.8"),
        "ratio_lower_step": HParam(0.05, "importance ratio", "c_low grid step", f"{YAML} ratio_lower_step: 0.05"),
        "ratio_upper_start": HParam(1.2, "importance ratio (explicit bound, not 1 + eps)", "c_high at the start "
                                    "(a^+)", f"{YAML} ratio_upper_start: 1.2"),
        "ratio_upper_max": HParam(2.0, "importance ratio", "largest c_high (b^+)", f"{YAML} ratio_upper_max: 2.0"),
        "ratio_upper_step": HParam(0.05, "importance ratio", "c_high grid step", f"{YAML} ratio_upper_step: 0.05"),
        "search_order": HParam("low_first", "'low_first' (code) or 'high_first' (paper, per summary)",
                               "which bound the search moves first", "policy_loss.py: 'adjust lower clip range first'"),
        "clip_ratio_c": HParam(3.0, "ratio", "dual-clip bound: for A < 0 the loss is at most -A * c",
                               "verl actor default clip_ratio_c: 3.0 (policy_loss.py config.get('clip_ratio_c', 3.0))"),
        "eps": HParam(1e-8, "contribution units", "added to the negative sum in the ratio", f"{YAML} eps: 1.0e-8"),
    },
)
def bapo(ctx: TokenContext, *, adv_ratio_target, ratio_lower_start, ratio_lower_max, ratio_lower_step,
         ratio_upper_start, ratio_upper_max, ratio_upper_step, search_order, clip_ratio_c, eps):
    """BAPO: dual-clip PPO with per-micro-batch bounds searched until pos/neg contribution reaches the target."""
    ratio = ctx.ratio
    c_low, c_high, pnr, share, steps = search_bounds(
        ratio, ctx.advantages, ctx.mask, adv_ratio_target=adv_ratio_target, ratio_lower_start=ratio_lower_start,
        ratio_lower_max=ratio_lower_max, ratio_lower_step=ratio_lower_step, ratio_upper_start=ratio_upper_start,
        ratio_upper_max=ratio_upper_max, ratio_upper_step=ratio_upper_step, eps=eps, search_order=search_order)
    pg, clipped, dual = dual_clip_ppo_loss(ctx, 1.0 - c_low, c_high - 1.0, clip_ratio_c)
    with torch.no_grad():
        r, a, valid = ratio.detach(), ctx.advantages, ctx.mask > 0
        # tokens whose clip state the search changed relative to the start bounds
        moved = ((a >= 0) & (r > ratio_upper_start) & (r <= c_high)) | ((a < 0) & (r >= ratio_lower_start) & (r < c_low))
        n = max(ctx.n_valid, 1)
        pos_tokens = valid & (a > 0)
    metrics = {
        "method/frac_tokens_touched": int((moved & valid).sum()) / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "bapo/clip_low": c_low,
        "bapo/clip_high": c_high,
        "bapo/pos_neg_ratio": min(pnr, 1e6),
        "bapo/pos_share": share,
        "bapo/target_met": float(pnr >= adv_ratio_target),
        "bapo/at_grid_max": float(c_high >= ratio_upper_max and c_low >= ratio_lower_max),
        "bapo/search_steps": steps,
        "bapo/frac_pos_tokens": int(pos_tokens.sum()) / n,
        "bapo/frac_dual_clipped": int(dual.sum()) / n,
        "ppo_kl": float(masked_mean(ctx.old_logps - ctx.logps.detach(), ctx.mask)),
    }
    return pg, metrics
