"""DLER: "Doing Length pEnalty Right" (arXiv 2510.15110, NVIDIA).

Ported from the authors' release NVlabs/DLER @ ea7d4f7b (their verl fork ``verl-dler/``, run through
``recipe.dapo.main_dapo`` by the README's ``dler_slurm.sh``). Four parts, one name ``dler`` (advantage + data hooks
and TRL settings):

1. Truncation penalty. Generation is capped at ``max_response_length`` (TRL ``max_completion_length``: the cap IS
   the length penalty). The reward is the task's correctness score, multiplied by ``stop_properly_penalty
   .penalty_coef`` when the response did not stop properly (vLLM ``finish_reason != "stop"``: cut at the cap):
   ``verl/workers/reward_manager/dapo.py`` ``_apply_stop_properly_penalty``; 0.1 is the recipe's default
   (``recipe/dapo/config/dapo_trainer.yaml``), which ``dler_slurm.sh`` does not override. The paper gives a
   truncated response reward 0: ``truncated_reward_scale=0.0``. (A truncated response seldom holds a final answer,
   so the two seldom differ.) Here "truncated" is TRL's: the completion has no EOS (``completions/clipped_ratio``).
2. Batch-wise reward normalisation, ``adv_estimator=reinforce_plus_plus_baseline``
   (``verl/trainer/ppo/core_algos.py`` ``compute_reinforce_plus_plus_baseline_outcome_advantage``): a_i = r_i minus
   the mean of its group (0 for a group of one), broadcast to the response tokens, then ``verl_F.masked_whiten``
   over ALL response tokens of the (filtered) batch: A = (a - mean_tok) / sqrt(var_tok + 1e-8), token-weighted
   mean and unbiased variance (verl's ``masked_mean`` adds 1e-8 to the token count; kept).
3. Clip-higher with dual clip: clip_ratio_low 0.2, clip_ratio_high 0.28, clip_ratio_c 10 (``core_algos.py``
   ``compute_policy_loss_vanilla``). TRL's own loss with ``epsilon=0.2, epsilon_high=0.28, delta=10`` is exactly
   that: ``delta`` clamps the ratio inside the min, which for A < 0 caps the token loss at -A c and for A >= 0
   changes nothing because c > 1 + eps_high (tests/test_method_dler.py checks it on the trainer). They are this
   method's TRL overrides, so TRL's KL term (``beta``; the authors' ``kl_loss_coef`` 0.0005) still works.
4. Dynamic sampling, ``algorithm.filter_groups.enable=True, metric=seq_reward`` (``recipe/dapo/dapo_ray_trainer.py``
   ``fit``): groups whose ``seq_reward`` (the score BEFORE the truncation penalty, ``token_level_scores``) has
   ``np.std == 0`` are dropped and further prompt batches are generated until the training batch is full
   (``max_num_gen_batches`` 0: no limit); the advantage is computed on the filtered batch. Here the data hook drops
   them and asks the trainer to refill their places (``BatchDecision.resample``), and the advantage hook leaves them
   out of the whitening statistics (their advantage is 0), so the advantages are the authors' on the filtered batch.
   Deviations: a refill round generates a full batch of random training prompts (the authors: the next data-loader
   batch); the default bounds the rounds (``max_num_gen_batches`` 4, the authors' 0 = no limit is allowed) and a
   place still empty then trains on its own zero-variance group, advantage 0 (the authors raise an error).

Also in the code, off by default: ``correct_sample_advantage_boost_value`` (``verl/workers/actor/dp_actor.py``
``boost_high_score_advantages``: + value on the advantages of responses with score >= 1; 0 in the recipe config,
0.1 in ``verl-dler/dler_slurm.sh``). Not released, not here: difficulty-aware DLER, update-selective merging.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.methods.context import AdvantageContext, BatchContext, BatchDecision
from harness.methods.registry import HParam, register_advantage, register_data

REPO = "NVlabs/DLER"
COMMIT = "ea7d4f7b54eff6e85267fab1af4863d0aec27d51"
CODE = f"{REPO}@{COMMIT[:8]}"
FILTER_METRICS = ("seq_reward", "seq_final_reward")
DYNAMIC_SAMPLING = ("refill", "drop", "off")
BOOST_THRESHOLD = 1.0  # dapo_trainer.yaml correct_sample_advantage_boost_threshold

HPARAMS = {
    "truncated_reward_scale": HParam(
        0.1, "factor", "reward multiplier of a response cut at max_completion_length (code: 0.1; paper: 0.0)",
        f"{CODE} verl-dler/verl/workers/reward_manager/dapo.py _apply_stop_properly_penalty; "
        "recipe/dapo/config/dapo_trainer.yaml stop_properly_penalty.penalty_coef: 0.1 (dler_slurm.sh keeps it); "
        "paper (truncation length penalty): reward 0"),
    "filter_metric": HParam(
        "seq_reward", " | ".join(FILTER_METRICS), "what must vary within a group for it to stay: seq_reward = the "
        "score before the truncation penalty, seq_final_reward = after it",
        f"{CODE} dler_slurm.sh algorithm.filter_groups.metric=seq_reward; recipe/dapo/dapo_ray_trainer.py fit"),
    "dynamic_sampling": HParam(
        "refill", " | ".join(DYNAMIC_SAMPLING), "refill = drop zero-variance groups and generate replacements "
        "(authors); drop = drop them without replacement (the kept tokens renormalise the loss); off = keep all",
        f"{CODE} dler_slurm.sh algorithm.filter_groups.enable=True; recipe/dapo/dapo_ray_trainer.py fit"),
    "max_num_gen_batches": HParam(
        4, "generation batches", "most generation batches per training batch, the first included (<= 0: no limit, "
                                 "the authors' setting); when reached, places still empty train on their own "
                                 "zero-variance group (advantage 0; the authors raise instead). Default 4, not the "
                                 "authors' 0: a batch that never varies would otherwise regenerate forever",
        f"{CODE} recipe/dapo/config/dapo_trainer.yaml algorithm.filter_groups.max_num_gen_batches: 0 (no limit)"),
    "correct_sample_advantage_boost": HParam(
        0.0, "advantage units", "added to the advantage of responses whose score is >= 1 (after whitening)",
        f"{CODE} verl-dler/verl/workers/actor/dp_actor.py boost_high_score_advantages; dapo_trainer.yaml "
        "correct_sample_advantage_boost_value: 0 (verl-dler/dler_slurm.sh: 0.1)"),
}
#: clip-higher + dual clip as TRL settings (see the module docstring); truncated responses stay in the loss
TRL_OVERRIDES = {"epsilon": 0.2, "epsilon_high": 0.28, "delta": 10.0, "mask_truncated_completions": False}


def _check(filter_metric: str, dynamic_sampling: str) -> None:
    if filter_metric not in FILTER_METRICS:
        raise ValueError(f"dler: unknown filter_metric {filter_metric!r}; valid: {', '.join(FILTER_METRICS)}")
    if dynamic_sampling not in DYNAMIC_SAMPLING:
        raise ValueError(f"dler: unknown dynamic_sampling {dynamic_sampling!r}; valid: {', '.join(DYNAMIC_SAMPLING)}")


def _truncated(ctx) -> torch.Tensor:
    if ctx.truncated is None:
        raise ValueError("dler needs the truncation flags of the completions (truncated); the trainer did not "
                         "provide them")
    return torch.as_tensor(ctx.truncated).bool().cpu()


def penalised_rewards(scores: torch.Tensor, truncated: torch.Tensor, scale: float) -> torch.Tensor:
    """The truncation penalty: ``score * scale`` for truncated responses, ``score`` otherwise (NaN scores: 0)."""
    s = torch.nan_to_num(scores.detach().double().cpu(), nan=0.0)
    return torch.where(truncated, s * scale, s)


def kept_groups(scores: torch.Tensor, truncated: torch.Tensor, group_size: int, *, truncated_reward_scale: float,
                filter_metric: str) -> torch.Tensor:
    """(P,) bool: groups whose filter metric varies (``np.std > 0`` on float32 values, as the authors), or of one."""
    vals = torch.nan_to_num(scores.detach().double().cpu(), nan=0.0)
    if filter_metric == "seq_final_reward":
        vals = penalised_rewards(scores, truncated, truncated_reward_scale)
    g = vals.float().numpy().reshape(-1, group_size)
    return torch.tensor([group_size == 1 or bool(np.std(row) > 0) for row in g])


def batch_whitened(a: torch.Tensor, n_tokens: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``verl_F.masked_whiten`` of per-response values broadcast to their tokens: token-weighted mean, unbiased
    token variance, ``(a - mean) * rsqrt(var + 1e-8)``; verl's ``masked_mean`` divides by (count + 1e-8)."""
    w = n_tokens.double()
    m = w.sum()
    mean = (w * a).sum() / (m + 1e-8)
    var = (w * (a - mean) ** 2).sum() / (m + 1e-8) * (m / (m - 1))
    return (a - mean) * torch.rsqrt(var + 1e-8), float(var.sqrt())


