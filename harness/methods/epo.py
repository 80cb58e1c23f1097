"""EPO: Entropy-regularized Policy Optimization for LLM agents (Xu et al., arXiv 2509.22576), multi-turn.

Ported from the authors' code, WujiangXu/EPO @ 5b6fa98e034639b95afbfb24f98d1cb1e5197542 (verl-agent):
``verl/workers/actor/dp_actor.py`` (``update_policy``, ``generate_entropy_penalty`` token mode,
``_calculate_epoch_based_entropy_weight``), ``verl/trainer/ppo/ray_trainer.py`` (``entropy_history``: one list of
per-environment-step batch entropies per rollout, left-padded with zeros / cut to ``env.max_steps``, averaged over
all rollouts so far) and ``agent_system/multi_turn_rollout/rollout_loop.py`` (the per-step batch entropy).

Per token t of environment step s(t) (a model turn: ``TokenContext.token_columns["turn_ids"]``; one step without it),
entropy H_t (differentiable), H_hist[s] the historical per-step entropy (advantage hook, once per rollout)::

    epo (released):  loss_t = pg_t - c_H * (H_t - c_s * P_t)
                     P_t = 0 if min_ratio*H_hist[s] < H_t < max_ratio*H_hist[s] else out_range_penalty, times the
                     phase weight; built from detached comparisons: P has NO gradient, so the update is a plain
                     entropy bonus (the smoothing only shifts the loss value)
    epo_paper:       loss_t = pg_t - c_H * (H_t - c_s * P_t),  P_t = (Hbar_is - clip(Hbar_is, lo_s, hi_s))^2 times the
                     phase weight, Hbar_is the mean token entropy of this trajectory's step s (differentiable),
                     [lo_s, hi_s] = [min_ratio, max_ratio] * H_hist[s]: the paper's intent (penalise leaving the
                     band around the historical average), as the shared card suggests; per token, so the token mean
                     weighs each step by its tokens

Both: pg = verl's dual-clip PPO surrogate; the smoothing term is on only for micro-batches with a token at an
environment step >= ``smooth_from_step`` (the code's ``max_step // 2``) and, with ``smooth_weights``, scaled by the
phase weight ``phase_weight(step, phase_epochs)`` (1 -> 0.8 slowly over the first half, 0.8 -> 0 fast after).
The trainer aggregates the per-token loss with the run's ``loss_type`` (bnpo = verl's ``token-mean``).

H_hist: released (``epo``): the code's history (zero left-padding shifts a short rollout's steps: its step k lands
at index ``max_env_steps - n_steps + k``); paper (``epo_paper``): per step index, the mean over the rollouts that
reached it. Both include the current rollout (the code appends before the update). Kept per run, saved in checkpoints.

Deviations: the released per-step batch entropy also averages the replies that finished environments still generate
in verl-agent's fixed-size batch; here finished episodes generate no turns. No KL term (the tier's GRPO has none).
``epo/in_band_frac`` counts valid tokens only (the code counts padding too).
"""
from __future__ import annotations

import functools
import math
import weakref

import torch

from harness.methods.context import AdvantageContext, TokenContext, dual_clip_ppo, masked_mean
from harness.methods.empg import step_index
from harness.methods.registry import HParam, MethodState, register_advantage, register_loss

CODE = "WujiangXu/EPO@5b6fa98"
SOURCE = (f"arXiv 2509.22576 (EPO); {CODE} dp_actor.py update_policy, generate_entropy_penalty (token mode), "
          "_calculate_epoch_based_entropy_weight; ray_trainer.py entropy_history; rollout_loop.py")
PAPER_SOURCE = (f"arXiv 2509.22576 (EPO) entropy smoothing regulariser as a differentiable band penalty (shared card); "
                f"history per step index; schedule and gate from {CODE}")
KEYS = ("rows_sum", "rows_n", "step_sum", "step_n")

