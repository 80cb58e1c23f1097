"""Forking tokens: "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
LLM Reasoning" (Wang et al., arXiv 2506.01939), Sec. 4: the policy-gradient loss is kept only on the top-rho
highest-entropy tokens of the batch (rho = 0.2).

TRL 1.16 implements this as ``GRPOConfig.top_entropy_quantile`` (``GRPOTrainer.get_high_entropy_mask``), so the
method is configuration only. Authors' code: Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR @ 6f5dda6f
``verl/trainer/ppo/core_algos.py`` ``get_global_entropy_top_mask`` (called per micro-batch from
``verl/workers/actor/dp_actor.py:461``), flag ``actor.entropy_top_ratio=0.2`` in
``recipe/rlvr_with_high_entropy_tokens_only/run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh``.

Differences between TRL and the authors' code (tests/test_method_forking_tokens.py checks each on fixed tensors):

- Selection. Authors: ``torch.topk`` of ``k = ceil(rho * n)`` valid tokens. TRL: tokens with
  ``H >= torch.quantile(H_valid, 1 - rho)`` (linear interpolation), i.e. ``1 + floor(rho * (n - 1))`` tokens for
  distinct entropies. The two agree whenever ``frac(rho * n) >= rho`` or ``rho * n`` is an integer, hence for every n
  at rho = 0.2 (the paper's value); otherwise TRL keeps one token fewer (e.g. rho = 0.3, n = 4: 1 vs 2). Ties at
  the threshold: TRL keeps all of them, topk an arbitrary subset.
- Normalisation (the card's pitfall). Authors: verl "token-mean" over the KEPT tokens
  (``agg_loss(mask * entropy_top_mask)``). TRL: the mask multiplies ``per_token_loss`` and the run's ``loss_type``
  normaliser still counts ALL valid tokens, so with bnpo the loss and gradient are ``n_kept / n_valid`` (~rho)
  times the authors'. We keep TRL's normalisation (no code of ours in the loss). Under Adam a constant factor
  nearly cancels (only Adam's eps and the gradient-norm clip see it); the factor varies a little between
  micro-batches (ceil), which the authors' normalisation does not have.
- Scope. Authors: per micro-batch per GPU. TRL: per micro-batch, gathered across processes. Identical on one
  process (all tiers but ``paper``).
- Entropy: both use the current policy's full-vocabulary entropy of the same forward pass (temperature-scaled).
- Baseline: the paper trains DAPO (clip-higher 0.28, dual clip c = 10, dynamic sampling, overlong shaping); TRL has
  no dual clip and no dynamic sampling, so the smoke and paper tiers compare against GRPO with the same clip range.

Diagnostics: a config method runs TRL's own loss, so the trainer logs ``method/frac_tokens_touched`` as 0.0 for it
(the trainer only fills it from advantage hooks); the fraction actually trained is ~rho by construction (see the
card).
"""
from __future__ import annotations

from harness.methods.registry import HParam, register_config

CODE = "Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR@6f5dda6 verl/trainer/ppo/core_algos.py get_global_entropy_top_mask"

register_config(
    "forking_tokens", paper="forking_tokens",
    source=f"arXiv 2506.01939 Sec. 4 (train on top-20% entropy tokens); {CODE}; "
           "TRL 1.16 GRPOConfig.top_entropy_quantile / GRPOTrainer.get_high_entropy_mask",
    description="policy gradient only on the top-rho highest-entropy tokens (TRL top_entropy_quantile)",
    hparams={
        "top_entropy_quantile": HParam(
            0.2, "fraction of valid tokens kept (rho)",
            "rho: share of the micro-batch's valid tokens, by current-policy entropy, that keep their policy-gradient "
            "loss (TRL field name; the authors' entropy_top_ratio); the loss normaliser still counts all valid tokens",
            "arXiv 2506.01939 abstract/Sec. 4 rho=20%; run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh:142 "
            "entropy_top_ratio=0.2"),
    },
)
