"""PEAR: "Phase Entropy Aware Reward for Efficient Reasoning" (arXiv 2510.08026, ICLR 2026).

PEAR replaces GRPO's binary reward. Every response is split into a thinking phase and an answer phase, and its
correct-answer reward is lowered by the thinking phase's mean token entropy, minus a share of the answer phase's:

    H_think  = mean token entropy of the thinking phase      (nats; under pi_old at the run's temperature)
    H_answer = mean token entropy of the answer phase        (0 when the response has no answer phase)
    P(y)     = max(0, H_think - alpha * H_answer)             (>= 0: the penalty never adds reward)
    r(y)     = min(1, s - P(y))                               if the extracted answer is correct
             = r_fmt                                          if an answer was extracted but it is wrong
             = 0                                              if no answer could be extracted

The rest is GRPO. Sources: the formula and alpha = 1 are the shared card's (shared/papers/pear.md, [secondary]);
``s = 1`` and ``r_fmt = 0`` are the authors' README quick start, ``compute_score(..., score=1.0, format_score=0.0)``,
whose signature is verl's GSM8K scorer: no extractable answer -> 0, wrong -> ``format_score``, correct -> ``score``.
The authors' code (iNLP-Lab/PEAR: ``entropy.py`` and a modified verl ``naive.py`` reward manager) could not be
fetched here, so the golden test is hand-derived from the formula (see the card).

Phases (one rule per response, in this order):

- ``RewardContext.phases`` when the task gives them (the reasoning smoke task: 0 = reasoning, everything before the
  last ``\\boxed{``; 1 = answer, from ``\\boxed{`` to EOS): H_think over the phase-0 tokens, H_answer over phase 1.
- otherwise the authors' split: the first occurrence of the delimiter token sequence ``delimiter_ids`` (``</think>``:
  Qwen3 ``[151668]``, DeepSeek-R1-Distill-Qwen ``[151649]``) ends the thinking phase; the delimiter itself belongs
  to neither phase. No delimiter: the whole response is thinking and H_answer = 0, as the paper.
  The context carries no tokenizer, so a delimiter *string* cannot be located among the tokens: a response whose
  text contains ``delimiter`` while ``delimiter_ids`` is empty is an error (rather than a silent "no delimiter").

Correctness is computed here (the task's own reward gets weight 0, ``task_reward_weight=0``, and is only logged):
``answer_mode="boxed"`` takes the verifier's committed answer (``harness.verify.extract_answer``: the last
``\\boxed{}``), compares integers as integers and anything else with ``harness.verify.verify`` (the reasoning smoke
task's ``is_correct`` and the math tiers' scorer); ``"plain"`` compares the stripped completion with the answer (the
addition smoke task, whose completion is the answer). The authors extract GSM8K's ``#### N`` with a ``\\boxed{}``
fallback; the harness prompts for ``\\boxed{}``.

Metrics: ``pear/H_think`` (mean over responses), ``pear/H_answer`` (mean over responses with an answer phase),
``pear/phase_gap`` (mean H_think - H_answer over responses with both phases), ``pear/penalty_mean`` (mean P over all
responses, whether or not it was applied), ``pear/frac_penalised`` (share of correct responses whose reward the
penalty lowered; logged when a batch has a correct response).
"""
from __future__ import annotations

import torch

from harness.methods.context import RewardContext
from harness.methods.registry import HParam, register_reward

REPO = "iNLP-Lab/PEAR"
ANSWER_MODES = ("boxed", "plain")
PHASE_THINK, PHASE_ANSWER = 0, 1          # RewardContext.phases ids (harness.data.reasoning)
CAP = 1.0                                 # r = min(1, s - P)


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def correctness(completion: str, answer: str, answer_mode: str) -> bool | None:
    """True / False for an extracted answer that is right / wrong; None when no answer can be extracted."""
    if answer_mode == "plain":
        got = completion.strip()
        return None if not got else got == str(answer).strip()
    if answer_mode != "boxed":
        raise ValueError(f"pear: unknown answer_mode {answer_mode!r}; valid: {', '.join(ANSWER_MODES)}")
    from harness.verify import answer_correct

    return answer_correct(answer, completion)


def _find(ids: list[int], seq: list[int]) -> int | None:
    n = len(seq)
    return next((i for i in range(len(ids) - n + 1) if ids[i:i + n] == seq), None) if n else None


