"""D3S: "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy Optimization"
(arXiv 2509.22115). No public code (the paper says "in the supplementary materials"); implemented from the
abstract-level description of the shared card, every ratio and the schedule being HARNESS CHOICES:

1. Sample level (advantage hook, D3S-I intra-group): per group of G rollouts keep the k(t) rollouts whose
   advantages have the largest variance (the max-variance k-subset is always "i largest + (k - i) smallest" for
   some i, the PODS rule, arXiv 2504.13818; with binary rewards i = k/2). Advantages are TRL's group-normalised
   ones computed on the FULL group BEFORE selection (the baseline is not recomputed on the subset); dropped
   rollouts get advantage 0, so they contribute no gradient. D3S-C (cross-group) is not implemented.
2. Token level (loss hook): among the valid tokens with A != 0 (kept rollouts that carry signal) keep the top
   ceil(rho(t) * n) by |A_{i,t}| * H_{i,t}, with H the current policy's entropy of the same forward pass; the
   others get no policy-gradient loss. The per-token loss is GRPO's clipped surrogate.
3. Schedule: linear relaxation k(t)/G = k_start + (1 - k_start) p and rho(t) = rho_start + (1 - rho_start) p with
   p = min(1, step / (relax_until * max_steps)); at p = 1 D3S is GRPO exactly (tested).

Normalisation: ``normalize="all"`` (default) keeps the run's loss_type normaliser over all valid tokens (dropped
tokens count in the denominator, as TRL's top_entropy_quantile does) so that the fully relaxed method equals the
baseline bit for bit; ``normalize="kept"`` rescales so that with bnpo the loss is the mean over the selected tokens
("train on the down-sampled batch"). The loss hook cannot tell a dropped rollout from a zero-signal group (both
have A = 0), so "kept" counts both out. Under Adam a constant factor nearly cancels.
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import AdvantageContext, TokenContext, ppo_clipped_loss
from harness.methods.registry import HParam, register_advantage, register_loss

SRC = "arXiv 2509.22115 abstract/Sec. 3 (no public code; hand-derived, shared card d3s.md)"

HPARAMS = {
    "k_start": HParam(0.5, "fraction of the group size G", "rollouts kept per group at step 0 (k = ceil(k_start*G), "
                      "at least 2)", "harness choice (paper values not found; card: G 4-8 with k 2-4 meaningful)"),
    "rho_start": HParam(0.5, "fraction of signal-carrying tokens", "tokens kept by |A|*H at step 0",
                        "harness choice (paper values not found)"),
    "relax_until": HParam(1.0, "fraction of max_steps", "training progress at which k = G and rho = 1 (linear "
                          "relaxation: aggressive early, full data late)", "harness choice (abstract: 'starts with "
                          "aggressive down-sampling ... gradually relaxes')"),
    "clip_ratio_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low of the base algorithm (GRPO)",
                             "TRL GRPOConfig epsilon=0.2"),
    "clip_ratio_high": HParam(0.2, "ratio offset", "PPO clip 1 + eps_high of the base algorithm",
                              "TRL GRPOConfig epsilon_high=epsilon"),
    "normalize": HParam("all", "'all' or 'kept'", "loss denominator: all valid tokens (baseline's) or the selected "
                        "ones", "harness choice (see module docstring)"),
}


def progress(step: int, max_steps: int, relax_until: float) -> float:
    if relax_until <= 0:
        return 1.0
    return min(1.0, step / (relax_until * max(max_steps, 1)))


def keep_count(group_size: int, frac: float) -> int:
    return min(group_size, max(2, math.ceil(frac * group_size - 1e-9)))


def max_variance_subset(a: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k entries of ``a`` (1-D) with the largest (unbiased) variance: the best of the k + 1
    "i largest + (k - i) smallest" sets; ties go to the i closest to k/2 (then the smaller i); stable order."""
    n = a.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    if k >= n:
        keep[:] = True
        return keep
    order = torch.argsort(a, stable=True)          # ascending
    best, best_var = None, -1.0
    for i in sorted(range(k + 1), key=lambda i: (abs(i - k / 2), i)):
        idx = torch.cat([order[n - i:] if i else order[:0], order[: k - i]])
        v = float(a[idx].var(unbiased=True)) if k > 1 else 0.0
        if v > best_var + 1e-12:
            best, best_var = idx, v
    keep[best] = True
    return keep


