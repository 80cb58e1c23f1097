"""Smoke tier, specification-dialogue task (Nous, arXiv 2510.27410): ask the clarifying question that resolves the
most uncertainty about a hidden specification.

A hidden specification gives each of four independent categorical attributes a value (:data:`ATTRIBUTES`: size 2
values, fill 3, shape 4, colour 8). The prompt is the dialogue so far, written as what is known about each attribute:
its value (answered), a list of candidates (narrowed) or ``?`` (nothing known), then ``>``::

    size:small;fill:?;shape:circle|star;colour:?>

The completion is one move: a clarifying question naming one attribute (``colour?``) or a final answer, the values
in attribute order (``=small,solid,star,red``). A simulated user answers a question from the hidden spec (it names
the true value, :func:`simulate_user`; :func:`after_answer` continues the dialogue). Every prompt leaves at least one
attribute uncertain, so a final answer is always premature.

Belief state: per attribute, uniform over the candidates the prompt shows (the prior from the prompt; ``?``: all
values), the attributes independent. Asking about an attribute with c candidates gains log2(c) bits (the user's
answer collapses it); asking about an answered attribute gains 0 (a *redundant* question). Rows carry the belief as
distributions over all of each attribute's values (column ``belief``, JSON ``{attribute: {value: probability}}``)
and the hidden spec (column ``spec``, JSON ``{attribute: value}``): the method's information-gain reward
(:mod:`harness.methods.nous`) reads only those two.

Task reward and score (the GRPO baseline's binary reward): 1 when the move is *informative* (a question about an
attribute that is still uncertain), else 0 (redundant question, premature answer, anything malformed). The reward
logs ``task/redundant_frac``, ``task/answer_frac``, ``task/invalid_frac`` (shares of the completions),
``task/info_gain`` (mean bits per question) and ``task/optimal_frac`` (share of completions asking an attribute of
maximal entropy), for every method.

Pre-training traces: a teacher asks about an uncertain attribute chosen uniformly (sensible, but blind to how
uncertain each one is); with probability ``noise`` it makes a mistake instead, uniformly one of the redundant
questions or a premature final answer (a guess from the candidates). So the base model sometimes asks redundant
questions (the binary reward and the information gain both punish them) and does not prefer the most uncertain
attribute (only the information gain rewards that).
"""
from __future__ import annotations

import json
import math
import random

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PUNCT = [":", "|", ";", "?", "=", ",", ">"]
#: the attributes in prompt and answer order, with their values (independent, uniform prior)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": ("small", "large"),
    "fill": ("solid", "striped", "dotted"),
    "shape": ("circle", "square", "triangle", "star"),
    "colour": ("red", "green", "blue", "yellow", "black", "white", "pink", "grey"),
}
WORDS = list(ATTRIBUTES) + [v for vals in ATTRIBUTES.values() for v in vals]
VOCAB = SPECIALS + PUNCT + WORDS  # 32 tokens
MAX_POSITIONS = 64               # longest prompt 34 tokens + a final answer (8 tokens) + eos
P_KNOWN, P_NARROW = 0.4, 0.25    # per attribute: answered / narrowed to a candidate list / unknown (the rest)
#: a dialogue state: the candidate values left per attribute (all of them: unknown; one: known)
State = dict[str, tuple[str, ...]]


def build_tokenizer():
    from harness.data.wordlevel import word_level_tokenizer

    return word_level_tokenizer(VOCAB, WORDS)


# --------------------------------------------------------------------------------------- dialogue states -----
def render(state: State) -> str:
    """The prompt of a dialogue state: ``attr:value``, ``attr:a|b`` or ``attr:?`` per attribute, then ``>``."""
    parts = []
    for a, vals in ATTRIBUTES.items():
        c = state[a]
        parts.append(f"{a}:" + ("?" if len(c) == len(vals) else "|".join(c)))
    return ";".join(parts) + ">"


def uncertain(state: State) -> list[str]:
    return [a for a in ATTRIBUTES if len(state[a]) > 1]


def bits(state: State, attr: str | None = None) -> float:
    """Entropy (bits) of the uniform belief of one attribute, or of the whole state (attributes independent)."""
    if attr is not None:
        return math.log2(len(state[attr]))
    return sum(math.log2(len(c)) for c in state.values())


def sample_state(rng: random.Random) -> tuple[State, dict[str, str]]:
    """A hidden spec and a dialogue state consistent with it, with at least one attribute uncertain."""
    while True:
        spec = {a: rng.choice(vals) for a, vals in ATTRIBUTES.items()}
        state: State = {}
        for a, vals in ATTRIBUTES.items():
            r = rng.random()
            if r < P_KNOWN:
                state[a] = (spec[a],)
            elif r < P_KNOWN + P_NARROW and len(vals) >= 3:
                others = rng.sample([v for v in vals if v != spec[a]], rng.randint(1, len(vals) - 2))
                keep = {spec[a], *others}
                state[a] = tuple(v for v in vals if v in keep)
            else:
                state[a] = vals
        if uncertain(state):
            return state, spec


def simulate_user(spec: dict[str, str], attr: str) -> str:
    """The simulated user's answer to ``attr?``: the hidden spec's value."""
    if attr not in spec:
        raise ValueError(f"spec_dialogue: unknown attribute {attr!r}; valid: {', '.join(ATTRIBUTES)}")
    return spec[attr]