def _stats(ctx, hp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(truncated (N,), penalised rewards (N,), kept rows (N,)) of a batch."""
    _check(hp["filter_metric"], hp["dynamic_sampling"])
    trunc = _truncated(ctx)
    r = penalised_rewards(ctx.rewards, trunc, hp["truncated_reward_scale"])
    if hp["dynamic_sampling"] == "off":
        keep = torch.ones(r.numel(), dtype=torch.bool)
    else:
        keep = kept_groups(ctx.rewards, trunc, ctx.group_size, truncated_reward_scale=hp["truncated_reward_scale"],
                           filter_metric=hp["filter_metric"]).repeat_interleave(ctx.group_size)
    return trunc, r, keep


def _frac_tokens(mask: torch.Tensor, rows: torch.Tensor) -> float:
    n = mask.detach().double().cpu().sum(-1)
    return float(n[rows].sum() / n.sum().clamp(min=1.0))


@register_advantage(
    "dler", paper="dler", hparams=HPARAMS, trl_overrides=TRL_OVERRIDES,
    source=f"arXiv 2510.15110; {CODE} verl-dler: reward_manager/dapo.py (truncation penalty), core_algos.py "
           "compute_reinforce_plus_plus_baseline_outcome_advantage (batch-wise normalisation), "
           "compute_policy_loss_vanilla (clip 0.2/0.28, dual clip c 10), recipe/dapo/dapo_ray_trainer.py "
           "(dynamic sampling, filter_groups metric seq_reward); dler_slurm.sh")
def dler_advantage(actx: AdvantageContext, **hp):
    """DLER: truncation-penalised reward minus its group mean, whitened over the response tokens of the batch."""
    trunc, r, keep = _stats(actx, hp)
    g = actx.grouped(r)
    base = g.mean(1, keepdim=True) if actx.group_size > 1 else torch.zeros_like(g)
    a = (g - base).reshape(-1)
    n_tok = actx.mask.detach().double().cpu().sum(-1)
    adv = torch.zeros_like(a)
    std = 0.0
    if keep.sum() > 0 and n_tok[keep].sum() > 1:
        adv[keep], std = batch_whitened(a[keep], n_tok[keep])
    score = torch.nan_to_num(actx.rewards.detach().double().cpu(), nan=0.0)
    boost = hp["correct_sample_advantage_boost"]
    if boost > 0:
        adv = adv + boost * (keep & (score >= BOOST_THRESHOLD - 1e-5)).double()
    metrics = {
        "method/frac_tokens_touched": _frac_tokens(actx.mask, ~keep),
        "dler/reward_penalised": float(r.mean()),
        "dler/adv_batch_std": std,
    }
    return adv.to(actx.rewards.device, actx.rewards.dtype), metrics


@register_data("dler", paper="dler", source=f"{CODE} recipe/dapo/dapo_ray_trainer.py fit (filter_groups: drop groups "
                                             "with zero-std seq_reward, keep generating until the batch is full)")
def dler_data(bctx: BatchContext, **hp):
    """DLER dynamic sampling: drop groups whose score does not vary and have the trainer refill their places."""
    if bctx.stage != "scored":
        return None
    trunc, _, keep = _stats(bctx, hp)
    metrics = {"dler/frac_truncated": float(trunc.double().mean()),
               "dler/frac_groups_dropped": float((~keep).double().mean()),
               "method/frac_tokens_touched": _frac_tokens(bctx.mask, ~keep)}
    if hp["dynamic_sampling"] == "off":
        return BatchDecision(metrics=metrics)
    n = hp["max_num_gen_batches"]
    return BatchDecision(keep=keep, metrics=metrics, resample=hp["dynamic_sampling"] == "refill",
                         resample_max_rounds=None if n <= 0 else n - 1)
