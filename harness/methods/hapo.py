"""HAPO: "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature" (arXiv 2509.16591).

Ported from the authors' code, starriver030515/HAPO @ 7671dde3e268779a949954ec75ed3edda45f7e0a:
``verl/trainer/ppo/core_algos.py`` (``compute_entropy_h``, ``ada_clip``, ``ada_advantage``, ``compute_policy_loss``,
``compute_hapo_outcome_advantage``), ``vllm/v1/sample/sampler.py`` (``compute_entropy_based_temperature``),
``verl/trainer/ppo/ray_trainer.py`` L1020-1027 (rollout statistics from the old-log-prob entropies of the previous
step) and ``recipe/qwen2.5_math_1.5b.sh`` (hyperparameters).

Shared signal (``compute_entropy_h``), over the valid tokens of a batch: l = log H, m = ``entropy_pivot`` quantile of
l ("nearest"), h = (l - m) / RMS(l - m), hhat = h / max(h) for h > 0 and h / |min(h)| for h <= 0.

Components, each switchable (ablations):
1. rollout: T_t = T (1 + tau * clamp(hhat_t, -1, 1)) with (m, std, scales) of the previous generation batch
   (:class:`HapoTemperatureProcessor`, an HF ``LogitsProcessor``; first rollout: hhat = 0, i.e. T);
2. advantage (``adv_estimator=hapo``): rewards repeated over each response's tokens, normalised by the mean and std
   of all tokens of the group; a group falls back to the GRPO advantage if any |normed| >= 5;
3. loss, differential advantage redistribution: A_ent = A (1 + beta hhat); neutral zone r in (1 - eps_low/2,
   1 + eps_high/2); hhat > 0 tokens use A inside the zone and A_ent outside, hhat <= 0 tokens the reverse;
4. loss, asymmetric adaptive clipping: hhat <= 0: eps_low (1 - alpha hhat); hhat > 0: eps_high (1 + alpha hhat);
   then the dual-clip PPO surrogate (clip_ratio_c = 10 in the scripts).

Two named methods (also in the card): in the authors' ``compute_entropy_h`` and vLLM sampler
``scale_neg = 1/neg_min`` is negative, so for h <= 0 ``hhat = h * scale_neg`` is POSITIVE: hhat is |h| / max|h| per
side, in [0, 1], every token with h != 0 is treated as "high entropy" (eps_high widens everywhere, eps_low never
adapts, the advantage redistribution uses the high-entropy rule for every token, the rollout temperature only rises).
The paper's equations define hhat in [-1, 1] with the sign of h.

- ``hapo``: the released code's behaviour (hhat >= 0). The paper's reported numbers were produced by this code, so
  the card's reported table belongs to ``hapo``.
- ``hapo_paper``: the paper's signed equations (the one-line change ``scale_neg = -1/neg_min``).

Both share every function here; only the sign of hhat for h <= 0 differs (loss, advantage-time rollout statistics
and so the rollout temperature). Golden tests cover both (tests/test_method_hapo.py).

Other notes: the advantage's fallback test includes the padded positions of the (N, T) tensor (authors' code: padded
entries hold -mean/std); T here is the generation batch's longest completion, verl pads to max_response_length.
The hhat of the loss uses the current policy's entropies of the micro-batch (authors: same). The rollout processor is
injected into the training rollouts by the trainer's ``rollout`` hook (``hapo_rollout``); the statistics it
needs are computed by the advantage hook (``needs=("adv_token_stats",)``) and kept per run.
"""
from __future__ import annotations

import weakref

import torch

from harness.methods.context import AdvantageContext, RolloutContext, TokenContext, masked_mean
from harness.methods.registry import register_rollout, HParam, MethodState, register_advantage, register_loss

CODE = "starriver030515/HAPO@7671dde"
SCRIPT = "recipe/qwen2.5_math_1.5b.sh"

#: (median, std, scale_pos, scale_neg) of the last generation batch, per run (keyed by the trainer's generator)
ROLLOUT_STATS: "weakref.WeakKeyDictionary[torch.Generator, tuple]" = weakref.WeakKeyDictionary()


