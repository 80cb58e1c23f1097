"""Asymptotics of Language Model Alignment (Yang, Salamatian, Sun, Suresh, Beirami; arXiv 2404.01730): the beta sweep
of KL-regularised RL whose reward-vs-KL points the card compares with best-of-N.

Not a new loss: GRPO (TRL's ``GRPOTrainer``, the harness's subclass) with TRL's KL penalty ``beta`` (the k3 estimator
``exp(ref - logp) - (ref - logp) - 1`` per token against the frozen base model, TRL 1.16 ``_compute_loss``). One card
lists each method once, so each point of the sweep is its own method name; the card states every ``beta``
explicitly. ``beta = 0`` is the shared ``grpo`` baseline job (trained once for every card). The KL-to-base and reward
of every final checkpoint are measured by :mod:`harness.analyze.reward_kl`, the best-of-N and KL-optimal (tilted)
curves come from the base model's samples there, and the memoryless toy of the paper is
:mod:`harness.analyze.bon_toy`.
"""
from __future__ import annotations

from harness.methods.registry import HParam, register_config

PAPER = "alignment_asymptotics"
SOURCE = ("arXiv 2404.01730 (KL-constrained RL vs best-of-N); TRL 1.16 GRPOConfig.beta (k3 KL to the reference "
          "model); sweep values: harness choices")
#: method name -> default beta of that sweep point (the card restates them)
SWEEP = {"grpo_kl1": 0.05, "grpo_kl2": 0.2, "grpo_kl3": 1.0}

for _name, _beta in SWEEP.items():
    register_config(
        _name, paper=PAPER, source=SOURCE,
        hparams={"beta": HParam(_beta, "loss units per nat (per token)", "TRL's KL coefficient: loss += beta * mean "
                                "k3 KL(pi || pi_base) per token", "harness choice (beta sweep of the card's "
                                "smoke-reasoning tier)", trl=True)},
        description=f"GRPO with TRL's KL penalty to the base model (sweep point, default beta {_beta})",
    )
