"""Forking tokens: "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
LLM Reasoning" (Wang et al., arXiv 2506.01939), Sec. 4: the policy-gradient loss is kept only on the top-rho
highest-entropy tokens (rho = 0.2).

Authors' code: Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR @ 6f5dda6f, ``verl/trainer/ppo/core_algos.py``
``get_global_entropy_top_mask`` (selection) and ``compute_policy_loss_vanilla`` (loss: ``agg_loss`` over
``response_mask * entropy_top_mask``), called per micro-batch from ``verl/workers/actor/dp_actor.py:461`` with the
current policy's entropies; flag ``actor.entropy_top_ratio=0.2`` in
``recipe/rlvr_with_high_entropy_tokens_only/run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh`` (clip 0.2/0.28,
dual clip c = 10, loss_agg_mode token-mean).

Two named methods:

- ``forking_tokens`` (loss hook): the authors' algorithm. Selection: ``top_k = max(1, int(n * rho + 0.9999))`` valid
  tokens of highest entropy (``torch.topk``) among the n valid tokens of the selection scope. Normalisation: the
  token-mean over the KEPT tokens only: the per-token loss is ``PPO * kept * n_valid / n_kept`` (micro-batch counts),
  so the run's ``bnpo`` normaliser (sum / n_valid) gives exactly the authors' ``agg_loss(pg, mask * top_mask,
  "token-mean")`` (golden-tested); with the other loss types the same factor rescales the kept tokens' share back
  to the full-gradient scale. Loss: verl's dual-clip PPO surrogate (``clip_ratio_c``; null: off).
  ``selection_scope`` (what is ranked together, and what the kept-token mean runs over): ``micro_batch`` (the
  authors, the default: each process's micro-batch, i.e. each GPU's or sequence-parallel group's; n_valid and n_kept
  are that micro-batch's counts) or ``all_processes`` (the entropies of the micro-batches of all processes are
  gathered and one threshold, the k-th largest of them, is applied: TRL's scope; ties at the threshold are all
  kept; n_valid and n_kept are summed over the processes, so under a global normaliser (``dapo``) or a per-sequence
  one (``grpo``, ``dr_grpo``) P processes train exactly as one process on the same global batch:
  tests/test_multiprocess.py). On one process both scopes are the same computation.
- ``forking_tokens_trl`` (config): TRL 1.16's own ``GRPOConfig.top_entropy_quantile`` (``get_high_entropy_mask``):
  selection ``H >= torch.quantile(H_valid, 1 - rho)`` over the entropies gathered from ALL processes; the mask
  multiplies the per-token loss but the ``loss_type`` normaliser still counts ALL valid tokens, so loss and
  gradient are n_kept / n_valid (~rho) times the authors'. Under Adam a constant factor mostly cancels, except
  against ``max_grad_norm`` (the authors' ~5x larger gradients are clipped more often) and Adam's eps. TRL's
  quantile keeps ``1 + floor(rho (n - 1))`` tokens: equal to the authors' count for every n at rho = 0.2; other rho
  can keep one token fewer (tests/test_method_forking_tokens.py).

Both use the current policy's full-vocabulary entropy of the same forward pass (temperature-scaled). Diagnostics:
``method/frac_tokens_touched`` is the DROPPED share of valid tokens (~0.8 at rho = 0.2) for both: the loss hook
logs it, and the trainer logs it for TRL's mask. Baseline: the paper trains DAPO (clip-higher, dual clip, dynamic
sampling, overlong shaping); TRL has no dynamic sampling, so the tiers compare against GRPO with the same clip range.
"""
from __future__ import annotations

import torch

from harness.methods.context import TokenContext, dual_clip_ppo
from harness.methods.registry import HParam, register_config, register_loss

REPO = "Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR@6f5dda6"
CODE = f"{REPO} verl/trainer/ppo/core_algos.py"
SCRIPT = "recipe/rlvr_with_high_entropy_tokens_only/run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh"
SCOPES = ("micro_batch", "all_processes")