def _stats_state(generator) -> dict:
    return {"rollout_stats": ROLLOUT_STATS[generator]} if generator in ROLLOUT_STATS else {}


def _load_stats(generator, state: dict) -> None:
    if "rollout_stats" in state:
        ROLLOUT_STATS[generator] = tuple(float(x) for x in state["rollout_stats"])


#: the last batch's rollout statistics (next rollout's temperature) in checkpoints (harness.train.resume)
STATE = MethodState(_stats_state, _load_stats, keys=("rollout_stats",))


def quantile_nearest(x: torch.Tensor, q: float) -> torch.Tensor:
    """Authors' ``torch_quantile(x, q, interpolation="nearest")``: kthvalue at round(q (n - 1)) (Python round)."""
    idx = round(q * (x.numel() - 1))
    return torch.kthvalue(x.reshape(-1), idx + 1).values


def entropy_h(entropy: torch.Tensor, mask: torch.Tensor, pivot: float, sign: str = "paper", eps: float = 1e-8):
    """``compute_entropy_h``: hhat (same shape) and (median, std, scale_pos, scale_neg)."""
    valid = mask > 0
    l = torch.log(entropy.clamp_min(eps))
    med = quantile_nearest(l[valid], pivot).nan_to_num(0.0) if valid.any() else torch.zeros((), dtype=l.dtype)
    h = l - med
    n = valid.sum().clamp_min(1)
    std = ((h.pow(2).masked_fill(~valid, 0.0).sum() / n).clamp_min(eps)).sqrt()
    h = h / std
    pos_max = h.masked_fill(~(valid & (h > 0)), 0.0).max().clamp_min(eps)
    neg_min = h.masked_fill(~(valid & (h < 0)), 0.0).min().clamp_max(-eps)
    scale_pos = 1.0 / pos_max
    scale_neg = 1.0 / neg_min if sign == "code" else -1.0 / neg_min
    hhat = torch.where(h > 0, h * scale_pos, h * scale_neg)
    return hhat, (med, std, scale_pos, scale_neg)


def hhat_from_stats(entropy: torch.Tensor, stats: tuple, eps: float = 1e-6) -> torch.Tensor:
    """vLLM sampler: hhat of fresh logits' entropies from stored statistics, clamped to [-1, 1]."""
    med, std, sp, sn = stats
    h = (torch.log(entropy.clamp_min(eps)) - med) / (std + eps)
    return torch.where(h > 0, h * sp, h * sn).clamp(-1, 1)


class HapoTemperatureProcessor:
    """HF ``LogitsProcessor`` for HAPO's entropy-dependent sampling temperature (component 1).

    ``__call__(input_ids, scores)`` divides the raw next-token logits of each row by ``1 + tau * hhat`` where hhat
    comes from the entropy of the raw logits and the statistics of the previous generation batch
    (``stats_fn()`` -> (median, std, scale_pos, scale_neg) or None: no change). HF's temperature warper then divides by
    T, so the sampling temperature is T (1 + tau hhat), as the authors' patched vLLM sampler
    (``vllm/v1/sample/sampler.py`` ``compute_entropy_based_temperature``: entropy of the raw logits, then
    ``logits.div_(T * (1 + tau * hhat))``). Pass it as ``model.generate(..., logits_processor=LogitsProcessorList(
    [HapoTemperatureProcessor(...)]))``.

    vLLM equivalent for the GPU tier: the authors' patched ``vllm/v1/sample/sampler.py`` with
    ``SamplingParams.adaptive_temperature=True, temperature_tau=tau, norm_entropys=(median, std, scale_pos,
    scale_neg)``; with stock vLLM (V1) a custom logits processor (``vllm.v1.sample.logits_processor.LogitsProcessor``
    subclass registered through ``LLM(logits_processors=[...])``) applying the same per-row division before sampling,
    with the statistics passed per request in ``SamplingParams.extra_args``.
    """

    def __init__(self, stats_fn, tau: float = 0.05):
        self.stats_fn = stats_fn
        self.tau = tau
        self.last_temperature_factor: torch.Tensor | None = None
        self._sum, self._n = 0.0, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        stats = self.stats_fn()
        if stats is None or self.tau == 0:
            return scores
        logits = scores.float()
        ent = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
        factor = 1.0 + self.tau * hhat_from_stats(ent, stats)
        self.last_temperature_factor = factor
        self._sum += float(factor.sum())
        self._n += factor.numel()
        return (logits / factor.unsqueeze(-1)).to(scores.dtype)

    def metrics(self) -> dict:
        """Mean temperature factor 1 + tau*hhat over the rollout's sampled positions (read by the trainer)."""
        return {"hapo/temperature_factor_mean": self._sum / self._n} if self._n else {}


