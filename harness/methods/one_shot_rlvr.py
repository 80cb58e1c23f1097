"""1-shot RLVR: "Reinforcement Learning for Reasoning in Large Language Models with One Training Example"
(arXiv 2504.20571).

Ported from ypwang61/One-Shot-RLVR @ 21ed529e (verl). The algorithm is plain GRPO; the contribution is the data:

1. A full-set GRPO run records every training example's accuracy each time it is sampled (per epoch), a rule scores
   that history (``std`` = historical variance, the paper's choice; ``lim``; ``random``) and the top example is
   pi_1 (``data/data_selection.py``; port: :mod:`harness.data.selection`). In the harness that is a DAG of jobs: the
   card's ``tiers.<tier>.upstream`` block names the ranking run (a GRPO job that records ``train_history.json``) and
   the rule; ``harness rank`` writes ``ranking.json``; the one-shot job gets its path as the ``ranking``
   hyperparameter (see :mod:`harness.plan`, "Upstream inputs").
2. Training on pi_1 alone: the authors duplicate it 128 times into a parquet file (``pi1_r128``) so every batch of 128
   prompts is that example (``scripts/train/training_1.5b_pi1_r128.sh``). Here the data hook does it: at stage
   "prompts" every group of the generation batch is replaced by the example at ``rank`` of the ranking (rank 0 =
   pi_1, 12 = pi_13), so the batch is that example duplicated whatever the training set is.
3. ``one_shot_random``: the same pipeline with the ranking of the ``random`` rule (a seeded random example, the
   paper's random-example control). ``one_shot_entropy``: the entropy-loss-only ablation (paper Sec. 4: "entropy
   loss alone" on pi_1, no outcome reward): the method's reward is 0 for every response and replaces the task's
   (which is only logged), so every advantage is 0 and the policy gradient vanishes; only TRL's entropy bonus
   (``entropy_coef``, the tier's setting; verl's ``entropy_coeff`` 0.001 in the recipe) trains.

Logged: ``one_shot/example_index`` (the chosen example's row index in the ranking run's training set),
``one_shot/example_score`` (its selection score), ``one_shot/train_acc`` (the share of this batch's responses to it
that the task scores correct: training accuracy on the single example, whose saturation the paper's
post-saturation-generalisation claim is about).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from harness.methods.context import BatchContext, BatchDecision, RewardContext
from harness.methods.registry import HParam, register_data, register_reward

CODE = "ypwang61/One-Shot-RLVR@21ed529e"
PAPER = "one_shot_rlvr"

HPARAMS = {
    "ranking": HParam(
        None, "path", "the ranking file (harness rank); filled at run time from the card's upstream input "
        "'ranking' (job.json keeps null: the job key hashes the producer, not the path)",
        f"{CODE} data/data_selection.py (acc_score, sample_parquet_by_indices)", type=str | None),
    "rank": HParam(
        0, "rank (0-based)", "which example of the ranking to train on: 0 = pi_1 (top), 12 = pi_13",
        f"{CODE} data/data_selection.sh (# get pi_{{i}} -> top_index = i-1; --top_index 0)"),
}


@lru_cache(maxsize=8)
def _ranking(path: str) -> list[dict]:
    """The ranked entries of a ranking file (``harness rank``; format: :mod:`harness.data.selection`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"one_shot: cannot read the ranking file {path}: {e}") from None
    if data.get("kind") != "ranking" or not data.get("ranking"):
        raise ValueError(f"one_shot: {path} is not a ranking file with entries (kind {data.get('kind')!r})")
    return data["ranking"]


def _example(hp) -> dict:
    """The ranking entry at ``rank``: ``{"index", "score", "visits", "row"}``."""
    if not hp.get("ranking"):
        raise ValueError("one_shot: no ranking file: the card must give the method an upstream input 'ranking' "
                         "(tiers.<tier>.upstream.<method>.ranking, see harness.plan), or pass ranking=<path>")
    entries = _ranking(hp["ranking"])
    if not 0 <= hp["rank"] < len(entries):
        raise ValueError(f"one_shot: rank {hp['rank']!r} is outside the ranking (valid: 0..{len(entries) - 1})")
    return entries[hp["rank"]]


def one_shot_data(bctx: BatchContext, **hp):
    """1-shot RLVR: every group of the generation batch trains on the selected example (duplicated to fill it)."""
    entry = _example(hp)
    if bctx.stage == "prompts":
        return BatchDecision(rows=[dict(entry["row"]) for _ in bctx.rows],
                             metrics={"one_shot/example_index": float(entry["index"]),
                                      "one_shot/example_score": float(entry["score"])})
    # stage "scored": the rewards are the task's 0/1 correctness, so their mean is the training accuracy
    return BatchDecision(metrics={"one_shot/train_acc": float(torch.nanmean(bctx.rewards.detach().float()))})


def one_shot_entropy_data(bctx: BatchContext, **hp):
    """The entropy-only ablation's data hook: the same example; no training accuracy from the (zero) rewards (TRL
    logs the task's reward as ``rewards/<task reward>/mean``)."""
    return one_shot_data(bctx, **hp) if bctx.stage == "prompts" else None


for _name, _desc in (("one_shot", "1-shot RLVR: train on the top example of the historical-variance ranking"),
                     ("one_shot_random", "1-shot RLVR control: the same pipeline, a seeded random example")):
    register_data(_name, paper=PAPER, hparams=HPARAMS, description=_desc,
                  source=f"arXiv 2504.20571 Sec. 2-3; {CODE} data/data_selection.py, "
                         "scripts/train/training_1.5b_pi1_r128.sh")(one_shot_data)

register_data("one_shot_entropy", paper=PAPER, hparams=HPARAMS,
              description="1-shot RLVR ablation: entropy loss only (no outcome reward) on the selected example",
              source=f"arXiv 2504.20571 Sec. 4 (entropy loss alone); {CODE} verl entropy_coeff")(one_shot_entropy_data)


@register_reward("one_shot_entropy", paper=PAPER, task_reward_weight=0.0, trl_overrides={"entropy_coef": 0.001},
                 source="arXiv 2504.20571 Sec. 4 (entropy-loss-only training: no outcome reward)")
def zero_reward(rctx: RewardContext, **hp):
    """No outcome reward: 0 for every response (replaces the task's reward, which is still logged)."""
    return [0.0] * len(rctx)
