"""Smoke tier, instruction-following task (Light-IF, arXiv 2508.03178): write a short list of items under 2-4
checkable constraints.

A prompt states the constraints, the response is a string of item letters (``a``-``h``), e.g.::

    prompt   count 5; end e; avoid c :
    response bdage<eos>

Constraint kinds (:data:`KINDS`), each with an exact checker (:func:`check`):

* ``count K``   -- exactly K items (K in 3..7; always present, it fixes the length);
* ``start X``   -- the first item is X;
* ``end X``     -- the last item is X;
* ``avoid X``   -- X does not occur;
* ``include X`` -- X occurs at least once.

A prompt has ``count`` plus 1-3 of the other kinds (``level`` = number of constraints, 2-4), in random order, with
letters that can be satisfied together (no ``start``/``end``/``include`` letter equals the ``avoid`` letter). The
``answer`` column is the constraint spec (``count=5;end=e;avoid=c``), which the checkers read.

A response is well-formed when it is non-empty and consists of item letters only; a malformed response satisfies
no constraint. Rewards (all exact, no model):

* :func:`dense_score`: the fraction of the prompt's constraints satisfied (Light-IF's dense rule reward; the
  authors' ``IF.py`` ``validate_article_step_score`` gives partial credit per constraint);
* :func:`all_satisfied` / :func:`strict_reward`: 1 when every constraint holds, else 0 (the all-or-nothing reward,
  the authors' ``acc_score``; the task's reward and the held-out score). ``strict = floor(dense)``.

Pre-training traces (:func:`trace`) satisfy each constraint except with probability ``noise`` per constraint
(independently), so the pre-trained model satisfies most constraints but often not all of them: the all-or-nothing
reward is then sparse on prompts with many constraints (RL has signal, the dense reward more of it).

The task reward logs, per training batch, the share of groups (consecutive completions of one prompt) whose dense
and whose all-or-nothing rewards are not all equal (``task/nonzero_adv_groups_dense`` / ``..._binary``: groups with a
non-zero GRPO advantage under either reward), measured on the same completions in every run (the card's mechanism
check). A group constant in the dense reward is constant in its floor, so dense >= binary per batch by construction;
the check is about the size of the gap.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from harness.verify.constraints import (  # noqa: F401  (the task's checkers live with the verifier)
    ITEMS, KINDS, all_satisfied, check, dense_score, items_of, parse_spec, satisfied)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
COUNTS = (3, 4, 5, 6, 7)
OPTIONAL = KINDS[1:]
WORDS = [f"{k} " for k in KINDS] + ["; ", " :"]
VOCAB = SPECIALS + list(ITEMS) + [str(k) for k in COUNTS] + WORDS  # 4 + 8 + 5 + 7 = 24 tokens
LEVELS = (2, 3, 4)           # constraints per prompt (count + 1..3 others)
def build_tokenizer():
    from harness.data.wordlevel import word_level_tokenizer

    return word_level_tokenizer(VOCAB, WORDS)


# ------------------------------------------------------------------------------------------ constraints ------
@dataclass(frozen=True)
class Instruction:
    constraints: tuple[tuple[str, str], ...]   # (kind, value) in prompt order

    @property
    def prompt(self) -> str:
        return "; ".join(f"{k} {v}" for k, v in self.constraints) + " :"

    @property
    def spec(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.constraints)

    @property
    def level(self) -> int:
        return len(self.constraints)

    def get(self, kind: str) -> str | None:
        return dict(self.constraints).get(kind)


def vote_key(completion: str) -> str | None:
    """The answer a completion commits to (maj@k): its items, None when malformed."""
    return items_of(completion)


def nonzero_group_share(values: list[float], group_ids: list) -> float:
    """Share of groups (consecutive rows with the same id) whose values are not all equal (non-zero advantage)."""
    groups: list[list[float]] = []
    for i, (v, g) in enumerate(zip(values, group_ids)):
        if i == 0 or g != group_ids[i - 1]:
            groups.append([])
        groups[-1].append(v)
    return sum(max(g) != min(g) for g in groups) / len(groups) if groups else 0.0


def strict_reward(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when every constraint holds, else 0.0. With TRL's ``log_metric`` and ``prompts`` it
    logs the batch's dense-reward mean, malformed share and the non-zero-advantage group shares of both rewards."""
    dense = [dense_score(c, a) for c, a in zip(completions, answer)]
    out = [1.0 if d == 1.0 else 0.0 for d in dense]
    log, prompts = kwargs.get("log_metric"), kwargs.get("prompts")
    if log is not None and completions:
        log("task/dense_reward_mean", sum(dense) / len(dense))
        log("task/malformed_frac", sum(items_of(c) is None for c in completions) / len(completions))
        if prompts is not None:
            ids = [str(p) for p in prompts]
            log("task/nonzero_adv_groups_dense", nonzero_group_share(dense, ids))
            log("task/nonzero_adv_groups_binary", nonzero_group_share(out, ids))
    return out


