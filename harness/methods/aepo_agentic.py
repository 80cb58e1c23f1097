"""AEPO, agentic: Agentic Entropy-Balanced Policy Optimization (arXiv 2510.14545, RUC / Kuaishou), built on ARPO
(:mod:`harness.methods.arpo`). Not ``aepo_entropy`` (2510.08141).

Two methods (replications/aepo_agentic/card.yaml):

``aepo_agentic`` -- **ported from the authors' released code** (the ``AEPO/`` folder of RUC-NLPIR/ARPO, read as the
fork multi-agent-deep-research/ARPO@ff66660 whose history up to that commit is upstream's), as the released scripts
run it (``AEPO/scripts/AEPO_Qwen3_14B_DeepResearch.sh``, ``AEPO_Qwen25_7B_DeepResearch.sh``, config
``ppo_trainer_dr.yaml``); golden test tests/test_method_aepo_agentic_golden.py against that code
(tests/fixtures/aepo_agentic_golden.json, recomputed by tests/fixtures/generators/aepo_agentic.py):

1. **Rollout** (``vllm_rollout_with_tools.py``, ``generate_sequences``): ARPO's tree rollout (``initial_rollouts``
   global trajectories, then branches of active trajectories, ``beam_size - 1`` per trajectory and step, count-capped
   at k) with AEPO's branch rule: ``prob = (u + entropy_weight * dH) * max(0, 1 - 0.05 c)``, clipped to [0, 1],
   branch when ``prob >= branch_probability``. ``c`` counts the consecutive rounds in which the PROMPT (its whole
   group, not one path) got new trajectories (branches or a fresh global one); a round that adds trajectories
   anywhere in the batch resets it to 0 for the prompts that got none (a round that adds none anywhere leaves it).
   The entropy pre-monitoring split (``_calculate_initial_rollouts_dynamical``, ``m = int(k sigmoid(0.5 (H_root -
   mean H_step))) + 1`` from a separate monitor pass) is switched off in both released scripts
   (``ENABLE_DYNAMIC_ROLLOUTS=False``), so ``aepo_agentic`` runs without it; ``aepo_agentic_dynamic`` switches it
   on (below).
2. **Loss** (``core_algos.py``, ``compute_policy_loss_entropy_balanced_clipping``): verl's dual-clip PPO surrogate
   with the upper clip bound ``(1 + eps_high) / sg(r) * r`` on EVERY token (entropy-balanced clipping: a token
   clipped above keeps the gradient ``(1 + eps_high) grad log p`` instead of 0; the lower bound stays a constant).
   The entropy-balanced advantage ``A (1 + 0.2 z(H))`` (z over the micro-batch's valid tokens) is switched on in the
   scripts but never runs there: ``dp_actor.update_policy`` computes token entropies only when ``entropy_coeff !=
   0`` and ``ppo_trainer_dr.yaml`` sets 0, so the function receives ``entropy=None``. Default off
   (``entropy_balanced_advantage: false``, as run); on, it is the code's formula (no floor: a factor below 0 flips
   the token's sign).

Deviations: draws come from the run's seeded generator (the authors' unseeded ``random.random()``, same order);
a micro-batch with a single valid token gets z = 0 (their ``std()`` of one value is NaN, which makes every
advantage NaN); the household mapping is ARPO's (a model turn's action is the tool call, the game's reply the tool
result); evaluation plays flat episodes.

``aepo_agentic_dynamic`` -- ``aepo_agentic`` with the split switched on: :mod:`harness.methods.aepo_agentic_dynamic`.

``aepo_agentic_interp`` -- **the harness's earlier interpretation** (of the abstract and a secondary summary,
before the code was readable; its pinned verdicts were the card's until the port), kept as a named variant:

1. **Entropy pre-monitoring** (rollout). Each group starts with ONE global episode, the monitor; once it has played
   ``monitor_turns`` turns or ended, ``m = clip(round(k sigmoid(global_beta (H_root - mean H_tool))), 1, k)`` (the
   summary's formula; k the group size): ``H_root`` is the monitor's first-turn entropy (its answer to the task),
   ``mean H_tool`` the mean over its turns after a tool result (none: ``H_root``, so m = k/2); ARPO's step entropy
   (:func:`~harness.methods.arpo.window_entropy`). The group then gets ``m - 1`` more global episodes; branches
   fill the remaining ``k - m`` (and, as in ARPO, a group with nothing playing and fewer than k gets one new global
   episode per turn). The monitor does not branch before the decision.
2. **Branch penalty** (rollout). ARPO's rule times a penalty for consecutive high-entropy branching:
   ``P = clip(tau + beta dH, 0, 1) * (1 - branch_penalty) ** s``, ``s`` the number of immediately preceding turns
   of this path after which it branched with ``dH > 0`` (a branch inherits its path's history).
3. **Gradient-preserving clipping of high-entropy tokens** (loss). Per token, ``Hn`` = the token entropy z-scored
   over the micro-batch's valid tokens; on high-entropy tokens (``Hn > 0``) the clipped ratio is
   ``sg(clip(r, 1 - clip_low, 1 + clip_high) / r) * r``: its value is the clipped ratio (the forward loss is PPO's)
   and its gradient is ``clip(r) * grad log p`` instead of 0; other tokens keep PPO's clip. Loss:
   ``-min(r A', c A')`` per token, TRL's ``loss_type`` normaliser.
4. **Entropy-aware advantage** (loss). ``A' = A * max(0, 1 + adv_entropy_weight * Hn)`` (prioritises high-entropy
   tokens; the 0 floor keeps the sign of A: a harness choice).

How the code differs from the interpretation: the gradient-preserving clip is on all tokens and on the upper bound
only; the advantage term is inert as released; the branch penalty is subtractive in probability (``1 - 0.05 c``
scales the draw, not P), counts rounds of the whole prompt and is 0.05 per round, not a halving per path branch;
the pre-monitoring split is off as released (and, switched on, a separate monitor pass with the k + 1 rounding).
"""
from __future__ import annotations