#: per training run (the trainer's seeded generator): the entropy history (see the module docstring)
_HIST: "weakref.WeakKeyDictionary[torch.Generator, dict]" = weakref.WeakKeyDictionary()


def _state_dict(generator) -> dict:
    h = _HIST.get(generator)
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in h.items()} if h else {}


def _load_state(generator, state: dict) -> None:
    if state:
        _HIST[generator] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}


STATE = MethodState(_state_dict, _load_state, keys=KEYS)


def phase_weight(epoch: int, max_epochs: int) -> float:
    """``_calculate_epoch_based_entropy_weight``: 1 -> 0.8 (1 - 0.2 (1 - e^{-2p})) over the first half of
    ``max_epochs``, then 0.8 e^{-3p} over the second (p: progress within the half); epoch clamped to [0, max]."""
    if max_epochs <= 0:
        return 1.0
    epoch = max(0, min(epoch, max_epochs))
    half = max_epochs // 2
    if epoch <= half:
        return 1.0 if half == 0 else 1.0 - 0.2 * (1 - math.exp(-2.0 * epoch / half))
    rest = max_epochs - half
    return 0.8 if rest == 0 else 0.8 * math.exp(-3.0 * (epoch - half) / rest)


def batch_step_entropies(entropies: torch.Tensor, steps: torch.Tensor) -> list[float]:
    """Per environment step s = 0 .. max step: the mean token entropy over every valid token of the batch at step s
    (token-weighted, as the rollout loop's ``(entropys * response_mask).sum() / response_mask.sum()``)."""
    valid = steps >= 0
    if not bool(valid.any()):
        return []
    n = int(steps[valid].max()) + 1
    e = torch.nan_to_num(entropies.double()) * valid
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, steps[valid], e[valid])
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, steps[valid], torch.ones_like(e[valid]))
    return [float(t / c) if c > 0 else 0.0 for t, c in zip(total, count)]


def released_row(step_means: list[float], max_env_steps: int) -> list[float]:
    """``ray_trainer.fit``: keep the last ``max_env_steps`` entries, or left-pad with zeros to that length."""
    if len(step_means) > max_env_steps:
        return list(step_means[-max_env_steps:])
    return [0.0] * (max_env_steps - len(step_means)) + list(step_means)


def record(generator, step_means: list[float], max_env_steps: int) -> dict:
    """Add one rollout's per-step entropies to the run's history (both readings); returns the history."""
    h = _HIST.get(generator)
    if h is None or h["rows_sum"].numel() != max_env_steps:
        if h is not None:
            raise ValueError(f"epo: max_env_steps changed within a run ({h['rows_sum'].numel()} -> {max_env_steps})")
        h = _HIST[generator] = {"rows_sum": torch.zeros(max_env_steps, dtype=torch.float64), "rows_n": 0,
                                "step_sum": torch.zeros(0, dtype=torch.float64),
                                "step_n": torch.zeros(0, dtype=torch.float64)}
    h["rows_sum"] += torch.tensor(released_row(step_means, max_env_steps), dtype=torch.float64)
    h["rows_n"] += 1
    k = len(step_means)
    if k > h["step_sum"].numel():
        grow = k - h["step_sum"].numel()
        h["step_sum"] = torch.cat([h["step_sum"], torch.zeros(grow, dtype=torch.float64)])
        h["step_n"] = torch.cat([h["step_n"], torch.zeros(grow, dtype=torch.float64)])
    h["step_sum"][:k] += torch.tensor(step_means, dtype=torch.float64)
    h["step_n"][:k] += 1
    return h


def history(generator, variant: str) -> torch.Tensor | None:
    """H_hist per step index (float64): ``released`` (the code's left-padded mean) or ``paper`` (per step, NaN for
    a step no rollout reached); None before the first rollout."""
    h = _HIST.get(generator)
    if h is None or h["rows_n"] == 0:
        return None
    if variant == "released":
        return h["rows_sum"] / h["rows_n"]
    return torch.where(h["step_n"] > 0, h["step_sum"] / h["step_n"].clamp(min=1), torch.full_like(h["step_sum"],
                                                                                                   float("nan")))


