"""Nous: "Dialogue as Discovery: Navigating Human Intent Through Principled Inquiry" (arXiv 2510.27410; v2 title
"Closing the Expression Gap in LLM Instructions via Socratic Questioning"). The reward of a clarifying question is
its information gain: the reduction of the Shannon entropy of a structured belief state over the task
specification, whose attributes are modelled as independent.

No code released (no repository found by code search or by name); hand-derived from the paper's abstract and the
shared reference card (shared/papers/nous.md), which give the form::

    b_t  = product over attributes a of categorical b_t(a)       (independent attributes)
    H(b) = sum_a H(b(a)) = -sum_a sum_v b(a)(v) log b(a)(v)
    r_t  = H(b_{t-1}) - H(b_t)                                    (after the user's answer to question t)

The belief update rule, the simulated user and the hyperparameters are not in what could be read (the method
section was not available here; see replications/nous/card.yaml). This port's choices, each an hparam or stated:

- belief before the question: the dataset column ``belief`` (JSON ``{attribute: {value: weight}}``; the prior from
  the prompt); each attribute's weights are normalised to sum to 1 (``normalise_belief``: weights must be >= 0 with
  a positive sum; harness choice, the paper's belief is a distribution);
- the simulated user answers a question about attribute a with the hidden spec's value (column ``spec``, JSON
  ``{attribute: value}``); the update is Bayes' rule with the likelihood 1[v in answer] (the consistent values
  keep their relative weights): an exact answer collapses b(a) to the true value, so r = H(b_{t-1}(a)) and a
  question about an attribute already known gains 0 (harness choice: the paper's simulator is not described);
- a completion that is not a question (``question_format`` with an attribute of the belief, e.g. ``colour?``) asks
  nothing, so nothing is learned: r = 0 (a final answer included; the paper's reward has no answer term);
- ``log_base``: 2 (bits; the paper says "Shannon entropy" without a base); ``normalize``: ``none`` (the paper's
  r_t, default), ``prior`` (r_t / H(b_{t-1}): the share of the remaining uncertainty resolved; 0 when H = 0) or
  ``max`` (r_t / sum_a log |values of a|: the share of the uniform-prior uncertainty). Under GRPO's group
  normalisation ``max`` is the same objective as ``none`` (one constant per task); ``prior`` re-weights prompts.

The reward replaces the task's (``task_reward_weight`` 0: the spec_dialogue task's binary "informative question"
reward, the GRPO baseline's reward, is still computed and logged). Logged: ``nous/info_gain_bits`` (mean gain in bits
over the completions that are questions), ``nous/redundant_frac`` (share of completions asking about an attribute
with zero entropy), ``nous/question_frac``, ``nous/prior_bits`` (mean H(b_{t-1})).
"""
from __future__ import annotations

import json
import math

from harness.methods.context import RewardContext
from harness.methods.registry import HParam, register_reward

PAPER = "Nous: Dialogue as Discovery (arXiv 2510.27410)"
SOURCE = "no code released; hand-derived from the abstract and shared/papers/nous.md (r_t = H(b_{t-1}) - H(b_t))"
NORMALIZE = ("none", "prior", "max")
EPS = 1e-12  # bits: a question gaining no more than this is redundant

Belief = dict[str, dict[str, float]]


