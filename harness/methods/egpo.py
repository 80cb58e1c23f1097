"""EGPO: entropy-enhanced advantage, from "Exploring Superior Function Calls via Reinforcement Learning" /
"Reasoning through Exploration: A Reinforcement Learning Framework for Robust Function Calling" (arXiv 2508.05118).

    A_i^egpo = A_i + lambda * clip(H_i, -|A_i| / alpha, |A_i| / alpha) = A_i + lambda * min(H_i, |A_i| / alpha)

A_i is the group-normalised advantage (TRL's, ``actx.grpo_advantages()``), H_i the detached mean token entropy of
response i under the policy that generated it (TRL's no-grad pass at generation time, ``needs=("adv_token_stats",)``),
over the whole response (the smoke task has no chain-of-thought span; the paper may restrict H to the CoT).
With alpha > 1 the bonus never flips the sign of A; groups with A = 0 get no bonus.

Source: NO released code could be read (BingguangHao/RLFC holds a README and images only at
12979259e783019ea77706815194123b1d0ba2d3; inclusionAI/AWorld not read). The formula and the defaults lambda = 0.4,
alpha = 2 are the shared card's, from a third-party reproduction plan citing the paper [secondary]; the golden test is
hand-derived from this equation.
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage


def mean_token_entropy(actx: AdvantageContext) -> torch.Tensor:
    if actx.entropies is None:
        raise ValueError("needs token entropies (needs=('adv_token_stats',))")
    m = actx.mask.to(actx.entropies.dtype)
    return (actx.entropies * m).sum(-1) / m.sum(-1).clamp(min=1.0)


@register_advantage(
    "egpo", paper="egpo", needs=("adv_token_stats",),
    source="arXiv 2508.05118 (EGPO advantage), formula per shared/papers/egpo.md [secondary]; no released code read",
    hparams={
        "lambda": HParam(0.4, "advantage units per nat", "weight of the entropy bonus",
                         "shared card egpo.md (zhangdw156/verl EGPO_reproduction_plan.md) [secondary]"),
        "alpha": HParam(2.0, "dimensionless (> 1 keeps the sign of A)", "the bonus is capped at |A| / alpha",
                        "shared card egpo.md [secondary]"),
    },
)
def egpo(actx: AdvantageContext, **hp):
    """EGPO: add lambda * min(H, |A| / alpha) (mean token entropy, capped by the advantage) to the group advantage."""
    lam, alpha = float(hp["lambda"]), float(hp["alpha"])
    a = actx.grpo_advantages()
    h = mean_token_entropy(actx).to(a.dtype).detach()
    cap = a.abs() / alpha
    bonus = lam * torch.clamp(h, min=-cap, max=cap)
    adv = a + bonus
    n = actx.mask.sum(-1).to(torch.float64)
    touched = bonus != 0
    flips = (torch.sign(adv) != torch.sign(a)) & (a != 0)
    metrics = {
        "method/frac_tokens_touched": float((n * touched).sum() / n.sum().clamp(min=1.0)),
        "egpo/bonus_mean": float(bonus.mean()),
        "egpo/frac_capped": float(((h > cap) & (a != 0)).double().mean()),
        "egpo/seq_entropy_mean": float(h.mean()),
        "egpo/sign_flips": float(flips.sum()),
    }
    return adv, metrics