def _advantage_hparams() -> dict[str, HParam]:
    return {"max_env_steps": HParam(50, "environment steps", "length of a rollout's per-step entropy list (the "
                                    "environment's step budget); also the largest step index H_hist has",
                                    "examples/general_running_server.sh alfworld max_steps=50 (env.max_steps)")}


def _loss_hparams(paper: bool) -> dict[str, HParam]:
    hp = {
        "entropy_coeff": HParam(0.001, "loss units per nat", "c_H, weight of the entropy bonus",
                                "general_running_server.sh entropy_coeff=0.001; ppo_trainer.yaml actor.entropy_coeff"),
        "smooth_coeff": HParam(1.0, "1" if not paper else "1 / nat", "c_s, weight of the smoothing penalty inside "
                               "the entropy term" + (" (times the squared distance to the band, nat^2)" if paper
                                                     else ""), "ppo_trainer.yaml actor.entropy_smooth_coeff=1.0"),
        "min_ratio": HParam(0.0, "multiples of H_hist[s]", "lower edge of the band (kappa_l)",
                            "README ALFWorld command --entropy_smooth_min_ratio 0"),
        "max_ratio": HParam(2.0, "multiples of H_hist[s]", "upper edge of the band (kappa_r)",
                            "README ALFWorld command --entropy_smooth_max_ratio 2.0"),
        "smooth_from_step": HParam(25, "environment step index", "the smoothing term is on for micro-batches with a "
                                   "token at this environment step or later",
                                   "dp_actor.py: max_step // 2 with config.get('max_step', 50); the scripts set "
                                   "'max_steps', so the code always uses 50 // 2 = 25"),
        "smooth_weights": HParam(True, "flag", "scale the smoothing term by the phase weight",
                                 "README commands --enable_smooth_weights True"),
        "phase_epochs": HParam(150, "training steps", "horizon of the phase weight (epochs = rollouts = steps in "
                               "verl-agent)", "dp_actor.py max_epochs = 150 (hard-coded)"),
        "clip_ratio_low": HParam(0.2, "ratio offset", "PPO clip 1 - eps_low", "ppo_trainer.yaml clip_ratio 0.2"),
        "clip_ratio_high": HParam(0.2, "ratio offset", "PPO clip 1 + eps_high", "ppo_trainer.yaml clip_ratio 0.2"),
        "clip_ratio_c": HParam(3.0, "ratio", "dual-clip bound for negative advantages",
                               "ppo_trainer.yaml clip_ratio_c 3.0"),
    }
    if not paper:
        hp["out_range_penalty"] = HParam(0.1, "nats (per token)", "P_t of an out-of-band token",
                                         "README ALFWorld command --entropy_smooth_out_range_penalty 0.1")
    return hp


@register_advantage("epo_paper", paper="epo", needs=("adv_token_stats",), state=STATE, source=PAPER_SOURCE,
                    hparams=_advantage_hparams(), description="EPO as the paper describes it: PPO - c_H (H - c_s "
                    "(Hbar - clip(Hbar, band))^2), the smoothing penalty differentiable")
@register_advantage("epo", paper="epo", needs=("adv_token_stats",), state=STATE, source=SOURCE,
                    hparams=_advantage_hparams(), description="EPO as released: PPO - c_H (H - c_s P), the "
                    "smoothing penalty P a constant (no gradient), H_hist the code's padded history")
def epo_history(actx: AdvantageContext, *, max_env_steps: int, **_) -> tuple[torch.Tensor, dict]:
    """Both variants' advantage hook: record this rollout's per-step entropies in the run's history (one list
    per rollout); the advantages stay TRL's GRPO ones."""
    if actx.entropies is None:
        raise ValueError("epo needs token entropies at advantage time (needs=('adv_token_stats',))")
    steps = step_index(actx)
    means = batch_step_entropies(actx.entropies, steps)
    h = record(actx.generator, means, max_env_steps)
    rel = h["rows_sum"] / h["rows_n"]
    return actx.grpo_advantages(), {"epo/rollout_steps": float(len(means)),
                                    "epo/hist_entropy_released": float(rel[rel > 0].mean()) if bool((rel > 0).any())
                                    else 0.0}


