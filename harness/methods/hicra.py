"""HICRA: hierarchy-aware credit assignment, from "Emergent Hierarchical Reasoning in LLMs through Reinforcement
Learning" (arXiv 2509.03646).

    A_{i,t} = A_i + alpha * |A_i|   if token t of response i lies in a strategic gram (planning token)
            = A_i                   otherwise,          A_i = R_i - mean_group(R)  (Dr.GRPO-style, no std)

Positive credit on planning tokens is amplified by (1 + alpha), the penalty on them shrinks to (1 - alpha).

Source: NO training code is released (TIGER-AI-Lab/Hierarchical-Reasoner @ 964c429d8651b93e60fb0dc3216de8978b4cfdfd
holds a README only); the formula and alpha = 0.2 are the shared card's [secondary]; the golden test is hand-derived.

Planning tokens (``planning``):
- ``grams``: positions covered by any of the given strategic grams (``strategic_grams``: token-id n-grams matched in
  the completion ids, every occurrence). The paper's lexicon comes from semantic clustering of n-grams that are
  frequent across solutions and sparse within one; that construction is under-specified, so a real tier must supply
  a (tokenised) lexicon, and a fixed phrase list is an approximation.
- ``first_k`` (the smoke-tier adaptation): the addition task has no planning phrases. Its one high-level decision is
  the FIRST answer token, which fixes the magnitude and absorbs the carry (a 3-digit sum starts with "1", otherwise
  the tens digit already depends on the carry from the units); later digits are execution (table look-ups). So the
  first ``k`` completion tokens (k = 1) are the planning tokens.
- ``random``: the card's placebo control: the same expected number of positions (``placebo_fraction`` of valid
  tokens) drawn at random from the trainer's seeded generator.
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage


def planning_mask(actx: AdvantageContext, planning: str, first_k: int, strategic_grams, placebo_fraction: float):
    valid = actx.mask > 0
    if planning == "first_k":
        # position among the valid tokens (completions are right-padded; robust to leading masked tokens too)
        rank = torch.cumsum(valid.long(), dim=1) - 1
        return valid & (rank < first_k)
    if planning == "grams":
        out = torch.zeros_like(valid)
        ids = actx.completion_ids
        for gram in strategic_grams or []:
            n = len(gram)
            if n == 0 or n > ids.size(1):
                continue
            g = torch.as_tensor(gram, dtype=ids.dtype)
            win = ids.unfold(1, n, 1)                                  # (N, T-n+1, n)
            hit = (win == g).all(-1) & valid.unfold(1, n, 1).all(-1)
            for s in range(n):
                out[:, s: s + hit.size(1)] |= hit
        return out
    if planning == "random":
        u = torch.rand(actx.mask.shape, generator=actx.generator)
        return valid & (u < placebo_fraction)
    raise ValueError(f"hicra: unknown planning {planning!r}; valid: first_k, grams, random")


@register_advantage(
    "hicra", paper="hicra",
    source="arXiv 2509.03646 (HICRA advantage), formula per shared/papers/hicra.md [secondary]; no training code released",
    hparams={
        "alpha": HParam(0.2, "dimensionless", "planning-token advantage becomes A + alpha |A|",
                        "shared card hicra.md [secondary]"),
        "planning": HParam("first_k", "first_k | grams | random", "how planning tokens are identified (first_k: the "
                           "smoke-tier adaptation; grams: strategic-gram lexicon; random: placebo control)",
                           "module docstring (adaptation); paper Sec. on strategic grams [secondary]"),
        "first_k": HParam(1, "tokens", "number of leading completion tokens treated as planning (planning=first_k)",
                          "smoke adaptation: the first answer digit carries the carry/magnitude decision"),
        "strategic_grams": HParam([], "list of token-id n-grams", "tokenised strategic-gram lexicon (planning=grams)",
                                  "paper: semantic clustering of frequent-across / sparse-within n-grams (not released)"),
        "placebo_fraction": HParam(0.33, "fraction of valid tokens", "share of random tokens for the placebo control",
                                   "card Claims: random-n-gram placebo"),
        "std_normalise": HParam(False, "bool", "False: A = R - group mean (Dr.GRPO-style, per the card); True: TRL's "
                                "group-normalised advantage", "shared card hicra.md Pitfalls"),
    },
)
def hicra(actx: AdvantageContext, *, alpha: float, planning: str, first_k: int, strategic_grams,
          placebo_fraction: float, std_normalise: bool):
    """HICRA: amplify the advantage on planning tokens: A + alpha * |A| there, A elsewhere (token-level)."""
    if std_normalise:
        a = actx.grpo_advantages()
    else:
        r = torch.nan_to_num(actx.rewards, nan=0.0)
        g = actx.grouped(r)
        a = (g - g.mean(1, keepdim=True)).reshape(-1)
    plan = planning_mask(actx, planning, int(first_k), strategic_grams, float(placebo_fraction))
    a_tok = a.unsqueeze(1).expand(-1, actx.mask.size(1))
    adv = a_tok + alpha * a_tok.abs() * plan.to(a.dtype)
    valid = actx.mask > 0
    n = valid.sum().clamp(min=1)
    metrics = {
        "method/frac_tokens_touched": float((plan & (a_tok != 0)).sum() / n),
        "hicra/frac_planning_tokens": float(plan.sum() / n),
        "hicra/planning_adv_mean": float(adv[plan].mean()) if plan.any() else 0.0,
        "hicra/execution_adv_mean": float(adv[valid & ~plan].mean()) if (valid & ~plan).any() else 0.0,
    }
    return adv, metrics
