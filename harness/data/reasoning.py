"""Smoke tier, reasoning task: chains of additions written as a chain of thought, answered in ``\\boxed{}``.

A problem is a sum of 3-8 one-digit terms, e.g. the prompt ``7+5+9+4=``. A response works through it one
addition at a time, announcing each step with a planning word, then commits to the answer::

     then 7+5=12 then 12+9=21 check 12+9=21 then 21+4=25 so \\boxed{25}<eos>

What the task has that two-digit addition lacks (issue 11), all measured on the pre-trained base model by
``harness task-report`` rather than assumed:

* **length and difficulty**: 20-100 tokens, longer for more terms; ``level`` (terms) and ``digits`` are columns of
  every row, so methods and reports can stratify by them;
* **forks**: the pre-training traces contain a share of wrong intermediate sums (``noise``) that the chain then
  carries forward, so the base model's entropy sits on the digits of each result and on the choice of the next
  planning word, while copying operands is near-deterministic;
* **phases**: reasoning (everything before ``\\boxed{``) and answer (``\\boxed{`` ... ``<eos>``), per token
  (:func:`phases`);
* **redundancy**: a share of steps is followed by a ``check`` that repeats the step; dropping it loses nothing;
* **truncation**: the longest chains with checks exceed the tier's ``max_completion_length``;
* **planning words**: `` then ``, `` check ``, `` so `` are single tokens (:data:`PLANNING_WORDS`);
* **a calculator tool** (task ``reasoning_calc``): a step may be written ``then <calc>19+30</calc>49``; the model
  writes the call, the environment writes the result (:class:`CalcEnvironment`), and those tokens are masked out
  of the loss (TRL's ``rollout_func`` with ``env_mask``).

The tokenizer is built here (no download): one token per digit and operator, one per word (spaces included).
Rewards use the project's verifier: the last ``\\boxed{}`` is extracted (:func:`harness.verify.extract_answer`);
integer answers are compared as integers, anything else goes through :func:`harness.verify.verify`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list("0123456789+=?")
WORDS = [" then ", " check ", " so ", "\\boxed{", "}", "<calc>", "</calc>"]
VOCAB = SPECIALS + CHARS + WORDS  # 24 tokens
PLANNING_WORDS = (" then ", " check ", " so ")
CALL_OPEN, CALL_CLOSE, TOOL_ERROR = "<calc>", "</calc>", "?"
PHASE_REASONING, PHASE_ANSWER = 0, 1
TERMS = (3, 4, 5, 6, 7, 8)  # difficulty level: number of terms
DIGITS = (1,)                # digits per term (two-digit terms: the tiny model did not learn their sums in a
                             # 600-step pilot, greedy accuracy 0.03-0.18; closing note of issue 11)
def build_tokenizer():
    from harness.data.wordlevel import word_level_tokenizer

    return word_level_tokenizer(VOCAB, WORDS)


@dataclass(frozen=True)
class Problem:
    terms: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "+".join(map(str, self.terms)) + "="

    @property
    def answer(self) -> int:
        return sum(self.terms)

    @property
    def level(self) -> int:
        return len(self.terms)

    @property
    def digits(self) -> int:
        return len(str(max(self.terms)))


def sample_problem(rng: random.Random) -> Problem:
    n, d = rng.choice(TERMS), rng.choice(DIGITS)
    lo, hi = (1, 9) if d == 1 else (10, 99)
    return Problem(tuple(rng.randint(lo, hi) for _ in range(n)))


def split(n_val: int, n_train: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out) problems, disjoint by prompt; drawn from ``seed`` (held-out first, balanced over levels)."""
    rng = random.Random(seed)
    val, seen = [], set()
    while len(val) < n_val:
        p = sample_problem(rng)
        if p.prompt not in seen:
            seen.add(p.prompt)
            val.append(p)
    train = []
    while len(train) < n_train:
        p = sample_problem(rng)
        if p.prompt not in seen:
            seen.add(p.prompt)
            train.append(p)
    return train, val


def rows(problems) -> list[dict]:
    return [{"prompt": p.prompt, "answer": str(p.answer), "level": p.level, "digits": p.digits} for p in problems]


def _corrupt(value: int, rng: random.Random) -> int:
    # plausible slips: a carry dropped or added, a units digit off by one
    return max(0, value + rng.choice([-10, -1, 1, 10]))


def trace(problem: Problem, rng: random.Random, *, noise: float, check_rate: float, tool_rate: float = 0.0
          ) -> tuple[list[tuple[str, bool]], int]:
    """A pre-training response as (text piece, written by the environment?) pieces, and its final answer.

    Each step adds the next term to the running sum. A step is a tool call with probability ``tool_rate`` (the
    environment writes the exact result) or else written by the model, wrong with probability ``noise`` (and the
    chain carries the wrong sum forward). After a step, a ``check`` repeats it with probability ``check_rate``."""
    pieces: list[tuple[str, bool]] = []
    acc = problem.terms[0]
    for t in problem.terms[1:]:
        exact = acc + t
        if rng.random() < tool_rate:
            pieces += [(f" then {CALL_OPEN}{acc}+{t}{CALL_CLOSE}", False), (str(exact), True)]
            step, new = f"{acc}+{t}={exact}", exact
        else:
            new = exact if rng.random() >= noise else _corrupt(exact, rng)
            step = f"{acc}+{t}={new}"
            pieces.append((f" then {step}", False))
        if rng.random() < check_rate:
            pieces.append((f" check {step}", False))
        acc = new
    pieces.append((f" so \\boxed{{{acc}}}", False))
    return pieces, acc