def _token_steps(ctx: TokenContext) -> torch.Tensor:
    """(B, T) long: each valid token's environment step (turn id), -1 elsewhere; one step 0 without turn ids."""
    valid = ctx.mask > 0
    turns = ctx.token_columns.get("turn_ids")
    steps = torch.zeros_like(valid, dtype=torch.long) if turns is None else turns.long().to(valid.device)
    return torch.where(valid, steps, torch.full_like(steps, -1))


def _hist_at(hist: torch.Tensor, steps: torch.Tensor, what: str) -> torch.Tensor:
    if bool((steps >= hist.numel()).any()):
        raise ValueError(f"epo: a token at environment step {int(steps.max())} but the {what} entropy history has "
                         f"{hist.numel()} steps: set max_env_steps to the environment's step budget")
    return hist.to(steps.device)[steps.clamp(min=0)]


def _step_means(h: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, S) mean entropy of each trajectory's step, differentiable; (B, S) bool: the step has tokens)."""
    n = int(steps.max()) + 1 if bool((steps >= 0).any()) else 1
    w = (steps >= 0).to(h.dtype)
    idx = steps.clamp(min=0)
    total = torch.zeros(h.size(0), n, dtype=h.dtype, device=h.device).scatter_add(1, idx, h * w)
    count = torch.zeros_like(total).scatter_add(1, idx, w)
    return total / count.clamp(min=1), count > 0


def _common(ctx: TokenContext, smooth_from_step: int, smooth_weights: bool, phase_epochs: int):
    if ctx.entropies is None:
        raise ValueError("epo needs token entropies in the loss")
    steps = _token_steps(ctx)
    gate = bool((steps >= smooth_from_step).any())
    w = phase_weight(ctx.step, phase_epochs) if smooth_weights else 1.0
    return steps, gate, w


def _diagnostics(ctx: TokenContext, steps, min_ratio: float, max_ratio: float) -> dict:
    """Per (trajectory, step) pair of the micro-batch: variance of the step entropies and the share outside the
    paper-history band (the same numbers for both variants, so their runs compare)."""
    hbar, exists = _step_means(ctx.entropies.detach().double(), steps)
    out = {"epo/step_entropy_var": float(hbar[exists].var(unbiased=False)) if bool(exists.any()) else 0.0}
    hist = history(ctx.generator, "paper")
    if hist is not None and hist.numel() >= hbar.size(1):
        hs = hist[: hbar.size(1)].to(hbar.device).expand_as(hbar)
        ok = exists & ~torch.isnan(hs)
        out_band = (hbar <= min_ratio * hs) | (hbar >= max_ratio * hs)
        if bool(ok.any()):
            out["epo/out_of_band_frac"] = float(out_band[ok].double().mean())
    return out


@register_loss("epo", paper="epo", source=SOURCE, hparams=_loss_hparams(paper=False))
def epo(ctx: TokenContext, *, out_range_penalty: float, **hp):
    """EPO as released: PPO - c_H (H - c_s P), P a constant per out-of-band token (no gradient)."""
    return _smoothed_loss(ctx, "released", functools.partial(_released_penalty, out_range_penalty=out_range_penalty),
                          report_touched=False, **hp)


