"""ARPO's outcome reward for tool-integrated reasoning, ported: ``compute_score`` of
``ARPO/verl_arpo_entropy/verl/utils/reward_score/deep_research.py`` (RUC-NLPIR/ARPO, read as the fork
multi-agent-deep-research/ARPO at commit ``ff66660`` = :data:`SOURCE` ``["commit"]``; git blob
:data:`SOURCE` ``["blob"]``). Both released reasoning runs use it as the custom reward: ARPO's
``scripts/ARPO_7B_Reasoning_1node.sh`` and AEPO's ``scripts/AEPO_Qwen25_7B_DeepResearch.sh`` (AEPO's copy,
``AEPO/verl_aepo_entropy/.../deep_research.py``, is byte-identical), both on ``rl_datasets/train_10k.parquet``.

What it scores: verl's naive reward manager passes ``solution_str`` = the whole response decoded with
``skip_special_tokens=True`` -- every model segment AND the inlined tool results (`` <result>\\n...\\n</result>``),
up to the first EOS (:mod:`harness.envs.toolqa` keeps that text per episode) -- and ``ground_truth`` =
``reward_model.ground_truth`` of the row (a string in every row of the released sets).

The rules (:func:`compute_score`, in order):

1. **Format** (:func:`validate_format`), else score **-1**: ``<think>`` and ``</think>`` equally often and at
   least once; exactly one ``<answer>`` and one ``</answer>``; every ``<search>`` followed by ``</search>``, then
   a ``<result>``, then ``</result>``, in that order (scanning from one ``</result>`` to the next ``<search>``);
   the same for every ``<python>``; ``<answer>`` before ``</answer>``; the answer span contains ``\\boxed{`` and
   a ``}``. So a trajectory that ends on an unanswered call (call limit reached, empty call) always scores -1.
2. **Answer**: the text between the first ``<answer>`` and ``</answer>`` (:func:`extract_answer`), then the LAST
   ``\\boxed{...}`` in it with nested braces (:func:`last_boxed_only_string`; a ``\\boxed `` with a space anywhere
   in it wins: the text after the last ``\\boxed `` up to the next ``$``), unwrapped (:func:`remove_boxed`). A box
   whose braces never close is a "find box error": **-1**.
3. **F1** (:func:`get_f1_score`): SQuAD token F1 after :func:`normalize_answer` (lowercase, ASCII punctuation
   removed, then the words a/an/the, whitespace collapsed), the max over the ground truths when it is a list; a
   prediction or truth that normalises to ``yes``/``no``/``noanswer`` gets 0 unless both are equal.
4. **Score**: ``f1 + 0.1`` when ``f1 > 0`` and the response contains both ``</search>`` and ``</python>`` (the
   multi-tool bonus: at most 1.1); ``f1`` when ``f1 > 0``; else **0** (good format, wrong answer).

Consequences (each a golden case in tests/fixtures/arpo_reward_golden.json): there is no numeric or symbolic
equivalence -- ``12`` vs ``12.0`` is 0 (the point is punctuation: ``120``), ``1,000`` equals ``1000``,
``\\frac{1}{2}`` normalises to ``frac12`` and matches neither ``1/2`` nor ``0.5``; partial credit is token overlap
(``New York`` vs ``New York City``: 0.8); an empty box scores 0, not -1; the call/result pairing is loose (a call's
``<result>`` is the next one anywhere after it, so a python call without its own result passes when a later search
has one); a ``<search>`` merely mentioned inside ``<think>`` is a call without result (-1).

Deviations (none changes a score; the golden test runs the authors' function on every case):

* returns floats (the authors mix ``-1``/``0`` ints and floats) and prints nothing (they print every verdict);
* the EOS strip (``extra_info["tokenizer"].eos_token`` removed from the end) is not ported: it runs after the
  format check and only feeds answer extraction (a regex inside the answer tags) and the bonus check (a substring
  test), so it cannot change a result -- and verl decodes with ``skip_special_tokens=True`` anyway;
* ``remove_boxed``'s ``assert`` statements are explicit checks raising ``AssertionError`` (the same "find box
  error" verdict, also under ``python -O``);
* a ground truth that is neither a string nor a sequence of strings raises :class:`TypeError` naming it (the
  authors' ``normalize_answer`` raises ``AttributeError`` from inside; no released row has one);
* ``data_source`` and ``extra_info`` are not parameters (the authors' function ignores them but for the EOS strip);
  ``validate_format_python`` (defined there, never called) is not ported.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

#: where the rules come from
SOURCE = {
    "repo": "RUC-NLPIR/ARPO (read as multi-agent-deep-research/ARPO)",
    "commit": "ff6666069e6c28375ed63336c14cb456d172fe06",
    "file": "ARPO/verl_arpo_entropy/verl/utils/reward_score/deep_research.py",
    "function": "compute_score",
    "blob": "7aeed804cd2d43c7f14cf79ebf0d8823ef318a97",
}
#: the name runs record for this reward (protocols, cards)
NAME = "arpo_deep_research"
#: the multi-tool bonus added to a positive F1 when both ``</search>`` and ``</python>`` occur
MULTI_TOOL_BONUS = 0.1
FORMAT_PENALTY = -1.0


def validate_format(text: str) -> tuple[bool, str]:
    """``(ok, reason)``: the authors' format rules (module docstring, rule 1), with their reasons."""
    if text.count("<think>") != text.count("</think>"):
        return False, "<think> </think> not paired"
    if text.count("<think>") == 0 or text.count("</think>") == 0:
        return False, "<think> or </think> not found"
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return False, "<answer> or </answer> not found"
    for tool in ("search", "python"):
        current_pos = 0
        while True:
            call_pos = text.find(f"<{tool}>", current_pos)
            if call_pos == -1:
                break
            result_pos = text.find("<result>", call_pos)
            call_end_pos = text.find(f"</{tool}>", call_pos)
            result_end_pos = text.find("</result>", result_pos)
            if -1 in (result_pos, call_end_pos, result_end_pos):
                return False, f"{tool}/result tags are incomplete"
            if not (call_pos < call_end_pos < result_pos < result_end_pos):
                return False, f"{tool}/result tags are nested in the wrong order"
            current_pos = result_end_pos
    answer_start = text.find("<answer>")
    answer_end = text.find("</answer>")
    if answer_start > answer_end:
        return False, "<answer> must be before </answer>"
    answer_content = text[answer_start:answer_end]
    if "\\boxed{" not in answer_content or "}" not in answer_content:
        return False, "answer is missing \\boxed{} format"
    return True, "format is correct"


