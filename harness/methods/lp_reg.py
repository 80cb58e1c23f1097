"""Lp-Reg: "Low-probability Tokens Sustain Exploration in Reinforcement Learning with Verifiable Reward"
(arXiv 2510.03222).

Ported from the authors' code, CarlanLark/Lp-Reg-dev @ 33b27e273b14f8eeb14c8a52209fca568b4bd718:
``verl/trainer/ppo/core_algos.py`` ``compute_policy_loss_lp_reg`` and ``kl_penalty`` ("low_var_kl"),
``verl/workers/actor/dp_actor.py`` ``apply_min_p`` (proxy: min-p filtered OLD-policy logits, ``minp_old_log_prob``),
``recipe/lp_reg/Qwen3_14b_lp_reg_onpolicy_64gpu.sh`` (hyperparameters).

Per micro-batch:

1. proxy log-prob of the sampled token y_t: old-policy logits z with every v where pi_old(v) < kappa * max_u pi_old(u)
   set to -1e4, renormalised; ``logp_proxy(y_t) = log_softmax(z_filtered)[y_t]``;
2. among valid tokens with A_t < 0 (row-major order), the k = max(1, int(n_neg * rho)) with the lowest current
   log-prob; **k must be > 1** (the authors' ``if neg_logp_k > 1``: with one candidate nothing is regularised);
   of those, the tokens with logp_theta(y_t) < logp_proxy(y_t) are selected (same for A_t > 0 with
   ``logp_pos_k_percent``, 0 = off);
3. selected: ``-A_t r_t + beta * KL_k3`` with ``KL_k3 = clamp(exp(d) - d - 1, -10, 10)``, d = logp_proxy - logp_theta
   (unclipped ratio); all other tokens: the clipped PPO surrogate.

Implementation notes (also in the card):
- The trainer gives ``ctx.old_logits`` (B, T, V) but no token ids, so the proxy log-prob of the sampled token is
  recovered from the old log-prob: ``log pi_proxy(y) = log pi_old(y) + logsumexp(z) - logsumexp(z_filtered)`` when y
  survives min-p (``log pi_old(y) >= log kappa + max log pi_old``), else ``-1e4 - logsumexp(z_filtered)`` as the
  authors' filtered logit gives. Exact when ``ctx.old_logps`` are the log-probs of ``ctx.old_logits`` (they are computed
  from the same generation-time policy; TRL's fused head vs the plain forward differ by float32 rounding only).
- Only the (B, T) proxy log-prob is needed: at real vocabulary sizes storing the (B, T, V) old logits for the whole
  generation batch is the dominant memory cost (e.g. 1024 x 8192 x 152k float32 = 5 TB); computing
  ``logp_proxy(y_t)`` at generation time and storing that (B, T) tensor (what the authors do, ``minp_old_log_probs``)
  suffices. The full-vocabulary pass here is row-chunked; beyond ``ctx.old_logits`` it holds (chunk, V) temporaries.
- Token selection is per micro-batch (per process), as verl's per-micro-batch loss call.
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import TokenContext, masked_mean
from harness.methods.registry import HParam, register_loss

CODE = "CarlanLark/Lp-Reg-dev@33b27e2"
SCRIPT = "recipe/lp_reg/Qwen3_14b_lp_reg_onpolicy_64gpu.sh"
ROW_CHUNK = 4096
FILTERED_LOGIT = -1e4  # authors' apply_min_p fill value


@torch.no_grad()
def minp_proxy_logprob(old_logits: torch.Tensor, old_logps: torch.Tensor, kappa: float) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """(B, T, V) old logits and (B, T) old log-probs of the sampled tokens -> (B, T) log-prob of the sampled token
    under the min-p filtered, renormalised old distribution, and the (B, T) bool "sampled token survived min-p"."""
    shape = old_logps.shape
    z = old_logits.reshape(-1, old_logits.shape[-1])
    lp_old = old_logps.reshape(-1).to(z.dtype)
    out = torch.empty_like(lp_old)
    kept = torch.empty(lp_old.shape, dtype=torch.bool, device=z.device)
    for s in range(0, z.shape[0], ROW_CHUNK):
        zc = z[s:s + ROW_CHUNK]
        lse = torch.logsumexp(zc, -1)
        zmax = zc.max(-1).values
        # pi(v) >= kappa * max pi  <=>  z_v >= z_max + log kappa
        cut = zmax + math.log(kappa) if kappa > 0 else torch.full_like(zmax, -float("inf"))
        filt = zc.masked_fill(zc < cut.unsqueeze(-1), FILTERED_LOGIT)
        lse_f = torch.logsumexp(filt, -1)
        lpc = lp_old[s:s + ROW_CHUNK]
        k = (lpc + lse) >= cut                                     # sampled logit z_y = logp_old(y) + lse
        kept[s:s + ROW_CHUNK] = k
        out[s:s + ROW_CHUNK] = torch.where(k, lpc + lse - lse_f, FILTERED_LOGIT - lse_f)
    return out.view(shape), kept.view(shape)


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """verl ``kl_penalty(logp, ref, "low_var_kl")``: k3 estimator clamped to [-10, 10]."""
    d = ref_logp - logp
    return torch.clamp(torch.exp(d) - d - 1, min=-10, max=10)


def _lowest_logp(logps_flat: torch.Tensor, idx: torch.Tensor, frac: float) -> torch.Tensor:
    """Authors' selection: k = max(1, int(len * frac)); only when k > 1, the k smallest current log-probs."""
    if len(idx) == 0:
        return idx
    k = max(1, int(len(idx) * frac))
    if k <= 1:
        return idx[:0]
    return idx[torch.topk(logps_flat[idx], k=k, largest=False).indices]