def _released_penalty(ctx: TokenContext, steps, hist, w: float, min_ratio: float, max_ratio: float, *,
                      out_range_penalty: float) -> tuple[torch.Tensor, None, float]:
    """The code's P: ``out_range_penalty`` on each token outside the band, built from comparisons (no gradient)."""
    h = ctx.entropies
    hs = _hist_at(hist, steps, "released").to(h.dtype)
    with torch.no_grad():  # as the code: torch.where over comparisons, a constant
        within = (h > min_ratio * hs) & (h < max_ratio * hs)
        penalty = torch.where(within, torch.zeros_like(h), torch.full_like(h, out_range_penalty)) * w
    return penalty, None, float(masked_mean(within.to(h.dtype), ctx.mask))


@register_loss("epo_paper", paper="epo", source=PAPER_SOURCE, hparams=_loss_hparams(paper=True))
def epo_paper(ctx: TokenContext, **hp):
    """EPO as the paper describes it: PPO - c_H (H - c_s (Hbar - clip(Hbar, band))^2), the penalty differentiable."""
    return _smoothed_loss(ctx, "paper", _paper_penalty, report_touched=True, **hp)


def _paper_penalty(ctx: TokenContext, steps, hist, w: float, min_ratio: float, max_ratio: float
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The paper's P: each token carries its step's squared distance (step mean entropy) to the band, with its
    gradient; also the tokens it touches (a step outside the band)."""
    h = ctx.entropies
    hbar, exists = _step_means(h, steps)
    hs = _hist_at(hist, torch.arange(hbar.size(1), device=h.device), "paper").to(h.dtype).expand_as(hbar)
    known = exists & ~torch.isnan(hs)
    hs = torch.nan_to_num(hs)
    d = torch.where(known, hbar - torch.clamp(hbar, min_ratio * hs, max_ratio * hs), torch.zeros_like(hbar))
    penalty = (d ** 2).gather(1, steps.clamp(min=0)) * (steps >= 0) * w
    touched = ((d != 0).gather(1, steps.clamp(min=0)) & (steps >= 0)).to(ctx.mask.dtype)
    return penalty, touched, float((d[known] == 0).double().mean()) if bool(known.any()) else 1.0


def _smoothed_loss(ctx: TokenContext, variant: str, penalise, *, report_touched: bool, entropy_coeff: float,
                   smooth_coeff: float, min_ratio: float, max_ratio: float, smooth_from_step: int,
                   smooth_weights: bool, phase_epochs: int, clip_ratio_low: float, clip_ratio_high: float,
                   clip_ratio_c: float, **_):
    """What both variants share: verl's dual-clip PPO, the gate and phase weight, loss pg - c_H (H - c_s P) and the
    metrics. ``penalise(ctx, steps, hist, w, min_ratio, max_ratio)`` is the variant's P (called only when the gate
    is on and a ``variant`` history exists): (P, the tokens it touches, the in-band share). ``report_touched``: P
    has a gradient (paper), so the share of its tokens is reported and, without the entropy bonus, is the share of
    tokens the method touches; a constant P (released) touches none."""
    pg, clipped = dual_clip_ppo(ctx, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    steps, gate, w = _common(ctx, smooth_from_step, smooth_weights, phase_epochs)
    h = ctx.entropies
    hist = history(ctx.generator, variant)
    penalty, touched = torch.zeros_like(h), torch.zeros_like(ctx.mask)
    metrics = {"epo/gate": float(gate and hist is not None), "epo/phase_weight": w}
    if gate and hist is not None:
        penalty, touched, metrics["epo/in_band_frac"] = penalise(ctx, steps, hist, w, min_ratio, max_ratio)
    loss = pg - entropy_coeff * (h - smooth_coeff * penalty)
    metrics["epo/penalty_mean"] = float(masked_mean(penalty.detach(), ctx.mask))
    share = 0.0
    if report_touched:
        share = metrics["epo/penalised_token_frac"] = float(masked_mean(touched, ctx.mask))
    metrics.update({"method/frac_tokens_touched": 1.0 if entropy_coeff else share,
                    "clip_ratio/region_mean": float(clipped.sum()) / max(ctx.n_valid, 1),
                    **_diagnostics(ctx, steps, min_ratio, max_ratio)})
    return loss, metrics