import math

import torch

from harness.methods.arpo import HPARAMS as ARPO_HPARAMS, ArpoScheduler, play, uniform_from
from harness.methods.context import RolloutContext, TokenContext
from harness.methods.registry import HParam, register_loss, register_rollout

PAPER = "aepo_agentic"
INTERP = "aepo_agentic_interp"
COMMIT = "ff6666069e6c28375ed63336c14cb456d172fe06"
REPO = f"multi-agent-deep-research/ARPO@{COMMIT[:7]} (RUC-NLPIR/ARPO upstream) AEPO/"
ROLLOUT_CODE = f"{REPO}verl_aepo_entropy/verl/workers/rollout/vllm_rollout/vllm_rollout_with_tools.py generate_sequences"
LOSS_CODE = f"{REPO}verl_aepo_entropy/verl/trainer/ppo/core_algos.py compute_policy_loss_entropy_balanced_clipping"
SCRIPT = f"{REPO}scripts/AEPO_Qwen3_14B_DeepResearch.sh"
CONFIG = f"{REPO}scripts/config/ppo_trainer_dr.yaml"
SOURCE = f"arXiv 2510.14545 (AEPO); {ROLLOUT_CODE}; {LOSS_CODE}; {SCRIPT}"
INTERP_SOURCE = ("arXiv 2510.14545 (AEPO) abstract + shared/papers/aepo_agentic.md [secondary]: the harness's "
                 "interpretation from before the authors' code was read; built on ARPO (dongguanting/ARPO@e257337)")
_G = "[guess] not given in the sources"


def split_count(k: int, h_root: float, h_tool: float, beta: float) -> int:
    """Global samples of a group of ``k``: ``k sigmoid(beta (H_root - H_tool))`` rounded half up, within [1, k]."""
    x = beta * (h_root - h_tool)
    sig = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return min(k, max(1, math.floor(k * sig + 0.5)))


def split_metrics(shares: list[float], prefix: str) -> dict[str, float]:
    """The global share m/k of the groups' split: mean and (population) standard deviation over groups."""
    if not shares:
        return {}
    mean = sum(shares) / len(shares)
    return {f"{prefix}/global_frac": mean,
            f"{prefix}/global_frac_std": math.sqrt(sum((x - mean) ** 2 for x in shares) / len(shares))}


