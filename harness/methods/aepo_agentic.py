"""AEPO, agentic: Agentic Entropy-Balanced Policy Optimization (arXiv 2510.14545, RUC / Kuaishou), built on ARPO
(:mod:`harness.methods.arpo`). Not ``aepo_entropy`` (2510.08141).

**An interpretation, not a port.** The authors' AEPO code was not readable here (the ARPO repository snapshots we
could read, dongguanting/ARPO@e257337 and RUC-NLPIR/ARPO@a95cd08, hold ARPO only); the components are the abstract's
and a secondary summary's (shared/papers/aepo_agentic.md [secondary]); every formula below is the harness's reading
and every constant a guess unless marked. Golden values are hand-derived (tests/test_method_aepo_agentic.py).

1. **Entropy pre-monitoring** (rollout). Each group starts with ONE global episode, the monitor; once it has played
   ``monitor_turns`` turns or ended, ``m = clip(round(k sigmoid(global_beta (H_root - mean H_tool))), 1, k)`` (the
   summary's formula; k the group size): ``H_root`` is the monitor's first-turn entropy (its answer to the task),
   ``mean H_tool`` the mean over its turns after a tool result (none: ``H_root``, so m = k/2); ARPO's step entropy
   (:func:`~harness.methods.arpo.window_entropy`). The group then gets ``m - 1`` more global episodes; branches
   fill the remaining ``k - m`` (and, as in ARPO, a group with nothing playing and fewer than k gets one new global
   episode per turn). The monitor does not branch before the decision.
2. **Branch penalty** (rollout). ARPO's rule times a penalty for consecutive high-entropy branching:
   ``P = clip(tau + beta dH, 0, 1) * (1 - branch_penalty) ** s``, ``s`` the number of immediately preceding turns
   of this path after which it branched with ``dH > 0`` (a branch inherits its path's history).
3. **Gradient-preserving clipping of high-entropy tokens** (loss). Per token, ``Hn`` = the token entropy z-scored
   over the micro-batch's valid tokens; on high-entropy tokens (``Hn > 0``) the clipped ratio is
   ``sg(clip(r, 1 - clip_low, 1 + clip_high) / r) * r``: its value is the clipped ratio (the forward loss is PPO's)
   and its gradient is ``clip(r) * grad log p`` instead of 0; other tokens keep PPO's clip. Loss:
   ``-min(r A', c A')`` per token, TRL's ``loss_type`` normaliser.
4. **Entropy-aware advantage** (loss). ``A' = A * max(0, 1 + adv_entropy_weight * Hn)`` (prioritises high-entropy
   tokens; the 0 floor keeps the sign of A: a harness choice).

Secondary cross-check: a third-party verl port (ARLArena ``compute_policy_loss_aepo``, "adapted from" 2510.14545)
has the z-scored entropy, ``A (1 + 0.2 Hn)`` and a ``bound / r * r`` clip; it restores the gradient on tokens with
``Hn <= 0`` and keeps PPO's on ``Hn > 0``, the reverse of the abstract's "preserve ... gradients on high-entropy
tokens", which we follow. Its 0.2 is our ``adv_entropy_weight`` default.
"""
from __future__ import annotations

import math

import torch

from harness.methods.arpo import HPARAMS as ARPO_HPARAMS, ArpoScheduler, play, uniform_from
from harness.methods.context import RolloutContext, TokenContext
from harness.methods.registry import HParam, register_loss, register_rollout

PAPER = "aepo_agentic"
SOURCE = ("arXiv 2510.14545 (AEPO) abstract + shared/papers/aepo_agentic.md [secondary]; no authors' code read "
          "(interpretation); built on ARPO (dongguanting/ARPO@e257337)")
_G = "[guess] not given in the sources"


def split_count(k: int, h_root: float, h_tool: float, beta: float) -> int:
    """Global samples of a group of ``k``: ``k sigmoid(beta (H_root - H_tool))`` rounded half up, within [1, k]."""
    x = beta * (h_root - h_tool)
    sig = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return min(k, max(1, math.floor(k * sig + 0.5)))


