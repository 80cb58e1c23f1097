"""SPEAR: self-imitation with progressive exploration for agentic RL ("Learn the Ropes, Then Trust the Wins",
arXiv 2509.22601), on GRPO with Clip-Cov.

Ported from the authors' code, TencentYoutuResearch/SPEAR @ 7e8431513165640b4b1f78d09ebaae8807ee4f85 (verl-agent):
``verl/trainer/ppo/ray_trainer_hybrid.py`` (``TrajectoryBufferBatch``: ``update_batch``, ``remove_old``,
``get_buffer_size``, ``is_full_capacity``, ``get_buffer``, ``maintain_reward_statistics``,
``prepare_for_selection``; the order of calls in ``RayPPOSFTTrainer.fit``), ``verl/workers/actor/dp_actor.py``
(``update_policy``: the replay loss and its cosine ramp), ``agent_system/reward_manager/episode.py`` (the tool-call
bonus) and ``examples/grpo_trainer/run_alfworld_spear.sh`` (settings). Three hooks under one name:

- reward: ``R = R_task + mu(t) min(cap, unit * n_calls)``, mu(t) = (cos(pi t / T_tool) + 1) / 2 for t <= T_tool, then 0
  (``constant``: mu = 1; ``none``: no bonus). On ALFWorld the authors count environment steps
  (``episode_lengths``): the household game's ``turns`` column is the same count (``tool_call_column``).
- advantage (once per rollout, advantages unchanged): with the buffer as the last rollout left it, if more than 1.5
  x ``trajectory_buffer_size`` stored trajectories beat the P50 of the group-mean history, draw the replay set
  (advantage recalibrated to ``R - P50``, no std division; keep ``>= 0``; a random power-of-two subset, at most
  the buffer size) and empty the buffer; then drop entries more than ``trajectory_tolerate_steps`` rollouts older
  than the newest, append the rollout's group means (FIFO of ``baseline_buffer_size`` group means) and store its
  trajectories with advantage > 0 (with their old log-probs). ``weight_decay_trajectory_replay`` in (0, 1]: the
  stored advantages times that weight instead of the P50 recalibration.
- loss: Clip-Cov (``harness.methods.entropy_mechanism.clip_cov``) on the micro-batch, minus ``entropy_coeff`` x H, plus
  the replay term ``gamma(t) * [ClipCov_replay(replayed) - entropy_coeff H_replay]`` (token means), gamma(t) =
  coef (1 - cos(pi t / T_replay)) / 2 for t <= T_replay, then coef. Replayed rows are scored inside the loss
  (``TokenContext.score``, with gradients) against the log-probs stored at collection (PPO ratio and clip).

How the replay enters TRL's batch: it does not. TRL's generation batch stays the on-policy rollout; the replay set is
an extra loss term (the hook's ``scalar_loss``), spread over the rollout's micro-batches (each takes at most its own
row count of pending replay rows, in order; rows left when the next rollout comes are dropped and counted in
``spear/replay_dropped``). The authors instead train the replay set in its own mini-batches with their own optimizer
steps after the on-policy ones (``update_policy``); here its gradient joins the on-policy micro-batch's step.

Steps: t is the trainer's optimizer step + 1 (verl's 1-based ``global_steps``; TRL takes ``steps_per_generation``
optimizer steps per rollout, verl one), the tolerance counts rollouts, as the authors'. Random subsets use the run's
seeded generator (the authors: the global RNG). The replay's token-mean aggregation is verl's default ``token-mean``
(the script's Dr.BoT ``seq-mean-token-sum-norm`` is not SPEAR's). A trajectory is one episode (verl-agent: one
sample per environment step, so its buffer counts steps). State per run, saved in checkpoints.
"""
from __future__ import annotations

import copy
import math
import weakref

import numpy as np
import torch

from harness.methods.context import AdvantageContext, RewardContext, TokenContext, masked_mean
from harness.methods.entropy_mechanism import clip_cov
from harness.methods.registry import HParam, MethodState, register_advantage, register_loss, register_reward