class InterpScheduler(ArpoScheduler):
    """The interpretation: ARPO's schedule with an in-group monitor split and a per-path consecutive-branch penalty
    (module docstring)."""

    def __init__(self, *, global_beta: float, monitor_turns: int, branch_penalty: float, **arpo):
        super().__init__(**arpo)
        if not 0.0 <= branch_penalty <= 1.0 or not isinstance(monitor_turns, int) or monitor_turns < 1:
            raise ValueError(f"{PAPER}: need 0 <= branch_penalty <= 1 and monitor_turns >= 1")
        self.global_beta, self.monitor_turns, self.penalty = global_beta, monitor_turns, branch_penalty
        self.m: list[int | None] = []
        self.pre: list[int] = []
        self.decided_before: set[int] = set()

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        super().start(n_groups, size, vocab_size)
        self.m = [None] * n_groups
        return [1] * n_groups

    def global_count(self, monitor) -> int:
        hs = [self.entropy(monitor, t) for t in range(monitor.own_turns)]
        h_tool = sum(hs[1:]) / (len(hs) - 1) if len(hs) > 1 else hs[0]
        return split_count(self.size, hs[0], h_tool, self.global_beta)

    def streak(self, node, groups) -> int:
        """Consecutive turns right before this one after which the path branched with dH > 0."""
        if "hi" not in node.tag:  # a branch inherits its path's high-entropy branch turns
            parent = groups[node.group][node.parent] if node.parent >= 0 else None
            node.tag["hi"] = {t for t in parent.tag.get("hi", ()) if t < node.prefix_turns} if parent else set()
        t, s = node.path_turns - 1, 0
        while t - 1 - s in node.tag["hi"]:
            s += 1
        return s

    def branch_now(self, node, groups) -> bool:
        dh = self.entropy(node, -1) - self.entropy(node, 0)
        p = min(1.0, max(0.0, self.tau + self.beta * dh)) * (1.0 - self.penalty) ** self.streak(node, groups)
        go = self.uniform() <= p
        self.decisions.append((dh, p, go))
        if go and dh > 0:
            node.tag["hi"].add(node.path_turns - 1)
        return go

    def eligible(self, group: int) -> bool:
        return group in self.decided_before

    def grow(self, live: list, groups: list[list]) -> tuple[list, list[int]]:
        self.decided_before = {g for g, m in enumerate(self.m) if m is not None}
        playing = {n.group for n in live}
        self.pre = [0] * len(groups)
        for g, nodes in enumerate(groups):
            if self.m[g] is None and (g not in playing or nodes[0].own_turns >= self.monitor_turns):
                self.m[g] = self.global_count(nodes[0])
                self.pre[g] = self.m[g] - 1
        branches, roots = super().grow(live, groups)
        return branches, sorted([g for g, k in enumerate(self.pre) for _ in range(k)] + roots)

    def new_roots(self, by_group: dict, groups: list[list]) -> list[int]:
        """ARPO's fallback (one new global episode for a group with nothing playing, none about to start, and fewer
        than k) once the group's split is decided."""
        return [g for g in range(len(groups)) if self.m[g] is not None and g not in by_group and not self.pre[g]
                and len(groups[g]) < self.size]

    def metrics(self, prefix: str = PAPER) -> dict[str, float]:
        return {**super().metrics(prefix), **split_metrics([m / self.size for m in self.m if m is not None], prefix)}


INTERP_HPARAMS = {
    **{k: v for k, v in ARPO_HPARAMS.items() if k != "initial_rollouts"},  # one monitor starts each group
    "global_beta": HParam(1.0, "1 / normalised-entropy unit", "sensitivity of the global/branch split "
                          "m = k sigmoid(beta (H_root - H_tool))", f"formula [secondary]; value {_G}"),
    "monitor_turns": HParam(4, "model turns", "turns the monitor episode plays before the split is decided",
                            f"[interpretation] the summary measures H_tool 'after tool calls'; {_G}"),
    "branch_penalty": HParam(0.5, "factor per consecutive high-entropy branch", "P(branch) *= (1 - penalty)^s",
                             f"[interpretation] 'penalise consecutive high-entropy branching'; {_G}"),
    "clip_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", "ARPO/verl actor clip_ratio 0.2 [guess for AEPO]"),
    "clip_high": HParam(0.2, "ratio offset", "PPO clip 1 + eps_high",
                        "ARPO/verl actor clip_ratio 0.2 [guess for AEPO]"),
    "adv_entropy_weight": HParam(0.2, "advantage factor per z-scored entropy unit",
                                 "A' = A max(0, 1 + w Hn): entropy-aware advantage",
                                 "third-party port ARLArena compute_policy_loss_aepo: 0.2 [secondary]"),
}


