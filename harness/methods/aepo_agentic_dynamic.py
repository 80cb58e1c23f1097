"""``aepo_agentic_dynamic`` (AEPO, arXiv 2510.14545; the port and its sources: :mod:`harness.methods.aepo_agentic`)
-- ``aepo_agentic`` with ``enable_dynamic_rollouts: True`` (``_calculate_initial_rollouts_dynamical``): before the tree, per prompt
(1) an ``H_root`` probe, a first turn sampled from the prompt (up to ``initial_entropy_tokens`` = 50 tokens, the
template's stops) and never stepped, its step entropy over the first ``window`` tokens; (2) one monitor episode,
played like a trajectory (tools and all), whose every turn's step entropy enters ``mean H_step``; neither is trained
(the code discards them too). The group then starts with ``m = clip(int(k sigmoid(0.5 (H_root - mean H_step))) + 1,
1, k)`` global rollouts, and ARPO/AEPO branching fills the rest. Golden against the authors' function on scripted
segments (H_root, step entropies, m: tests/test_method_aepo_agentic_golden.py). The code's monitor segments end at
a tool tag, EOS or the response budget (a segment cut by the batch's token cap continues); ours are the task's turns
(on arpo_tools continued to the budget the same way, ``Template.continue_cut``).
"""
from __future__ import annotations

import math

from harness.methods.aepo_agentic import (HPARAMS, PAPER, ROLLOUT_CODE, SOURCE, AepoScheduler, aepo_loss,
                                          split_metrics)
from harness.methods.arpo import ArpoScheduler, play, uniform_from, window_entropy
from harness.methods.context import RolloutContext
from harness.methods.registry import HParam, register_loss, register_rollout

DYNAMIC = "aepo_agentic_dynamic"


def dynamic_initial_rollouts(k: int, h_root: float, h_steps: list[float], scale: float = 0.5) -> int:
    """``_calculate_initial_rollouts_dynamical`` step 3: ``int(k sigmoid(scale (H_root - mean H_step))) + 1``
    within [1, k]; a monitor without step entropies uses ``H_root`` for their mean."""
    mean = sum(h_steps) / len(h_steps) if h_steps else h_root
    x = scale * (h_root - mean)
    return max(1, min(int(k * (1.0 / (1.0 + math.exp(-x)))) + 1, k))


class MonitorScheduler(ArpoScheduler):
    """The pre-monitoring pass: one episode per prompt that never branches; keeps the nodes (their turns' step
    entropies, :meth:`ArpoScheduler.entropy`)."""

    def __init__(self, *, top_k: int, window: int):
        super().__init__(initial_rollouts=1, beam_size=1, branch_probability=0.0, entropy_weight=0.0, top_k=top_k,
                         window=window, uniform=lambda: 0.0)

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        super().start(n_groups, size, vocab_size)
        return [1] * n_groups

    def grow(self, live: list, groups: list[list]) -> tuple[list, list[int]]:
        self.groups = groups
        return [], []

    def step_entropies(self) -> list[list[float]]:
        return [[self.entropy(g[0], t) for t in range(g[0].own_turns)] if g else [] for g in self.groups]


class DynamicAepoScheduler(AepoScheduler):
    """AEPO's schedule whose groups start with the pre-monitoring split's ``m`` global rollouts each."""

    def __init__(self, *, initial_counts: list[int], **aepo):
        super().__init__(initial_rollouts=1, **aepo)
        self.counts = list(initial_counts)

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        super().start(n_groups, size, vocab_size)
        if len(self.counts) != n_groups:
            raise ValueError(f"{DYNAMIC}: {len(self.counts)} split counts for {n_groups} groups")
        return [min(m, size) for m in self.counts]

    def metrics(self, prefix: str = PAPER) -> dict[str, float]:
        return {**super().metrics(prefix), **split_metrics([min(m, self.size) / self.size for m in self.counts],
                                                           prefix)}


DYNAMIC_HPARAMS = {
    **{k: v for k, v in HPARAMS.items() if k != "initial_rollouts"},
    "initial_entropy_tokens": HParam(50, "tokens", "length cap of the H_root probe (a first turn sampled from the "
                                     "prompt and never stepped; its first `window` tokens make H_root)",
                                     f"{ROLLOUT_CODE.rsplit(' ', 1)[0]} _calculate_initial_rollouts_dynamical: "
                                     "self.config.get('initial_entropy_tokens', 50) (no config sets it)"),
    "split_scale": HParam(0.5, "1 / normalised-entropy unit", "m = int(k sigmoid(scale (H_root - mean H_step))) + 1",
                          f"{ROLLOUT_CODE.rsplit(' ', 1)[0]} _calculate_initial_rollouts_dynamical: "
                          "sigmoid_input = 0.5 * entropy_diff"),
}


@register_rollout(DYNAMIC, kind="rollout_func", paper=PAPER, source=SOURCE, hparams=DYNAMIC_HPARAMS,
                  description="aepo_agentic with the released code's entropy pre-monitoring split switched on "
                              "(enable_dynamic_rollouts: True; the released scripts run it off)")
def dynamic_rollout(prompts: list, rctx: RolloutContext, *, episodes=None, **hp) -> dict:
    """The released rollout with ``enable_dynamic_rollouts``: before the tree, per prompt an ``H_root`` probe and one
    monitor episode (neither trained); the prompt's tree starts with ``m`` global rollouts
    (:func:`dynamic_initial_rollouts`) instead of ``initial_rollouts``."""
    keys = ("beam_size", "branch_probability", "entropy_weight", "consecutive_penalty", "top_k", "window")
    if episodes is None or not rctx.training:  # play() refuses the first and plays flat episodes in evaluation
        sched = DynamicAepoScheduler(initial_counts=[], **{k: hp[k] for k in keys}, uniform=uniform_from(None))
        return play(prompts, rctx, episodes, sched, DYNAMIC, PAPER)
    k = episodes.group_size
    heads = list(prompts[::k])
    vocab = len(episodes.tok.get_vocab())
    probe = episodes.probe(heads, top_k=hp["top_k"], window=hp["window"], max_new_tokens=hp["initial_entropy_tokens"])
    h_root = [window_entropy(rec, vocab) for rec in probe]
    monitor = MonitorScheduler(top_k=hp["top_k"], window=hp["window"])
    episodes.monitor(heads, monitor)
    h_steps = monitor.step_entropies()
    counts = [dynamic_initial_rollouts(k, hr, hs, hp["split_scale"]) for hr, hs in zip(h_root, h_steps)]
    sched = DynamicAepoScheduler(initial_counts=counts, **{k_: hp[k_] for k_ in keys},
                                 uniform=uniform_from(rctx.generator))
    out = play(prompts, rctx, episodes, sched, DYNAMIC, PAPER)
    if rctx.log_metric is not None:
        steps = [h for hs in h_steps for h in hs]
        rctx.log_metric(f"{PAPER}/h_root", sum(h_root) / max(len(h_root), 1))
        if steps:
            rctx.log_metric(f"{PAPER}/h_step_monitor", sum(steps) / len(steps))
    return out


register_loss(DYNAMIC, paper=PAPER, source=SOURCE)(aepo_loss)