def extract_answer(text: str) -> str | None:
    """The text between the first ``<answer>`` and the next ``</answer>`` (None: no such pair)."""
    match = re.search(r"<answer>(.*?)</answer>", text.strip(), re.DOTALL)
    return match.group(1) if match else None


def remove_boxed(s: str | None) -> str:
    """``\\boxed{x}`` -> ``x``, ``\\boxed x`` -> ``x``; anything else raises (AssertionError; TypeError for None)."""
    if "\\boxed " in s:
        left = "\\boxed "
        if s[: len(left)] != left:
            raise AssertionError
        return s[len(left):]
    left = "\\boxed{"
    if s[: len(left)] != left:
        raise AssertionError
    if s[-1] != "}":
        raise AssertionError
    return s[len(left):-1]


def last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) of ``text`` with its wrapper, braces matched; None when
    there is none or its braces never close. A ``\\boxed `` (with a space) anywhere wins: ``\\boxed `` plus the text
    after its last occurrence up to the next ``$``."""
    idx = text.rfind("\\boxed")
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth, right = 0, None
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                right = i
                break
    return None if right is None else text[idx: right + 1]


_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def _truths(ground_truth) -> list[str]:
    if isinstance(ground_truth, str):
        return [ground_truth]
    if isinstance(ground_truth, Sequence) or hasattr(ground_truth, "tolist"):  # list, tuple, numpy array (parquet)
        items = ground_truth.tolist() if hasattr(ground_truth, "tolist") else list(ground_truth)
        if all(isinstance(t, str) for t in items):
            return items
    raise TypeError(f"ground truth must be a string or a list of strings, got {type(ground_truth).__name__} "
                    f"{ground_truth!r:.80}")


def get_f1_score(prediction: str, ground_truths) -> float:
    """Token F1 of ``prediction`` against the best of ``ground_truths`` (a string or a list of strings)."""
    best = 0.0
    pred = normalize_answer(prediction)
    for truth in _truths(ground_truths):
        gold = normalize_answer(truth)
        if pred in ("yes", "no", "noanswer") and pred != gold:
            continue
        if gold in ("yes", "no", "noanswer") and pred != gold:
            continue
        pred_tokens, gold_tokens = pred.split(), gold.split()
        same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if same == 0:
            continue
        precision, recall = same / len(pred_tokens), same / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def compute_score(solution_str: str, ground_truth) -> dict:
    """The authors' verdict: ``{"score", "reason", "answer", "f1_score"}`` (reasons worded as theirs)."""
    _truths(ground_truth)  # a bad truth is an error whatever the response (the authors' fails only at the F1 step)
    out = {"score": 0.0, "reason": "", "answer": "", "f1_score": 0.0}
    ok, reason = validate_format(solution_str)
    if not ok:
        return {**out, "score": FORMAT_PENALTY, "reason": f"bad format: {reason}"}
    answer_part = extract_answer(solution_str)
    if answer_part is None:  # unreachable after validate_format (kept as the authors have it)
        return {**out, "score": FORMAT_PENALTY, "reason": "cannot extract answer"}
    try:
        answer = remove_boxed(last_boxed_only_string(answer_part))
    except Exception as e:  # noqa: BLE001 -- the authors catch everything here
        return {**out, "score": FORMAT_PENALTY, "reason": f"find box error: {e}"}
    f1 = get_f1_score(answer, ground_truth)
    out.update(answer=answer, f1_score=f1)
    if f1 > 0 and "</search>" in solution_str and "</python>" in solution_str:
        out.update(score=f1 + MULTI_TOOL_BONUS, reason="correct answer and calling search and python at the same "
                                                        f"time, get score: {f1 + MULTI_TOOL_BONUS}")
    elif f1 > 0:
        out.update(score=f1, reason=f"correct answer, get f1 score: {f1}")
    else:
        out.update(score=0.0, reason=f"wrong answer but good format: {answer}")
    return out


def score(solution_str: str, ground_truth) -> float:
    """The reward of one response (the whole trajectory text, tool results included): -1, 0, F1 or F1 + 0.1."""
    return float(compute_score(solution_str, ground_truth)["score"])