def after_answer(state: State, spec: dict[str, str], attr: str) -> State:
    """The dialogue state after the user answered ``attr?`` (the attribute becomes known)."""
    return {**state, attr: (simulate_user(spec, attr),)}


def row(state: State, spec: dict[str, str]) -> dict:
    belief = {a: {v: (1 / len(state[a]) if v in state[a] else 0.0) for v in vals} for a, vals in ATTRIBUTES.items()}
    return {"prompt": render(state), "answer": json.dumps({"candidates": state, "spec": spec}),
            "belief": json.dumps(belief), "spec": json.dumps(spec), "level": len(uncertain(state)),
            "bits": round(bits(state), 6)}


def split(n_val: int, n_train: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows, disjoint by prompt, drawn from ``seed`` (held-out first)."""
    rng = random.Random(seed)
    out: list[list[dict]] = [[], []]
    seen: set[str] = set()
    for i, n in ((1, n_val), (0, n_train)):
        while len(out[i]) < n:
            state, spec = sample_state(rng)
            p = render(state)
            if p not in seen:
                seen.add(p)
                out[i].append(row(state, spec))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- moves -------
def parse_move(completion: str) -> tuple[str, str | tuple[str, ...]] | None:
    """``("ask", attr)``, ``("answer", values)`` or None (malformed)."""
    text = completion.strip()
    if text.endswith("?") and text[:-1] in ATTRIBUTES:
        return "ask", text[:-1]
    if text.startswith("="):
        vals = tuple(text[1:].split(","))
        if len(vals) == len(ATTRIBUTES) and all(v in ATTRIBUTES[a] for a, v in zip(ATTRIBUTES, vals)):
            return "answer", vals
    return None


def _reference(answer_json: str) -> tuple[State, dict[str, str]]:
    ref = json.loads(answer_json)
    return {a: tuple(c) for a, c in ref["candidates"].items()}, ref["spec"]


def judge(completion: str, answer_json: str) -> dict:
    """What a move does to the dialogue: kind (ask/answer/invalid), gain in bits, redundant, optimal."""
    state, _ = _reference(answer_json)
    move = parse_move(completion)
    if move is None or move[0] == "answer":
        return {"kind": "invalid" if move is None else "answer", "gain": 0.0, "redundant": False, "optimal": False}
    attr = move[1]
    best = max(bits(state, a) for a in ATTRIBUTES)
    gain = bits(state, attr)
    return {"kind": "ask", "gain": gain, "redundant": gain == 0.0, "optimal": gain > 0 and gain == best}


def is_informative(completion: str, answer_json: str) -> bool:
    return judge(completion, answer_json)["gain"] > 0


def move_of(completion: str) -> str | None:
    """The move a completion commits to (maj@k votes), or None when malformed."""
    return completion.strip() if parse_move(completion) is not None else None


def informative_reward(completions, answer, **kwargs) -> list[float]:
    """TRL reward function (binary): 1.0 for a question about an attribute that is still uncertain, else 0.0."""
    verdicts = [judge(c[-1]["content"] if isinstance(c, list) else c, a) for c, a in zip(completions, answer)]
    log = kwargs.get("log_metric")
    if log is not None and verdicts:
        n = len(verdicts)
        asks = [v for v in verdicts if v["kind"] == "ask"]
        log("task/redundant_frac", sum(v["redundant"] for v in verdicts) / n)
        log("task/answer_frac", sum(v["kind"] == "answer" for v in verdicts) / n)
        log("task/invalid_frac", sum(v["kind"] == "invalid" for v in verdicts) / n)
        log("task/optimal_frac", sum(v["optimal"] for v in verdicts) / n)
        if asks:
            log("task/info_gain", sum(v["gain"] for v in asks) / len(asks))
    return [1.0 if v["gain"] > 0 else 0.0 for v in verdicts]


# ------------------------------------------------------------------------------------------ pre-training -----
def teacher_move(state: State, spec: dict[str, str], rng: random.Random, noise: float) -> str:
    """A pre-training target: a question about a uniformly chosen uncertain attribute; with probability ``noise`` a
    mistake instead, uniformly a redundant question or a premature final answer (a guess from the candidates)."""
    if rng.random() >= noise:
        return f"{rng.choice(uncertain(state))}?"
    mistakes = [f"{a}?" for a in ATTRIBUTES if a not in uncertain(state)] + ["answer"]
    pick = rng.choice(mistakes)
    if pick == "answer":
        return "=" + ",".join(rng.choice(state[a]) for a in ATTRIBUTES)
    return pick


def smoke_task():
    """The task as a :class:`harness.data.smoke_tasks.SmokeTask` (entry ``spec_dialogue`` of ``SMOKE_TASKS``)."""
    from harness.data.smoke_tasks import SmokeTask, generated_splits

    splits, pretrain_batch = generated_splits(
        "spec_dialogue", split, sample_state, lambda item: render(item[0]),
        lambda item, rng, pre: [(teacher_move(item[0], item[1], rng, pre.noise), False)])
    return SmokeTask("spec_dialogue", tuple(VOCAB), MAX_POSITIONS, build_tokenizer, splits, pretrain_batch,
                     informative_reward, is_informative, move_of, scorer="spec_dialogue.is_informative")
