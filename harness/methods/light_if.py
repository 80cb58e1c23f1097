"""Light-IF TEA-RL: "Light-IF: Endowing LLMs with Generalizable Reasoning via Preview and Self-Checking for Complex
Instruction Following" (Wang, Wen et al., arXiv 2508.03178), TEA-RL = token-wise entropy-adaptive RL with dense
rule-based constraint rewards.

Ported from the authors' code, Qihoo360/Light-IF @ 01e90034af6a289de5b7d32210b6f57e98413db0 (a verl fork under
``rl/verl``); the paper's TEA-RL formulas were not available to us (only the abstract), so the code is the
reference:

- TEA term: ``verl/trainer/ppo/core_algos.py`` ``compute_entropy_with_cov`` (defaults ``cov_alpha=10``,
  ``clip_cov_ub=5``; ``verl/trainer/config/ppo_trainer.yaml`` ``algorithm.entropy_mode: "token-level-cov"``)::

      cov_t  = (A_t - mean(A)) * (logp_t - mean(logp).detach())       # means over the micro-batch's valid tokens
      w_t    = clamp(cov_alpha * softmax_t(cov masked to -inf), 0, clip_cov_ub)   # softmax over each sequence
      loss   = pg_loss - token_mean(w_t * H_t)                          # dp_actor.py: policy_loss = pg - entropy_loss

  ``logp`` in ``cov_t`` is NOT detached (only its mean is), so the weights carry a gradient too; this port keeps
  that. Under a token-mean loss (TRL ``loss_type: bnpo``) the per-token loss ``pg_t - w_t H_t`` here is exactly it.
- ``pg_loss``: verl ``compute_policy_loss`` (dual-clip PPO) with the Light-IF scripts' ``clip_ratio_low =
  clip_ratio_high = 1.0`` and ``clip_ratio_c = 10.0`` (recipe/Light-IF/*.sh).
- Dense reward: ``verl/utils/reward_score/__init__.py`` ``res["score"] = res["point_score"] + res["acc_score"]``
  (``IF.py``: ``point_score`` = partial credit per satisfied constraint, ``acc_score`` = 1 when all hold). Here the
  reward hook returns the fraction of satisfied constraints and the task's all-or-nothing reward keeps weight 1, so
  the total is dense + all-or-nothing, as released (uniform credit per constraint instead of their per-kind weights
  0.02-0.2, which belong to their constraint kinds).

Released code vs its own config: in ``verl/workers/actor/dp_actor.py`` the TEA branch is ``elif entropy_mode ==
"token-level-cov"`` after ``if loss_mode == "vanilla"`` (the scripts' mode), with ``entropy_mode`` never defined and
``compute_entropy_with_cov`` never imported: as shipped the branch is unreachable and the scripts train PPO + KL with
the dense reward. ``entropy_mode`` keeps both: ``token-level-cov`` (default: the TEA term the config asks for and
the paper describes) and ``none`` (the shipped actor's behaviour), registered as ``light_if_no_tea`` (the ablation).

Not ported: the KL loss (``kl_loss_coef=0.001``, low_var_kl): a loss method owns the per-token loss and TRL loads no
reference model at beta=0. Light-IF's other stages (hardness-filtered prompts, rejection-sampled cold start,
Entropy-SFT, the cosine length reward of the Zero-RL stage, which ``compute_score`` computes but the score omits)
are outside the RL step.
"""
from __future__ import annotations

import torch

from harness.methods.context import RewardContext, TokenContext, dual_clip_ppo, masked_mean
from harness.methods.registry import HParam, register_loss, register_reward
from harness.verify.constraints import dense_score

COMMIT = "01e90034af6a289de5b7d32210b6f57e98413db0"
CODE = f"Qihoo360/Light-IF@{COMMIT[:8]} rl/verl"
ENTROPY_MODES = ("token-level-cov", "none")


def _hparams(mode: str) -> dict[str, HParam]:
    return {
        "entropy_mode": HParam(mode, "choice", f"TEA entropy term: {' | '.join(ENTROPY_MODES)} (none = the released "
                               "actor, whose TEA branch is unreachable)",
                               "ppo_trainer.yaml:161 entropy_mode: token-level-cov; dp_actor.py:434"),
        "cov_alpha": HParam(10.0, "entropy weight per sequence (softmax mass x alpha)", "scale of the per-token "
                            "softmax weights (their sum over a sequence, before the clamp)",
                            "core_algos.py:890 compute_entropy_with_cov cov_alpha=10.0 (ppo_trainer.yaml:163)"),
        "clip_cov_ub": HParam(5.0, "entropy weight per token", "upper clamp of a token's weight w_t",
                              "core_algos.py:890 clip_cov_ub=5.0 (ppo_trainer.yaml:162)"),
        "clip_ratio_low": HParam(1.0, "ratio offset", "PPO clip 1 - eps_low (1.0: ratio clamped at 0 only)",
                                 "recipe/Light-IF/*.sh actor.clip_ratio_low=1.0"),
        "clip_ratio_high": HParam(1.0, "ratio offset", "PPO clip 1 + eps_high", "recipe/Light-IF/*.sh "
                                  "actor.clip_ratio_high=1.0"),
        "clip_ratio_c": HParam(10.0, "ratio", "dual-clip cap for A < 0 (loss <= -A * c)",
                               "recipe/Light-IF/*.sh actor.clip_ratio_c=10.0"),
    }


