"""RiskPO: "Risk-based Policy Optimization" (arXiv 2510.00911): a risk measure (mean of the lower tail) of the score
distribution of bundled questions replaces the group mean as the learning signal.

Ported from the authors' code, RTkenny/RiskPO @ 65ec40c935f5726aa2d80160d9056b1236d5551e,
``verl/trainer/ppo/core_algos.py`` ``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`` (the MVaR
advantage) and ``verl/trainer/ppo/ray_trainer.py`` (bundle ids, quantile tracking), with the defaults of
``scripts/run_qwen2.5_1.5b_MVaR_dapomath.sh``:

- bundles: ``bundle_size`` consecutive prompts of the batch (the last bundle may be smaller, as ``i % bundle_size``
  in ray_trainer.py); paper j of a bundle = the j-th response of every question; S_j = sum of its rewards;
- per bundle: q_a, q_b = torch.quantile(S, alpha), torch.quantile(S, beta); std = torch.std(S);
- RVaR term ``[(S - q_a)+ - (S - q_b)+ (+ q_a - q_b if natural_baseline_adv)] / (beta - alpha)``;
  CVaR term ``-(q_a - S)+ / alpha``; MVaR = (w_mix * CVaR + RVaR) / (w_mix + 1); divided by std (+1e-6);
- credit ``sum-mean``: response i of paper j gets ``A_j * (R_i - mean_q) / sum_paper(R - mean_q)`` (A_j / B when that
  sum is ~0).

Paper vs code (recorded in the card): the paper tracks the quantiles across steps by stochastic approximation,
``q <- q + lr_q * (level - mean 1[S < q])``. The released trainer does update ``self.q`` every step, but it writes the
tracked values into the CURRENT batch's ``meta_info`` after the advantage is computed, and every step builds a new
batch, so ``compute_advantage`` never receives them: with ``use_q_track_mode='track'`` the advantage falls back to
the per-bundle batch quantiles. Default here = what the released code computes (``use_q_track_mode: batch``); the
tracked quantiles are still updated and logged (``riskpo/q_alpha_tracked``, ``riskpo/frac_below_q_alpha``), and
``use_q_track_mode: track`` / ``mix`` use them as the paper describes. The tracking state lives per trainer (keyed by
the trainer's seeded generator) and is saved in the job's checkpoints (registry ``state=``): a resumed job continues
the tracked quantiles instead of restarting them (the card's pitfall).
The paper's sequence-level importance ratio is not in the released actor code path we read; TRL's token-level loss
is used.
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import HParam, MethodState, register_advantage

CODE = "RTkenny/RiskPO@65ec40c935f5726aa2d80160d9056b1236d5551e"
SCRIPT = "scripts/run_qwen2.5_1.5b_MVaR_dapomath.sh"
EPS = 1e-6
_STATE: dict[int, dict] = {}   # id(trainer generator) -> {"gen": generator, "q": tensor([q_alpha, q_beta])}


def _tracking_state(generator) -> dict:
    st = _STATE.get(id(generator))
    return {"q": st["q"].clone()} if st is not None and st.get("gen") is generator and "q" in st else {}


def _load_tracking(generator, state: dict) -> None:
    _STATE[id(generator)] = {"gen": generator, **{k: v.clone() for k, v in state.items()}}


#: the tracked quantiles in checkpoints (harness.train.resume)
STATE = MethodState(_tracking_state, _load_tracking, keys=("q",))


def bundle_paper_scores(rg: torch.Tensor, bundle_size: int):
    """Yield (prompt indices, (G,) paper scores) per bundle of consecutive prompts."""
    P = rg.size(0)
    for s in range(0, P, bundle_size):
        idx = torch.arange(s, min(s + bundle_size, P))
        yield idx, rg[idx].sum(0)


def track_quantiles(state: dict, scores: torch.Tensor, levels: torch.Tensor, lr_q: float) -> float:
    """ray_trainer.py quantile tracking (SGD on the pinball loss); returns mean 1[S < q_alpha] before the update."""
    if "q" not in state:                                   # warm-up: first batch's empirical quantiles
        state["q"] = torch.quantile(scores, levels)
        return float((scores < state["q"][0]).double().mean())
    q = state["q"]
    below = (scores.unsqueeze(0) < q.unsqueeze(1)).to(q.dtype).mean(1)
    state["q"] = q - lr_q * (-(levels - below))          # optimizer_q.step() with q.grad = -(alpha - below)
    return float(below[0])


@register_advantage(
    "riskpo", paper="riskpo", state=STATE,
    source=f"arXiv 2510.00911; {CODE} verl/trainer/ppo/core_algos.py "
           "compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking + ray_trainer.py quantile tracking",
    hparams={
        "quantile_down": HParam(0.2, "quantile level", "alpha: lower quantile (CVaR tail, RVaR lower bound)",
                                f"{SCRIPT} algorithm.quantile_down=0.2"),
        "quantile_up": HParam(0.8, "quantile level", "beta: upper quantile of the RVaR band",
                              f"{SCRIPT} algorithm.quantile_up=0.8"),
        "bundle_size": HParam(5, "questions per bundle", "B consecutive prompts form one bundle",
                              f"{SCRIPT} algorithm.bundle_size=5"),
        "lr_q": HParam(0.1, "score units per step", "quantile-tracking SGD step", f"{SCRIPT} algorithm.lr_q=0.1"),
        "w_mix": HParam(1.5, "dimensionless", "omega: weight of the CVaR term in MVaR",
                        f"{SCRIPT} algorithm.w_mix=1.5"),
        "use_mixing_risk_measure": HParam(True, "bool", "MVaR (CVaR + RVaR) instead of RVaR alone",
                                          f"{SCRIPT} algorithm.use_mixing_risk_measure=True"),
        "natural_baseline_adv": HParam(False, "bool", "add q_alpha - q_beta to the RVaR term",
                                       f"{SCRIPT} algorithm.natural_baseline_adv=False"),
        "credit_assign_mode": HParam("sum-mean", "uniform | sum-mean", "how a paper's advantage is split over its "
                                     "responses", f"{SCRIPT} algorithm.credit_assign_mode='sum-mean'"),
        "norm_adv_by_std_in_grpo": HParam(True, "bool", "divide by the std of the bundle's paper scores",
                                          f"{SCRIPT} algorithm.norm_adv_by_std_in_grpo=True"),
        "use_q_track_mode": HParam("batch", "batch | track | mix", "which quantiles enter the advantage (batch: the "
                                   "bundle's own, what the released code computes; track: the tracked ones, as the "
                                   "paper; mix: their mean)", "core_algos.py use_q_track_mode; see module docstring"),
    },
)
def riskpo(actx: AdvantageContext, *, quantile_down: float, quantile_up: float, bundle_size: int, lr_q: float,
           w_mix: float, use_mixing_risk_measure: bool, natural_baseline_adv: bool, credit_assign_mode: str,
           norm_adv_by_std_in_grpo: bool, use_q_track_mode: str):
    """RiskPO: MVaR advantage of bundled questions' paper scores, credited back to responses (sum-mean)."""
    r = torch.nan_to_num(actx.rewards.to(torch.float64), nan=0.0)
    rg = actx.grouped(r)                                              # (P, G)
    # the generator is kept in the state so its id cannot be reused by another trainer while the entry exists
    state = _STATE.setdefault(id(actx.generator), {"gen": actx.generator}) if actx.generator is not None else {}
    q_track = state.get("q")
    a, b = float(quantile_down), float(quantile_up)
    adv = torch.zeros_like(rg)
    all_scores = []
    for idx, S in bundle_paper_scores(rg, int(bundle_size)):
        all_scores.append(S)
        if S.numel() == 1:
            qd_b, qu_b, std = S[0], S[0], torch.tensor(1.0, dtype=S.dtype)
        else:
            qd_b, qu_b, std = torch.quantile(S, a), torch.quantile(S, b), torch.std(S)
        if use_q_track_mode == "batch" or q_track is None:
            qd, qu = qd_b, qu_b
        elif use_q_track_mode == "track":
            qd, qu = q_track[0], q_track[1]
        elif use_q_track_mode == "mix":
            qd, qu = (q_track[0] + qd_b) / 2, (q_track[1] + qu_b) / 2
        else:
            raise ValueError(f"riskpo: unknown use_q_track_mode {use_q_track_mode!r}")
        pa = torch.clamp(S - qd, min=0) - torch.clamp(S - qu, min=0)
        if natural_baseline_adv:
            pa = pa + qd - qu
        pa = pa / (b - a + EPS)
        if use_mixing_risk_measure:
            cvar = -torch.clamp(qd - S, min=0) / (a + EPS)
            pa = (w_mix * cvar + pa) / (w_mix + 1)
        if norm_adv_by_std_in_grpo:
            pa = pa / (std + EPS)
        if credit_assign_mode == "uniform":
            adv[idx] = pa.unsqueeze(0).expand(len(idx), -1)
        elif credit_assign_mode == "sum-mean":
            qs = rg[idx]
            ratio = qs - qs.mean(1, keepdim=True)                     # (nb, G)
            tot = ratio.sum(0)                                        # (G,) per paper
            share = torch.where(tot.abs() > 1e-6, ratio / torch.where(tot.abs() > 1e-6, tot, torch.ones_like(tot)),
                                torch.full_like(ratio, 1.0 / len(idx)))
            adv[idx] = pa.unsqueeze(0) * share
        else:
            raise ValueError(f"riskpo: unknown credit_assign_mode {credit_assign_mode!r}")
    flat = torch.cat(all_scores)
    levels = torch.tensor([a, b], dtype=torch.float64)
    frac_below = track_quantiles(state, flat, levels, float(lr_q))
    uniform = rg.std(1) == 0
    sig = (adv != 0).any(1)
    n = actx.mask.sum(-1).to(torch.float64)
    adv = adv.reshape(-1)
    metrics = {
        "method/frac_tokens_touched": float((n * (adv != 0)).sum() / n.sum().clamp(min=1.0)),
        "riskpo/q_alpha_tracked": float(state["q"][0]),
        "riskpo/q_beta_tracked": float(state["q"][1]),
        "riskpo/frac_below_q_alpha": frac_below,
        "riskpo/paper_score_mean": float(flat.mean()),
        "riskpo/frac_uniform_groups": float(uniform.double().mean()),
        "riskpo/adv_abs_mean": float(adv.abs().mean()),
    }
    if uniform.any():  # among groups whose own rewards all agree (GRPO advantage 0), the share still given a signal
        metrics["riskpo/frac_uniform_groups_with_signal"] = float((sig & uniform).sum() / uniform.sum())
    return adv.to(actx.rewards.dtype), metrics
