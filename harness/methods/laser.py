"""LASER / LASER-D / LASER-DE: length-based step reward shaping. "Learn to Reason Efficiently with Adaptive
Length-based Reward Shaping" (arXiv 2505.15612). Ported from hkust-nlp/Laser @ c9e7c4ef (verl); code names
larse / larse-d / larse-de. Paper-vs-code notes and deviations: replications/laser/card.yaml.

- C(y): ``verl/utils/reward_score/hf_math_verifier.py`` ``compute_score`` (the scorer of their DeepScaleR data):
  +1 correct; -0.5 wrong with a ``\\boxed{}``; -1 without a box after ``</think>`` or without both think tags in
  prompt + response (truncated: no box). ``answer_format``: think (theirs) | boxed (smoke reasoning) | plain (the
  completion is the answer).
- ``laser`` (``length_penalty.py`` ``compute_length_reward_larse``): r = C + lambda 1[C = 1 and len <= L_T]
  (``length_reward_type`` reward; penalty: -lambda when correct and longer; hybrid: both).
- ``laser_d`` (``compute_length_reward_larse_d``): bucket by the group's share of C = 1 (high >= 2/3 > medium >=
  1/3 > low); per bucket L_T = ``_choose_target_length``: the smallest grid L (``get_length_threshold``) below the
  batch's longest response with ``int(coverage(L) * floor(n_rollout * share)) >= expected_n_correct`` (share 2/3,
  1/3; low: 1), else that longest length. coverage(L): share of ALL monitor responses of the band with length <= L
  (bands of ``ray_trainer._count_accuracy_bands_metrics``: low <= 1/3 < medium <= 2/3 < high, verifier correctness).
- ``laser_de`` (``compute_length_reward_larse_de``): ``laser_d`` (type reward) plus +lambda for C = -0.5 and
  len > L_T unless the repetition detector fires. As released the detector gets a tensor slice, whose n-grams hash
  by identity: it never fires (``repetition_filter: as_released``, default); ``ngram``: the detector on token ids.

Lengths count completion tokens with the EOS. Monitor (deviation; methods have no trainer callback): the hook keeps
the most recent ``monitor_prompts`` training groups it scored (per trainer, keyed by its generator) and refreshes
the coverage on the first training batch and every ``monitor_freq``-th after it (current batch included); the
authors generate a separate pass over 500 training prompts before training and every 20 steps.
"""
from __future__ import annotations

import copy
import math
import re
import weakref
from collections import deque

from harness.methods.context import RewardContext
from harness.methods.registry import HParam, MethodState, register_reward

REPO, COMMIT = "hkust-nlp/Laser", "c9e7c4ef18192212574c5f6709d67c74baea7605"
LP = "verl/utils/reward_score/length_penalty.py"
CODE = f"{REPO}@{COMMIT[:8]}"
SCRIPT = "scripts/training/laser-de-1.5b/laser-de-1.5b-l4096.sh"
LEVELS = ("low", "medium", "high")                  # constants.DIFFICULTY_LEVEL
SHARE = {"high": 2 / 3, "medium": 1 / 3}            # _choose_target_length: lower_n = n_rollout * share (low: 1)
CORRECT, WRONG, NO_ANSWER = 1.0, -0.5, -1.0         # hf_math_verifier.compute_score
ANSWER_FORMATS = ("think", "boxed", "plain")
REWARD_TYPES = ("reward", "penalty", "hybrid")
ROUND_METHODS = ("floor", "ceil")
REPETITION_FILTERS = ("as_released", "ngram")
VERIFY_TIMEOUT = 5.0  # seconds, the project's verifier (authors: math_verify in a process pool, 10 s)

#: monitor state per training run (keyed by the trainer's seeded generator, one per trainer)
_MONITORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _monitor_state(generator) -> dict:
    return copy.deepcopy(_MONITORS[generator]) if generator in _MONITORS else {}


def _load_monitor(generator, state: dict) -> None:
    _MONITORS[generator] = copy.deepcopy(state)


#: the monitor of LASER-D/DE (window, calls, coverage, refreshes) in checkpoints (harness.train.resume)
STATE = MethodState(_monitor_state, _load_monitor, keys=("window", "calls", "coverage", "refreshes"))