class AepoScheduler(ArpoScheduler):
    """ARPO's schedule with entropy pre-monitoring and the consecutive-branch penalty (module docstring)."""

    def __init__(self, *, global_beta: float, monitor_turns: int, branch_penalty: float, **arpo):
        super().__init__(**arpo)
        if not 0.0 <= branch_penalty <= 1.0 or not isinstance(monitor_turns, int) or monitor_turns < 1:
            raise ValueError(f"{PAPER}: need 0 <= branch_penalty <= 1 and monitor_turns >= 1")
        self.global_beta, self.monitor_turns, self.penalty = global_beta, monitor_turns, branch_penalty
        self.m: list[int | None] = []
        self.pre: list[int] = []
        self.decided_before: set[int] = set()

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        super().start(n_groups, size, vocab_size)
        self.m = [None] * n_groups
        return [1] * n_groups

    def global_count(self, monitor) -> int:
        hs = [self.entropy(monitor, t) for t in range(monitor.own_turns)]
        h_tool = sum(hs[1:]) / (len(hs) - 1) if len(hs) > 1 else hs[0]
        return split_count(self.size, hs[0], h_tool, self.global_beta)

    def streak(self, node, groups) -> int:
        """Consecutive turns right before this one after which the path branched with dH > 0."""
        if "hi" not in node.tag:  # a branch inherits its path's high-entropy branch turns
            parent = groups[node.group][node.parent] if node.parent >= 0 else None
            node.tag["hi"] = {t for t in parent.tag.get("hi", ()) if t < node.prefix_turns} if parent else set()
        t, s = node.path_turns - 1, 0
        while t - 1 - s in node.tag["hi"]:
            s += 1
        return s

    def branch_now(self, node, groups) -> bool:
        dh = self.entropy(node, -1) - self.entropy(node, 0)
        p = min(1.0, max(0.0, self.tau + self.beta * dh)) * (1.0 - self.penalty) ** self.streak(node, groups)
        go = self.uniform() <= p
        self.decisions.append((dh, p, go))
        if go and dh > 0:
            node.tag["hi"].add(node.path_turns - 1)
        return go

    def eligible(self, group: int) -> bool:
        return group in self.decided_before

    def grow(self, live: list, groups: list[list]) -> tuple[list, list[int]]:
        self.decided_before = {g for g, m in enumerate(self.m) if m is not None}
        playing = {n.group for n in live}
        self.pre = [0] * len(groups)
        for g, nodes in enumerate(groups):
            if self.m[g] is None and (g not in playing or nodes[0].own_turns >= self.monitor_turns):
                self.m[g] = self.global_count(nodes[0])
                self.pre[g] = self.m[g] - 1
        branches, roots = super().grow(live, groups)
        return branches, sorted([g for g, k in enumerate(self.pre) for _ in range(k)] + roots)

    def new_roots(self, by_group: dict, groups: list[list]) -> list[int]:
        """ARPO's fallback (one new global episode for a group with nothing playing, none about to start, and fewer
        than k) once the group's split is decided."""
        return [g for g in range(len(groups)) if self.m[g] is not None and g not in by_group and not self.pre[g]
                and len(groups[g]) < self.size]

    def metrics(self, prefix: str = PAPER) -> dict[str, float]:
        out = super().metrics(prefix)
        ms = [m / self.size for m in self.m if m is not None]
        if ms:
            mean = sum(ms) / len(ms)
            out[f"{prefix}/global_frac"] = mean
            out[f"{prefix}/global_frac_std"] = math.sqrt(sum((x - mean) ** 2 for x in ms) / len(ms))
        return out


