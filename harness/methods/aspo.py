"""ASPO: Advantage Shaping Policy Optimization, from "Understanding Tool-Integrated Reasoning" (Lin & Xu,
arXiv 2508.19201), Sec. on ASPO (Eq. 2 as a third-party recipe quotes it; shared card ``aspo.md`` [secondary]).

For a correct response that calls the tool at least once (an *eligible* response), with ``p_i`` the completion-token
position where its first tool call starts::

    z_i  = (p_i - mean_E p) / scale_E           over the eligible responses E of the same group
    A'_i = A_i + clip(delta * z_i, -k |A_i|, +k |A_i|)          eligible i
    A'_i = A_i                                                  otherwise (rewards are unchanged)

``A_i`` is the GRPO advantage (TRL's, with the run's ``scale_rewards``). ``delta < 0`` rewards calling earlier than
the group's other correct tool users; the clip relative to ``|A_i|`` with ``k < 1`` keeps the correctness signal
dominant: the sign of ``A`` never flips and ``|A' - A| <= k |A|``. A correct response in an all-correct group has
``A = 0`` and gets no shaping. The paper's point against reward shaping: the same term put into the reward is
rescaled by the group normalisation and can overwhelm correctness; here the shaping never enters the reward.

Source: NO code released by the authors (their blog links example rollouts only); formula, ``delta``/``k``
settings and "eligible = correct and >= 1 code call" from the shared card (third-party recipe, [secondary]). The
normaliser of z is not given there (``normaliser``; the card records the choice): ``std`` (default; population std
of the eligible positions, z = 0 when fewer than two eligible responses or zero spread), ``mean`` (relative to the
mean position) or ``none`` (raw token offsets). The golden test is hand-derived.

Tool calls are found in the completion ids by ``call_grams`` (token-id n-grams that open a call; smoke reasoning
task: ``<calc>``; a real tier: the tokenised code-block opener). Position = index of the first token of the first
match, over completion tokens (everything before the first call is model-written, so env_mask does not shift it).
No gram (e.g. the addition task, no tool): nothing is eligible and ASPO is GRPO.
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage

NORMALISERS = ("std", "mean", "none")


def call_starts(completion_ids: torch.Tensor, valid: torch.Tensor, call_grams) -> torch.Tensor:
    """(N, T) bool: positions where a tool call starts (a ``call_grams`` n-gram begins, all its tokens valid)."""
    out = torch.zeros_like(valid, dtype=torch.bool)
    for gram in call_grams or []:
        n = len(gram)
        if n == 0 or n > completion_ids.size(1):
            continue
        g = torch.as_tensor(list(gram), dtype=completion_ids.dtype)
        hit = (completion_ids.unfold(1, n, 1) == g).all(-1) & valid.unfold(1, n, 1).all(-1)
        out[:, : hit.size(1)] |= hit
    return out


def first_call_positions(completion_ids, valid, call_grams) -> torch.Tensor:
    """(N,) float: token index of the first call start in each completion; NaN for a response without a call."""
    starts = call_starts(completion_ids, valid, call_grams)
    T = starts.size(1)
    idx = torch.where(starts, torch.arange(T).expand_as(starts), torch.full_like(starts, T, dtype=torch.long))
    first = idx.min(1).values.double()
    return torch.where(starts.any(1), first, torch.full_like(first, float("nan")))


def normalised_positions(pos: torch.Tensor, eligible: torch.Tensor, group_size: int, normaliser: str) -> torch.Tensor:
    """(N,) z: each eligible response's first-call position relative to the eligible ones of its group; 0 elsewhere."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"aspo: unknown normaliser {normaliser!r}; valid: {', '.join(NORMALISERS)}")
    p = torch.where(eligible, pos, torch.zeros_like(pos)).view(-1, group_size)
    e = eligible.view(-1, group_size).double()
    n = e.sum(1, keepdim=True)
    mean = (p * e).sum(1, keepdim=True) / n.clamp(min=1)
    dev = (p - mean) * e
    if normaliser == "std":
        scale = torch.sqrt((dev ** 2).sum(1, keepdim=True) / n.clamp(min=1))
    elif normaliser == "mean":
        scale = mean
    else:
        scale = torch.ones_like(mean)
    ok = (n >= 2) & (scale > 0)
    z = torch.where(ok, dev / torch.where(ok, scale, torch.ones_like(scale)), torch.zeros_like(dev))
    return (z * e).reshape(-1)