CODE = "TencentYoutuResearch/SPEAR@7e84315"
SCRIPT = "examples/grpo_trainer/run_alfworld_spear.sh"
SOURCE = (f"arXiv 2509.22601 (SPEAR); {CODE} ray_trainer_hybrid.py TrajectoryBufferBatch + fit, dp_actor.py "
          f"update_policy (replay loss), core_algos.py compute_policy_loss_clip_cov, episode.py (tool-call bonus), "
          f"{SCRIPT}")
SCHEDULES = ("cosine", "constant", "none")
KEYS = ("generation", "batches", "mean_history", "std_history", "pending", "dropped")

#: per training run (the trainer's seeded generator): the replay buffer (see the module docstring)
_RUNS: "weakref.WeakKeyDictionary[torch.Generator, dict]" = weakref.WeakKeyDictionary()


def _run(generator) -> dict:
    if generator not in _RUNS:
        _RUNS[generator] = {"generation": 0, "batches": [], "mean_history": [], "std_history": [], "pending": [],
                            "dropped": 0}
    return _RUNS[generator]


STATE = MethodState(lambda g: copy.deepcopy(_RUNS[g]) if g in _RUNS else {},
                    lambda g, s: _RUNS.__setitem__(g, copy.deepcopy(s)) if s else None, keys=KEYS)