@register_rollout(
    "hapo", paper="hapo",
    source=f"arXiv 2509.16591 (HAPO) component 1; {CODE} vllm/v1/sample/sampler.py compute_entropy_based_temperature",
    hparams={"temperature_tau": HParam(0.05, "relative temperature change", "T_t = T (1 + tau * hhat_t)",
                                       "HAPO scripts temperature_tau=0.05 [code]")},
)
def hapo_rollout(rctx: RolloutContext, *, temperature_tau: float, **_):
    """Component 1: entropy-dependent sampling temperature in the training rollouts (HF generate). The statistics
    are those the advantage hook stored for this run (keyed by the run's generator, ``rctx.generator``)."""
    generator = rctx.generator
    return [HapoTemperatureProcessor(lambda: rollout_stats_for(generator), tau=temperature_tau)]


def rollout_stats_for(generator: torch.Generator | None):
    """The statistics for the next rollout of the run that owns ``generator`` (the contexts' ``generator``; None
    before the first batch)."""
    return ROLLOUT_STATS.get(generator) if generator is not None else None


# ------------------------------------------------------------------------------------------------------------------
# component 2 (+ statistics for component 1): advantage hook
# ------------------------------------------------------------------------------------------------------------------
def grpo_verl(rewards: torch.Tensor, group_size: int, eps: float = 1e-6, norm_by_std: bool = True) -> torch.Tensor:
    """verl ``compute_grpo_outcome_advantage`` per response: (r - mean) / (unbiased std + eps); singletons 0/1."""
    g = rewards.view(-1, group_size)
    if group_size == 1:
        mean, std = torch.zeros_like(g), torch.ones_like(g)
    else:
        mean, std = g.mean(1, keepdim=True), g.std(1, keepdim=True)
    out = (g - mean) / (std + eps) if norm_by_std else g - mean
    return out.reshape(-1)


ADV_SOURCE = (f"arXiv 2509.16591 (HAPO); {CODE} verl/trainer/ppo/core_algos.py compute_hapo_outcome_advantage; "
              "ray_trainer.py L1020-1027 (rollout statistics)")
ADV_HPARAMS = {
    "token_level_adv": HParam(True, "bool", "component 2: token-level group normalisation (False: verl GRPO "
                              "advantage)", f"{SCRIPT} adv_estimator=hapo"),
    "fallback_threshold": HParam(5.0, "advantage units", "a group whose |normed| reaches this falls back to GRPO",
                                 "core_algos.py compute_hapo_outcome_advantage: torch.abs(normed) >= 5"),
    "adv_epsilon": HParam(1e-6, "reward units", "added to the std", "compute_hapo_outcome_advantage epsilon"),
    "norm_adv_by_std": HParam(True, "bool", "divide by the std", "verl algorithm.norm_adv_by_std_in_grpo "
                              "default True"),
}