def top_k_count(n: int, ratio: float) -> int:
    """``get_global_entropy_top_mask``: ``max(1, int(n * top_ratio + 0.9999))`` (their ceil)."""
    return max(1, int(n * ratio + 0.9999))


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_all(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over every process (torch.distributed; identity on one process)."""
    if not _distributed():
        return x
    import torch.distributed as dist

    out = x.clone()
    dist.all_reduce(out)
    return out


def _gather_valid(x: torch.Tensor) -> torch.Tensor:
    """1-D tensors of every process, concatenated (torch.distributed; identity on one process). Every process must
    call it (also with an empty ``x``): it is a collective."""
    import torch.distributed as dist

    if not _distributed():
        return x
    n = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    width = int(max(int(s) for s in sizes))
    padded = torch.cat([x, x.new_full((width - x.numel(),), float("-inf"))])
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s)] for o, s in zip(out, sizes)])


def entropy_top_mask(entropy: torch.Tensor, mask: torch.Tensor, ratio: float,
                     scope: str = "micro_batch") -> torch.Tensor:
    """(B, T) bool: the ``top_k_count(n, ratio)`` valid tokens of highest entropy (authors' topk over the
    micro-batch), or over the gathered valid entropies of all processes (``scope="all_processes"``)."""
    if scope not in SCOPES:
        raise ValueError(f"forking_tokens: unknown selection_scope {scope!r}; valid: {', '.join(SCOPES)}")
    valid = mask.flatten() > 0
    flat = entropy.detach().flatten()
    out = torch.zeros_like(valid)
    local = flat[valid]
    pool = _gather_valid(local) if scope == "all_processes" else local  # a collective: before any early return
    if local.numel() == 0:
        return out.view_as(entropy)
    k = top_k_count(pool.numel(), ratio)
    if pool is local:  # exactly the authors' topk (ties: topk's order)
        out[valid.nonzero(as_tuple=False).squeeze(1)[torch.topk(local, k).indices]] = True
    else:
        threshold = torch.topk(pool, k).values[-1]
        out[valid] = local >= threshold
    return out.view_as(entropy)


@register_loss(
    "forking_tokens", paper="forking_tokens", version=2,  # 2: the authors' loss (kept-token mean), not TRL's mask
    source=f"arXiv 2506.01939 Sec. 4 (train on top-20% entropy tokens); {CODE} get_global_entropy_top_mask + "
           "compute_policy_loss_vanilla (token-mean over the kept tokens); verl/workers/actor/dp_actor.py:461",
    description="policy gradient only on the top-rho highest-entropy tokens, averaged over the kept tokens "
                "(authors' selection and normalisation)",
    hparams={
        "top_entropy_ratio": HParam(0.2, "fraction of valid tokens kept (rho)", "rho: share of the scope's valid "
                                    "tokens, by current-policy entropy, that keep their policy-gradient loss",
                                    f"arXiv 2506.01939 Sec. 4 rho=20%; {SCRIPT}:142 entropy_top_ratio=0.2"),
        "selection_scope": HParam("micro_batch", " | ".join(SCOPES), "tokens ranked together, and whose counts "
                                  "the kept-token mean divides by: each process's micro-batch (authors) or the "
                                  "micro-batches of all processes (TRL's scope; equal to one process on the same "
                                  "global batch under dapo/grpo/dr_grpo)",
                                  "dp_actor.py:461 get_global_entropy_top_mask(entropy of the micro-batch)"),
        "clip_ratio_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", f"{SCRIPT} clip_ratio_low=0.2"),
        "clip_ratio_high": HParam(0.28, "ratio offset", "PPO clip 1 + eps_high", f"{SCRIPT} clip_ratio_high=0.28"),
        "clip_ratio_c": HParam(10.0, "ratio", "dual-clip cap for A < 0 (null: off)", f"{SCRIPT} clip_ratio_c=10.0",
                               type=float | None),
    },
)
def forking_tokens(ctx: TokenContext, *, top_entropy_ratio: float, selection_scope: str, clip_ratio_low: float,
                   clip_ratio_high: float, clip_ratio_c: float | None):
    """PPO loss on the top-rho entropy tokens only, rescaled to the mean over the kept tokens."""
    if ctx.entropies is None:
        raise ValueError("forking_tokens needs ctx.entropies")
    pg, clipped = dual_clip_ppo(ctx, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    kept = entropy_top_mask(ctx.entropies, ctx.mask, top_entropy_ratio, selection_scope) & (ctx.mask > 0)
    n_valid = ctx.mask.sum()
    n_kept = kept.sum()
    local_kept = int(n_kept)
    if selection_scope == "all_processes" and _distributed():  # the kept-token mean over the scope: all processes
        both = _sum_all(torch.stack([n_valid.to(torch.float64), n_kept.to(torch.float64)]))
        n_valid, n_kept = both[0].to(n_valid.dtype), both[1].to(n_kept.dtype)
    scale = (n_valid / n_kept).to(pg.dtype) if int(n_kept) > 0 else pg.new_zeros(())
    per_token = pg * kept.to(pg.dtype) * scale
    n = max(ctx.n_valid, 1)
    metrics = {
        "method/frac_tokens_touched": 1.0 - local_kept / n,    # dropped share, as the trainer logs TRL's mask
        "clip_ratio/region_mean": int((clipped & kept).sum()) / max(local_kept, 1),
        "forking/kept_frac": local_kept / n,
        "forking/loss_scale": float(scale),
    }
    return per_token, metrics


register_config(
    "forking_tokens_trl", paper="forking_tokens",
    source=f"arXiv 2506.01939 Sec. 4; TRL 1.16 GRPOConfig.top_entropy_quantile / GRPOTrainer.get_high_entropy_mask "
           f"(quantile selection over all processes, loss normalised by ALL valid tokens); authors: {CODE}",
    description="TRL's top_entropy_quantile: the top-rho entropy tokens keep their loss, normaliser over all tokens",
    hparams={
        "top_entropy_quantile": HParam(
            0.2, "fraction of valid tokens kept (rho)",
            "rho: share of the valid tokens of all processes' micro-batches, by current-policy entropy, that keep "
            "their policy-gradient loss (TRL field name; the authors' entropy_top_ratio); the loss normaliser still "
            "counts all valid tokens",
            f"arXiv 2506.01939 abstract/Sec. 4 rho=20%; {SCRIPT}:142 entropy_top_ratio=0.2"),
    },
)