HPARAMS = {
    **{k: v for k, v in ARPO_HPARAMS.items() if k != "initial_rollouts"},  # one monitor starts each group
    "global_beta": HParam(1.0, "1 / normalised-entropy unit", "sensitivity of the global/branch split "
                          "m = k sigmoid(beta (H_root - H_tool))", f"formula [secondary]; value {_G}"),
    "monitor_turns": HParam(4, "model turns", "turns the monitor episode plays before the split is decided",
                            f"[interpretation] the summary measures H_tool 'after tool calls'; {_G}"),
    "branch_penalty": HParam(0.5, "factor per consecutive high-entropy branch", "P(branch) *= (1 - penalty)^s",
                             f"[interpretation] 'penalise consecutive high-entropy branching'; {_G}"),
    "clip_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", "ARPO/verl actor clip_ratio 0.2 [guess for AEPO]"),
    "clip_high": HParam(0.2, "ratio offset", "PPO clip 1 + eps_high",
                        "ARPO/verl actor clip_ratio 0.2 [guess for AEPO]"),
    "adv_entropy_weight": HParam(0.2, "advantage factor per z-scored entropy unit",
                                 "A' = A max(0, 1 + w Hn): entropy-aware advantage",
                                 "third-party port ARLArena compute_policy_loss_aepo: 0.2 [secondary]"),
}


@register_rollout(PAPER, kind="rollout_func", paper=PAPER, source=SOURCE, hparams=HPARAMS)
def aepo_rollout(prompts: list, rctx: RolloutContext, *, episodes=None, **hp) -> dict:
    """AEPO: entropy pre-monitoring split of global and branch samples, ARPO branching with a consecutive-branch
    penalty (interpretation)."""
    keys = ("global_beta", "monitor_turns", "branch_penalty", "beam_size", "branch_probability", "entropy_weight",
            "top_k", "window")
    sched = AepoScheduler(**{k: hp[k] for k in keys}, initial_rollouts=1, uniform=uniform_from(rctx.generator))
    return play(prompts, rctx, episodes, sched, PAPER, PAPER)


def entropy_z(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token entropies z-scored over the valid tokens (unbiased std; a zero or undefined std counts as 1); 0 off
    the mask."""
    valid = mask > 0
    h = entropies.detach().double()
    if not bool(valid.any()):
        return torch.zeros_like(h)
    vals = h[valid]
    std = vals.std() if vals.numel() > 1 else torch.tensor(0.0, dtype=h.dtype)
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    return torch.where(valid, (h - vals.mean()) / std, torch.zeros_like(h))


@register_loss(PAPER, paper=PAPER, source=SOURCE)
def aepo_loss(ctx: TokenContext, *, clip_low: float, clip_high: float, adv_entropy_weight: float, **_):
    """Entropy-balanced policy optimisation: entropy-aware advantage and gradient-preserving clipping of
    high-entropy tokens (interpretation)."""
    if ctx.entropies is None:
        raise ValueError(f"{PAPER}: the loss needs token entropies")
    valid = ctx.mask > 0
    hn = entropy_z(ctx.entropies, ctx.mask)
    factor = (1.0 + adv_entropy_weight * hn).clamp(min=0.0).to(ctx.advantages.dtype)
    adv = ctx.advantages * factor
    r = ctx.ratio
    clipped_r = torch.clamp(r, 1.0 - clip_low, 1.0 + clip_high)
    high = (hn > 0) & valid
    c = torch.where(high, (clipped_r / r).detach() * r, clipped_r)
    l1, l2 = -adv * r, -adv * c
    loss = torch.maximum(l1, l2)
    clipped = (l2 > l1) & valid
    n = max(int(valid.sum()), 1)
    return loss, {
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "method/frac_tokens_touched": int(((factor != 1) & valid | clipped & high).sum()) / n,
        f"{PAPER}/high_entropy_frac": int(high.sum()) / n,
        f"{PAPER}/high_entropy_clipped_frac": int((clipped & high).sum()) / n,
        f"{PAPER}/adv_factor_mean": float(factor[valid].double().mean()) if bool(valid.any()) else 1.0,
        f"{PAPER}/adv_factor_zero_frac": int(((factor == 0) & valid).sum()) / n,
    }
