"""Differential Information (Won, Lee, Hwang, Seo; arXiv 2505.23761): DPO as learning the *differential information*
that turns a reference policy into the target, and the entropy of that information as what decides whether DPO
sharpens the policy (chosen log-likelihood up) or smooths it (log-likelihood displacement: chosen down).

The Differential Information Distribution (DID) from ``pi_ref`` to ``pi`` is the normalised likelihood ratio
(the shared card's measurement design; "Theorem 3.2" per a third-party summary of the paper [secondary], the PDF was
not read)::

    q(y) = (pi(y) / pi_ref(y)) / sum_y' pi(y') / pi_ref(y')

Over all sequences it cannot be computed; the card's protocol restricts it to a fixed finite candidate set ``S_x``
per prompt (the distinct responses among ``probe_samples`` samples of ``pi_ref``, drawn once before training), i.e.
the DID conditioned on ``y in S_x``: ``q_x = softmax_{y in S_x}(log pi(y|x) - log pi_ref(y|x))``, its entropy
``H_x = -sum q_x log q_x`` and the normalised ``h_x = H_x / log |S_x|`` in [0, 1] (1: the policy moved every candidate
alike, e.g. at step 0; 0: all of the change is on one candidate). Both depend on the candidate count (the card's
pitfall), which is fixed by the protocol and recorded. :func:`did_entropy` computes them.

Pair rules (one method each; the pairs are DPO's only input, the trainer is TRL's ``DPOTrainer`` in
:mod:`harness.train.dpo_pairs`, reached through :mod:`harness.train.dpo` because the methods are registered with
``trainer="dpo"``). Per training question, ``samples_per_question`` responses of the base model (this module's
rollout hook: plain sampling at the run's temperature); a question enters when at least one sample is correct and
one wrong, the rejected response is the first wrong sample, and only the chosen response differs between the rules:

- ``diff_info_gold``: chosen = the task's gold chain (every sum right, no ``check`` step: the same form for every
  question). The preferences carry one specific response per question: low-entropy differential information.
- ``diff_info_sampled``: chosen = the first correct sample of the base model (its own mix of forms, ``check`` steps
  or not). The preferences say "a correct chain over a wrong one", spread over the many correct forms: high-entropy
  differential information.

The paper's entropy claim predicts the gold rule sharpens (chosen log-likelihood rises) and the sampled rule smooths
(chosen log-likelihood falls), with the gold rule's DID entropy below the sampled rule's; the card's claims test it.
The rules, the candidate set and the normalisation are harness choices (the paper's own estimator was not read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch

from harness.methods.context import RolloutContext
from harness.methods.registry import HParam, register_rollout

PAPER = "diff_info"
SOURCE = ("arXiv 2505.23761: DID = normalised likelihood ratio (shared/papers/diff_info.md; 'Theorem 3.2' per a "
          "third-party summary [secondary]); entropy of the DID vs log-likelihood displacement (abstract); no code "
          "read: pair rules and the finite-candidate DID entropy are harness choices")
PREFIX = "diff_info"
RULES = {"diff_info_gold": "gold", "diff_info_sampled": "sampled"}

HPARAMS = {
    "questions": HParam(1024, "questions", "training questions whose base-model samples give the pairs (the first "
                        "rows of the training split)", "harness choice"),
    "samples_per_question": HParam(8, "samples", "base-model samples per training question (the chosen and "
                                   "rejected responses come from them)", "harness choice"),
    "beta": HParam(0.1, "DPO beta", "DPO inverse temperature (sigmoid loss)", "DPO default (Rafailov et al. 2023); "
                   "TRL DPOConfig.beta 0.1"),
    "learning_rate": HParam(5.0e-5, "learning rate", "DPO learning rate (cosine schedule after warm-up)",
                            "harness choice for the tiny model"),
    "pairs_per_step": HParam(16, "pairs per optimizer step", "DPO batch", "harness choice"),
    "warmup_ratio": HParam(0.1, "share of the steps", "linear warm-up, then cosine decay", "harness choice"),
    "probe_prompts": HParam(64, "prompts", "held-out prompts whose candidate sets give the DID entropy (the first "
                            "rows of the held-out split)",
                            "harness choice (the card's pitfall: fixed in the protocol)"),
    "probe_samples": HParam(16, "samples per prompt", "base-model samples per probe prompt; their distinct responses "
                            "are the candidate set S_x", "harness choice (fixed in the protocol)"),
    "probe_pairs": HParam(64, "pairs", "training pairs (the first, in question order) whose chosen/rejected "
                          "log-likelihood drift is tracked", "harness choice"),
    "probe_every": HParam(5, "optimizer steps", "DID entropy and drift are measured at step 0, every probe_every "
                          "steps and at the end", "harness choice"),
}


def check(hp: dict) -> None:
    """Values the types alone do not rule out."""
    for k in ("questions", "samples_per_question", "pairs_per_step", "probe_prompts", "probe_pairs", "probe_every"):
        if hp[k] < 1:
            raise ValueError(f"diff_info: {k} must be >= 1, got {hp[k]!r}")
    if hp["samples_per_question"] < 2 or hp["probe_samples"] < 2:
        raise ValueError("diff_info: samples_per_question and probe_samples must be >= 2 (a pair needs a correct and "
                         "a wrong sample; a DID entropy needs two candidates)")
    if not hp["beta"] > 0 or not hp["learning_rate"] > 0 or not 0 <= hp["warmup_ratio"] < 1:
        raise ValueError("diff_info: beta and learning_rate must be > 0 and warmup_ratio in [0, 1)")


def rule_of(method: str) -> str:
    """The pair rule of a diff_info method (``gold`` or ``sampled``)."""
    try:
        return RULES[method]
    except KeyError:
        raise ValueError(f"not a diff_info method: {method!r}; valid: {', '.join(RULES)}") from None


# --------------------------------------------------------------------------------------------- the DID -----
def did_entropy(log_ratios) -> tuple[float, float]:
    """``(H, h)`` of the DID over one candidate set: ``log_ratios[i] = log pi(y_i) - log pi_ref(y_i)`` of the
    distinct candidates, ``q = softmax(log_ratios)``, ``H = -sum q log q`` (nats) and ``h = H / log n`` (n >= 2
    candidates; equal log-ratios give ``h = 1``)."""
    w = torch.as_tensor(log_ratios, dtype=torch.float64).flatten()
    if w.numel() < 2:
        raise ValueError(f"a DID entropy needs at least 2 candidates, got {w.numel()}")
    if not torch.isfinite(w).all():
        raise ValueError("DID log-ratios must be finite")
    logq = torch.log_softmax(w, 0)
    h = float(-(logq.exp() * logq).sum())
    return h, h / math.log(w.numel())


def distinct(completions: list[list[int]]) -> list[list[int]]:
    """The distinct completions, in first-seen order (the candidate set of a prompt)."""
    seen, out = set(), []
    for c in completions:
        t = tuple(c)
        if t not in seen:
            seen.add(t)
            out.append(list(c))
    return out


# ----------------------------------------------------------------------------------------- the pairs -------
@dataclass
class Sample:
    """One base-model response to a training question: its token ids and whether the task scores it correct."""
    ids: list[int]
    correct: bool


def pick_pair(samples: list[Sample], rule: str,
              gold_ids: list[int] | None = None) -> tuple[list[int], list[int]] | None:
    """(chosen ids, rejected ids) of one question, or None when it has no correct or no wrong sample. Rejected: the
    first wrong sample (both rules). Chosen: ``gold``: ``gold_ids`` (the task's gold chain, required); ``sampled``:
    the first correct sample."""
    if rule not in ("gold", "sampled"):
        raise ValueError(f"diff_info: unknown pair rule {rule!r}; valid: gold, sampled")
    good = [s for s in samples if s.correct]
    bad = [s for s in samples if not s.correct]
    if not good or not bad:
        return None
    if rule == "gold":
        if not gold_ids:
            raise ValueError("diff_info: the gold rule needs the question's gold chain")
        return list(gold_ids), list(bad[0].ids)
    return list(good[0].ids), list(bad[0].ids)


# -------------------------------------------------------------------------------------- the sampler -------
def diff_info_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """The traces the pairs come from: one independent sample per entry at the run's sampling settings (as TRL's own
    generation: each group is ``group_size`` samples of its prompt); no logprobs."""
    ids = rctx.tokenize(prompts)
    return {"prompt_ids": ids, "completion_ids": rctx.generate(ids), "logprobs": None}


for _name, _rule in RULES.items():
    register_rollout(_name, kind="rollout_func", trainer="dpo", paper=PAPER, source=SOURCE, hparams=HPARAMS,
                     description=("DPO (TRL DPOTrainer; harness/train/dpo_pairs.py) on base-model pairs, chosen = "
                                  + ("the task's gold chain (low-entropy DID)" if _rule == "gold" else
                                     "a sampled correct response (high-entropy DID)")
                                  + ", rejected = a sampled wrong one; DID entropy and chosen drift tracked"))(
        diff_info_rollout)
