"""CANON: "Conditional Advantage Estimation" (arXiv 2509.23962, ICLR 2026).

Each group of G responses is split by a target metric m (mean token entropy of the response, or its length)
into a high-m half and a low-m half. A response is compared with the OTHER half (inter-group) and with its OWN
half (intra-group):

    A_inter(o) = R_o - mean(R over the opposite half)
    A_intra(o) = R_o - mean(R over its own half)
    A_canon(o) = mu * A_inter(o) + (1 - mu) * A_intra(o)

mu = 1 is CANON-Inter, mu = 0 CANON-Intra, mu = 0.5 recovers Dr.GRPO (R_o - group mean, no std scaling);
``mu_schedule="cosine"`` is CANON-Dynamic ("First-Inter-Later-Intra": mu goes from 1 to 0 on a cosine).

Source: NO released code could be read (the-secret-key/CANON is not reachable from here); the formula is the
shared card's (a secondary summary consistent with the arXiv abstract). Choices made here and recorded in the
card: the halves are equal (G must be even); ties in m are broken by position in the group (stable sort, the
earlier response goes to the low half); entropy is the per-response mean token entropy of the policy that
generated the batch (TRL's no-grad pass at generation time, ``needs=("adv_token_stats",)``); no std scaling.
The length-efficiency variant (factor alpha = 0.9 on the long half, placement unverified) is not implemented.
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage

SOURCE = "arXiv 2509.23962 (CANON), formula per shared/papers/canon.md [secondary]; no released code read"


def response_metric(actx: AdvantageContext, metric: str) -> torch.Tensor:
    """(N,) per-response target metric: mean token entropy over valid tokens, or the number of valid tokens."""
    mask = actx.mask.to(torch.float64)
    if metric == "length":
        return mask.sum(-1)
    if metric == "entropy":
        if actx.entropies is None:
            raise ValueError("canon metric='entropy' needs token entropies (needs=('adv_token_stats',))")
        ent = actx.entropies.to(torch.float64)
        return (ent * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    raise ValueError(f"canon: unknown metric {metric!r}; valid: entropy, length")


def canon_mu(mu: float, schedule: str, step: int, max_steps: int) -> float:
    if schedule == "constant":
        return float(mu)
    if schedule == "cosine":  # CANON-Dynamic: 1 (inter) -> 0 (intra)
        return 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max(max_steps, 1)))
    raise ValueError(f"canon: unknown mu_schedule {schedule!r}; valid: constant, cosine")


@register_advantage(
    "canon", paper="canon", source=SOURCE, needs=("adv_token_stats",),
    hparams={
        "mu": HParam(1.0, "weight in [0, 1]", "weight of the inter-group term (1: CANON-Inter, 0: CANON-Intra, "
                     "0.5: Dr.GRPO)", "shared card canon.md Method; paper Sec. 3 [secondary]"),
        "metric": HParam("entropy", "entropy | length", "target metric that splits each group into halves "
                         "(entropy: mean token entropy in nats of the sampling policy)",
                         "shared card canon.md Method [secondary]; headline result uses entropy"),
        "mu_schedule": HParam("constant", "constant | cosine", "cosine = CANON-Dynamic, mu from 1 to 0 over "
                              "max_steps (First-Inter-Later-Intra)", "shared card canon.md Method [secondary]"),
    },
)
def canon(actx: AdvantageContext, *, mu: float, metric: str, mu_schedule: str):
    """CANON: advantage from comparisons across / within the high- and low-metric halves of each group."""
    G = actx.group_size
    if G % 2 or G < 4:
        raise ValueError(f"canon needs an even group size >= 4, got {G}")
    r = torch.nan_to_num(actx.rewards.to(torch.float64), nan=0.0)
    m = response_metric(actx, metric)
    rg, mg = actx.grouped(r), actx.grouped(m)                      # (P, G)
    order = torch.argsort(mg, dim=1, stable=True)                  # ascending; ties: earlier response first
    high = torch.zeros_like(rg, dtype=torch.bool)
    high.scatter_(1, order[:, G // 2:], True)
    h = G // 2
    mean_high = (rg * high).sum(1, keepdim=True) / h
    mean_low = (rg * ~high).sum(1, keepdim=True) / h
    own = torch.where(high, mean_high, mean_low)
    other = torch.where(high, mean_low, mean_high)
    mu_t = canon_mu(mu, mu_schedule, actx.step, actx.max_steps)
    adv = mu_t * (rg - other) + (1.0 - mu_t) * (rg - own)
    adv = adv.reshape(-1)
    gap = (mean_high - mean_low).squeeze(1)
    mixed = rg.std(1) > 0
    metrics = {
        # tokens whose advantage differs from Dr.GRPO's (R - group mean)
        "method/frac_tokens_touched": _frac_tokens(actx, (adv - (r - rg.mean(1).repeat_interleave(G))).abs() > 1e-9),
        "canon/mu": mu_t,
        # mean reward of the high-metric half minus the low-metric half, over groups with mixed rewards
        "canon/high_minus_low_reward": float(gap[mixed].mean()) if mixed.any() else 0.0,
        "canon/metric_mean": float(m.mean()),
        "canon/adv_abs_mean": float(adv.abs().mean()),
    }
    return adv.to(actx.rewards.dtype), metrics


def _frac_tokens(actx: AdvantageContext, changed: torch.Tensor) -> float:
    n = actx.mask.sum(-1).to(torch.float64)
    return float((n * changed).sum() / n.sum().clamp(min=1.0))
