"""COPO: "Consistency-Aware Policy Optimization" (arXiv 2508.04138).

Ported from the authors' code, hijih/copo-code, root ``verl/trainer/ppo/core_algos.py`` (NOT ``dapo-code/...``,
whose core_algos.py has no COPO function):

- @ c15c75f5 (the release: README "global_flg=soft-with-zero  # soft-with-zero represents our COPO method",
  ``soft_blending_k=5  # gamma``, ``soft_blending_b=1  # rho``; ``verl/run_copo.sh`` passes exactly these):
  ``compute_score_global``, ``compute_grpo_outcome_advantage_with_global``, ``compute_policy_loss_with_global``
  with the modes ``soft-with-zero`` | ``only-zero`` | ``only-soft`` | ``only-global`` | ``no-global``;
- @ f66883fb (earlier; removed in the release): the extra modes ``soft-with-forced`` and ``only-forced``.

Per prompt q (group of G responses) and response o:

- A_local(o): GRPO z-score within the group (unbiased std, eps 1e-6); A_global(q): the prompt's success rate
  z-scored over the prompts of the batch (unbiased std, eps 1e-6); with ``reward_coef_flg`` the success rate is
  multiplied by 1 - lambda H (off in every released script);
- H(q): entropy in BITS (log2, as the code) of the distribution of the group's FINAL ANSWERS. The authors count
  the answers their reward function extracts (``multi-reward.py``: last "Answer:"/box, whitespace removed,
  lower-cased; a response with neither falls back to its whole text). Here: ``answer_mode="boxed"`` (real
  tasks) uses the project's verifier, ``harness.verify.extract_answer``, on the completion text, whitespace
  removed and lower-cased; a completion with no extractable answer is keyed by its whole text, as the authors'
  fallback. ``answer_mode="plain"`` (the smoke task, whose completion IS the answer): the stripped completion text.
  Texts come from ``actx.completions`` (list[str], group order) when the trainer provides them; without texts,
  ``plain`` compares the masked completion token sequences (same classes on the smoke task) and ``boxed`` raises.
- mixing weight w (weight of the LOCAL term), per response: ``soft-with-zero`` (COPO, default):
  w = sigmoid(k (H - b)) * 1[reward != 0], so every wrong (reward 0) response gets the pure global advantage;
  ``only-zero``: w = 1[reward != 0]; ``only-soft``: w = sigmoid(k (H - b)); ``only-global``: 0; ``no-global``: 1;
  ``soft-with-forced``: sigmoid(k (H - b)) * 1[A_local != 0] (only all-agreeing groups get the pure global term);
  ``only-forced``: 1[A_local != 0]. The authors' 1[reward != 0] reads ``local_reward``, which their advantage
  function fills with the raw reward only when ``norm_adv_by_std_in_grpo`` is true (zeros otherwise: then every
  response gets the pure global term); mirrored here.
- per-token loss ``(1 - w) * PPO(A_global) + w * PPO(A_local)``.

Implemented as ONE advantage ``A = w * A_local + (1 - w) * A_global`` with the run's standard PPO loss. This is
exactly the authors' loss and gradient whenever neither term is clipped (always on-policy, e.g. the first update of
each generation batch; golden-tested); with ratio clipping the authors clip each term separately (and dual-clip
each at c = 3). The exact two-term form needs the advantage hook to hand per-sample extras (A_global, w) to a loss
hook, which the trainer cannot do yet (see the card).
"""
from __future__ import annotations

import math
import re

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, register_advantage

REPO = "hijih/copo-code"
RELEASE = "c15c75f5cf140476d6deee8f0ca666d2e49c63d4"     # README "our COPO method", verl/run_copo.sh
EARLIER = "f66883fb89271d4664bfdd9ca98acf6d28d3887b"     # last stored version with soft-with-forced / only-forced
FILE = "verl/trainer/ppo/core_algos.py"
CODE = f"{REPO}@{RELEASE[:8]} {FILE}"
EPS = 1e-6  # compute_grpo_outcome_advantage_with_global epsilon

#: global_flg values, named as the authors name them, and the commit where each is defined
MODES = {"soft-with-zero": RELEASE, "only-zero": RELEASE, "only-soft": RELEASE, "only-global": RELEASE,
         "no-global": RELEASE, "soft-with-forced": EARLIER, "only-forced": EARLIER}
ANSWER_MODES = ("boxed", "plain")


def _answer_key(text: str, answer_mode: str) -> str:
    if answer_mode == "plain":
        return text.strip()
    from harness.verify import extract_answer

    ans = extract_answer(text)
    if ans is None:  # authors' fallback (extract_solution of the whole text): compared by the whole text
        return "\x00" + re.sub(r"\s+", "", text).lower()
    return re.sub(r"\s+", "", ans).lower()


def answer_keys(actx: AdvantageContext, answer_mode: str = "plain") -> list:
    """One hashable answer per completion (group order): see the module docstring."""
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"copo: unknown answer_mode {answer_mode!r}; valid: {', '.join(ANSWER_MODES)}")
    texts = getattr(actx, "completions", None)
    if texts is not None:
        return [_answer_key(t, answer_mode) for t in texts]
    if answer_mode == "boxed":
        raise ValueError("copo answer_mode='boxed' compares extracted final answers and needs the completion texts "
                         "(AdvantageContext.completions); the trainer did not provide them")
    ids = actx.completion_ids.tolist()
    return [tuple(t for t, keep in zip(row, m.tolist()) if keep) for row, m in zip(ids, actx.mask)]