def split_phases(ent: torch.Tensor, ids: list[int], phases: list[int] | None, text: str, delimiter_ids: list[int],
                 delimiter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(thinking-phase entropies, answer-phase entropies) of one response (see the module docstring)."""
    if phases is not None:
        ph = torch.as_tensor(list(phases))
        if ph.numel() != ent.numel():
            raise ValueError(f"pear: {ph.numel()} phase ids for {ent.numel()} token entropies")
        return ent[ph == PHASE_THINK], ent[ph == PHASE_ANSWER]
    if ent.numel() != len(ids):
        raise ValueError(f"pear: {ent.numel()} token entropies for {len(ids)} completion tokens")
    k = _find(list(ids), list(delimiter_ids))
    if k is None:
        if not delimiter_ids and delimiter and delimiter in text:
            raise ValueError(f"pear: the completion contains {delimiter!r} but delimiter_ids is empty and the task "
                             "gives no phases; set delimiter_ids to its token ids (Qwen3 </think>: [151668], "
                             "DeepSeek-R1-Distill-Qwen: [151649])")
        return ent, ent[:0]
    return ent[:k], ent[k + len(delimiter_ids):]


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean()) if x.numel() else 0.0


@register_reward(
    "pear", paper="pear", needs=("reward_token_stats",), task_reward_weight=0.0,
    source=f"arXiv 2510.08026 (phase-entropy reward; formula per shared/papers/pear.md [secondary]); {REPO} README "
           "quick start compute_score(score=1.0, format_score=0.0) (entropy.py not readable here: hand-derived)",
    hparams={
        "alpha": HParam(1.0, "dimensionless", "answer-phase entropy weight: P = max(0, H_think - alpha H_answer)",
                        "paper alpha ablation on Qwen3-4B, alpha = 1 best of {-1, 0, 0.5, 1, 2} [secondary]"),
        "s": HParam(1.0, "reward", "reward of a correct answer before the penalty, r = min(1, s - P) (authors' score)",
                    f"{REPO} README: compute_score(..., score=1.0)"),
        "r_fmt": HParam(0.0, "reward", "reward of an extracted but wrong answer (authors' format_score; no extractable "
                        "answer: 0, as verl's GSM8K scorer)", f"{REPO} README: compute_score(..., format_score=0.0)"),
        "answer_mode": HParam("boxed", " | ".join(ANSWER_MODES), "correctness: boxed = the verifier's last \\boxed{} "
                              "(reasoning smoke task, math tiers); plain = the stripped completion (addition task)",
                              "harness.data.reasoning.is_correct / harness.data.smoke exact match"),
        "delimiter_ids": HParam([], "token ids", "token sequence ending the thinking phase when the task gives no "
                                "phases (Qwen3 </think> [151668]; R1-Distill-Qwen [151649]); empty: none",
                                "authors: first '</think>' token of the response (README; Qwen3 tokenizer ids)",
                                type=list),
        "delimiter": HParam("</think>", "string", "the delimiter's text: only used to refuse a response that contains "
                            "it when delimiter_ids is empty (the context has no tokenizer to locate it)",
                            "paper: the thinking phase ends at </think>"),
    },
)
def pear(rctx: RewardContext, *, alpha: float, s: float, r_fmt: float, answer_mode: str, delimiter_ids: list,
         delimiter: str) -> list[float]:
    """PEAR: a correct answer earns min(1, s - max(0, H_think - alpha H_answer)); otherwise the format reward."""
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"pear: unknown answer_mode {answer_mode!r}; valid: {', '.join(ANSWER_MODES)}")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in delimiter_ids):
        raise ValueError(f"pear: delimiter_ids must be a list of token ids (int), got {delimiter_ids!r}")
    if rctx.answers is None:
        raise ValueError("pear scores correctness itself and needs the dataset's 'answer' column")
    if rctx.entropies is None:
        raise ValueError("pear needs the token entropies (needs=('reward_token_stats',))")
    out, h_think, h_ans, gaps, pens, hit = [], [], [], [], [], []
    for i, (comp, ids, ent, ans) in enumerate(zip(rctx.completions, rctx.completion_ids, rctx.entropies,
                                                  rctx.answers)):
        text = _text(comp)
        think, answer = split_phases(ent, list(ids), None if rctx.phases is None else rctx.phases[i], text,
                                     delimiter_ids, delimiter)
        ht, ha = _mean(think), _mean(answer)
        penalty = max(0.0, ht - alpha * ha)
        ok = correctness(text, ans, answer_mode)
        if ok:
            r = min(CAP, s - penalty)
            hit.append(r < min(CAP, s))
        else:
            r = 0.0 if ok is None else r_fmt
        out.append(float(r))
        h_think.append(ht)
        pens.append(penalty)
        if answer.numel():
            h_ans.append(ha)
            if think.numel():
                gaps.append(ht - ha)
    log = rctx.log_metric
    if log is not None and out:
        log("pear/H_think", sum(h_think) / len(h_think))
        log("pear/H_answer", sum(h_ans) / len(h_ans) if h_ans else 0.0)
        if gaps:
            log("pear/phase_gap", sum(gaps) / len(gaps))
        log("pear/penalty_mean", sum(pens) / len(pens))
        if hit:
            log("pear/frac_penalised", sum(hit) / len(hit))
    return out
