"""EMPG: Entropy-Modulated Policy Gradients ("Harnessing Uncertainty: Entropy-Modulated Policy Gradients for
Long-Horizon LLM Agents", arXiv 2509.09265), for multi-turn agents.

A trajectory's steps are its model turns (an episode's ``turn_ids`` from :mod:`harness.evaluate.episodes`; the
environment's tokens carry no loss and are left out). With ``H_t`` the mean token entropy of step ``t``::

    Hn_t   = (H_t - min H) / (max H - min H)       min-max over every step of the batch
    g_t    = exp(-k Hn_t) / mean_batch exp(-k Hn)   self-calibrated: mean 1 over the batch's steps
    f_t    = exp(-k' Hn_{t+1})                      "future clarity": 0 for a trajectory's last step
    A_t    = A * g_t + zeta * f_t                   A: the trajectory's GRPO advantage
    A_t   <- A_t - mean_batch A_t                   zero mean over the batch's steps

and every token of step ``t`` gets ``A_t``. ``g`` amplifies the update on confident steps (a confident error is
penalised harder, a confident success pushed further) and damps uncertain ones; ``f`` rewards steps that lead to a
confident next step. With ``zeta = 0`` the modulated advantage before centring has the sign of ``A``.

Source: NO code released by the authors (project page only; searched GitHub 2026-12); the formula is the shared
card's (``shared/papers/empg.md``: abstract plus a secondary summary [secondary]). **Every constant is a guess**:
``k``, ``k_prime`` and ``zeta`` are not given there; min-max normalisation and the batch-level mean of ``g`` and of
the centring follow the summary's wording ("over the batch"). Report results as an interpretation. A task without
``turn_ids`` (single-turn) has one step per completion: ``f`` is 0 and EMPG rescales trajectories by their entropy.
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage


def step_index(actx: AdvantageContext) -> torch.Tensor:
    """(N, T) long: the step (model turn) of each valid completion token, -1 elsewhere (padding, environment)."""
    valid = actx.mask > 0
    turns = (actx.columns or {}).get("turn_ids")
    if turns is None:
        return torch.where(valid, torch.zeros_like(valid, dtype=torch.long), torch.full_like(valid, -1, dtype=torch.long))
    out = torch.full(valid.shape, -1, dtype=torch.long)
    for i, row in enumerate(turns):
        n = min(len(row), valid.size(1))
        out[i, :n] = torch.as_tensor(list(row[:n]), dtype=torch.long)
    return torch.where(valid, out, torch.full_like(out, -1))


def step_entropies(entropies: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, S) mean token entropy per step, (N, S) bool: the step exists) for S = the largest step index + 1."""
    n_steps = int(steps.max()) + 1 if bool((steps >= 0).any()) else 0
    idx = steps.clamp(min=0)
    w = (steps >= 0).double()
    total = torch.zeros(steps.size(0), max(n_steps, 1), dtype=torch.float64).scatter_add_(
        1, idx, torch.nan_to_num(entropies.double()) * w)
    count = torch.zeros_like(total).scatter_add_(1, idx, w)
    exists = count > 0
    return torch.where(exists, total / count.clamp(min=1), torch.zeros_like(total)), exists


@register_advantage(
    "empg", paper="empg",
    source="arXiv 2509.09265 (EMPG) per shared/papers/empg.md [secondary]; no authors' code; every constant guessed",
    needs=("adv_token_stats",),
    hparams={
        "k": HParam(1.0, "1 / normalised entropy", "sharpness of the self-calibrating gradient scale g = exp(-k Hn)",
                    "harness guess: not given in the sources (shared card: 'values of k, k', zeta: not found')"),
        "k_prime": HParam(1.0, "1 / normalised entropy", "sharpness of the future-clarity bonus f = exp(-k' Hn_next)",
                          "harness guess: not given in the sources"),
        "zeta": HParam(0.1, "advantage units", "weight of the future-clarity bonus (0: modulation only)",
                       "harness guess: not given in the sources; small next to |A| ~ 1 of group-normalised GRPO"),
    },
)
def empg(actx: AdvantageContext, *, k: float, k_prime: float, zeta: float):
    """Step-level entropy-modulated GRPO advantages, broadcast to each step's tokens, zero mean over the batch."""
    if actx.entropies is None:
        raise ValueError("empg needs token entropies at advantage time (needs=('adv_token_stats',))")
    a = actx.grpo_advantages().double()
    steps = step_index(actx)
    h, exists = step_entropies(actx.entropies, steps)
    if not bool(exists.any()):
        return torch.zeros_like(actx.mask, dtype=torch.float32), {"method/frac_tokens_touched": 0.0}
    lo, hi = h[exists].min(), h[exists].max()
    hn = torch.where(exists, (h - lo) / (hi - lo) if hi > lo else torch.zeros_like(h), torch.zeros_like(h))
    g = torch.exp(-k * hn)
    g = g / g[exists].mean()
    f = torch.zeros_like(hn)  # step t's bonus from step t + 1's entropy; none after a trajectory's last step
    f[:, :-1] = torch.where(exists[:, 1:], torch.exp(-k_prime * hn[:, 1:]), torch.zeros_like(hn[:, 1:]))
    mod = a[:, None] * g + zeta * f
    mod = mod - mod[exists].mean()
    mod = torch.where(exists, mod, torch.zeros_like(mod))
    adv = torch.where(steps >= 0, mod.gather(1, steps.clamp(min=0)), torch.zeros_like(steps, dtype=torch.float64))
    conf = exists & (hn <= hn[exists].median())
    unc = exists & ~conf
    nz = a[:, None].expand_as(hn) != 0
    ratio = (mod[conf & nz].abs().mean() / mod[unc & nz].abs().mean()) if bool((unc & nz).any()) and bool(
        (conf & nz).any()) else torch.tensor(float("nan"))
    valid = actx.mask > 0
    metrics = {
        "method/frac_tokens_touched": float(valid.double().sum() / valid.numel()) if valid.numel() else 0.0,
        "empg/steps_per_trajectory": float(exists.double().sum(1).mean()),
        "empg/step_entropy_mean": float(h[exists].mean()),
        "empg/g_min": float(g[exists].min()), "empg/g_max": float(g[exists].max()),
        "empg/future_bonus_mean": float((zeta * f)[exists].mean()),
        "empg/confident_to_uncertain_abs_adv": float(ratio),
        "empg/sign_flips": float(((a[:, None] != 0) & exists & (torch.sign(mod) != torch.sign(a[:, None]))).sum()),
    }
    return adv.float(), metrics