@register_advantage(
    "aspo", paper="aspo",
    source="arXiv 2508.19201 (ASPO, Eq. 2) per shared/papers/aspo.md [secondary: third-party recipe]; no authors' code",
    hparams={
        "delta": HParam(-2.0, "advantage units per unit of z", "shaping strength; < 0 favours an earlier first call",
                        "shared card aspo.md table, conservative setting [secondary]"),
        "k": HParam(0.7, "fraction of |A|", "clip of the shaping term to [-k|A|, k|A|] (k < 1: sign of A kept)",
                    "shared card aspo.md table, conservative setting [secondary]"),
        "normaliser": HParam("std", "std | mean | none", "scale of z over the group's eligible positions",
                             "harness choice: the card marks the normaliser unverified"),
        "call_grams": HParam([], "list of token-id n-grams", "token sequences that open a tool call (smoke "
                             "reasoning_calc: [[id of <calc>]]); empty: no tool, ASPO is GRPO",
                             "harness; paper: a Python code block opens a call"),
        "correct_reward": HParam(1.0, "reward", "a response with reward >= this is correct (boxed reward: 1.0)",
                                 "paper: eligible = verified-correct responses"),
    },
)
def aspo(actx: AdvantageContext, *, delta: float, k: float, normaliser: str, call_grams, correct_reward: float):
    """ASPO: GRPO advantage plus a clipped bonus for an early first tool call on correct, tool-using responses."""
    if not k >= 0:
        raise ValueError(f"aspo: k must be >= 0 (a fraction of |A|), got {k!r}")
    a = actx.grpo_advantages().double()
    valid = actx.mask > 0
    pos = first_call_positions(actx.completion_ids, valid, call_grams)
    used = ~torch.isnan(pos)
    correct = torch.nan_to_num(actx.rewards.double(), nan=float("-inf")) >= correct_reward
    eligible = used & correct
    z = normalised_positions(pos, eligible, actx.group_size, normaliser)
    raw = delta * z
    bound = k * a.abs()
    shaping = torch.where(eligible, torch.maximum(torch.minimum(raw, bound), -bound), torch.zeros_like(raw))
    adv = (a + shaping).to(actx.rewards.dtype if actx.rewards.is_floating_point() else torch.float32)

    lengths = valid.sum(1).double()
    changed = shaping != 0
    n_tok = lengths.sum().clamp(min=1)
    elig_n = int(eligible.sum())
    starts = call_starts(actx.completion_ids, valid, call_grams)
    metrics = {
        "method/frac_tokens_touched": float(lengths[changed].sum() / n_tok),
        "aspo/tool_use_frac": float(used.double().mean()),
        "aspo/calls_per_response": float(starts.sum() / max(len(pos), 1)),
        "aspo/eligible_frac": float(eligible.double().mean()),
        "aspo/shaped_frac": float(changed.double().mean()),
        "aspo/clip_frac": float(((raw.abs() > bound) & eligible).sum() / max(elig_n, 1)),
        "aspo/shaping_abs_mean": float(shaping[eligible].abs().mean()) if elig_n else 0.0,
        "aspo/sign_flips": float(((a != 0) & (torch.sign(a + shaping) != torch.sign(a))).sum()),
        "aspo/mean_length": float(lengths.mean()) if len(lengths) else 0.0,
    }
    if bool(used.any()):  # first-call position: tokens from the start of the completion, and as a share of its length
        metrics["aspo/first_call_pos"] = float(pos[used].mean())
        metrics["aspo/first_call_pos_rel"] = float((pos[used] / lengths[used].clamp(min=1)).mean())
    if elig_n:
        metrics["aspo/first_call_pos_correct"] = float(pos[eligible].mean())
    return adv, metrics
