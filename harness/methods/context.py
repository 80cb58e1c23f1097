"""The one token-context object every per-token loss receives from the trainer."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenContext:
    """Per-token tensors of one micro-batch, all of shape (B, T) over completion tokens.

    ``logps`` carries gradients; ``old_logps`` and ``advantages`` do not. ``mask`` is 1.0 on valid
    completion tokens. ``generator`` is a seeded CPU generator for methods that select at random, so
    runs are repeatable (the authors' code uses the unseeded global RNG).
    """

    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropies: torch.Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1
    #: (B, T, V) temperature-scaled logits of the current policy (with gradients), when ``needs`` has "logits"
    logits: torch.Tensor | None = None
    #: (B, T, V) logits of the policy that generated the batch (no gradients), when ``needs`` has "old_logits"
    old_logits: torch.Tensor | None = None

    @classmethod
    def build(cls, logps, old_logps, advantages, mask, **kw) -> "TokenContext":
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        advantages = advantages.expand_as(logps)
        return cls(logps=logps, old_logps=old_logps.detach(), advantages=advantages.detach(),
                   mask=mask.to(logps.dtype), **kw)

    @property
    def ratio(self) -> torch.Tensor:
        return torch.exp(self.logps - self.old_logps)

    @property
    def n_valid(self) -> int:
        return int(self.mask.sum().item())

    def token_cov(self) -> torch.Tensor:
        """c_i = (logp_i - mean logp) * (A_i - mean A) over valid tokens (Entropy Mechanism, Eq. for Cov;
        authors' ``core_algos.py`` clip_cov/kl_cov). Detached; invalid tokens are 0."""
        with torch.no_grad():
            lp = self.logps.detach()
            c = (lp - masked_mean(lp, self.mask)) * (self.advantages - masked_mean(self.advantages, self.mask))
            return c * self.mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x * mask).sum() / mask.sum(), as verl's ``masked_mean``."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def ppo_clipped_loss(ctx: TokenContext, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate ``max(-A r, -A clip(r, 1-eps_low, 1+eps_high))`` and the bool mask of tokens
    where the clipped branch is taken (strictly larger), as in verl ``compute_policy_loss``."""
    r = ctx.ratio
    l1 = -ctx.advantages * r
    l2 = -ctx.advantages * torch.clamp(r, 1 - eps_low, 1 + eps_high)
    return torch.maximum(l1, l2), (l2 > l1) & (ctx.mask > 0)


@dataclass
class AdvantageContext:
    """What an advantage method sees, for the whole generation batch (all processes), in group order.

    ``rewards`` (N,) are the weighted sums of the reward functions (NaN: unscorable); each group of
    ``group_size`` consecutive rows answers one prompt. ``mask``/``completion_ids`` are (N, T). ``logps`` and
    ``entropies`` (N, T) are filled when the method declares ``needs=("adv_token_stats",)``.
    """

    rewards: torch.Tensor
    group_size: int
    mask: torch.Tensor
    completion_ids: torch.Tensor
    scale_rewards: str = "group"
    logps: torch.Tensor | None = None
    entropies: torch.Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1

    @property
    def seq_len(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (N / G, G, ...)."""
        return x.view(-1, self.group_size, *x.shape[1:])

    def grpo_advantages(self) -> torch.Tensor:
        """TRL 1.16's group-normalised advantages (``scale_rewards`` group/batch/none; eps 1e-4; NaN -> 0)."""
        r = self.rewards
        g = self.grouped(r)
        mean = torch.nanmean(g, dim=1, keepdim=True).expand_as(g).reshape(-1)
        adv = r - mean
        if self.scale_rewards == "group":
            std = _nanstd(g, dim=1).repeat_interleave(self.group_size)
            adv = adv / (std + 1e-4)
        elif self.scale_rewards == "batch":
            adv = adv / (_nanstd(r, dim=0) + 1e-4)
        return torch.nan_to_num(adv, nan=0.0)


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unbiased std ignoring NaN (as TRL's ``nanstd``)."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    n = (~torch.isnan(x)).sum(dim=dim)
    return torch.sqrt(var * n / (n - 1).clamp(min=1))
