"""Implicit PRM: "Free Process Rewards without Process Labels" (arXiv 2412.01981), used in GRPO the way PRIME does.

An outcome reward model parameterised as ``r_theta(y) = beta * log(pi_theta(y) / pi_ref(y))`` and trained on
response-level labels l in {0, 1} with the cross-entropy loss ``-[l log sigma(r_theta) + (1 - l) log(1 - sigma(
r_theta))]`` (PRIME-RL/ImplicitPRM @ c0441755 ``train/openrlhf/trainer/ce_trainer.py`` ``CETrainer.loss_fn``) gives
a free token-level process reward ``r_t = beta * log(pi_theta(y_t | y_<t) / pi_ref(y_t | y_<t))``, whose sum over
the response is ``r_theta(y)``. The PRM is a copy of the base model trained offline by :mod:`harness.train.prm`
(``pi_ref`` = the base model); here it is frozen and scores the policy's completions (models loaded lazily, once,
on CPU, from local directories only).

How the dense reward enters GRPO, ``mode``:

- ``prime`` (default), PRIME-RL/PRIME @ 18ad596f: the process scores are the token log-ratios ``q_t = log pi_theta -
  log pi_ref`` (``dp_prime.py`` ``compute_implicit_reward``, granularity token: beta enters only the PRM's CE loss),
  divided by the batch's largest |reverse cumulative sum| (``prime_norm=batch_norm``, ``dp_prime.py`` update_policy);
  the verifier's outcome sits on the last token. ``core_algos.py`` ``compute_rloo_returns``: a leave-one-out
  baseline per source and group (a response's process value is the mean of its token scores), the discounted
  return per token (gamma 1) of each source, the two returns added, and the sum whitened over the batch's valid
  tokens (``verl_F.masked_whiten``): token-level advantages (N, T) replacing GRPO's. The reward hook then returns
  0 (the outcome reward stays the task's), the advantage hook does the rest.
- ``sum``: one scalar per completion, ``process_coef * r_theta(y)`` added to the task's reward; TRL's group
  normalisation as in GRPO (the summed dense reward; no per-token credit).

Best-of-N with the PRM (paper sec. 4, ``eval/bon_eval.py``): :func:`best_of_n` ranks a group by ``r_theta(y)``; the
advantage hook logs it on every training batch (``implicit_prm/bon_outcome`` vs ``implicit_prm/mean_outcome``).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from harness.methods.context import AdvantageContext, RewardContext
from harness.methods.registry import HParam, register_advantage, register_reward

PRM_REPO, PRM_COMMIT = "PRIME-RL/ImplicitPRM", "c04417559fdbd59738187c613c6c31821e964431"
PRIME_REPO, PRIME_COMMIT = "PRIME-RL/PRIME", "18ad596f08d487bb546d80d738d99ec697bd2e75"
CE_FILE = "train/openrlhf/trainer/ce_trainer.py"
CE_SCRIPT = "train/tasks/run_ce.sh"
PRIME_ALGOS = "training/verl/trainer/ppo/core_algos.py"
PRIME_PRM = "training/verl/workers/actor/dp_prime.py"
PRIME_SCRIPT = "training/examples/run_prime_main.sh"
AT_PRM, AT_PRIME = f"{PRM_REPO}@{PRM_COMMIT[:8]}", f"{PRIME_REPO}@{PRIME_COMMIT[:8]}"
META_FILE = "implicit_prm.json"  # written by harness.train.prm next to the PRM's weights

MODES = ("prime", "sum")
NORMS = ("batch_norm", "none")


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"implicit_prm: unknown {name} {value!r}; valid: {', '.join(valid)}")


# ---------------------------------------------------------------------------------------------- the reward model
def process_rewards(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t = beta * (log pi_theta(y_t|y_<t) - log pi_ref(y_t|y_<t)), per token (paper eq. for r_t)."""
    return beta * (logps - ref_logps)