def entropy_bits(keys: list) -> torch.Tensor:
    """``compute_score_global.entropy_from_list``: Counter over answers, float32 probabilities, log2, eps 1e-8."""
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    probs = torch.tensor([c / len(keys) for c in counts.values()], dtype=torch.float32)
    return -(probs * torch.log2(probs + 1e-8)).sum()


def answer_entropy_bits(actx: AdvantageContext, answer_mode: str = "plain") -> torch.Tensor:
    """(P,) entropy (bits) of the distribution of final answers within each group (float32 values, as the code)."""
    keys = answer_keys(actx, answer_mode)
    G = actx.group_size
    return torch.stack([entropy_bits(keys[p * G:(p + 1) * G]) for p in range(len(keys) // G)]).to(torch.float64)


def local_weight(global_flg: str, H: torch.Tensor, rg: torch.Tensor, local: torch.Tensor, k: float, b: float,
                 norm_adv_by_std_in_grpo: bool) -> torch.Tensor:
    """(P, G) weight w of the local term for each response (``compute_policy_loss_with_global`` branches)."""
    w_soft = torch.sigmoid(k * (H - b)).unsqueeze(1).expand_as(rg)
    # local_reward: the raw reward when norm_adv_by_std_in_grpo, else zeros (compute_grpo_outcome_advantage_with_global)
    not_zero = (rg != 0).to(rg.dtype) if norm_adv_by_std_in_grpo else torch.zeros_like(rg)
    not_same = (local != 0).to(rg.dtype)
    if global_flg == "soft-with-zero":
        return w_soft * not_zero
    if global_flg == "only-zero":
        return not_zero
    if global_flg == "only-soft":
        return w_soft
    if global_flg == "only-global":
        return torch.zeros_like(rg)
    if global_flg == "no-global":
        return torch.ones_like(rg)
    if global_flg == "soft-with-forced":
        return w_soft * not_same
    if global_flg == "only-forced":
        return not_same
    raise ValueError(f"copo: unknown global_flg {global_flg!r}; valid: {', '.join(MODES)}")


@register_advantage(
    "copo", paper="copo", version=2,  # 2: soft-with-zero default, answers compared as extracted final answers (issue 10)
    source=f"arXiv 2508.04138; {CODE} compute_score_global + compute_grpo_outcome_advantage_with_global + "
           "compute_policy_loss_with_global (global_flg soft-with-zero = 'our COPO method', README)",
    hparams={
        "k": HParam(5.0, "1/bit", "gamma: sharpness of the soft blend sigmoid(k (H - b))",
                    f"{REPO}@{RELEASE[:8]} README + verl/run_copo.sh soft_blending_k=5"),
        "b": HParam(1.0, "bits", "rho: answer-entropy threshold of the soft blend",
                    f"{REPO}@{RELEASE[:8]} README + verl/run_copo.sh soft_blending_b=1"),
        "global_flg": HParam("soft-with-zero", " | ".join(MODES), "how the local and global terms are mixed "
                             "(authors' names; soft-with-forced/only-forced only exist before the release)",
                             f"{FILE} compute_policy_loss_with_global branches (@{RELEASE[:8]}; @{EARLIER[:8]})"),
        "reward_coef_flg": HParam(False, "bool", "scale the prompt success rate by 1 - lambda H, lambda = "
                                  "(1 - 1/G) / log2 G", "compute_score_global; run_copo.sh reward_coef_flg=false"),
        "norm_adv_by_std_in_grpo": HParam(True, "bool", "z-score both advantages (False: mean-centred only, and the "
                                          "authors' reward != 0 indicator is then 0 for every response)",
                                          "compute_grpo_outcome_advantage_with_global"),
        "answer_mode": HParam("boxed", " | ".join(ANSWER_MODES), "final answer compared for the answer entropy: "
                              "boxed = harness.verify.extract_answer on the completion text (real tasks); plain = "
                              "the stripped completion (smoke task: the completion is the answer)",
                              "multi-reward.py accuracy_reward extract_answer (authors' answers)"),
    },
)
def copo(actx: AdvantageContext, *, k: float, b: float, global_flg: str, reward_coef_flg: bool,
         norm_adv_by_std_in_grpo: bool, answer_mode: str):
    """COPO: mix the in-group z-score with a batch-level z-score of the prompt's success rate, by answer entropy."""
    G = actx.group_size
    r = torch.nan_to_num(actx.rewards.to(torch.float64), nan=0.0)
    rg = actx.grouped(r)
    H = answer_entropy_bits(actx, answer_mode)                      # (P,)
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
    w = local_weight(global_flg, H, rg, local, k, b, norm_adv_by_std_in_grpo)
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
        "copo/w_local_mean": float(w.mean()),
        "copo/answer_entropy_bits": float(H.mean()),
        "copo/global_adv_abs_mean": float(glob[:, 0].abs().mean()),
    }
    return adv.to(actx.rewards.dtype), metrics