# ------------------------------------------------------------------------------------------ schedules (episode.py,
# dp_actor.py)
def toolcall_bonus(n_calls: float, t: int, schedule: str, max_steps: int, unit: float, cap: float) -> float:
    """The intrinsic tool-call reward of a trajectory with ``n_calls`` calls at (1-based) step ``t``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"spear: unknown toolcall_schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if schedule == "none":
        return 0.0
    base = min(cap, n_calls * unit)
    if schedule == "constant":
        return base
    return max(0.0, base * (math.cos(t / max_steps * math.pi) + 1) / 2) if t <= max_steps else 0.0


def replay_coef(t: int, coef: float, max_steps: int) -> float:
    """gamma(t): the replay loss weight, cosine ramp 0 -> coef over ``max_steps`` (1-based) steps."""
    return coef * (-math.cos(t / max_steps * math.pi) + 1) / 2 if t <= max_steps else coef


# ---------------------------------------------------------------------------------- the buffer (TrajectoryBufferBatch)
def p50(run: dict) -> tuple[float | None, float | None]:
    """P50 of every group-mean (and group-std) reward in the baseline history (``maintain_reward_statistics``)."""
    means = [x for _, v in run["mean_history"] for x in v]
    stds = [x for _, v in run["std_history"] for x in v]
    return (float(np.percentile(means, 50)) if means else None, float(np.percentile(stds, 50)) if stds else None)


def buffer_size(run: dict, decay: float) -> int:
    """``get_buffer_size``: stored trajectories (P50 mode: those whose reward beats the P50 of the history)."""
    if 0 < decay <= 1:
        return sum(len(b["rows"]) for b in run["batches"])
    base, _ = p50(run)
    n = 0
    for b in run["batches"]:
        r = np.array([row["reward"] for row in b["rows"]], dtype=np.float32)
        n += int((r > (r.mean() if base is None else base)).sum())
    return n


def draw(run: dict, capacity: int, decay: float, norm_by_std: bool, generator) -> list[dict]:
    """``get_buffer`` then ``reset_buffer``: the replay set (rows in buffer order, ``replay_adv`` set)."""
    rows = [dict(r) for b in run["batches"] for r in b["rows"]]
    run["batches"] = []
    if 0 < decay <= 1:
        for r in rows:
            r["replay_adv"] = r["adv"] * decay
    else:
        mean, std = p50(run)
        for r in rows:
            r["replay_adv"] = (r["reward"] - mean) / (std + 1e-6) if norm_by_std else r["reward"] - mean
        rows = [r for r in rows if r["replay_adv"] >= 0]
    n = len(rows)
    k = min(0 if n <= 1 else 1 << (n.bit_length() - 1), capacity)  # nearest lower power of 2, at most the capacity
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[:k]] = True
    return [r for r, m in zip(rows, keep.tolist()) if m]


def remove_old(run: dict, tolerate: int) -> None:
    if run["batches"]:
        latest = run["batches"][-1]["step"]
        run["batches"] = [b for b in run["batches"] if abs(b["step"] - latest) <= min(tolerate, 10)]


def add(run: dict, rows: list[dict], group_size: int, step: int, baseline_size: int) -> None:
    """``update_batch``: the rollout's group means/stds join the baseline FIFO; trajectories with advantage > 0
    are stored (``rows``: one dict per trajectory in group order, with ``reward`` and ``adv``)."""
    r = np.array([row["reward"] for row in rows], dtype=np.float64).reshape(-1, group_size)
    means, stds = [float(x) for x in np.nanmean(r, 1)], [float(x) for x in np.nanstd(r, 1)]
    while sum(len(v) for _, v in run["mean_history"]) > baseline_size and run["mean_history"]:
        run["mean_history"].pop(0)
        run["std_history"].pop(0)
    run["mean_history"].append([step, means])
    run["std_history"].append([step, stds])
    keep = [row for row in rows if row["adv"] > 0]
    if keep:
        run["batches"].append({"step": step, "rows": keep})


def _trajectories(actx: AdvantageContext, adv: torch.Tensor) -> list[dict]:
    """One dict per trajectory: unpadded prompt, the completion (environment tokens included), its loss mask, the
    old log-probs (the no-grad pass at collection), reward and GRPO advantage."""
    if actx.logps is None or actx.prompt_ids is None or actx.completion_mask is None:
        raise ValueError("spear needs old log-probs (needs=('adv_token_stats',)), prompt ids and the completion "
                         "mask at advantage time")
    out = []
    for i in range(actx.rewards.numel()):
        n = int(actx.completion_mask[i].sum())
        out.append({"prompt": actx.prompt_ids[i][actx.prompt_mask[i] > 0].tolist(),
                    "completion": actx.completion_ids[i, :n].tolist(), "mask": actx.mask[i, :n].int().tolist(),
                    "old_logps": actx.logps[i, :n].float().tolist(), "reward": float(actx.rewards[i]),
                    "adv": float(adv[i])})
    return out


# ------------------------------------------------------------------------------------------------- hooks
_HP = {
    "toolcall_schedule": HParam("cosine", "one of cosine, constant, none", "tool-call bonus schedule",
                                f"{SCRIPT} use_toolcall_reward=cosine"),
    "max_toolcall_steps": HParam(200, "training steps", "T_tool: the cosine bonus reaches 0 here",
                                 f"{SCRIPT} max_toolcall_steps=200"),
    "toolcall_unit": HParam(0.1, "reward per call", "bonus per tool call", "episode.py min(1.0, episode_lengths*0.1)"),
    "toolcall_cap": HParam(1.0, "reward", "largest bonus", "episode.py min(1.0, ...)"),
    "tool_call_column": HParam("turns", "rollout column", "the per-trajectory tool-call count (household/ALFWorld: "
                               "environment steps); absent column: no calls", "episode.py episode_lengths"),
    "trajectory_buffer_size": HParam(2048, "trajectories", "replay capacity: drawn when > 1.5x are above P50; "
                                     "at most this many replayed", f"{SCRIPT} TRAIN_BUFFERSIZE=2048"),
    "baseline_buffer_size": HParam(10240, "group means", "FIFO of group-mean rewards for the P50 baseline",
                                   f"{SCRIPT} baseline_buffer_size=10240"),
    "trajectory_tolerate_steps": HParam(5, "rollouts", "entries older than this (vs the newest) are dropped "
                                        "(capped at 10, as the code)", f"{SCRIPT} tolerate_steps=5"),
    "weight_decay_trajectory_replay": HParam(-1.0, "factor", "<= 0 or > 1: P50 recalibration; in (0, 1]: stored "
                                             "advantage times this", f"{SCRIPT} weight_decay_trajectory_replay=-1"),
    "replay_norm_by_std": HParam(False, "flag", "divide the recalibrated advantage by the P50 group std",
                                 f"{SCRIPT} norm_adv_by_std_in_grpo=False"),
    "replay_loss_coef": HParam(1.0, "loss units", "gamma's final value", f"{SCRIPT} replay_loss_coef=1"),
    "max_replay_loss_steps": HParam(200, "training steps", "T_replay: gamma's cosine ramp length",
                                    "ppo_trainer.yaml max_replay_loss_steps=200 (the script's "
                                    "max_replay_loss_ascending_steps=100 is never passed)"),
    "clip_cov_ratio": HParam(2e-4, "fraction of valid tokens", "on-policy Clip-Cov detach share",
                             "ppo_trainer.yaml policy_loss.clip_cov_ratio (the script sets only the replay ones)"),
    "clip_cov_lb": HParam(1.0, "covariance", "on-policy Clip-Cov lower bound", "ppo_trainer.yaml clip_cov_lb"),
    "clip_cov_ub": HParam(5.0, "covariance", "on-policy Clip-Cov upper bound", "ppo_trainer.yaml clip_cov_ub"),
    "clip_cov_ratio_replay": HParam(0.02, "fraction of valid tokens", "replay Clip-Cov detach share",
                                    f"{SCRIPT} clip_cov_ratio_replay=0.02"),
    "clip_cov_lb_replay": HParam(2.0, "covariance", "replay Clip-Cov lower bound", f"{SCRIPT} clip_cov_lb_replay=2"),
    "clip_cov_ub_replay": HParam(60.0, "covariance", "replay Clip-Cov upper bound",
                                 f"{SCRIPT} clip_cov_ub_replay=60.0"),
    "clip_ratio_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", f"{SCRIPT} clip_ratio_low=0.2"),
    "clip_ratio_high": HParam(0.28, "ratio offset", "PPO clip 1 + eps_high (Dr.BoT clip-higher)",
                              f"{SCRIPT} clip_ratio_high=0.28"),
    "entropy_coeff": HParam(0.001, "loss units per nat", "entropy bonus on both losses",
                            "ppo_trainer.yaml actor.entropy_coeff=0.001 (not overridden by the script)"),
}


@register_reward("spear", paper="spear", source=SOURCE, hparams=_HP,
                 description="SPEAR: self-imitation replay (P50 baseline, expiry, cosine-ramped replay loss), "
                 "cosine tool-call bonus, Clip-Cov")
def spear_reward(rctx: RewardContext, *, toolcall_schedule: str, max_toolcall_steps: int, toolcall_unit: float,
                 toolcall_cap: float, tool_call_column: str, **_) -> list[float]:
    """The tool-call bonus per trajectory (added to the task's reward)."""
    calls = rctx.columns.get(tool_call_column) or [0] * len(rctx)
    out = [toolcall_bonus(float(n), rctx.step + 1, toolcall_schedule, max_toolcall_steps, toolcall_unit,
                          toolcall_cap) for n in calls]
    if rctx.log_metric is not None and out:
        rctx.log_metric("spear/toolcall_bonus", float(np.mean(out)))
    return out


@register_advantage("spear", paper="spear", needs=("adv_token_stats",), state=STATE, hparams=_HP, source=SOURCE)
def spear_buffer(actx: AdvantageContext, *, trajectory_buffer_size: int, baseline_buffer_size: int,
                 trajectory_tolerate_steps: int, weight_decay_trajectory_replay: float, replay_norm_by_std: bool,
                 **_):
    """Draw the replay set when the buffer is full, then store this rollout's positive trajectories."""
    adv = actx.grpo_advantages()
    run = _run(actx.generator)
    run["generation"] += 1
    dropped, run["pending"] = len(run["pending"]), []
    run["dropped"] += dropped
    decay = weight_decay_trajectory_replay
    replay = []
    if buffer_size(run, decay) > trajectory_buffer_size * 1.5:
        replay = draw(run, trajectory_buffer_size, decay, replay_norm_by_std, actx.generator)
        run["pending"] = replay
    remove_old(run, trajectory_tolerate_steps)
    add(run, _trajectories(actx, adv), actx.group_size, run["generation"], baseline_buffer_size)
    base, _ = p50(run)
    return adv, {"spear/replay_rows": float(len(replay)), "spear/replay_dropped": float(dropped),
                 "spear/buffer_size": float(buffer_size(run, decay)), "spear/p50_baseline": float(base),
                 "spear/replay_adv_mean": float(np.mean([r["replay_adv"] for r in replay])) if replay else 0.0}


def _pad(rows: list[dict], key: str, width: int, device, dtype) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r[key])] = torch.as_tensor(r[key], dtype=dtype)
    return out.to(device)


