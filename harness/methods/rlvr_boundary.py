"""Negative-only RLVR ("relative negative gradients"), from "The Debate on RLVR Reasoning Capability Boundary:
Shrinkage, Expansion, or Both? A Two-Stage Dynamic View" (Yao et al., arXiv 2510.04028; shared card
``rlvr_boundary.md``): train only on the samples whose group-relative advantage is negative.

With ``A_i`` the GRPO advantage (TRL's group normalisation, the run's ``scale_rewards``)::

    A'_i = A_i   if A_i < 0        (a response below its group's mean reward: pushed down)
    A'_i = 0     otherwise         (no positive gradient: nothing is pulled up directly)

The paper's argument (abstract): positive advantages sharpen already-likely high-reward tokens (the exploitation
stage that shrinks pass@k at large k); negative gradients only move mass away from low-reward tokens, spreading it
over the alternatives, the rarely sampled optimal ones included, which "prolongs" training before the boundary
shrinks. The method is close to NSR (Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in
LLM Reasoning", arXiv 2506.01347), with the group-relative advantage instead of a fixed -1 reward.

Source: NO code released (shared card: "Official code: not found"); the rule above is the card's. The paper's
weighting / loss normaliser is not found, so it is a hyperparameter (the card's pitfall asks to document it):

- ``normaliser: all`` (default): only the advantage changes; the positive samples' tokens stay in TRL's loss
  normaliser (``loss_type``'s token count), so each negative sample's gradient is exactly its GRPO gradient and the
  method is GRPO minus the positive term (the card's first TRL placement: positives zeroed after the group
  normalisation);
- ``normaliser: negative``: the samples with ``A >= 0`` also leave the loss (a ``data`` hook drops them: their tokens
  leave the mask and the normaliser), so the loss is the mean over the negative samples' tokens only (the card's
  second placement, ``1[A < 0]`` on the per-token loss with the normaliser counting what is left).

Logged: ``negative_only/neg_frac`` (share of samples with ``A < 0``), ``negative_only/pos_frac`` (share whose positive
advantage was zeroed) and ``method/frac_tokens_touched`` (their share of the batch's completion tokens).
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext, BatchContext, BatchDecision
from harness.methods.registry import HParam, register_advantage, register_data

NAME = "negative_only"
PAPER = "rlvr_boundary"
SOURCE = ("arXiv 2510.04028 (abstract: 'only using relative negative gradients') per shared/papers/rlvr_boundary.md; "
          "no authors' code")
NORMALISERS = ("all", "negative")
HPARAMS = {
    "normaliser": HParam("all", " | ".join(NORMALISERS), "which tokens the loss is averaged over: all samples' "
                         "(only the advantage changes) or only the negative samples' (the others leave the loss)",
                         "harness choice: the card says the authors' weighting is not found"),
}


def negative_advantages(adv: torch.Tensor) -> torch.Tensor:
    """``A`` where ``A < 0``, else 0 (same shape and dtype; a per-token advantage row is masked token by token)."""
    return torch.where(adv < 0, adv, torch.zeros_like(adv))


def _check(normaliser: str) -> None:
    if normaliser not in NORMALISERS:
        raise ValueError(f"{NAME}: unknown normaliser {normaliser!r}; valid: {', '.join(NORMALISERS)}")


@register_advantage(NAME, paper=PAPER, source=SOURCE, hparams=HPARAMS)
def negative_only(actx: AdvantageContext, *, normaliser: str):
    """Negative-only RLVR: the GRPO advantage with every non-negative value set to 0."""
    _check(normaliser)
    a = actx.grpo_advantages()
    adv = negative_advantages(a)
    valid = actx.mask > 0
    lengths = valid.sum(1).double()
    pos = a > 0
    metrics = {
        "negative_only/neg_frac": float((a < 0).double().mean()),
        "negative_only/pos_frac": float(pos.double().mean()),
        "method/frac_tokens_touched": float(lengths[pos].sum() / lengths.sum().clamp(min=1)),
    }
    return adv, metrics


@register_data(NAME, paper=PAPER, source=SOURCE)
def negative_only_data(bctx: BatchContext, *, normaliser: str) -> BatchDecision | None:
    """``normaliser: negative``: drop the samples without a negative advantage from the loss (and its normaliser)."""
    _check(normaliser)
    if normaliser == "all" or bctx.stage != "scored":
        return None
    adv = bctx.advantages
    neg = (adv < 0).any(-1) if adv.dim() > 1 else adv < 0
    return BatchDecision(keep=neg, metrics={"negative_only/kept_frac": float(neg.double().mean())})