def hapo_advantage(actx: AdvantageContext, *, token_level_adv: bool, fallback_threshold: float, adv_epsilon: float,
                   norm_adv_by_std: bool, entropy_pivot: float = 0.8, hhat_sign: str = "code", **_):
    """HAPO token-level group-average advantage (N, T); also stores the rollout temperature statistics (their
    ``scale_neg`` carries the sign convention: ``hhat_sign`` "code" for ``hapo``, "paper" for ``hapo_paper``)."""
    mask = actx.mask.to(torch.float64)
    rewards = torch.nan_to_num(actx.rewards.to(torch.float64), nan=0.0)
    grpo = grpo_verl(rewards, actx.group_size, adv_epsilon, norm_adv_by_std).unsqueeze(-1) * mask
    adv = grpo.clone()
    n_fallback = 0
    n_groups = rewards.numel() // actx.group_size
    if token_level_adv:
        scores = rewards.unsqueeze(-1) * mask
        for gi in range(n_groups):
            sl = slice(gi * actx.group_size, (gi + 1) * actx.group_size)
            vals = scores[sl][mask[sl] > 0]
            mean = vals.mean()
            std = vals.std(unbiased=False)
            normed = (scores[sl] - mean) / (std + adv_epsilon) if norm_adv_by_std else scores[sl] - mean
            if torch.any(normed.abs() >= fallback_threshold):
                n_fallback += 1
            else:
                adv[sl] = normed
    metrics = {"method/frac_tokens_touched": float(1.0 - n_fallback / max(n_groups, 1)) if token_level_adv else 0.0,
               "hapo/fallback_group_frac": n_fallback / max(n_groups, 1)}
    if actx.entropies is not None and actx.generator is not None:
        _, stats = entropy_h(actx.entropies.to(torch.float64), actx.mask, entropy_pivot, hhat_sign)
        ROLLOUT_STATS[actx.generator] = tuple(float(s) for s in stats)
        metrics.update({"hapo/rollout_log_entropy_pivot": float(stats[0]), "hapo/rollout_h_std": float(stats[1])})
    return adv.to(actx.mask.device, torch.float32), metrics




# version 2: `hapo` is the released code (hhat >= 0); the paper's sign is hapo_paper (issue 10)
@register_advantage("hapo", paper="hapo", needs=("adv_token_stats",), source=ADV_SOURCE, hparams=ADV_HPARAMS,
                    version=2, state=STATE)
def hapo_code_advantage(actx: AdvantageContext, **hp):
    """HAPO advantage; rollout statistics with the released code's scale_neg = 1/neg_min (hhat >= 0)."""
    return hapo_advantage(actx, **{**hp, "hhat_sign": "code"})


@register_advantage("hapo_paper", paper="hapo", needs=("adv_token_stats",), hparams=ADV_HPARAMS, state=STATE,
                    source=ADV_SOURCE + "; paper sign of hhat (scale_neg = -1/neg_min)",
                    description="HAPO with the paper's signed hhat in [-1, 1] (the equations, not the released code)")
def hapo_paper_advantage(actx: AdvantageContext, **hp):
    """HAPO advantage; rollout statistics with the paper's sign (hhat < 0 for h < 0)."""
    return hapo_advantage(actx, **{**hp, "hhat_sign": "paper"})


# ------------------------------------------------------------------------------------------------------------------
# components 3 and 4: loss hook
# ------------------------------------------------------------------------------------------------------------------
LOSS_SOURCE = (f"arXiv 2509.16591 (HAPO); {CODE} verl/trainer/ppo/core_algos.py compute_policy_loss, ada_clip, "
               "ada_advantage, compute_entropy_h")
LOSS_HPARAMS = {
    "entropy_pivot": HParam(0.8, "quantile of log-entropy", "pivot m of the normalised entropy signal (the top "
                            "20 % of tokens have h > 0)", f"{SCRIPT} actor.entropy_pivot=0.8"),
    "temperature_tau": HParam(0.05, "relative temperature change", "component 1: T_t = T (1 + tau hhat) "
                              "(HapoTemperatureProcessor, through the rollout hook)",
                              f"{SCRIPT} rollout.temperature_tau=0.05"),
    "adaptive_advantage": HParam(True, "bool", "component 3 on/off", f"{SCRIPT} actor.adaptive_advantage=True"),
    "adv_beta": HParam(1.0, "dimensionless", "beta in A_ent = A (1 + beta hhat)", f"{SCRIPT} actor.adv_beta=1.0"),
    "adaptive_clip": HParam(True, "bool", "component 4 on/off", f"{SCRIPT} actor.adaptive_clip=True"),
    "clip_alpha": HParam(1.0, "dimensionless", "alpha in eps (1 -/+ alpha hhat)", f"{SCRIPT} actor.clip_alpha=1.0"),
    "clip_ratio_low": HParam(0.2, "ratio offset", "base eps_low", f"{SCRIPT} clip_ratio_low=0.2"),
    "clip_ratio_high": HParam(0.2, "ratio offset", "base eps_high", f"{SCRIPT} clip_ratio_high=0.2"),
    "clip_ratio_c": HParam(10.0, "ratio", "dual-clip cap for A < 0 (null: off)", f"{SCRIPT} clip_ratio_c=10.0",
                           type=float | None),
}


