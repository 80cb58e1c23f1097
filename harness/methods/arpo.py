"""ARPO: Agentic Reinforced Policy Optimization (arXiv 2507.19849, RUC / Kuaishou): entropy-based adaptive branching
of multi-turn tool-use rollouts, count-capped at M trajectories per prompt; plain GRPO over the M trajectories.

Ported from the authors' rollout, ``vLLMRolloutWithTools.generate_sequences`` (dongguanting/ARPO@e257337,
``ARPO/verl_arpo_entropy/verl/workers/rollout/vllm_rollout/vllm_rollout_with_tools.py``; golden test
tests/test_method_arpo.py against that code at that commit):

- **Step entropy.** After each generation step, over the first 20 tokens of the step (``window``), every log-prob
  vLLM returns with ``logprobs=10`` (``top_k``: the 10 largest plus the sampled token's when it is not among them)
  goes into one list; ``H = -sum exp(l) l / log |V|`` over that list (a SUM over up to 20 tokens, not a mean;
  ``_calc_entropy`` and the loop after ``generate``). A trajectory's first own step sets its ``H_initial``
  (``initial_entropy_dict``; a branch's first own step is its own initial, as the authors index it).
- **Branching.** After the tool results are appended, for each prompt with still-active trajectories (prompts in
  order of their first active trajectory), for each active trajectory in order, up to ``beam_size - 1`` potential
  branches while fewer than M trajectories exist: draw ``u ~ U(0, 1)``, branch when
  ``clip(u - entropy_weight * (H_t - H_initial), 0, 1) <= branch_probability`` (P = clip(tau + beta dH, 0, 1)).
  A branch copies the trajectory with its tool results and continues from there.
- **Global rollouts.** ``initial_rollouts`` (N) trajectories start per prompt; a prompt with no active trajectory
  and fewer than M gets one new trajectory from the prompt per step, until M exist. Output: each prompt's M
  trajectories in creation order. Advantage: GRPO over the M (no hook here: TRL's).

**The household mapping** (smoke-agent tier): a "tool call" is a model turn's action, the "tool result" the game's
reply; every turn is a tool call and an episode ends when the game is done or a budget is spent (ARPO: a step
without a tool call ends the trajectory). Branching clones the game by reset + replaying the actions: the household
game is deterministic (:mod:`harness.evaluate.branching` refuses a game whose replay differs). The episode machinery
is :func:`harness.evaluate.branching.run_branching`; this module is the schedule (:class:`ArpoScheduler`).

**Deviations.** The authors draw ``random.random()`` from the unseeded global RNG; we draw from the run's seeded
generator (same order of draws). ``initial_entropy_dict`` lives on the rollout worker and is never cleared, so in
their code a trajectory index keeps the initial entropy of the same index in the first batch that used it; we start
every rollout afresh (a trajectory's own first step). Sampling log-probs are HF's processed scores (temperature and
filters), vLLM 0.8's are the raw model's; equal at the smoke tier (temperature 1, no top-p/top-k). Evaluation
rollouts (TRL's eval) play flat episodes, as ARPO validates with ``n = 1``, ``beam_size = 1``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from harness.methods.context import RolloutContext
from harness.methods.registry import HParam, register_rollout

PAPER = "arpo"
COMMIT = "e257337d1f105ba685057cb662c75e509d1c7b34"
CODE = (f"dongguanting/ARPO@{COMMIT[:7]} ARPO/verl_arpo_entropy/verl/workers/rollout/vllm_rollout/"
        "vllm_rollout_with_tools.py vLLMRolloutWithTools.generate_sequences + _calc_entropy")
SCRIPT = f"dongguanting/ARPO@{COMMIT[:7]} ARPO/scripts/ARPO_7B_Reasoning_1node.sh"


def window_entropy(turn: list[list[float]], vocab_size: int) -> float:
    """ARPO's step entropy: ``-sum exp(l) l`` over every recorded log-prob of the step's first tokens (per token:
    the top-k and, when outside them, the sampled token's), divided by ``log vocab_size``; 0 without any."""
    logps = [lp for tok in turn for lp in tok if math.isfinite(lp)]  # vLLM never returns -inf; HF filters can
    if not logps:
        return 0.0
    p = [math.exp(lp) for lp in logps]
    return -sum(a * b for a, b in zip(p, logps)) / math.log(vocab_size)


def branch_probability(delta_h: float, tau: float, beta: float) -> float:
    """P(branch) of one potential branch: ``clip(tau + beta * dH, 0, 1)`` (the authors' ``u - beta dH <= tau``)."""
    return min(1.0, max(0.0, tau + beta * delta_h))


def uniform_from(generator: torch.Generator | None) -> Callable[[], float]:
    """U(0, 1) draws from the run's seeded generator (the authors' ``random.random()``)."""
    return lambda: float(torch.rand((), generator=generator, dtype=torch.float64))


class ArpoScheduler:
    """ARPO's tree schedule (a :class:`harness.evaluate.branching.TreeScheduler`); ``uniform()`` draws U(0, 1)."""

    def __init__(self, *, initial_rollouts: int, beam_size: int, branch_probability: float, entropy_weight: float,
                 top_k: int, window: int, uniform: Callable[[], float], **_):
        check(dict(initial_rollouts=initial_rollouts, beam_size=beam_size, branch_probability=branch_probability,
                   top_k=top_k, window=window))
        self.initial, self.beam, self.tau, self.beta = initial_rollouts, beam_size, branch_probability, entropy_weight
        self.top_k, self.window, self.uniform = top_k, window, uniform
        self.size, self.vocab, self.groups = 0, 2, []
        self.decisions: list[tuple[float, float, bool]] = []  # (dH, P(branch), branched) per potential branch

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        self.size, self.vocab = size, vocab_size
        return [min(self.initial, size)] * n_groups

    def entropy(self, node, turn: int) -> float:
        """H of ``node``'s own turn ``turn`` (cached in its tag)."""
        hs = node.tag.setdefault("H", [])
        while len(hs) < node.own_turns:
            hs.append(window_entropy(node.turn_logps[len(hs)], self.vocab))
        return hs[turn]

    def branch_now(self, node, groups) -> bool:
        """One potential branch of ``node``: a draw against ARPO's entropy rule (the order of operations of
        ``generate_sequences``: ``prob = random() - beta * dH``, clipped, ``> tau``: no branch)."""
        dh = self.entropy(node, -1) - self.entropy(node, 0)
        prob = max(0.0, min(1.0, self.uniform() - self.beta * dh))
        go = not prob > self.tau
        self.decisions.append((dh, branch_probability(dh, self.tau, self.beta), go))
        return go

    def eligible(self, group: int) -> bool:
        return True

    def grow(self, live: list, groups: list[list]) -> tuple[list, list[int]]:
        """Branches of the active trajectories, then one new root per prompt with none active and fewer than M."""
        self.groups = groups
        by_group: dict[int, list] = {}
        for n in live:  # prompts in order of their first active trajectory (the authors' active_by_sample)
            by_group.setdefault(n.group, []).append(n)
        branches = []
        for g, nodes in by_group.items():
            remaining = self.size - len(groups[g])
            if remaining <= 0 or not self.eligible(g):
                continue
            created = 0
            for node in nodes:
                per = min(self.beam - 1, remaining - created)
                if per <= 0:
                    break
                made = 0
                for _ in range(per):
                    if self.branch_now(node, groups):
                        branches.append(node)
                        made += 1
                created += made
                self.after_decisions(node, made)
                if created >= remaining:
                    break
        return branches, self.new_roots(by_group, groups)

    def after_decisions(self, node, made: int) -> None:
        """Hook for subclasses (AEPO's branch streaks)."""

    def new_roots(self, by_group: dict, groups: list[list]) -> list[int]:
        return [g for g in range(len(groups)) if g not in by_group and len(groups[g]) < self.size]

    def metrics(self, prefix: str = PAPER) -> dict[str, float]:
        """Means over the rollout: step entropies of the first turn of roots (the step-1 baseline) and of turns
        after a tool result, their difference, dH and P(branch) over the potential branches, the branch rate."""
        first = [self.entropy(n, 0) for g in self.groups for n in g if n.parent < 0 and n.own_turns]
        after = [self.entropy(n, t) for g in self.groups for n in g for t in range(n.own_turns)
                 if t > 0 or n.parent >= 0]
        out = {}
        if first:
            out[f"{prefix}/entropy_first_turn"] = sum(first) / len(first)
        if after:
            out[f"{prefix}/entropy_after_tool"] = sum(after) / len(after)
        if first and after:
            out[f"{prefix}/entropy_rise"] = out[f"{prefix}/entropy_after_tool"] - out[f"{prefix}/entropy_first_turn"]
        if self.decisions:
            n = len(self.decisions)
            out[f"{prefix}/delta_entropy"] = sum(d for d, _, _ in self.decisions) / n
            out[f"{prefix}/branch_prob"] = sum(p for _, p, _ in self.decisions) / n
            out[f"{prefix}/branch_rate"] = sum(b for _, _, b in self.decisions) / n
        return out


def check(hp: dict) -> None:
    for k in ("initial_rollouts", "beam_size", "top_k", "window"):
        if k in hp and (not isinstance(hp[k], int) or hp[k] < 1):
            raise ValueError(f"{PAPER}: {k} must be an integer >= 1, got {hp[k]!r}")
    if "branch_probability" in hp and not 0.0 <= hp["branch_probability"] <= 1.0:
        raise ValueError(f"{PAPER}: branch_probability must be in [0, 1], got {hp['branch_probability']!r}")


def play(prompts: list, rctx: RolloutContext, episodes, scheduler, name: str, prefix: str) -> dict:
    """The tree rollout of a branching method (training), flat episodes in evaluation; logs the schedule's metrics."""
    if episodes is None:
        raise ValueError(f"{name} branches multi-turn episodes: it needs a task that plays episodes (data.task: "
                         "household, tier smoke-agent), not a single-turn task")
    if not rctx.training:
        return episodes.play(prompts)
    out = episodes.play(prompts, scheduler)
    if rctx.log_metric is not None:
        for k, v in scheduler.metrics(prefix).items():
            rctx.log_metric(k, v)
    return out


HPARAMS = {
    "initial_rollouts": HParam(8, "trajectories per prompt (N)", "global rollouts each prompt starts with; branches "
                               "and later global rollouts fill up to M = num_generations",
                               f"{SCRIPT} INITIAL_ROLLOUTS=8 (with ROLLOUT_N=16)"),
    "beam_size": HParam(2, "branches + 1 per trajectory and step", "at most beam_size - 1 branches of one active "
                        "trajectory per step", f"{SCRIPT} BEAM_SIZE=2"),
    "branch_probability": HParam(0.5, "probability", "tau: P(branch) at dH = 0", f"{SCRIPT} BRANCH_PROBABILITY=0.5"),
    "entropy_weight": HParam(0.2, "probability per normalised-entropy unit", "beta: P(branch) = clip(tau + beta dH)",
                             f"{SCRIPT} Entropy_weight=0.2"),
    "top_k": HParam(10, "log-probs per token", "vLLM logprobs=k: the k largest (+ the sampled token's)",
                    f"{CODE}: self.logprobs = 10"),
    "window": HParam(20, "tokens", "the first tokens of a step whose log-probs make its entropy",
                     f"{CODE}: for j in range(min(20, len(tokens)))"),
}


@register_rollout(PAPER, kind="rollout_func", paper=PAPER, hparams=HPARAMS,
                  source=f"arXiv 2507.19849 (ARPO); {CODE}; {SCRIPT}")
def arpo_rollout(prompts: list, rctx: RolloutContext, *, episodes=None, **hp) -> dict:
    """ARPO: entropy-based adaptive branching of the task's episodes, count-capped at the group size."""
    return play(prompts, rctx, episodes, ArpoScheduler(**hp, uniform=uniform_from(rctx.generator)), PAPER, PAPER)
