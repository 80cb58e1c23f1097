"""VERL, Velocity-Exploiting Rank-Learning (arXiv 2509.23808): hidden-state effective rank shapes the advantage.

Ported from the authors' code, hf618/VERL@3de68f16e447647d3f80d11fdbe5816137b515aa: ``verl/trainer/metrics_utils.py``
(``compute_single_effective_rank``, ``calculate_diffs_for_single_sample_optimized``), ``verl/trainer/
metrics_calculator.py`` (per-response aggregation), ``verl/trainer/reward_manager_versions.py``
(``RewardManager.__call__``: the auxiliary reward and its EMA baselines) and ``verl/trainer/ppo/ray_trainer.py``
(``compute_advantage``: the clipped bonus), with the settings of their ``train.sh``. Per response i:

- ``Z``: the final hidden states (after the last norm; their ``hidden_vllm`` keeps only that "layer 1") that produce
  the response's tokens, one row per token (``AdvantageContext.hidden_states`` under ``mask``).
- ``ER(Z) = exp(-sum_j p_j log(p_j + 1e-8))``, ``p = s / (sum s + 1e-8)``, ``s`` the singular values of the centred
  ``Z`` (0 below two rows).
- ERV and ERA: on the last ``max_seq_len`` rows, windows ``Z[:t+1]`` for ``t = stride, 2 stride, ... < L`` (none when
  ``L < 2 stride``); ``d_k = ER_k - mean(ER_1..ER_{k-1})`` from the second window, ``dd_k = d_k - d_{k-1}``;
  ``ERV = mean(d)``, ``ERA = mean(dd)`` (0 when empty).
- From the second training batch on: ``dev_x = clip((x - m_x) / (|m_x| + 1e-8), -5, 5)`` against EMA baselines
  ``m`` of the batch means; controller (``plan_b``) ``tau = sigmoid(gain * dev_ERA)``; weights over (ERA, ERV, ER)
  ``w = tau w_explore + (1 - tau) w_exploit``; ``aux = scale * sum_x w_x tanh(dev_x)``.
- ``A = A_grpo + min(relu(aux), |A_grpo| / kappa)``, added where the authors' token-level aux reward sits: the
  response's last token (``bonus_tokens: last``); the other tokens keep ``A_grpo``.
- After the batch: ``m_x <- (1 - alpha) m_x + alpha * mean_x(previous batch)`` (the authors update from the previous
  step's logged means, so the baselines lag one batch and start at 0).

Deviations (the card lists them): TRL's group-normalised ``A_grpo`` (eps 1e-4, not verl's 1e-6); ER and the aux reward
in float64 (the authors store ER and the token rewards in bfloat16); the window ER from the Gram matrix's eigenvalues,
the response's ER from ``svdvals``, as theirs, in float64 (theirs: float32). ``bonus_tokens: all`` is the named variant: the bonus on every token of the response,
a response-level reading of the paper's "shaping the advantage" (the PDF's formula was not checked).
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, MethodState, register_advantage

SOURCE = "hf618/VERL@3de68f16e447647d3f80d11fdbe5816137b515aa"
CONTROLLERS = ("plan_b", "fix_two", "fix_one")   # the authors' hypothesis_type PlanB / FixTwo / FixOne
BONUS_TOKENS = ("last", "all")
INDICATORS = ("era", "erv", "er")                # the authors' indicator_names order: diff 2, diff, Effective Rank
_STATE: dict[int, dict] = {}                     # id(trainer generator) -> EMA state of one training run


def _ema_state(generator) -> dict:
    st = _STATE.get(id(generator))
    if st is None or st.get("gen") is not generator:
        return {}
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items() if k != "gen"}


def _load_ema(generator, state: dict) -> None:
    _STATE[id(generator)] = {"gen": generator, **{k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}}


#: the EMA baselines and the previous batch's means in checkpoints (harness.train.resume)
STATE = MethodState(_ema_state, _load_ema, keys=("mids", "prev_means", "perf_ema"))


def _er_from_sv(s: torch.Tensor) -> float:
    p = s / (s.sum() + 1e-8)
    return math.exp(float(-(p * torch.log(p + 1e-8)).sum()))


def _spectrum(c: torch.Tensor) -> torch.Tensor:
    """Singular values of ``c`` (float64) from the smaller Gram matrix (the authors' windows: eigvalsh of C C^T)."""
    g = c @ c.T if c.size(0) <= c.size(1) else c.T @ c
    return torch.linalg.eigvalsh(g).clamp(min=0).sqrt()


def effective_rank(z: torch.Tensor) -> float:
    """ER of the centred rows of ``z`` (T, d) (``compute_single_effective_rank``, method 'full'); 0 below two rows."""
    if z.size(0) < 2:
        return 0.0
    z = z.double()
    return _er_from_sv(torch.linalg.svdvals(z - z.mean(0, keepdim=True)))


def rank_dynamics(z: torch.Tensor, stride: int, max_seq_len: int) -> tuple[float, float]:
    """(ERV, ERA) of one response (``calculate_diffs_for_single_sample_optimized`` + the calculator's mean)."""
    z = z[-max_seq_len:].double()
    n = z.size(0)
    if n < 2 or n < 2 * stride:
        return 0.0, 0.0
    ers: list[float] = []
    d1: list[float] = []
    d2: list[float] = []
    for t in range(stride, n, stride):
        w = z[:t + 1]
        er = _er_from_sv(_spectrum(w - w.mean(0, keepdim=True)))
        if ers:
            d = er - sum(ers) / len(ers)
            if d1:
                d2.append(d - d1[-1])
            d1.append(d)
        ers.append(er)
    return (sum(d1) / len(d1) if d1 else 0.0), (sum(d2) / len(d2) if d2 else 0.0)


def response_indicators(hidden: torch.Tensor, mask: torch.Tensor, stride: int, max_seq_len: int) -> torch.Tensor:
    """(N, 3) float64: ERA, ERV, ER of every response (rows of ``hidden`` (N, T, d) where ``mask`` > 0)."""
    out = torch.zeros(hidden.size(0), 3, dtype=torch.float64)
    for i in range(hidden.size(0)):
        z = hidden[i][mask[i] > 0]
        erv, era = rank_dynamics(z, stride, max_seq_len) if z.size(0) >= 2 else (0.0, 0.0)
        out[i] = torch.tensor([era, erv, effective_rank(z)], dtype=torch.float64)
    return out


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


@register_advantage(
    "hidden_state_verl", paper="2509.23808", source=SOURCE, needs=("adv_hidden_states",), state=STATE,
    hparams={
        "diff_stride": HParam(40, "tokens", "window step of the ER differences (ERV, ERA)",
                              "train.sh: --diff_stride 40 (ppo_trainer.yaml calculator.diff_stride: 20)"),
        "max_seq_len": HParam(512, "tokens", "ERV/ERA use the response's last max_seq_len rows (ER uses all)",
                              "metrics_calculator.py RepresentationMetricsCalculator(max_seq_len=512), not overridden"),
        "ema_alpha": HParam(0.3, "1", "EMA weight of the newest batch mean in the baselines m",
                            "train.sh: --reward_ema_alpha 0.3 (ppo_trainer.yaml: 0.7)"),
        "modulation_gain": HParam(2.0, "1", "gain of the ERA controller sigmoid",
                                  "train.sh: --modulation_gain 2.0; reward_manager_versions.py (PlanB)"),
        "adv_shaping_kappa": HParam(2.0, "1", "bonus capped at |A_grpo| / kappa",
                                    "train.sh: --adv_shaping_kappa 2.0; ray_trainer.py compute_advantage"),
        "aux_weight": HParam(1.0, "advantage units", "aux_reward_global_weight (scale of the auxiliary reward)",
                             "train.sh: --aux_reward_global_weight 1.0"),
        "aux_fix": HParam(True, "bool", "fixed scale; false: scale * (1 - (EMA of mean reward + 1) / 2), which "
                          "assumes rewards in [-1, 1]", "train.sh: --aux_fix True"),
        "weights_explore": HParam([0.0, 0.0, 1.0], "1", "weights over (ERA, ERV, ER) when tau = 1",
                                  "train.sh: --reward_weights [0.0, 0.0, 1.0]", type=list),
        "weights_exploit": HParam([0.0, 1.0, 0.0], "1", "weights over (ERA, ERV, ER) when tau = 0",
                                  "train.sh: --reward_weights_exploit [0.0, 1.0, 0.0]", type=list),
        "controller": HParam("plan_b", "choice", f"tau: plan_b sigmoid(gain dev_ERA), fix_two 0.5, fix_one: "
                             f"w_explore + w_exploit; one of {CONTROLLERS}",
                             "reward_manager_versions.py hypothesis_type (ppo_trainer.yaml: PlanB)"),
        "bonus_tokens": HParam("last", "choice", f"tokens that get the bonus; one of {BONUS_TOKENS} (last: the "
                               "authors' code; all: response-level variant)", "ray_trainer.py compute_advantage"),
    })
def hidden_state_verl(actx: AdvantageContext, diff_stride, max_seq_len, ema_alpha, modulation_gain,
                      adv_shaping_kappa, aux_weight, aux_fix, weights_explore, weights_exploit, controller,
                      bonus_tokens):
    """GRPO advantage plus a clipped bonus from the responses' hidden-state effective rank, ERV and ERA."""
    if controller not in CONTROLLERS:
        raise ValueError(f"hidden_state_verl: unknown controller {controller!r}; valid: {', '.join(CONTROLLERS)}")
    if bonus_tokens not in BONUS_TOKENS:
        raise ValueError(f"hidden_state_verl: unknown bonus_tokens {bonus_tokens!r}; valid: {', '.join(BONUS_TOKENS)}")
    for name, w in (("weights_explore", weights_explore), ("weights_exploit", weights_exploit)):
        if len(w) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w):
            raise ValueError(f"hidden_state_verl: {name} must be 3 numbers over (ERA, ERV, ER), got {w!r}")
    if int(diff_stride) < 1 or int(max_seq_len) < 2 or adv_shaping_kappa <= 0 or not 0 <= ema_alpha <= 1:
        raise ValueError("hidden_state_verl: need diff_stride >= 1, max_seq_len >= 2, adv_shaping_kappa > 0 and "
                         "0 <= ema_alpha <= 1")
    if actx.hidden_states is None:
        raise ValueError("hidden_state_verl needs AdvantageContext.hidden_states (needs=('adv_hidden_states',))")
    mask = actx.mask.detach().float().cpu()
    ind = response_indicators(actx.hidden_states.detach().cpu(), mask, int(diff_stride), int(max_seq_len))
    adv0 = actx.grpo_advantages().double().cpu()
    state = _STATE.setdefault(id(actx.generator), {"gen": actx.generator}) if actx.generator is not None else {}
    mids = state.setdefault("mids", torch.zeros(3, dtype=torch.float64))
    prev = state.get("prev_means")     # the previous batch's means: the authors' metrics_old
    metrics = {}
    bonus = torch.zeros_like(adv0)
    if prev is not None:               # step 1 has no metrics_old: no auxiliary reward
        perf = state.get("perf_ema", 0.0)
        scale = aux_weight if aux_fix else aux_weight * (1.0 - (perf + 1.0) / 2.0)
        dev = ((ind - mids) / (mids.abs() + 1e-8)).clamp(-5.0, 5.0)                      # (N, 3)
        we, wx = torch.tensor(weights_explore, dtype=torch.float64), torch.tensor(weights_exploit, dtype=torch.float64)
        if controller == "plan_b":
            tau = torch.sigmoid(modulation_gain * dev[:, 0])
        else:
            tau = torch.full_like(adv0, 0.5 if controller == "fix_two" else 0.0)
        w = tau[:, None] * we + (1.0 - tau[:, None]) * wx if controller != "fix_one" else (we + wx).expand_as(dev)
        aux = scale * (torch.tanh(dev) * w).sum(1)
        bonus = torch.minimum(torch.relu(aux), adv0.abs() / adv_shaping_kappa)
        rewards = torch.nan_to_num(actx.rewards.double().cpu(), nan=0.0)
        state["perf_ema"] = (1 - ema_alpha) * perf + ema_alpha * float(rewards.mean())
        state["mids"] = (1 - ema_alpha) * mids + ema_alpha * prev
        metrics.update({"hidden_state_verl/aux_mean": float(aux.mean()), "hidden_state_verl/tau_mean": float(tau.mean()),
                        "hidden_state_verl/aux_scale": float(scale)})
    state["prev_means"] = ind.mean(0)
    adv = adv0[:, None].expand(-1, mask.size(1)).clone()
    if bonus_tokens == "last":
        last = (mask * torch.arange(1, mask.size(1) + 1)).argmax(1)     # last trained token of each response
        adv[torch.arange(adv.size(0)), last] += bonus
        touched = float((bonus > 0).sum())
    else:
        adv += bonus[:, None]
        touched = float(mask[bonus > 0].sum())
    corr = _pearson(ind[:, 2], ind[:, 1])
    metrics.update({
        "hidden_state_verl/er_mean": float(ind[:, 2].mean()), "hidden_state_verl/erv_mean": float(ind[:, 1].mean()),
        "hidden_state_verl/era_mean": float(ind[:, 0].mean()), "hidden_state_verl/bonus_mean": float(bonus.mean()),
        "hidden_state_verl/bonus_frac": float((bonus > 0).double().mean()),
        "hidden_state_verl/mid_er": float(state.get("mids", mids)[2]),
        "method/frac_tokens_touched": touched / max(float(mask.sum()), 1.0),
    })
    if not math.isnan(corr):
        metrics["hidden_state_verl/corr_er_erv"] = corr
    return adv.to(actx.rewards.dtype if actx.rewards.is_floating_point() else torch.float32), metrics