@register_rollout(INTERP, kind="rollout_func", paper=PAPER, source=INTERP_SOURCE, hparams=INTERP_HPARAMS)
def interp_rollout(prompts: list, rctx: RolloutContext, *, episodes=None, **hp) -> dict:
    """AEPO as interpreted: entropy pre-monitoring split of global and branch samples, ARPO branching with a
    per-path consecutive-branch penalty."""
    keys = ("global_beta", "monitor_turns", "branch_penalty", "beam_size", "branch_probability", "entropy_weight",
            "top_k", "window")
    sched = InterpScheduler(**{k: hp[k] for k in keys}, initial_rollouts=1, uniform=uniform_from(rctx.generator))
    return play(prompts, rctx, episodes, sched, INTERP, PAPER)


def entropy_z(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token entropies z-scored over the valid tokens (unbiased std; a zero or undefined std counts as 1); 0 off
    the mask."""
    valid = mask > 0
    h = entropies.detach().double()
    if not bool(valid.any()):
        return torch.zeros_like(h)
    vals = h[valid]
    std = vals.std() if vals.numel() > 1 else torch.tensor(0.0, dtype=h.dtype)
    std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
    return torch.where(valid, (h - vals.mean()) / std, torch.zeros_like(h))


@register_loss(INTERP, paper=PAPER, source=INTERP_SOURCE)
def interp_loss(ctx: TokenContext, *, clip_low: float, clip_high: float, adv_entropy_weight: float, **_):
    """Entropy-balanced policy optimisation as interpreted: entropy-aware advantage (floored at 0) and
    gradient-preserving clipping of high-entropy tokens only."""
    if ctx.entropies is None:
        raise ValueError(f"{INTERP}: the loss needs token entropies")
    valid = ctx.mask > 0
    hn = entropy_z(ctx.entropies, ctx.mask)
    factor = (1.0 + adv_entropy_weight * hn).clamp(min=0.0).to(ctx.advantages.dtype)
    adv = ctx.advantages * factor
    r = ctx.ratio
    clipped_r = torch.clamp(r, 1.0 - clip_low, 1.0 + clip_high)
    high = (hn > 0) & valid
    c = torch.where(high, (clipped_r / r).detach() * r, clipped_r)
    l1, l2 = -adv * r, -adv * c
    loss = torch.maximum(l1, l2)
    clipped = (l2 > l1) & valid
    n = max(int(valid.sum()), 1)
    return loss, {
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "method/frac_tokens_touched": int(((factor != 1) & valid | clipped & high).sum()) / n,
        f"{PAPER}/high_entropy_frac": int(high.sum()) / n,
        f"{PAPER}/high_entropy_clipped_frac": int((clipped & high).sum()) / n,
        f"{PAPER}/adv_factor_mean": float(factor[valid].double().mean()) if bool(valid.any()) else 1.0,
        f"{PAPER}/adv_factor_zero_frac": int(((factor == 0) & valid).sum()) / n,
    }


# ---- aepo_agentic: the released code (module docstring, first part) ----

def code_branch_probability(delta_h: float, tau: float, beta: float, penalty: float, streak: int) -> float:
    """P(branch) of one potential branch under the code's rule ``clip((u + beta dH) f, 0, 1) >= tau``, u ~ U(0, 1),
    ``f = max(0, 1 - penalty * streak)``: ``clip(1 - tau / f + beta dH, 0, 1)`` (f = 0: 1 if tau <= 0 else 0)."""
    f = max(0.0, 1.0 - penalty * streak)
    if tau <= 0.0:
        return 1.0
    if f == 0.0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - tau / f + beta * delta_h))


class AepoScheduler(ArpoScheduler):
    """ARPO's tree schedule with the released AEPO branch rule and its per-prompt consecutive-round penalty."""

    def __init__(self, *, consecutive_penalty: float, **arpo):
        super().__init__(**arpo)
        if not 0.0 <= consecutive_penalty <= 1.0:
            raise ValueError(f"{PAPER}: consecutive_penalty must be in [0, 1], got {consecutive_penalty!r}")
        self.penalty = consecutive_penalty
        self.streaks: list[int] = []
        self.streak_seen: list[int] = []  # c at each potential branch (metrics)

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]:
        self.streaks = [0] * n_groups  # the code's consecutive_branches, reset per generate_sequences call
        return super().start(n_groups, size, vocab_size)

    def branch_now(self, node, groups) -> bool:
        """``prob = random() + w dH``, times ``max(0, 1 - 0.05 c)``, clipped; ``prob < tau``: no branch."""
        dh = self.entropy(node, -1) - self.entropy(node, 0)
        c = self.streaks[node.group]
        prob = (self.uniform() + self.beta * dh) * max(0.0, 1.0 - self.penalty * c)
        go = not max(0.0, min(1.0, prob)) < self.tau
        self.decisions.append((dh, code_branch_probability(dh, self.tau, self.beta, self.penalty, c), go))
        self.streak_seen.append(c)
        return go

    def grow(self, live: list, groups: list[list]) -> tuple[list, list[int]]:
        branches, roots = super().grow(live, groups)
        if branches or roots:  # the code updates the counters only in a round that adds trajectories
            got = {n.group for n in branches} | set(roots)
            self.streaks = [c + 1 if g in got else 0 for g, c in enumerate(self.streaks)]
        return branches, roots

    def metrics(self, prefix: str = PAPER) -> dict[str, float]:
        out = super().metrics(prefix)
        if self.streak_seen:
            n = len(self.streak_seen)
            out[f"{prefix}/streak_mean"] = sum(self.streak_seen) / n
            out[f"{prefix}/penalty_factor_mean"] = sum(max(0.0, 1.0 - self.penalty * c) for c in self.streak_seen) / n
        return out