def _choice(name: str, value: str, valid: tuple) -> str:
    if value not in valid:
        raise ValueError(f"laser: unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


# ------------------------------------------------------------------------------------------- base reward -----
def _has_box(text: str) -> bool:
    """A complete ``\\boxed{...}`` (balanced braces) somewhere in the text."""
    for m in re.finditer(r"\\boxed\{", text):
        depth = 1
        for ch in text[m.end():]:
            depth += (ch == "{") - (ch == "}")
            if depth == 0:
                return True
    return False


def _is_correct(answer: str, text: str, mode: str) -> bool:
    from harness.verify import answer_correct

    return answer_correct(answer, text, mode=mode, timeout=VERIFY_TIMEOUT) is True


def base_score(prompt, completion: str, answer, answer_format: str = "think") -> tuple[float, bool]:
    """(C(y), verifier correctness) of one response: see the module docstring."""
    _choice("answer_format", answer_format, ANSWER_FORMATS)
    if answer_format == "plain":
        ok = bool(completion.strip()) and _is_correct(answer, completion, "plain")
        return (CORRECT if ok else WRONG if completion.strip() else NO_ANSWER), ok
    region = completion
    if answer_format == "think":
        full = (prompt if isinstance(prompt, str) else "") + completion   # authors: decoded prompt + response
        region = full.split("</think>")[1] if "</think>" in full else full
        if "<think>" not in full or "</think>" not in full:
            return NO_ANSWER, _is_correct(answer, region, "boxed")
    ok = _is_correct(answer, region, "boxed")
    if not _has_box(region):
        return NO_ANSWER, ok
    return (CORRECT if ok else WRONG), ok


# ----------------------------------------------------------------------------------- difficulty and targets --
def length_grid(lower_bound: int, upper_bound: int, interval: int) -> list[int]:
    """``get_length_threshold`` (general branch; see the card for its ``lower_bound < 1024`` branch)."""
    if interval <= 0 or lower_bound > upper_bound:
        raise ValueError(f"laser: need interval > 0 and lower_bound <= upper_bound, got lower_bound={lower_bound}, "
                         f"upper_bound={upper_bound}, interval={interval}")
    return list(range(lower_bound, upper_bound + interval, interval))


def bucket(acc: float) -> str:
    """Training bucket of a prompt from its group accuracy (``compute_length_reward_larse_d``)."""
    return "high" if acc >= 2 / 3 else "medium" if acc >= 1 / 3 else "low"


def monitor_band(acc: float) -> str:
    """Monitor band (``_count_accuracy_bands_metrics``): the boundaries belong to the lower band."""
    return "low" if acc <= 1 / 3 else "medium" if acc <= 2 / 3 else "high"


def coverage(groups, grid: list[int]) -> dict[str, dict[int, float]]:
    """Per monitor band, the share of its responses with length <= L for each grid L; ``groups``: (correct flags,
    lengths) per prompt."""
    lengths: dict[str, list[int]] = {lv: [] for lv in LEVELS}
    for correct, lens in groups:
        lengths[monitor_band(sum(correct) / len(correct))].extend(lens)
    return {lv: {L: (sum(n <= L for n in v) / len(v) if v else 0.0) for L in grid} for lv, v in lengths.items()}


def choose_targets(cov, grid, batch_max: int, n_rollout: int = 8, expected_n_correct: int = 1,
                   round_method: str = "floor") -> dict[str, int]:
    """``_choose_target_length``: per level the smallest grid L below ``batch_max`` whose expected number of
    responses within L reaches ``expected_n_correct``; else ``batch_max``."""
    _choice("round_method", round_method, ROUND_METHODS)
    out = {}
    for lv in LEVELS:
        out[lv] = batch_max
        rnd = int if round_method == "floor" else math.ceil
        lower_n = rnd(n_rollout * SHARE[lv]) if lv in SHARE else 1
        for L in grid:
            expected = int(cov[lv][L] * lower_n) if round_method == "floor" else cov[lv][L] * lower_n
            if expected >= expected_n_correct and L < out[lv]:
                out[lv] = L
    return out


def repetition_start(tokens: list[int], n: int = 4) -> int:
    """``detect_token_ngram_repetition_optimized_reversed`` on token ids: where a close n-gram repeat (or a repeated
    2n-gram) starts, scanning from the end; ``len(tokens)`` when none."""
    size = len(tokens)
    if size <= n * 2:
        return size
    n = 2 if size < 30 else 3 if size < 100 else min(4, n)
    need = 2 if size < 200 else 3
    seen: dict[tuple, list[int]] = {}
    for i in range(size - n, -1, -1):
        gram = tuple(tokens[i:i + n])
        if len(set(gram)) == 1 and n > 2:
            continue
        pos = seen.setdefault(gram, [])
        pos.append(i)
        if len(pos) >= need:
            p = sorted(pos)
            if any(b - a < size // 3 for a, b in zip(p, p[1:])):
                return p[0]
    if size >= n * 4:
        first: dict[tuple, int] = {}
        for i in range(size - 2 * n, -1, -1):
            pattern = tuple(tokens[i:i + 2 * n])
            if pattern in first:
                return min(i, first[pattern])
            first[pattern] = i
    return size


def shape(scores, lengths, targets, lam: float, reward_type: str = "reward", explore: bool = False,
          repeated=None) -> tuple[list[float], list[float]]:
    """(rewards, length terms): the step reward of ``compute_length_reward_larse*`` given each response's L_T."""
    _choice("length_reward_type", reward_type, REWARD_TYPES)
    out, terms = [], []
    for i, (s, n, t) in enumerate(zip(scores, lengths, targets)):
        term = 0.0
        if s == CORRECT:
            within = n <= t
            term = (lam if within else 0.0) if reward_type == "reward" else \
                (0.0 if within else -lam) if reward_type == "penalty" else (lam if within else -lam)
        elif explore and s == WRONG and n > t and not (repeated is not None and repeated[i]):
            term = lam
        out.append(s + term)
        terms.append(term)
    return out, terms


# ------------------------------------------------------------------------------------------------ the hook ---
def _monitor(rctx: RewardContext, correct, lengths, grid, monitor_freq: int, monitor_prompts: int):
    """The monitor's coverage (None before the first training batch); updated from training batches only."""
    if monitor_freq < 1 or monitor_prompts < 1:
        raise ValueError(f"laser: monitor_freq and monitor_prompts must be >= 1, got {monitor_freq}, {monitor_prompts}")
    st = _MONITORS.setdefault(rctx.generator, {}) if rctx.generator is not None else {}
    if rctx.training:
        win = st.setdefault("window", deque(maxlen=monitor_prompts))
        if win.maxlen != monitor_prompts:
            win = st["window"] = deque(win, maxlen=monitor_prompts)
        G = rctx.group_size
        for g in range(0, len(lengths), G):
            win.append((tuple(correct[g:g + G]), tuple(lengths[g:g + G])))
        calls = st.get("calls", 0)
        if calls % monitor_freq == 0:
            st["coverage"], st["refreshes"] = coverage(win, grid), st.get("refreshes", 0) + 1
        st["calls"] = calls + 1
    return st.get("coverage"), st.get("refreshes", 0), len(st.get("window", ()))


def _reward(rctx: RewardContext, variant: str, *, length_reward_scalar: float, answer_format: str,
            target_length: int, length_reward_type: str = "reward", lower_bound: int = 0, upper_bound: int = 0,
            interval: int = 1, monitor_freq: int = 1, monitor_prompts: int = 1, n_rollout: int = 8,
            expected_n_correct: int = 1, round_method: str = "floor", repetition_filter: str = "as_released"):
    if rctx.answers is None:
        raise ValueError(f"{variant} needs the dataset's answer column (RewardContext.answers)")
    _choice("answer_format", answer_format, ANSWER_FORMATS)
    _choice("length_reward_type", length_reward_type, REWARD_TYPES)
    _choice("repetition_filter", repetition_filter, REPETITION_FILTERS)
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in rctx.completions]
    scored = [base_score(p if isinstance(p, str) else "", c, a, answer_format)
              for p, c, a in zip(rctx.prompts, texts, rctx.answers)]
    scores, correct = [s for s, _ in scored], [ok for _, ok in scored]
    lengths = [len(ids) for ids in rctx.completion_ids]
    G, n = rctx.group_size, len(lengths)
    metrics = {}
    targets, per = {lv: target_length for lv in LEVELS}, [target_length] * n
    if variant != "laser":
        grid = length_grid(lower_bound, upper_bound, interval)
        _choice("round_method", round_method, ROUND_METHODS)
        cov, refreshes, window = _monitor(rctx, correct, lengths, grid, monitor_freq, monitor_prompts)
        if cov is not None:
            targets = choose_targets(cov, grid, max(lengths), n_rollout, expected_n_correct, round_method)
        levels = [bucket(sum(s == CORRECT for s in scores[g:g + G]) / G) for g in range(0, n, G)]
        per = [targets[levels[i // G]] for i in range(n)]
        metrics.update({f"laser/bucket_frac/{lv}": levels.count(lv) / max(len(levels), 1) for lv in LEVELS})
        metrics.update({"laser/monitor_refreshes": refreshes, "laser/monitor_prompts": window})
    de = variant == "laser_de"
    repeated = None if not de else [False] * n if repetition_filter == "as_released" else \
        [repetition_start(list(ids)) < len(ids) for ids in rctx.completion_ids]
    rewards, terms = shape(scores, lengths, per, length_reward_scalar, "reward" if de else length_reward_type,
                           explore=de, repeated=repeated)
    d = max(n, 1)
    metrics.update({f"laser/bucket_targets/{lv}": float(targets[lv]) for lv in LEVELS})
    metrics.update({"laser/mean_length": sum(lengths) / d, "laser/frac_bonus": sum(t > 0 for t in terms) / d,
                    "laser/frac_correct": scores.count(CORRECT) / d,
                    "laser/frac_no_answer": scores.count(NO_ANSWER) / d})
    if de:
        metrics["laser/frac_explore_bonus"] = sum(t > 0 and s == WRONG for t, s in zip(terms, scores)) / d
        metrics["laser/frac_repeated"] = sum(repeated) / d
    elif length_reward_type != "reward":
        metrics["laser/frac_penalty"] = sum(t < 0 for t in terms) / d
    for k, v in metrics.items() if rctx.log_metric is not None else ():
        rctx.log_metric(k, float(v))
    return rewards


def _hp(**over) -> dict[str, HParam]:
    base = {
        "length_reward_scalar": HParam(0.5, "reward units", "lambda: the step bonus",
                                       f"{SCRIPT} length_reward_scalar=0.5 ({CODE})"),
        "answer_format": HParam("think", " | ".join(ANSWER_FORMATS), "what C(y) requires: think = box after "
                                "</think> and both think tags (authors); boxed = a box; plain = the completion",
                                "verl/utils/reward_score/hf_math_verifier.py compute_score"),
    }
    return {**base, **over}


_GRID = {
    "target_length": HParam(8192, "tokens", "L_T before the monitor's first refresh (the script's value; "
                            "'not used' there: their monitor runs before training)", f"{SCRIPT} target_length"),
    "lower_bound": HParam(4096, "tokens", "smallest target length (the L in LASER-D-L4096)",
                          f"{SCRIPT} TARGET_LENGTH_LOWER_BOUND"),
    "upper_bound": HParam(16384, "tokens", "largest grid target (= max response length)",
                          f"{SCRIPT} TARGET_LENGTH_UPPER_BOUND=$MAX_RESPONSE_LENGTH"),
    "interval": HParam(1024, "tokens", "grid step", f"{SCRIPT} TARGET_LENGTH_INTERVAL"),
    "monitor_freq": HParam(20, "generation batches", "monitor refresh period (verl steps = rollout batches)",
                           f"{SCRIPT} trainer.monitor_freq=20"),
    "monitor_prompts": HParam(500, "prompts", "monitor window: the most recent training groups (authors: a fixed "
                              "500-prompt sample of the training set)", "data.monitor_files=train_sample500.parquet"),
    "n_rollout": HParam(8, "responses", "n in floor(n * 2/3), floor(n / 3) (the reward manager never passes it: "
                        "always the default 8)", f"{LP} compute_length_reward_larse_d n_rollout=8"),
    "expected_n_correct": HParam(1, "responses", "responses expected within L_T",
                                 "verl/trainer/config/lengthy_ppo_trainer.yaml length_penalty.expected_n_correct"),
    "round_method": HParam("floor", " | ".join(ROUND_METHODS), "rounding of the expected count",
                           "lengthy_ppo_trainer.yaml length_penalty.round_method"),
}
_TYPE = HParam("reward", " | ".join(REWARD_TYPES), "reward: +lambda within L_T; penalty: -lambda beyond; hybrid: both",
               "lengthy_ppo_trainer.yaml length_penalty.length_reward_type")


@register_reward("laser", paper="laser", task_reward_weight=0.0, state=STATE,  # (no monitor: always {})
                 source=f"arXiv 2505.15612 Sec. 4 (LASER); {CODE} {LP} compute_length_reward_larse",
                 hparams=_hp(target_length=HParam(4096, "tokens", "L_T (LASER-L4096)",
                                                  "scripts/training/laser-1.5b/laser-1.5b-l4096.sh target_length"),
                             length_reward_type=_TYPE))
def laser(rctx: RewardContext, **hp):
    """LASER: C(y) + lambda * 1[correct and len <= L_T] (replaces the task reward)."""
    return _reward(rctx, "laser", **hp)


@register_reward("laser_d", paper="laser", task_reward_weight=0.0, state=STATE,
                 source=f"arXiv 2505.15612 Sec. 5 (LASER-D); {CODE} {LP} compute_length_reward_larse_d",
                 hparams=_hp(**_GRID, length_reward_type=_TYPE))
def laser_d(rctx: RewardContext, **hp):
    """LASER-D: the LASER step reward with L_T per difficulty bucket, from a periodically refreshed monitor."""
    return _reward(rctx, "laser_d", **hp)


@register_reward("laser_de", paper="laser", task_reward_weight=0.0, state=STATE,
                 source=f"arXiv 2505.15612 Sec. 5 (LASER-DE); {CODE} {LP} compute_length_reward_larse_de",
                 hparams=_hp(**_GRID, repetition_filter=HParam(
                     "as_released", " | ".join(REPETITION_FILTERS), "which wrong over-target responses get the "
                     "exploration bonus: as_released = all (the released detector call never fires); ngram = those "
                     "the detector does not flag", f"{LP} compute_length_reward_larse_de + compute_unique_tokens.py")))
def laser_de(rctx: RewardContext, **hp):
    """LASER-DE: LASER-D plus +lambda for wrong, boxed responses longer than their L_T (exploration)."""
    return _reward(rctx, "laser_de", **hp)