def tea_weights(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cov_alpha: float,
                clip_cov_ub: float) -> torch.Tensor:
    """Per-token entropy weights w_t (B, T) of ``compute_entropy_with_cov``, with the gradient through ``logps``.
    A row without valid tokens gets 0 (the authors' softmax over all -inf gives NaN there)."""
    cov = (advantages - masked_mean(advantages, mask)) * (logps - masked_mean(logps.detach(), mask))
    cov = cov.masked_fill(mask <= 0, float("-inf"))
    w = torch.softmax(cov, dim=-1) * cov_alpha
    w = torch.clamp(w, 0.0, clip_cov_ub)
    return torch.where(mask.sum(-1, keepdim=True) > 0, w, torch.zeros_like(w))


def tea_loss(ctx: TokenContext, *, entropy_mode: str, cov_alpha: float, clip_cov_ub: float, clip_ratio_low: float,
             clip_ratio_high: float, clip_ratio_c: float):
    """TEA-RL per-token loss: dual-clip PPO minus the token-wise entropy-adaptive bonus w_t * H_t."""
    if entropy_mode not in ENTROPY_MODES:
        raise ValueError(f"light_if: unknown entropy_mode {entropy_mode!r}; valid: {', '.join(ENTROPY_MODES)}")
    if not cov_alpha >= 0 or not clip_cov_ub >= 0:
        raise ValueError(f"light_if: cov_alpha and clip_cov_ub must be >= 0, got {cov_alpha!r}, {clip_cov_ub!r}")
    pg, clipped = dual_clip_ppo(ctx, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    n = max(ctx.n_valid, 1)
    metrics = {"clip_ratio/region_mean": int(clipped.sum()) / n,
               "ppo_kl": float(masked_mean(ctx.old_logps - ctx.logps.detach(), ctx.mask))}
    if entropy_mode == "none":
        metrics.update({"method/frac_tokens_touched": 0.0, "light_if/tea_weight_mean": 0.0,
                        "light_if/entropy_bonus": 0.0, "light_if/clamped_frac": 0.0})
        return pg, metrics
    if ctx.entropies is None:
        raise ValueError("light_if: TEA needs the per-token entropies (TokenContext.entropies)")
    w = tea_weights(ctx.logps, ctx.advantages, ctx.mask, cov_alpha, clip_cov_ub)
    with torch.no_grad():
        valid = ctx.mask > 0
        uniform = cov_alpha / ctx.mask.sum(-1, keepdim=True).clamp(min=1.0)   # the weight of an even split
        metrics.update({
            # tokens the adaptive weighting up-weights: more than an even share of their sequence's mass
            "method/frac_tokens_touched": int(((w > uniform) & valid).sum()) / n,
            "light_if/tea_weight_mean": float(masked_mean(w, ctx.mask)),     # authors' actor/entropy_loss_cov
            "light_if/entropy_bonus": float(masked_mean(w * ctx.entropies, ctx.mask)),
            "light_if/clamped_frac": int(((w >= clip_cov_ub) & valid).sum()) / n,
        })
    return pg - w * ctx.entropies, metrics


def dense_constraint_reward(rctx: RewardContext, **_) -> list[float]:
    """Fraction of the prompt's constraints a completion satisfies (the instruct task's spec in ``answer``)."""
    if rctx.answers is None:
        raise ValueError("light_if: the dense constraint reward needs the constraint specs in the dataset's answer "
                         "column (smoke task 'instruct'); this task has none")
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in rctx.completions]
    try:
        return [dense_score(t, a) for t, a in zip(texts, rctx.answers)]
    except ValueError as e:
        raise ValueError(f"light_if: the dense reward reads instruct-task constraint specs; {e}") from None


_REWARD_SOURCE = (f"{CODE}/verl/utils/reward_score/__init__.py:43-46 score = point_score + acc_score; "
                  "IF.py validate_article_step_score (partial credit) / validate_article (all constraints)")

for _name, _mode, _doc in (("light_if", "token-level-cov", "TEA-RL: dense constraint reward + token-wise "
                            "entropy-adaptive entropy bonus (Light-IF)"),
                           ("light_if_no_tea", "none", "Light-IF without the TEA term (the released actor's "
                            "behaviour): dense constraint reward, dual-clip PPO")):
    register_loss(_name, paper="light_if", description=_doc, hparams=_hparams(_mode),
                  source=f"arXiv 2508.03178 (TEA-RL, abstract); {CODE}/verl/trainer/ppo/core_algos.py:890-909 "
                         "compute_entropy_with_cov, :722 compute_policy_loss; verl/workers/actor/dp_actor.py:408-455")(
        tea_loss)
    register_reward(_name, paper="light_if", source=_REWARD_SOURCE, task_reward_weight=1.0)(dense_constraint_reward)