HPARAMS = {
    "initial_rollouts": HParam(6, "trajectories per prompt (N)", "global rollouts each prompt starts with (the "
                               "released runs: ENABLE_DYNAMIC_ROLLOUTS=False); branches and later global rollouts "
                               "fill up to k = num_generations", f"{SCRIPT} INITIAL_ROLLOUTS=6 (ROLLOUT_N=12)"),
    "beam_size": HParam(2, "branches + 1 per trajectory and step", "at most beam_size - 1 branches of one active "
                        "trajectory per step", f"{SCRIPT} BEAM_SIZE=2"),
    "branch_probability": HParam(0.5, "probability", "tau: branch when clip((u + w dH) f, 0, 1) >= tau",
                                 f"{SCRIPT} BRANCH_PROBABILITY=0.5"),
    "entropy_weight": HParam(0.2, "probability per normalised-entropy unit", "w: the draw is u + w dH",
                             f"{SCRIPT} Entropy_weight=0.2"),
    "consecutive_penalty": HParam(0.05, "per consecutive round", "f = max(0, 1 - penalty c), c = consecutive rounds "
                                  "in which the prompt got new trajectories",
                                  f"{ROLLOUT_CODE}: penalty_factor = 1.0 - 0.05 * consecutive_branches"),
    "top_k": ARPO_HPARAMS["top_k"],
    "window": ARPO_HPARAMS["window"],
    "clip_low": HParam(0.2, "ratio offset", "lower clip bound 1 - eps_low (a constant: no gradient below it)",
                       f"{CONFIG} clip_ratio_low: 0.2"),
    "clip_high": HParam(0.2, "ratio offset", "upper clip bound (1 + eps_high) / sg(r) * r: value 1 + eps_high, "
                        "gradient (1 + eps_high) grad log p", f"{CONFIG} clip_ratio_high: 0.2"),
    "clip_ratio_c": HParam(3.0, "ratio", "dual clip: for A < 0 the loss is capped at -A c",
                           f"{CONFIG} clip_ratio_c: 3.0"),
    "entropy_balanced_advantage": HParam(False, "switch", "A (1 + adv_entropy_weight z(H)), z over the micro-batch's "
                                         "valid tokens; the released runs set it True but never compute entropy "
                                         "(entropy_coeff 0), so it is off as run",
                                         f"{SCRIPT} ENABLE_ENTROPY_BALANCED_ADVANTAGE=True; {CONFIG} entropy_coeff: "
                                         f"0; {REPO}verl_aepo_entropy/verl/workers/actor/dp_actor.py "
                                         "calculate_entropy only if entropy_coeff != 0"),
    "adv_entropy_weight": HParam(0.2, "advantage factor per z-scored entropy unit",
                                 "A (1 + w z(H)) when entropy_balanced_advantage",
                                 f"{LOSS_CODE}: advantages * (1 + 0.2 * entropy_normalized)"),
}