# ---------------------------------------------------------------------------------------------- rewards ------
def answer_of(completion: str) -> str | None:
    """The committed answer (the verifier's extraction: the last complete ``\\boxed{}``), or None."""
    from harness.verify import extract_answer

    return extract_answer(completion)


def is_correct(completion: str, answer: str) -> bool:
    """The verifier's answer equals ``answer`` (no box: wrong); in-process, no time limit (integers compare exactly)."""
    from harness.verify import answer_correct

    return answer_correct(answer, completion, timeout=None) is True


def has_check(completion: str) -> bool:
    """The response has a check step: ``check`` is one of its whitespace-separated words (the `` check `` planning
    word; the behaviour the policy_cliff sweep measures, :mod:`harness.analyze.cliff_sweep`, and rewards,
    :mod:`harness.methods.policy_cliff`, which states the same definition)."""
    return "check" in completion.split()


def boxed_reward(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when the last ``\\boxed{}`` equals the answer, else 0.0 (no box: 0.0, counted by
    ``task/no_answer_frac`` when TRL passes ``log_metric``)."""
    out = [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer)]
    log = kwargs.get("log_metric")
    if log is not None and completions:
        log("task/no_answer_frac", sum(answer_of(c) is None for c in completions) / len(completions))
    return out


def phases(tok, completion_ids: list[int]) -> list[int]:
    """Phase per completion token: 0 reasoning, 1 answer (from the last ``\\boxed{`` token on)."""
    box = tok.convert_tokens_to_ids("\\boxed{")
    last = max((i for i, t in enumerate(completion_ids) if t == box), default=len(completion_ids))
    return [PHASE_REASONING if i < last else PHASE_ANSWER for i in range(len(completion_ids))]


# ------------------------------------------------------------------------------------------ calculator ------
def calc(expression: str) -> str:
    """The environment's answer to ``<calc>expression</calc>``: the sum of ``+``-separated integers, or ``?``."""
    parts = expression.split("+")
    if not parts or not all(p.isdigit() and len(p) <= 6 for p in parts):
        return TOOL_ERROR
    return str(sum(int(p) for p in parts))


class CalcEnvironment:
    """The calculator as a HF ``LogitsProcessor`` (one per ``generate`` call): after a row emits ``</calc>``, the
    environment's result tokens are forced on the following steps (every other token's logit set to -inf), whatever
    the sampler does. The prompt length is taken from the first call (HF passes the padded prompt then).

    ``env_mask(row, n)`` gives 0 at the positions the environment wrote (TRL's ``env_mask``), ``metrics`` counts
    calls, calls with an invalid expression (answered ``?``) and calls still open when the row ended (no result
    is written; the response then usually has no answer and gets reward 0)."""

    def __init__(self, tok, prompt_len: int | None = None):
        self.tok, self.prompt_len = tok, prompt_len
        self.open_id = tok.convert_tokens_to_ids(CALL_OPEN)
        self.close_id = tok.convert_tokens_to_ids(CALL_CLOSE)
        self.queue: dict[int, list[int]] = {}
        self.forced: dict[int, set[int]] = {}
        self.calls = self.errors = 0

    def __call__(self, input_ids, scores):
        if self.prompt_len is None:
            self.prompt_len = input_ids.size(1)
        gen = input_ids[:, self.prompt_len:]
        t = gen.size(1)  # position (in the completion) of the token about to be generated
        forcing = False
        for row in range(input_ids.size(0)):
            if t and int(gen[row, -1]) == self.close_id and not self.queue.get(row):
                ids = gen[row].tolist()
                start = max((i for i, x in enumerate(ids[:-1]) if x == self.open_id), default=None)
                result = calc(self.tok.decode(ids[start + 1:-1])) if start is not None else TOOL_ERROR
                self.calls += 1
                self.errors += result == TOOL_ERROR
                self.queue[row] = self.tok(result, add_special_tokens=False)["input_ids"]
            if self.queue.get(row):
                if not forcing:  # never in place: HF keeps this very tensor as the step's raw logits
                    scores, forcing = scores.clone(), True
                nxt = self.queue[row].pop(0)
                self.forced.setdefault(row, set()).add(t)
                scores[row] = float("-inf")
                scores[row, nxt] = 0.0
        return scores

    def env_mask(self, row: int, n: int) -> list[int]:
        forced = self.forced.get(row, set())
        return [0 if i in forced else 1 for i in range(n)]

    def unclosed(self, completions_ids) -> int:
        """Completions whose last call never closed (a ``<calc>`` after the last ``</calc>``)."""
        n = 0
        for ids in completions_ids:
            ids = list(ids)
            last_open = max((i for i, x in enumerate(ids) if x == self.open_id), default=-1)
            last_close = max((i for i, x in enumerate(ids) if x == self.close_id), default=-1)
            n += last_open > last_close
        return n

    def metrics(self, completions_ids) -> dict[str, float]:
        """Totals over the batch (the caller divides by the number of completions)."""
        return {"tool/calls_per_completion": float(self.calls), "tool/errors_per_completion": float(self.errors),
                "tool/unclosed_frac": float(self.unclosed(completions_ids))}
