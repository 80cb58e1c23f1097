"""COPO: "Consistency-Aware Policy Optimization" (arXiv 2508.04138).

Ported from the authors' code, hijih/copo-code @ dfe989daa9531fa4c40a2d2aa3e66875bd0d2ea1,
``dapo-code/verl/trainer/ppo/core_algos.py``: ``compute_score_global``, ``compute_grpo_outcome_advantage_with_global``
and ``compute_policy_loss_with_global`` (``global_flg='soft-with-forced'``).

- local advantage: the GRPO z-score within the group (unbiased std, eps 1e-6);
- global advantage: the prompt's success rate z-scored over the prompts of the batch (unbiased std, eps 1e-6);
  with ``reward_coef_flg`` it is multiplied by ``1 - lambda * H`` (off in every released script);
- H: entropy in BITS (log2, as the code; the card's "nats" is the secondary summary's) of the distribution of
  final answers in the group; here answers are compared as completion token sequences (the smoke task's answer
  is the whole completion; at the real tiers this is raw-string equivalence, which the card notes inflates H);
- w = sigmoid(k * (H - b)) * 1[local advantage != 0] ("soft-with-forced": groups whose responses all agree get
  w = 0, i.e. the global term only); the per-token loss is ``(1 - w) * PPO(A_global) + w * PPO(A_local)``.

Implemented as ONE advantage ``A = w * A_local + (1 - w) * A_global`` with the run's standard PPO loss. This is
exactly the authors' loss and gradient whenever neither term is clipped (always on-policy, e.g. the first update of
each generation batch); with ratio clipping the authors clip each term separately. The exact two-term form needs
the advantage hook to hand per-sample extras (A_global, w) to a loss hook, which the trainer cannot do yet (see
the card). Defaults k = 20, b = 0.5 follow the released scripts; the card's gamma = 20, rho = 1.5 nats is a
secondary summary and is not used.
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage

CODE = "hijih/copo-code@dfe989daa9531fa4c40a2d2aa3e66875bd0d2ea1 dapo-code/verl/trainer/ppo/core_algos.py"
EPS = 1e-6  # core_algos.py compute_grpo_outcome_advantage_with_global epsilon


def answer_entropy_bits(actx: AdvantageContext) -> torch.Tensor:
    """(P,) entropy (bits) of the empirical distribution of distinct answers (masked completion token sequences)
    within each group, as ``compute_score_global.entropy_from_list`` (Counter over answers, log2, eps 1e-8)."""
    ids = actx.completion_ids.tolist()
    G = actx.group_size
    out = []
    for p in range(len(ids) // G):
        counts: dict[tuple, int] = {}
        for i in range(p * G, (p + 1) * G):
            key = tuple(t for t, keep in zip(ids[i], actx.mask[i].tolist()) if keep)
            counts[key] = counts.get(key, 0) + 1
        probs = torch.tensor([c / G for c in counts.values()], dtype=torch.float32)
        out.append(-(probs * torch.log2(probs + 1e-8)).sum())
    return torch.stack(out).to(torch.float64)


@register_advantage(
    "copo", paper="copo", source=f"arXiv 2508.04138; {CODE} compute_grpo_outcome_advantage_with_global + "
                                 "compute_policy_loss_with_global (soft-with-forced)",
    hparams={
        "k": HParam(20.0, "1/bit", "sharpness of w = sigmoid(k (H - b))", "copo-code scripts actor.k=20"),
        "b": HParam(0.5, "bits", "answer-entropy threshold of the local/global mix", "copo-code scripts actor.b=0.5"),
        "global_flg": HParam("soft-with-forced", "soft-with-forced | only-soft | only-forced | only-global | "
                             "no-global", "how the local and global terms are mixed",
                             "core_algos.py compute_policy_loss_with_global global_flg branches"),
        "reward_coef_flg": HParam(False, "bool", "scale the prompt success rate by 1 - lambda H, lambda = "
                                  "(1 - 1/G) / log2 G", "core_algos.py compute_score_global; scripts set false"),
        "norm_adv_by_std_in_grpo": HParam(True, "bool", "z-score both advantages (False: mean-centred only)",
                                          "core_algos.py compute_grpo_outcome_advantage_with_global"),
    },
)
def copo(actx: AdvantageContext, *, k: float, b: float, global_flg: str, reward_coef_flg: bool,
         norm_adv_by_std_in_grpo: bool):
    """COPO: mix the in-group z-score with a batch-level z-score of the prompt's success rate, by answer entropy."""
    G = actx.group_size
    r = torch.nan_to_num(actx.rewards.to(torch.float64), nan=0.0)
    rg = actx.grouped(r)
    H = answer_entropy_bits(actx)                                    # (P,)
    score = rg.mean(1)
    if reward_coef_flg:
        lam = (1 - 1 / G) / math.log2(G)
        score = score * (1 - lam * H.float()).to(torch.float64)    # float32 coefficient, as the code's promotion
    if norm_adv_by_std_in_grpo:
        local = (rg - rg.mean(1, keepdim=True)) / (rg.std(1, keepdim=True) + EPS)
        glob = (score - score.mean()) / (score.std() + EPS)
    else:
        local = rg - rg.mean(1, keepdim=True)
        glob = score - score.mean()
    glob = glob.unsqueeze(1).expand_as(rg)
    w_soft = torch.sigmoid(k * (H - b)).unsqueeze(1).expand_as(rg)         # H: float32 values, as the code
    not_same = (local != 0).to(torch.float64)
    if global_flg == "soft-with-forced":
        w = w_soft * not_same
    elif global_flg == "only-soft":
        w = w_soft
    elif global_flg == "only-forced":
        w = not_same
    elif global_flg == "only-global":
        w = torch.zeros_like(rg)
    elif global_flg == "no-global":
        w = torch.ones_like(rg)
    else:
        raise ValueError(f"copo: unknown global_flg {global_flg!r}")
    adv = (w * local + (1 - w) * glob).reshape(-1)
    uniform = rg.std(1) == 0
    signal = (adv.view(-1, G) != 0).any(1)
    n_tok = actx.mask.sum(-1).to(torch.float64)
    metrics = {
        # tokens whose advantage differs from the local (GRPO) one
        "method/frac_tokens_touched": float((n_tok * ((adv - local.reshape(-1)).abs() > 1e-12)).sum()
                                            / n_tok.sum().clamp(min=1.0)),
        "copo/frac_prompts_with_signal": float(signal.double().mean()),
        "copo/frac_uniform_groups": float(uniform.double().mean()),
        "copo/w_local_mean": float(w[:, 0].mean()),
        "copo/answer_entropy_bits": float(H.mean()),
        "copo/global_adv_abs_mean": float(glob[:, 0].abs().mean()),
    }
    return adv.to(actx.rewards.dtype), metrics