def replay_loss(ctx: TokenContext, rows: list[dict], *, ratio: float, lb: float, ub: float, low: float,
                high: float, entropy_coeff: float) -> tuple[torch.Tensor, dict]:
    """Token-mean Clip-Cov loss (minus the entropy bonus) of replayed ``rows``, scored now with gradients."""
    logps, ents = ctx.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
    w, dev = logps.size(1), logps.device
    rctx = TokenContext.build(logps, _pad(rows, "old_logps", w, dev, logps.dtype),
                              torch.tensor([r["replay_adv"] for r in rows], dtype=logps.dtype, device=dev),
                              _pad(rows, "mask", w, dev, logps.dtype), entropies=ents, generator=ctx.generator,
                              step=ctx.step, max_steps=ctx.max_steps)
    per_token, m = clip_cov(rctx, clip_cov_ratio=ratio, clip_cov_lb=lb, clip_cov_ub=ub, clip_ratio_low=low,
                            clip_ratio_high=high)
    loss = masked_mean(per_token, rctx.mask)
    if entropy_coeff:
        loss = loss - entropy_coeff * masked_mean(ents, rctx.mask)
    return loss, {"spear/replay_pg_loss": float(loss.detach()), "spear/replay_ppo_kl": m["ppo_kl"],
                  "spear/replay_clipcov_frac": m["method/frac_tokens_touched"],
                  "spear/replay_ratio_mean": float(masked_mean(rctx.ratio.detach(), rctx.mask))}