@register_loss(
    "lp_reg", paper="lp_reg", needs=("old_logits",),
    source=f"arXiv 2510.03222 (Lp-Reg); {CODE} verl/trainer/ppo/core_algos.py compute_policy_loss_lp_reg, "
           "verl/workers/actor/dp_actor.py apply_min_p",
    hparams={
        "minp_p_threshold": HParam(0.02, "fraction of the max token probability", "kappa: min-p filter of the "
                                   "old policy's distribution for the proxy", f"{SCRIPT} minp_p_threshold=0.02"),
        "logp_neg_k_percent": HParam(0.01, "fraction of negative-advantage tokens (0.01 = 1 %)", "rho: the lowest-"
                                     "probability share of A<0 tokens that are candidates (needs int(n*rho) > 1)",
                                     f"{SCRIPT} logp_neg_k_percent=0.01"),
        "logp_pos_k_percent": HParam(0.0, "fraction of positive-advantage tokens", "same for A>0 tokens (0 = off)",
                                     f"{SCRIPT} logp_pos_k_percent=0"),
        "ppo_kl_coef": HParam(1.0, "loss units per nat", "beta: weight of KL_k3(pi_theta || pi_proxy) on selected "
                              "tokens", f"{SCRIPT} ppo_kl_coef=1"),
        "clip_ratio_low": HParam(1.0, "ratio offset", "PPO clip 1 - eps_low (the on-policy script: clip off)",
                                 f"{SCRIPT} clip_ratio_low=1.0"),
        "clip_ratio_high": HParam(9.0, "ratio offset", "PPO clip 1 + eps_high", f"{SCRIPT} clip_ratio_high=9.0"),
    },
)
def lp_reg(ctx: TokenContext, *, minp_p_threshold: float, logp_neg_k_percent: float, logp_pos_k_percent: float,
           ppo_kl_coef: float, clip_ratio_low: float, clip_ratio_high: float):
    """Lp-Reg: PPO loss, plus beta*KL to the min-p proxy on the lowest-probability negative-advantage tokens."""
    if ctx.old_logits is None:
        raise ValueError("lp_reg needs ctx.old_logits (declare needs=('old_logits',))")
    proxy, kept = minp_proxy_logprob(ctx.old_logits, ctx.old_logps, minp_p_threshold)
    proxy = proxy.to(ctx.logps.dtype)
    ratio = ctx.ratio
    l1 = -ctx.advantages * ratio
    l2 = -ctx.advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    loss = torch.maximum(l1, l2)
    valid = ctx.mask > 0
    clipped = (l2 > l1) & valid

    flat_valid = valid.reshape(-1).nonzero(as_tuple=True)[0]
    adv_flat = ctx.advantages.reshape(-1)
    lp_flat = ctx.logps.detach().reshape(-1)
    selected = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    n_cand = 0
    for idx, frac in ((flat_valid[adv_flat[flat_valid] > 0], logp_pos_k_percent),
                      (flat_valid[adv_flat[flat_valid] < 0], logp_neg_k_percent)):
        cand = _lowest_logp(lp_flat, idx, frac)
        n_cand += len(cand)
        cand = cand[lp_flat[cand] < proxy.reshape(-1)[cand]]
        selected[cand] = True
    selected = selected.view_as(valid)
    kl = low_var_kl(ctx.logps, proxy)
    loss = torch.where(selected, l1 + ppo_kl_coef * kl, loss)

    n = max(ctx.n_valid, 1)
    n_sel = int(selected.sum())
    metrics = {
        "method/frac_tokens_touched": n_sel / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "lp_reg/kl": float(kl.detach()[selected].mean()) if n_sel else 0.0,
        "lp_reg/n_selected": float(n_sel),
        "lp_reg/frac_candidates": n_cand / n,
        "lp_reg/frac_sampled_filtered_by_minp": float(masked_mean((~kept).to(ctx.mask.dtype), ctx.mask)),
        "ppo_kl": float(masked_mean(ctx.old_logps - ctx.logps.detach(), ctx.mask)),
    }
    return loss, metrics