# ---------------------------------------------------------------------------------------------- data ---------
def sample_instruction(rng: random.Random, level: int | None = None) -> Instruction:
    level = rng.choice(LEVELS) if level is None else level
    if level not in LEVELS:
        raise ValueError(f"instruct: level must be one of {LEVELS}, got {level!r}")
    kinds = ["count"] + rng.sample(OPTIONAL, level - 1)
    avoid = rng.choice(ITEMS) if "avoid" in kinds else None
    letters = [c for c in ITEMS if c != avoid]
    cons = [(k, str(rng.choice(COUNTS)) if k == "count" else avoid if k == "avoid" else rng.choice(letters))
            for k in kinds]
    rng.shuffle(cons)
    return Instruction(tuple(cons))


def split(n_val: int, n_train: int, seed: int) -> tuple[list[Instruction], list[Instruction]]:
    """(train, held-out) instructions, disjoint by prompt; drawn from ``seed`` (held-out first)."""
    rng = random.Random(seed)
    val, train, seen = [], [], set()
    for n, out in ((n_val, val), (n_train, train)):
        tries = 0
        while len(out) < n:
            p = sample_instruction(rng)
            tries += 1
            if tries > 50 * n + 10_000:
                raise ValueError(f"instruct: cannot draw {n} distinct prompts (about 5e5 exist)")
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
    return train, val


def rows(instructions) -> list[dict]:
    return [{"prompt": p.prompt, "answer": p.spec, "level": p.level} for p in instructions]


def trace(ins: Instruction, rng: random.Random, *, noise: float) -> str:
    """A pre-training response: it satisfies each constraint except with probability ``noise`` (independently per
    constraint: a length 1-2 off, another first/last letter, the avoided letter written, the included one left
    out). Violations that the length leaves no room for are skipped, so the realised rate is at most ``noise``."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"instruct: noise must be in [0, 1], got {noise!r}")
    bad = {k for k, _ in ins.constraints if rng.random() < noise}
    n = int(ins.get("count"))
    if "count" in bad:
        n = max(1, n + rng.choice([-2, -1, 1, 2]))
    avoid, include = ins.get("avoid"), ins.get("include")
    filler = [c for c in ITEMS if c != avoid and not (include and "include" in bad and c == include)]
    items = [rng.choice(filler) for _ in range(n)]
    fixed: set[int] = set()
    for kind, pos in (("start", 0), ("end", n - 1)):
        want = ins.get(kind)
        if want is None:
            continue
        if kind in bad:
            others = [c for c in filler if c != want]
            items[pos] = rng.choice(others) if others else items[pos]
        else:
            items[pos] = want
        fixed.add(pos)
    free = [i for i in range(n) if i not in fixed]
    if include and "include" not in bad and include not in items and free:
        items[rng.choice(free)] = include
        free = [i for i in free if items[i] != include]
    if avoid and "avoid" in bad and free:
        items[rng.choice(free)] = avoid
    return "".join(items)


# ------------------------------------------------------------------------------------------ smoke task -------
MAX_POSITIONS = 32   # prompt <= 12 tokens, completion <= 12 (count <= 7, +2 when pre-training noise lengthens it)


def smoke_task():
    """The :class:`harness.data.smoke_tasks.SmokeTask` ``instruct`` (registered in ``SMOKE_TASKS``)."""
    from harness.data.smoke_tasks import SmokeTask, generated_splits

    def split_rows(n_val, n_train, seed):
        train, val = split(n_val, n_train, seed)
        return rows(train), rows(val)

    splits, pretrain_batch = generated_splits("instruct", split_rows, sample_instruction, lambda p: p.prompt,
                                              lambda p, rng, pre: [(trace(p, rng, noise=pre.noise), False)])
    return SmokeTask("instruct", tuple(VOCAB), MAX_POSITIONS, build_tokenizer, splits, pretrain_batch, strict_reward,
                     all_satisfied, vote_key, scorer="instruct.all_satisfied")