@register_loss("spear", paper="spear", hparams=_HP, source=SOURCE)
def spear_loss(ctx: TokenContext, *, clip_cov_ratio: float, clip_cov_lb: float, clip_cov_ub: float,
               clip_cov_ratio_replay: float, clip_cov_lb_replay: float, clip_cov_ub_replay: float,
               clip_ratio_low: float, clip_ratio_high: float, entropy_coeff: float, replay_loss_coef: float,
               max_replay_loss_steps: int, **_):
    """Clip-Cov on the micro-batch (minus the entropy bonus), plus gamma(t) x the replay loss of pending rows."""
    loss, metrics = clip_cov(ctx, clip_cov_ratio=clip_cov_ratio, clip_cov_lb=clip_cov_lb, clip_cov_ub=clip_cov_ub,
                             clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high)
    if entropy_coeff:
        if ctx.entropies is None:
            raise ValueError("spear's entropy bonus needs token entropies in the loss")
        loss = loss - entropy_coeff * ctx.entropies
    run = _RUNS.get(ctx.generator)
    scalar = None
    if ctx.score is not None and run is not None and run["pending"]:
        rows, run["pending"] = run["pending"][:ctx.logps.size(0)], run["pending"][ctx.logps.size(0):]
        coef = replay_coef(ctx.step + 1, replay_loss_coef, max_replay_loss_steps)
        rep, m = replay_loss(ctx, rows, ratio=clip_cov_ratio_replay, lb=clip_cov_lb_replay, ub=clip_cov_ub_replay,
                             low=clip_ratio_low, high=clip_ratio_high, entropy_coeff=entropy_coeff)
        scalar = coef * rep
        metrics.update(m)
        metrics.update({"spear/replay_coef": coef, "spear/replay_rows_trained": float(len(rows))})
    return loss, metrics, scalar
