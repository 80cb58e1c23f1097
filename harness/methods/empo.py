"""EMPO: "Right Question is Already Half the Answer: Fully Unsupervised LLM Reasoning Incentivization" (arXiv
2504.05812). Label-free: the reward is the share of the group whose final answer means the same.

Ported from QingyangZhang/EMPO @ c5eccd40, two implementations:

- TRL (``trl/src/open_r1/rewards.py`` ``get_empo_math_reward``, lines 150-217, with ``semantic_uncertainty.py``
  ``get_semantic_ids_by_rule``, lines 108-133): ``reward_mode="trl"``, the default. Per group of G responses:
  extract each final answer ('' when none); cluster greedily (response i opens cluster k, every later j with
  ``verify(a_i, a_j)`` is put in k); p_k = |c_k| / G; H = -sum_k p_k ln p_k (nats); reward_i = p_{c(i)}, 0 for a
  response without an answer, and 0 for the whole group when H >= ln G (all answers distinct);
- verl (``verl-empo/verl/utils/reward_score/empo/compute_metrics.py`` ``post_semantic_cluster`` + ``empo_metrics``
  with ``reward_type="entropy"``, lines 85-127 and 211-213): ``reward_mode="verl"``: reward_i = p_{c(i)}, each
  response without an answer is its own cluster and gets 1/G, no all-distinct rule.

Answers and their equivalence are the project's verifier (``harness.verify``), not math-verify: ``answer_mode
="boxed"`` extracts with :func:`harness.verify.extract_answer` (the last ``\\boxed{}``), ``"plain"`` takes the
stripped completion (the addition smoke task, whose completion is the answer). Two answers are one cluster when
their stripped strings are equal, when both are integers of equal value, or when ``harness.verify.verify(a_i,
a_j, mode="plain")`` says so (a_i, the earlier, as gold, as the authors' ``verify(string1, string2)``). The
authors' TRL reward calls ``math_verify.verify`` on the extracted *strings*, i.e. stripped string equality; both
agree on integer answers written without leading zeros (the golden fixture).

``distinct_check``: the authors' test ``total_entropy < math.log(n_generations)`` compares two floats; the numpy
entropy of G singletons rounds below ``math.log(G)`` for G in {3, 6, 7, 10, 14, ...}, so at their G = 7 the rule never
fires (all-distinct groups then reward every answered response 1/G). ``"clusters"`` (default) applies the rule as
written in words (all G answers in different clusters -> 0); ``"float"`` reproduces the float comparison.

The entropy-threshold filter (paper: keep prompts with delta_low < H < delta_high) is the ``data`` hook, at the
"scored" stage. ``group_filter="none"`` (default) is the released code: the TRL reward zeroes the all-distinct groups
(above) but keeps them in the batch, and every verl script sets ``enable_filter_groups=False``. ``"entropy"`` (the
paper's thresholding) drops the groups with H outside [delta_low, delta_high) from the loss (mask and token
normaliser); defaults: no lower bound and the TRL code's ln G, i.e. the groups that reward zeroes. ``"confidence"``
is verl's ``filter_groups`` (keep a group when its largest reward, the majority share, lies in [lower, upper];
``dapo_ray_trainer.py`` 221-229), without verl's regeneration until the batch is full. The hook reads H from the
EMPO rewards alone (a group's rewards are its cluster shares, k/G), so it sees every process's groups; rewards that
are not shares are an error.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from harness.methods.context import BatchContext, BatchDecision, RewardContext
from harness.methods.registry import HParam, register_data, register_reward

REPO = "QingyangZhang/EMPO"
COMMIT = "c5eccd400ba7a7a1685dedf25eab03780aad855f"
TRL_FILE = "trl/src/open_r1/rewards.py"
SU_FILE = "trl/src/open_r1/semantic_uncertainty.py"
VERL_FILE = "verl-empo/verl/utils/reward_score/empo/compute_metrics.py"
VERL_TRAINER = "verl-empo/recipe/empo/src/dapo_ray_trainer.py"
AT = f"{REPO}@{COMMIT[:8]}"

REWARD_MODES = ("trl", "verl")
ANSWER_MODES = ("boxed", "plain")
DISTINCT_CHECKS = ("clusters", "float")
FILTERS = ("entropy", "confidence", "none")
_INT = re.compile(r"[+-]?\d+")


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"empo: unknown {name} {value!r}; valid: {', '.join(valid)}")


def extract(text, answer_mode: str) -> str | None:
    """The final answer of one completion (a string, or a message list whose last content is used), or None."""
    _choice("answer_mode", answer_mode, ANSWER_MODES)
    if isinstance(text, list):
        text = text[-1]["content"] if text else ""
    if answer_mode == "plain":
        return text.strip() or None
    from harness.verify import extract_answer

    ans = extract_answer(text)
    return ans.strip() if ans is not None and ans.strip() else None


def equivalent(gold: str | None, other: str | None, timeout: float | None = 5.0) -> bool:
    """Same semantic cluster? A missing answer is equivalent to nothing (the authors' ``verify('', x)`` is False)."""
    if gold is None or other is None:
        return False
    if gold == other:
        return True
    if _INT.fullmatch(gold) and _INT.fullmatch(other):
        return int(gold) == int(other)
    from harness.verify import GoldParseError, verify

    try:
        return bool(verify(gold, other, mode="plain", timeout=timeout).correct)
    except GoldParseError:
        return False


def cluster_ids(answers: list, reward_mode: str, eq=equivalent) -> list[int]:
    """Semantic cluster id per answer: ``trl`` = ``get_semantic_ids_by_rule`` (i opens a cluster, every later j
    equivalent to i is (re)assigned to it); ``verl`` = ``post_semantic_cluster`` (j joins the first cluster whose
    first member it matches). A missing answer (None) is a cluster of its own in both."""
    _choice("reward_mode", reward_mode, REWARD_MODES)
    ids = [-1] * len(answers)
    if reward_mode == "trl":
        nxt = 0
        for i, a in enumerate(answers):
            if ids[i] == -1:
                ids[i] = nxt
                for j in range(i + 1, len(answers)):
                    if eq(a, answers[j]):
                        ids[j] = nxt
                nxt += 1
        return ids
    firsts: list[int] = []  # index of each cluster's first member
    for i, a in enumerate(answers):
        k = next((k for k, f in enumerate(firsts) if a is not None and eq(answers[f], a)), None)
        if k is None:
            firsts.append(i)
            k = len(firsts) - 1
        ids[i] = k
    return ids


def semantic_entropy(sizes) -> float:
    """H = -sum p ln p of cluster shares p = size / G, in nats (the authors' numpy float64 formula)."""
    counts = np.asarray(sizes, dtype=np.int64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def all_distinct(sizes, distinct_check: str) -> bool:
    """The TRL reward's all-distinct rule (see the module docstring for the two readings)."""
    _choice("distinct_check", distinct_check, DISTINCT_CHECKS)
    n = int(sum(sizes))
    if distinct_check == "clusters":
        return len(sizes) == n
    return not semantic_entropy(sizes) < math.log(n)


def group_rewards(answers: list, reward_mode: str, distinct_check: str, eq=equivalent) -> tuple[list[float], dict]:
    """EMPO rewards of one group and its statistics (entropy H, cluster count, majority share and response)."""
    ids = cluster_ids(answers, reward_mode, eq)
    sizes = np.bincount(ids)
    G = len(answers)
    freq = [float(sizes[k] / G) for k in ids]
    if reward_mode == "verl":
        rewards = freq
        zeroed = False
    else:
        zeroed = all_distinct(sizes, distinct_check)
        rewards = [0.0 if zeroed or a is None else f for a, f in zip(answers, freq)]
    top = int(np.argmax(freq))  # verl empo_metrics: the estimated label is the first response of a largest cluster
    return rewards, {"H": semantic_entropy(sizes), "n_clusters": len(sizes), "majority_ratio": freq[top],
                     "majority_index": top, "zeroed": zeroed}


@register_reward(
    "empo", paper="empo", task_reward_weight=0.0, label_free=True,
    source=f"arXiv 2504.05812; {AT} {TRL_FILE} get_empo_math_reward + {SU_FILE} get_semantic_ids_by_rule (TRL); "
           f"{VERL_FILE} post_semantic_cluster + empo_metrics reward_type='entropy' (verl)",
    hparams={
        "reward_mode": HParam("trl", " | ".join(REWARD_MODES), "trl: unanswered responses and all-distinct groups "
                              "get 0; verl: every response gets its cluster share (unanswered: 1/G)",
                              f"{TRL_FILE}:150-217; {VERL_FILE}:85-127,211-213"),
        "answer_mode": HParam("boxed", " | ".join(ANSWER_MODES), "final answer: boxed = harness.verify."
                              "extract_answer (last \\boxed{}); plain = the stripped completion (addition smoke task)",
                              f"{TRL_FILE}:164-190 (math_verify parse, boxed first)"),
        "distinct_check": HParam("clusters", " | ".join(DISTINCT_CHECKS), "all-distinct rule: clusters = all G "
                                 "answers distinct; float = the code's `H < math.log(G)` float comparison",
                                 f"{TRL_FILE}:203"),
        "verify_timeout": HParam(5.0, "s", "time limit of one non-integer equivalence check in the verifier's "
                                 "worker pool (null or 0: in-process, no limit)", "harness.verify.verify",
                                 type=float | None),
        "group_filter": HParam("none", " | ".join(FILTERS), "data hook: none = keep every group (the released "
                               "code); entropy = drop groups with H outside [delta_low, delta_high) (paper); "
                               "confidence = keep groups whose majority share is in [confidence_lower_bound, "
                               "confidence_upper_bound] (verl)",
                               f"paper, entropy thresholding [section unverified]; {TRL_FILE}:202-203; "
                               f"{VERL_TRAINER}:221-229"),
        "delta_low": HParam(0.0, "nats", "lower semantic-entropy bound (kept: H >= delta_low); the code has none",
                            f"paper delta_low [unverified]; none in {TRL_FILE}"),
        "delta_high": HParam(None, "nats", "upper bound (kept: H < delta_high); null = ln G via the all-distinct "
                             "rule (distinct_check)", f"{TRL_FILE}:203 total_entropy < math.log(n_generations)",
                             type=float | None),
        "confidence_lower_bound": HParam(0.0, "share", "group_filter=confidence: smallest kept majority share",
                                         "verl-empo/recipe/empo/src/config/dapo_trainer.yaml:31 (scripts: 0.3, "
                                         "enable_filter_groups=False)"),
        "confidence_upper_bound": HParam(1.0, "share", "group_filter=confidence: largest kept majority share",
                                         "verl-empo/recipe/empo/src/config/dapo_trainer.yaml:30"),
    },
)
def empo_reward(rctx: RewardContext, *, reward_mode: str, answer_mode: str, distinct_check: str,
                verify_timeout: float | None, **_filter) -> list[float]:
    """EMPO: reward = share of the group in the response's semantic answer cluster (no labels)."""
    _choice("reward_mode", reward_mode, REWARD_MODES)
    _choice("distinct_check", distinct_check, DISTINCT_CHECKS)
    _check_filter(**_filter)
    G = rctx.group_size
    if len(rctx) % G:
        raise ValueError(f"empo: {len(rctx)} completions are not whole groups of {G}")
    answers = [extract(c, answer_mode) for c in rctx.completions]
    eq = lambda a, b: equivalent(a, b, verify_timeout)  # noqa: E731
    out, stats = [], []
    for s in range(0, len(answers), G):
        r, st = group_rewards(answers[s:s + G], reward_mode, distinct_check, eq)
        out += r
        stats.append(st)
    log = rctx.log_metric or (lambda name, value: None)
    mean = lambda key: float(np.mean([float(st[key]) for st in stats]))  # noqa: E731
    log("empo/semantic_entropy", mean("H"))
    log("empo/n_clusters", mean("n_clusters"))
    log("empo/majority_ratio", mean("majority_ratio"))
    log("empo/frac_all_distinct_zeroed", mean("zeroed"))
    log("empo/frac_no_answer", sum(a is None for a in answers) / len(answers))
    return out


def _check_filter(*, group_filter: str, delta_low: float, delta_high: float | None, confidence_lower_bound: float,
                  confidence_upper_bound: float) -> None:
    _choice("group_filter", group_filter, FILTERS)
    if delta_high is not None and not delta_low < delta_high:
        raise ValueError(f"empo: delta_low ({delta_low}) must be below delta_high ({delta_high})")
    if not 0.0 <= confidence_lower_bound <= confidence_upper_bound <= 1.0:
        raise ValueError("empo: need 0 <= confidence_lower_bound <= confidence_upper_bound <= 1, got "
                         f"{confidence_lower_bound}, {confidence_upper_bound}")


def sizes_from_rewards(r: list[float], group_size: int) -> list[int]:
    """Cluster sizes of one group from its EMPO rewards: a reward k/G > 0 marks a member of a cluster of k (so k
    responses carry it per such cluster); a 0 is a response without an answer (a cluster of its own), or every
    response of an all-distinct group."""
    G = group_size
    sizes, seen = [], {}
    for v in r:
        if v != 0:
            seen[v] = seen.get(v, 0) + 1
    for v, m in seen.items():
        k = round(v * G)
        if not (k >= 1 and abs(v * G - k) < 1e-4 and m % k == 0):
            raise ValueError(f"empo data hook: group rewards {r} are not EMPO cluster shares k/{G}: the filter reads "
                             "the semantic entropy from the EMPO reward alone (task_reward_weight 0)")
        sizes += [k] * (m // k)
    return sizes + [1] * (G - sum(sizes))


@register_data("empo", paper="empo", source=f"arXiv 2504.05812 (entropy thresholding); {AT} {TRL_FILE}:202-211; "
                                           f"{VERL_TRAINER}:221-229 (filter_groups, confidence bounds)")
def empo_filter(bctx: BatchContext, *, group_filter: str, delta_low: float, delta_high: float | None,
                confidence_lower_bound: float, confidence_upper_bound: float, distinct_check: str,
                **_) -> BatchDecision | None:
    """Drop the groups whose semantic entropy (or majority share) is outside the thresholds, from the loss."""
    _check_filter(group_filter=group_filter, delta_low=delta_low, delta_high=delta_high,
                  confidence_lower_bound=confidence_lower_bound, confidence_upper_bound=confidence_upper_bound)
    if bctx.stage != "scored" or group_filter == "none":
        return None
    G = bctx.group_size
    rg = torch.nan_to_num(bctx.rewards.detach().double().cpu(), nan=0.0).view(-1, G).tolist()
    keep, H = [], []
    for r in rg:
        sizes = sizes_from_rewards(r, G)
        h = semantic_entropy(sizes)
        H.append(h)
        if group_filter == "confidence":  # verl: max of the group's scores within [lower, upper]
            keep.append(confidence_lower_bound <= max(r) <= confidence_upper_bound)
        else:
            below = not all_distinct(sizes, distinct_check) if delta_high is None else h < delta_high
            keep.append(h >= delta_low and below)
    k = torch.tensor(keep, dtype=torch.bool)
    return BatchDecision(keep=k.repeat_interleave(G), metrics={
        "empo/frac_filtered": float((~k).double().mean()),
        "empo/kept_semantic_entropy": float(np.mean([h for h, ok in zip(H, keep) if ok])) if any(keep) else 0.0})