# ------------------------------------------------------------------------------------------ belief state -----
def normalise_belief(raw) -> Belief:
    """A belief state from ``{attribute: {value: weight}}`` (a dict or its JSON), each attribute normalised to sum 1.
    Negative or non-finite weights, or an attribute whose weights sum to 0, are errors."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"nous: a belief state is a non-empty {{attribute: {{value: weight}}}} mapping, got {raw!r}")
    out: Belief = {}
    for attr, dist in raw.items():
        if not isinstance(dist, dict) or not dist:
            raise ValueError(f"nous: belief of attribute {attr!r} must be a non-empty {{value: weight}} mapping, "
                             f"got {dist!r}")
        w = {str(v): float(p) for v, p in dist.items()}
        if any(not math.isfinite(p) or p < 0 for p in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"nous: belief of attribute {attr!r} needs finite weights >= 0 with a positive sum, "
                             f"got {dist!r}")
        total = sum(w.values())
        out[str(attr)] = {v: p / total for v, p in w.items()}
    return out


def entropy(dist: dict[str, float], log_base: float = 2.0) -> float:
    """Shannon entropy of one categorical distribution (0 log 0 = 0), in units of ``log_base``."""
    return -sum(p * math.log(p) for p in dist.values() if p > 0) / math.log(log_base)


def belief_entropy(belief: Belief, log_base: float = 2.0) -> float:
    """H(b) = sum over the (independent) attributes of H(b(a))."""
    return sum(entropy(d, log_base) for d in belief.values())


def observe(belief: Belief, attr: str, values) -> Belief:
    """Bayes' rule for the answer "the value of ``attr`` is one of ``values``" (likelihood 1[v in values]); the
    other attributes are unchanged (independence). An answer the belief gives zero probability is an error."""
    if attr not in belief:
        raise ValueError(f"nous: unknown attribute {attr!r}; valid: {', '.join(belief)}")
    values = {str(v) for v in ([values] if isinstance(values, str) else values)}
    post = {v: (p if v in values else 0.0) for v, p in belief[attr].items()}
    z = sum(post.values())
    if z <= 0:
        raise ValueError(f"nous: answer {sorted(values)} for {attr!r} has zero probability under the belief "
                         f"{belief[attr]} (the hidden spec must be consistent with the belief)")
    return {**belief, attr: {v: p / z for v, p in post.items()}}


def information_gain(belief: Belief, attr: str, values, log_base: float = 2.0) -> float:
    """r = H(b) - H(b | answer): the entropy reduction when the user answers ``values`` about ``attr``."""
    return belief_entropy(belief, log_base) - belief_entropy(observe(belief, attr, values), log_base)


def max_entropy(belief: Belief, log_base: float = 2.0) -> float:
    """sum_a log |values of a|: the entropy of the uniform belief over the same values."""
    return sum(math.log(len(d)) for d in belief.values()) / math.log(log_base)


def parse_question(completion, attributes, question_format: str = "{attr}?") -> str | None:
    """The attribute a completion asks about (the whole stripped completion equals ``question_format`` for it), or
    None (a final answer or anything else)."""
    if isinstance(completion, list):  # conversational: the last message
        completion = completion[-1]["content"] if completion else ""
    text = str(completion).strip()
    for attr in attributes:
        if text == question_format.format(attr=attr):
            return attr
    return None


def check_settings(log_base, normalize: str, question_format: str) -> None:
    if normalize not in NORMALIZE:
        raise ValueError(f"nous: unknown normalize {normalize!r}; valid: {', '.join(NORMALIZE)}")
    if isinstance(log_base, bool) or not isinstance(log_base, (int, float)) or not log_base > 0 or log_base == 1:
        raise ValueError(f"nous: log_base must be a number > 0 and != 1, got {log_base!r}")
    if "{attr}" not in question_format:
        raise ValueError(f"nous: question_format must contain '{{attr}}', got {question_format!r}")


def question_reward(belief: Belief, spec: dict, completion, *, log_base: float = 2.0, normalize: str = "none",
                    question_format: str = "{attr}?") -> tuple[float, dict]:
    """The reward of one completion and what it did (asked attribute, gain in bits, prior entropy in bits)."""
    check_settings(log_base, normalize, question_format)
    attr = parse_question(completion, belief, question_format)
    prior = belief_entropy(belief, log_base)
    info = {"attr": attr, "gain_bits": 0.0, "prior_bits": belief_entropy(belief, 2.0)}
    if attr is None:
        return 0.0, info
    if attr not in spec:
        raise ValueError(f"nous: the hidden spec has no value for {attr!r}; spec attributes: {', '.join(spec)}")
    gain = information_gain(belief, attr, [spec[attr]], log_base)
    info["gain_bits"] = gain * math.log(log_base) / math.log(2.0)
    if normalize == "prior":
        gain = gain / prior if prior > 0 else 0.0
    elif normalize == "max":
        hmax = max_entropy(belief, log_base)
        gain = gain / hmax if hmax > 0 else 0.0
    return gain, info


HPARAMS = {
    "log_base": HParam(2.0, "base of the logarithm", "entropy unit: 2 = bits, e = nats",
                       "paper (abstract): 'reduction of Shannon entropy'; base not stated -> bits [harness choice]"),
    "normalize": HParam("none", "choice", "none: r_t = H(b_{t-1}) - H(b_t) (paper); prior: r_t / H(b_{t-1}); "
                        "max: r_t / sum_a log|V_a|",
                        "none = paper (abstract; shared/papers/nous.md 'r_t = H(b_{t-1}) - H(b_t)'); prior, max: "
                        "harness variants (the paper's normalisation, if any, not read)"),
    "question_format": HParam("{attr}?", "format string", "a completion equal to this with an attribute of the "
                              "belief asks about it; anything else asks nothing (r = 0)",
                              "harness: the spec_dialogue task's question form (harness/data/spec_dialogue.py)"),
}


@register_reward("nous", paper=PAPER, source=SOURCE, hparams=HPARAMS, task_reward_weight=0.0,
                 description="information gain of a clarifying question: entropy reduction of a belief state over "
                             "independent categorical attributes")
def nous_reward(rctx: RewardContext, log_base: float, normalize: str, question_format: str) -> list[float]:
    check_settings(log_base, normalize, question_format)
    beliefs, specs = rctx.columns.get("belief"), rctx.columns.get("spec")
    if beliefs is None or specs is None:
        raise ValueError("nous: the reward needs the dataset columns 'belief' (JSON {attribute: {value: weight}}) "
                         "and 'spec' (JSON {attribute: value}), as the spec_dialogue smoke task gives; got columns: "
                         f"{', '.join(sorted(rctx.columns)) or '(none)'}")
    cache: dict[str, Belief] = {}
    out, infos = [], []
    for completion, b, s in zip(rctx.completions, beliefs, specs):
        key = b if isinstance(b, str) else json.dumps(b, sort_keys=True)
        belief = cache.get(key) or cache.setdefault(key, normalise_belief(b))
        spec = json.loads(s) if isinstance(s, str) else dict(s)
        r, info = question_reward(belief, spec, completion, log_base=log_base, normalize=normalize,
                                  question_format=question_format)
        out.append(float(r))
        infos.append(info)
    if rctx.log_metric is not None and infos:
        n = len(infos)
        asks = [i for i in infos if i["attr"] is not None]
        rctx.log_metric("nous/question_frac", len(asks) / n)
        rctx.log_metric("nous/redundant_frac", sum(i["gain_bits"] <= EPS for i in asks) / n)
        rctx.log_metric("nous/prior_bits", sum(i["prior_bits"] for i in infos) / n)
        if asks:
            rctx.log_metric("nous/info_gain_bits", sum(i["gain_bits"] for i in asks) / len(asks))
    return out