def outcome_reward(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_theta(y) = beta * sum_t mask_t (log pi_theta - log pi_ref): (B, T) -> (B,)."""
    return beta * ((logps - ref_logps) * mask).sum(-1)


def ce_loss(logps_sum: torch.Tensor, ref_logps_sum: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """The implicit PRM's CE loss (``CETrainer.loss_fn``): BCE(sigmoid(beta * (log pi - log pi_ref)), label), mean
    over the batch, on summed response log-probs (torch's BCE clamps the logs at -100, as ``nn.BCELoss``)."""
    p = (beta * (logps_sum - ref_logps_sum)).sigmoid()
    return torch.nn.functional.binary_cross_entropy(p, labels.to(p.dtype))


def pairwise_accuracy(scores: torch.Tensor, acc: torch.Tensor, group_size: int) -> float:
    """PRIME's ``compute_dpo_accuracy``: per group, the share of pairs with different labels that the scores order
    like the labels (weighted by |label difference|; 0.5 for a group without such pairs), averaged over groups."""
    out = []
    iu = torch.triu_indices(group_size, group_size, offset=1)
    for s in range(0, scores.numel(), group_size):
        sd = (scores[s:s + group_size, None] - scores[None, s:s + group_size])[iu[0], iu[1]]
        ad = (acc[s:s + group_size, None] - acc[None, s:s + group_size])[iu[0], iu[1]]
        w = ad.abs()
        out.append(0.5 if w.sum() == 0 else float((((sd > 0) == (ad > 0)).to(w.dtype) * w).sum() / w.sum()))
    return sum(out) / len(out)


def best_of_n(scores, outcomes, group_size: int) -> dict:
    """Rank each group of ``group_size`` samples by PRM score: the outcome of the top one (first of ties, as the
    authors' stable sort) vs the group's mean outcome. Returns means over groups and the per-group values."""
    scores, outcomes = [float(x) for x in scores], [float(x) for x in outcomes]
    if len(scores) != len(outcomes) or len(scores) % group_size or not scores:
        raise ValueError(f"best_of_n: {len(scores)} scores and {len(outcomes)} outcomes are not whole groups of "
                         f"{group_size}")
    top, mean = [], []
    for s in range(0, len(scores), group_size):
        g = scores[s:s + group_size]
        top.append(outcomes[s + g.index(max(g))])
        mean.append(sum(outcomes[s:s + group_size]) / group_size)
    return {"bon": sum(top) / len(top), "mean": sum(mean) / len(mean), "per_group_bon": top, "per_group_mean": mean}


# ---------------------------------------------------------------------------------------------- PRIME's advantages
def prime_scores(q: torch.Tensor, mask: torch.Tensor, prime_norm: str, beta: float) -> torch.Tensor:
    """Token-level process scores of the batch (N, T). ``batch_norm``: PRIME's ``q_t`` (no beta: scale-free after
    the norm) over max |reverse cumsum| + 1e-6; ``none``: the paper's ``r_t = beta q_t`` (the code would use q_t)."""
    _choice("prime_norm", prime_norm, NORMS)
    s = q * mask
    if prime_norm == "none":
        return beta * s
    rev = torch.cumsum(s.flip(dims=[1]), dim=-1).flip(dims=[1])
    return s / (rev.abs().max() + 1e-6)


def _masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl ``masked_whiten``: (x - mean) / sqrt(unbiased var + 1e-8) over the valid entries."""
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = (((x - mean) ** 2) * mask).sum() / n * n / (n - 1)
    return (x - mean) * torch.rsqrt(var + 1e-8)


def _loo_return(r: torch.Tensor, where: torch.Tensor, group_size: int, gamma: float) -> torch.Tensor:
    """One source of ``compute_rloo_returns``: r at ``where`` (else 0), each group's leave-one-out baseline
    (r * n/(n-1) - sum of the group's per-response means / (n-1)), then the discounted return per token."""
    n = group_size
    r = torch.where(where, r, torch.zeros_like(r))
    per = (r * where).sum(-1) / where.sum(-1)                      # a response's mean over its marked tokens
    base = per.view(-1, n).sum(-1).repeat_interleave(n) / (n - 1)
    r = torch.where(where, r * (n / (n - 1)) - base[:, None], r)
    ret = torch.zeros_like(r)
    ret[:, -1] = r[:, -1]
    for t in range(r.shape[1] - 2, -1, -1):
        ret[:, t] = r[:, t] + gamma * ret[:, t + 1]
    return ret


def prime_advantages(scores: torch.Tensor, outcome: torch.Tensor, mask: torch.Tensor, group_size: int,
                     gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """PRIME's RLOO with two reward sources (process scores on every valid token, the outcome on the last valid
    token): (whitened advantages, returns), both (N, T)."""
    if group_size < 2 or scores.shape[0] % group_size:
        raise ValueError(f"implicit_prm: PRIME's leave-one-out needs whole groups of >= 2, got {scores.shape[0]} rows "
                         f"in groups of {group_size}")
    valid = mask.bool()
    rows, end = torch.arange(mask.shape[0]), (mask.sum(-1).long() - 1).clamp(min=0)
    last = torch.zeros_like(valid)
    last[rows, end] = True
    out = torch.zeros_like(scores)
    out[rows, end] = outcome.to(scores.dtype)
    ret = _loo_return(scores, valid, group_size, gamma) + _loo_return(out, last, group_size, gamma)
    return _masked_whiten(ret, mask.to(ret.dtype)), ret


# ---------------------------------------------------------------------------------------------- models (lazy, CPU)
@functools.lru_cache(maxsize=2)
def load_models(prm_dir: str, ref_dir: str | None):
    """(PRM, reference, tokenizer, training beta or None) from local directories, eval mode, CPU, cached. ``ref_dir``
    None: the reference recorded in ``<prm_dir>/implicit_prm.json`` by :mod:`harness.train.prm` (the base model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not prm_dir:
        raise ValueError("implicit_prm: prm_dir is not set: the PRM model directory written by `python -m "
                         "harness.train.prm` (rules/prm.smk: {WORK}/artifacts/prm/<key>/model)")
    meta = Path(prm_dir) / META_FILE
    if ref_dir is None:
        if not meta.exists():
            raise ValueError(f"implicit_prm: {meta} is missing: set ref_dir, or train the PRM with harness.train.prm")
        ref_dir = json.loads(meta.read_text())["ref_model_dir"]
    trained_beta = json.loads(meta.read_text())["settings"]["beta"] if meta.exists() else None
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, local_files_only=True).to("cpu").eval()  # noqa: E731
    return load(prm_dir), load(ref_dir), AutoTokenizer.from_pretrained(prm_dir, local_files_only=True), trained_beta


def resolve_beta(beta: float | None, trained_beta: float | None) -> float:
    """The hook's beta: the hparam, else the PRM's training beta (an error when neither is known)."""
    if beta is None and trained_beta is None:
        raise ValueError("implicit_prm: beta is null and the PRM directory records no training beta "
                         f"({META_FILE}): set beta")
    return float(beta if beta is not None else trained_beta)


def encode_prompt(tok, prompt) -> list[int]:
    """Prompt token ids as TRL builds them (text without special tokens; messages via the chat template)."""
    if isinstance(prompt, list):
        return list(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
    return tok(prompt, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def sequence_logps(model, prompts_ids, completions_ids, pad_id: int = 0, batch_size: int = 64) -> list[torch.Tensor]:
    """Per-token log pi(y_t | x, y_<t) of each completion (1-D float tensors, its length), no temperature."""
    out = []
    for s in range(0, len(prompts_ids), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompts_ids[s:s + batch_size], completions_ids[s:s + batch_size])]
        width = max(map(len, rows))
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
        att = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
        tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        for i, (p, c) in enumerate(zip(prompts_ids[s:s + batch_size], completions_ids[s:s + batch_size])):
            out.append(tok_lp[i, len(p) - 1:len(p) - 1 + len(c)].clone())
    return out


# ---------------------------------------------------------------------------------------------- hooks
#: the last training batch's (completion ids, q_t) rows, from the reward hook to the advantage hook
_PENDING: list[tuple[tuple[int, ...], torch.Tensor]] = []
_BETA: list[float] = []  # the beta the reward hook used for that batch

_SRC = f"arXiv 2412.01981; {AT_PRM} {CE_FILE} CETrainer.loss_fn; {AT_PRIME} {PRIME_PRM} compute_implicit_reward"
HPARAMS = {
    "prm_dir": HParam(None, "path", "the implicit PRM's model directory (harness.train.prm); an upstream input "
                      "of kind prm: {WORK}/upstream/prm/<key>/model, filled in by harness train",
                      "rules/prm.smk", type=str | None),
    "ref_dir": HParam(None, "path", "pi_ref's model directory; null: the one recorded by harness.train.prm (the "
                      "base model)", f"{AT_PRIME} {PRIME_SCRIPT}:57 prime_model.ref_path = the SFT model",
                      type=str | None),
    "beta": HParam(None, "1/nats", "beta of r_theta = beta log(pi/pi_ref) (scores, mode sum, prime_norm none); "
                   "null: the beta the PRM was trained with (implicit_prm.json; harness.train.prm default 0.05)",
                   f"{AT_PRM} {CE_SCRIPT}:6 beta=0.05; {AT_PRIME} {PRIME_SCRIPT}:63 beta_train=0.05",
                   type=float | None),
    "mode": HParam("prime", " | ".join(MODES), "prime: PRIME's token-level RLOO returns of process + outcome "
                   "rewards; sum: process_coef * r_theta(y) added to the task reward (GRPO normalisation)",
                   f"{AT_PRIME} {PRIME_ALGOS}:108-153 compute_rloo_returns; {PRIME_SCRIPT}:51 adv_estimator=rloo"),
    "prime_norm": HParam("batch_norm", " | ".join(NORMS), "process scores / max |reverse cumsum| (batch_norm, "
                         "scale-free), or the paper's beta * q_t (none)", f"{AT_PRIME} {PRIME_PRM}:239-241"),
    "gamma": HParam(1.0, "1", "discount of both returns (reward_model_gamma = verifier_gamma)",
                    f"{AT_PRIME} {PRIME_SCRIPT}:52-53"),
    "process_coef": HParam(1.0, "1", "weight of the process reward: prime = factor on the process scores (the "
                           "code's RLOO adds the two sources 1:1: rm_coef=5 does not reach it); sum = factor on "
                           "r_theta(y)", f"{AT_PRIME} {PRIME_ALGOS}:113-150 (rm_scores and gt_scores unweighted)"),
    "forward_batch": HParam(64, "sequences", "PRM / reference forward chunk on CPU (no effect on values)",
                            "harness"),
}


@register_reward("implicit_prm", paper="implicit_prm", source=_SRC, hparams=HPARAMS, needs=())
def implicit_prm_reward(rctx: RewardContext, *, prm_dir: str | None, ref_dir: str | None, beta: float, mode: str,
                        process_coef: float, forward_batch: int, **_) -> list[float]:
    """Implicit PRM (CE): r_theta(y) = beta log pi/pi_ref of each completion; dense r_t for the advantage hook."""
    _choice("mode", mode, MODES)
    prm, ref, tok, trained_beta = load_models(prm_dir, ref_dir)
    beta = resolve_beta(beta, trained_beta)
    p_ids = [encode_prompt(tok, p) for p in rctx.prompts]
    c_ids = [list(c) for c in rctx.completion_ids]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    lp = sequence_logps(prm, p_ids, c_ids, pad, forward_batch)
    lr = sequence_logps(ref, p_ids, c_ids, pad, forward_batch)
    q = [a - b for a, b in zip(lp, lr)]
    score = [beta * float(x.sum()) for x in q]
    if rctx.training:
        _PENDING[:] = [(tuple(c), x) for c, x in zip(c_ids, q)]
        _BETA[:] = [beta]
    log = rctx.log_metric or (lambda name, value: None)
    log("implicit_prm/score", sum(score) / max(len(score), 1))
    log("implicit_prm/abs_token_reward", float(torch.cat(q).abs().mean()) * beta if q else 0.0)
    return [process_coef * s for s in score] if mode == "sum" else [0.0] * len(score)


def _pending_rows(actx: AdvantageContext) -> torch.Tensor:
    """(N, T) q_t of the batch from the reward hook, checked row by row against the advantage context's ids."""
    mask, ids = actx.mask.cpu(), actx.completion_ids.cpu()
    if len(_PENDING) != ids.shape[0]:
        raise RuntimeError(f"implicit_prm: the reward hook scored {len(_PENDING)} completions, the advantage hook "
                           f"sees {ids.shape[0]}: one training process only (RewardContext/AdvantageContext carry no "
                           "prompt ids across processes)")
    q = torch.zeros(mask.shape, dtype=torch.float32)
    for i, (c, x) in enumerate(_PENDING):
        n = len(c)
        if tuple(ids[i, :n].tolist()) != c or (mask.shape[1] > n and mask[i, n:].any()):
            raise RuntimeError(f"implicit_prm: row {i} of the advantage batch is not the completion the reward hook "
                               "scored")
        q[i, :n] = x[: mask.shape[1]]
    return q


@register_advantage("implicit_prm", paper="implicit_prm",
                    source=f"{AT_PRIME} {PRIME_ALGOS} compute_rloo_returns + masked_whiten; {PRIME_PRM}:239-241")
def implicit_prm_advantage(actx: AdvantageContext, *, mode: str, prime_norm: str, gamma: float,
                           process_coef: float, **_) -> tuple[torch.Tensor, dict]:
    """PRIME's token-level advantages from the dense process reward and the outcome (mode prime); GRPO's (sum)."""
    _choice("mode", mode, MODES)
    _choice("prime_norm", prime_norm, NORMS)
    q = _pending_rows(actx)
    beta = _BETA[0]
    _PENDING.clear()
    mask = actx.mask.cpu().float()
    G = actx.group_size
    rewards = torch.nan_to_num(actx.rewards.detach().cpu().float(), nan=0.0)
    summed = beta * (q * mask).sum(-1)
    outcome = rewards - process_coef * summed if mode == "sum" else rewards
    bon = best_of_n(summed.tolist(), outcome.tolist(), G)
    metrics = {"implicit_prm/bon_outcome": bon["bon"], "implicit_prm/mean_outcome": bon["mean"],
               "implicit_prm/pair_acc": pairwise_accuracy(summed, outcome, G)}
    if mode == "sum":
        return actx.grpo_advantages(), metrics
    scores = process_coef * prime_scores(q, mask, prime_norm, beta)
    adv, ret = prime_advantages(scores, outcome, mask, G, gamma)
    metrics["implicit_prm/return_process_abs"] = float(((scores * mask).sum(-1)).abs().mean())
    valid = mask > 0
    moved = (adv - actx.grpo_advantages().cpu()[:, None]).abs() > 1e-9
    metrics["method/frac_tokens_touched"] = float((moved & valid).sum() / valid.sum().clamp(min=1))
    return adv * mask, metrics