@register_advantage("d3s", paper="d3s", source=f"{SRC}: sample-level max-Var(A) down-sampling (D3S-I)",
                    hparams=HPARAMS)
def d3s_advantage(actx: AdvantageContext, *, k_start, rho_start, relax_until, **_):
    """D3S sample level: keep the max-variance k(t)-subset of each group; the others get advantage 0."""
    adv = actx.grpo_advantages()
    g = actx.group_size
    p = progress(actx.step, actx.max_steps, relax_until)
    k = keep_count(g, k_start + (1 - k_start) * p)
    groups = actx.grouped(adv)
    keep = torch.stack([max_variance_subset(row.cpu(), k) for row in groups]).reshape(-1).to(adv.device)
    out = torch.where(keep, adv, torch.zeros_like(adv))
    var_all = groups.var(dim=1, unbiased=True)
    var_kept = torch.stack([row[m].var(unbiased=True) if k > 1 else row.new_tensor(0.0)
                            for row, m in zip(groups, keep.view(-1, g))])
    informative = var_all > 0
    gain = float((var_kept[informative] / var_all[informative]).mean()) if bool(informative.any()) else 1.0
    ntok = actx.mask.sum(-1)
    metrics = {
        "method/frac_tokens_touched": float(ntok[~keep].sum() / ntok.sum().clamp(min=1)),
        "d3s/k": k,
        "d3s/sample_keep_frac": k / g,
        "d3s/adv_var_gain": gain,
        "d3s/frac_tokens_dropped_rollouts": float(ntok[~keep].sum() / ntok.sum().clamp(min=1)),
    }
    return out, metrics


@register_loss("d3s", paper="d3s", source=f"{SRC}: token-level |A|*H down-sampling + dynamic schedule",
               hparams=HPARAMS)
def d3s_loss(ctx: TokenContext, *, rho_start, relax_until, clip_ratio_low, clip_ratio_high, normalize, **_):
    """D3S token level: GRPO loss on the top-rho(t) tokens by |A|*H among valid tokens with A != 0."""
    pg, clipped = ppo_clipped_loss(ctx, clip_ratio_low, clip_ratio_high)
    p = progress(ctx.step, ctx.max_steps, relax_until)
    rho = rho_start + (1 - rho_start) * p
    valid = ctx.mask > 0
    pool = valid & (ctx.advantages != 0)
    with torch.no_grad():
        score = ctx.advantages.abs() * ctx.entropies.detach()
    n_pool = int(pool.sum())
    sel = torch.zeros_like(pool)
    if n_pool > 0:
        k = min(n_pool, max(1, math.ceil(rho * n_pool - 1e-9)))
        flat = torch.where(pool, score, torch.full_like(score, -math.inf)).flatten()
        top = torch.topk(flat, k).indices
        sel.view(-1)[top] = True
    loss = pg * sel
    n_valid, n_sel = max(ctx.n_valid, 1), int(sel.sum())
    if normalize == "kept" and n_sel > 0:
        loss = loss * (n_valid / n_sel)
    elif normalize not in ("all", "kept"):
        raise ValueError(f"d3s normalize must be 'all' or 'kept', got {normalize!r}")
    metrics = {
        "method/frac_tokens_touched": int((pool & ~sel).sum()) / n_valid,
        "clip_ratio/region_mean": int((clipped & sel).sum()) / n_valid,
        "d3s/rho": rho,
        "d3s/token_keep_frac": n_sel / max(n_pool, 1),
        "d3s/frac_tokens_trained": n_sel / n_valid,
        "d3s/mean_score_kept": float(score[sel].mean()) if n_sel else 0.0,
        "d3s/mean_score_pool": float(score[pool].mean()) if n_pool else 0.0,
    }
    return loss, metrics