@register_rollout(PAPER, kind="rollout_func", paper=PAPER, source=SOURCE, hparams=HPARAMS)
def aepo_rollout(prompts: list, rctx: RolloutContext, *, episodes=None, **hp) -> dict:
    """AEPO as released: ARPO's tree rollout with the draw scaled by the consecutive-round penalty."""
    keys = ("initial_rollouts", "beam_size", "branch_probability", "entropy_weight", "consecutive_penalty", "top_k",
            "window")
    sched = AepoScheduler(**{k: hp[k] for k in keys}, uniform=uniform_from(rctx.generator))
    return play(prompts, rctx, episodes, sched, PAPER, PAPER)


@register_loss(PAPER, paper=PAPER, source=SOURCE)
def aepo_loss(ctx: TokenContext, *, clip_low: float, clip_high: float, clip_ratio_c: float,
              entropy_balanced_advantage: bool, adv_entropy_weight: float, **_):
    """Entropy-balanced clipping as released: verl's dual-clip surrogate, the upper bound ``(1 + eps_high) / sg(r)
    * r`` on every token; the entropy-balanced advantage only when switched on."""
    if not clip_ratio_c > 1.0:  # the code asserts it
        raise ValueError(f"{PAPER}: clip_ratio_c (dual clip) must be > 1, got {clip_ratio_c!r}")
    valid = ctx.mask > 0
    n = max(int(valid.sum()), 1)
    adv = ctx.advantages
    hn = entropy_z(ctx.entropies, ctx.mask) if ctx.entropies is not None else None
    factor = None
    if entropy_balanced_advantage:
        if hn is None:
            raise ValueError(f"{PAPER}: entropy_balanced_advantage needs token entropies")
        factor = (1.0 + adv_entropy_weight * hn).to(adv.dtype)
        adv = adv * factor
    r = ctx.ratio
    upper = (1.0 + clip_high) / r.detach() * r
    clipped_r = torch.clamp(r, torch.full_like(r, 1.0 - clip_low), upper)
    l1, l2 = -adv * r, -adv * clipped_r
    loss = torch.maximum(l1, l2)
    clipped = (l2 > l1) & valid
    loss = torch.where(adv < 0, torch.minimum(loss, -adv * clip_ratio_c), loss)
    kept = clipped & (r > 1.0 + clip_high)  # clipped above: the gradient the code preserves
    out = {
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "clip_ratio/dual": int(((loss < torch.maximum(l1, l2)) & valid).sum()) / n,
        f"{PAPER}/clipped_kept_gradient_frac": int(kept.sum()) / n,
        "method/frac_tokens_touched": int((kept | ((factor != 1) & valid) if factor is not None else kept).sum()) / n,
    }
    if hn is not None:
        high = (hn > 0) & valid
        out[f"{PAPER}/high_entropy_frac"] = int(high.sum()) / n
        out[f"{PAPER}/high_entropy_clipped_frac"] = int((kept & high).sum()) / n
    if factor is not None:
        out[f"{PAPER}/adv_factor_mean"] = float(factor[valid].double().mean()) if bool(valid.any()) else 1.0
    return loss, out