def hapo_loss(ctx: TokenContext, *, entropy_pivot: float, temperature_tau: float, adaptive_advantage: bool,
              adv_beta: float, adaptive_clip: bool, clip_alpha: float, clip_ratio_low: float, clip_ratio_high: float,
              clip_ratio_c: float | None, hhat_sign: str, **_):
    """HAPO loss: entropy-adaptive clip bounds and advantage redistribution around the neutral ratio zone.
    ``hhat_sign``: "code" (released code, hhat >= 0: ``hapo``) or "paper" (signed: ``hapo_paper``)."""
    if ctx.entropies is None:
        raise ValueError("hapo needs ctx.entropies")
    ratio = ctx.ratio
    with torch.no_grad():
        hhat, _ = entropy_h(ctx.entropies.detach().to(ratio.dtype), ctx.mask, entropy_pivot, hhat_sign)
        eps_low = torch.full_like(hhat, clip_ratio_low)
        eps_high = torch.full_like(hhat, clip_ratio_high)
        if adaptive_clip:
            eps_low = torch.where(hhat <= 0, clip_ratio_low * (1 - hhat * clip_alpha), eps_low)
            eps_high = torch.where(hhat > 0, clip_ratio_high * (1 + hhat * clip_alpha), eps_high)
        adv = ctx.advantages
        redistributed = torch.zeros_like(ctx.mask, dtype=torch.bool)
        if adaptive_advantage:
            adv_ent = adv * (1 + adv_beta * hhat)
            r = ratio.detach()
            inside = (r > 1.0 - eps_low / 2) & (r < 1.0 + eps_high / 2)
            use_ent = torch.where(hhat > 0, ~inside, inside)
            adv = torch.where(use_ent, adv_ent, adv)
            redistributed = use_ent & (ctx.mask > 0) & (adv_ent != ctx.advantages)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(l1, l2)
    clipped = (l2 > l1) & (ctx.mask > 0)
    if clip_ratio_c is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * clip_ratio_c), loss)
    valid = ctx.mask > 0
    n = max(ctx.n_valid, 1)
    metrics = {
        "method/frac_tokens_touched": int(redistributed.sum()) / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "hapo/frac_high_entropy": int((valid & (hhat > 0)).sum()) / n,
        "hapo/hhat_min": float(hhat[valid].min()) if valid.any() else 0.0,
        "hapo/hhat_max": float(hhat[valid].max()) if valid.any() else 0.0,
        "hapo/eps_low_mean": float(masked_mean(eps_low, ctx.mask)),
        "hapo/eps_high_mean": float(masked_mean(eps_high, ctx.mask)),
    }
    return loss, metrics


@register_loss("hapo", paper="hapo", source=LOSS_SOURCE + "; released code: scale_neg = 1/neg_min, hhat >= 0",
               hparams=LOSS_HPARAMS)
def hapo_code_loss(ctx: TokenContext, **hp):
    """HAPO loss as released (hhat >= 0 for every token: the code that produced the paper's tables)."""
    return hapo_loss(ctx, **{**hp, "hhat_sign": "code"})


@register_loss("hapo_paper", paper="hapo", source=LOSS_SOURCE + "; paper's signed hhat: scale_neg = -1/neg_min",
               hparams=LOSS_HPARAMS)
def hapo_paper_loss(ctx: TokenContext, **hp):
    """HAPO loss with the paper's signed hhat in [-1, 1]."""
    return hapo_loss(ctx, **{**hp, "hhat_sign": "paper"})


# component 1 for hapo_paper: the same rollout hook (its statistics come from hapo_paper's advantage hook, signed)
register_rollout("hapo_paper", paper="hapo", source=f"arXiv 2509.16591 (HAPO) component 1; {CODE} "
                 "vllm/v1/sample/sampler.py compute_entropy_based_temperature (paper's signed hhat)",
                 hparams={"temperature_tau": LOSS_HPARAMS["temperature_tau"]})(hapo_rollout)
