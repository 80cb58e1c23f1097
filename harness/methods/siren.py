"""SIREN: selective, self-anchored entropy regularisation. "Rethinking Entropy Regularization in Large Reasoning
Models" (arXiv 2509.25133).

Ported from the authors' code, Linn3a/siren @ fa59a8dfbecf5c3936ed905d5902a06c0ca425ee:
``verl/verl/workers/actor/dp_actor.py`` (``efficient_top_p_sampling``: top-p entropy; ``mask_by_quantile``: peak
mask; ``update_policy`` branch ``experiment_type == "siren"``: ``pg_loss + entropy_coeff * (H_masked - H_anchor)^2``),
``verl/verl/trainer/ppo/ray_trainer.py`` L986-1003 (anchor = masked entropy of the step-1 batch),
``verl/verl/trainer/ppo/core_algos.py`` (``compute_policy_loss`` with dual clip, ``agg_loss``) and
``exp_scripts/siren.sh`` (hyperparameters).

Per token t of the micro-batch (temperature-scaled logits z_t):

1. nucleus S_t = the most probable tokens whose cumulative probability stays *below* ``entropy_topp`` (authors'
   ``searchsorted`` cut-off: the token that crosses p is excluded, so a token whose top-1 probability is >= p has an
   empty nucleus and top-p entropy 0), capped at ``entropy_topk`` tokens; H_t = entropy of softmax(z_t) renormalised
   on S_t (differentiable, gradient ``-q_v (z_v - E_q z)`` on S_t);
2. peak mask M_t = H_t > (``mask_ratio`` quantile of H over the valid tokens of the same response, linear
   interpolation, ``torch.nanquantile``);
3. H_masked = ``entropy_agg_mode`` ("seq-mean-token-mean") of H over M; H_anchor = H_masked of the first training
   micro-batch (detached, kept for the run);
4. loss = dual-clip PPO surrogate + ``entropy_coeff`` * (H_masked - H_anchor)^2.

The scalar regulariser is returned as the loss hook's third output, ``scalar_loss``: the trainer adds it once per
micro-batch with verl's micro-batch weight (1 / gradient-accumulation steps), whatever the ``loss_type``, exactly as
the authors' actor (``loss = (pg_loss + entropy_coeff * mse) / gradient_accumulation``; with ``use_dynamic_bsz``
the same weight, micro-batch share of the mini-batch). Its effective coefficient is the authors' for grpo, bnpo,
dr_grpo and dapo (test: its gradient equals the authors' regulariser gradient / gradient_accumulation for each).
(Until this change it was spread as the same value over the valid tokens, which the token normaliser rescaled:
under ``dr_grpo`` by n_valid / (B L_max), i.e. ~mean_len / 3072 of the authors' strength at the paper tier.) The PPO
part is per-token and aggregated by ``loss_type`` (``dr_grpo`` = the authors' ``seq-mean-token-sum-norm``).

Deviations (also in the card):
- memory: the nucleus is found per chunk of rows without gradient and kept as one threshold logit per token; the
  entropy and its gradient are computed by a custom autograd function in row chunks, so beyond ``ctx.logits`` at
  most one (B, T, V) tensor (the gradient) exists; the authors' code materialises several (softmax, mask, masked
  distribution). Ties at the nucleus boundary are all kept (authors: ``topk`` order decides); the authors' 1e-12
  epsilons are omitted (relative effect < 1e-10).
- the authors' actor applies ``mask_by_quantile`` twice in the ``siren`` branch (once with ``use_siren`` and again on
  the already masked entropy); the second pass selects the same tokens whenever the masked tokens have positive
  entropy (checked on the golden fixture), so it is applied once here. The mask is also intersected with the valid
  tokens (the authors rely on padding entropy being 0).
- anchor: the authors measure it on the whole step-1 batch in the old-log-prob pass; here on the first micro-batch
  the loss sees (the same policy, a subset of the batch). It is kept per run and saved in the job's checkpoints
  (registry ``state=``), so a resumed run keeps the step-1 anchor.
"""
from __future__ import annotations

import weakref

import torch

from harness.methods.context import TokenContext, dual_clip_ppo, masked_mean
from harness.methods.registry import HParam, MethodState, register_loss

CODE = "Linn3a/siren@fa59a8d"
ROW_CHUNK = 4096  # rows (tokens) per chunk of the full-vocabulary computations

#: step-1 anchor per training run (keyed by the trainer's seeded generator, one per trainer)
_ANCHORS: "weakref.WeakKeyDictionary[torch.Generator, float]" = weakref.WeakKeyDictionary()


def _anchor_state(generator) -> dict:
    return {"anchor": _ANCHORS[generator]} if generator in _ANCHORS else {}


def _load_anchor(generator, state: dict) -> None:
    if "anchor" in state:
        _ANCHORS[generator] = float(state["anchor"])


#: the anchor in checkpoints (harness.train.resume)
STATE = MethodState(_anchor_state, _load_anchor, keys=("anchor",))


@torch.no_grad()
def nucleus_threshold(logits2d: torch.Tensor, top_p: float, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the smallest kept logit (-inf where the nucleus is empty) and the nucleus size, as the authors'
    ``efficient_top_p_sampling``: keep the top-k tokens whose cumulative probability is < p. Rows in chunks."""
    n, v = logits2d.shape
    k = min(int(top_k), v)
    thr = torch.empty(n, dtype=logits2d.dtype, device=logits2d.device)
    cnt = torch.empty(n, dtype=torch.long, device=logits2d.device)
    for s in range(0, n, ROW_CHUNK):
        z = logits2d[s:s + ROW_CHUNK]
        top_z, _ = torch.topk(z, k, dim=-1)
        cum = torch.exp(top_z - torch.logsumexp(z, -1, keepdim=True)).cumsum(-1)
        c = (cum < top_p).sum(-1)                                  # = searchsorted(cum, p, left)
        cnt[s:s + ROW_CHUNK] = c
        t = top_z.gather(-1, (c - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        thr[s:s + ROW_CHUNK] = torch.where(c > 0, t, torch.full_like(t, float("inf")))
    return thr, cnt


class _NucleusEntropy(torch.autograd.Function):
    """H = log Z_S - E_q[z] on S = {z >= thr}; dH/dz_v = -q_v (z_v - E_q[z]) on S. Row-chunked; saves only logits
    (already alive in the trainer) and per-row scalars."""

    @staticmethod
    def forward(ctx, logits2d, thr):
        n = logits2d.shape[0]
        h = torch.zeros(n, dtype=logits2d.dtype, device=logits2d.device)
        mean_z = torch.zeros_like(h)
        log_z = torch.zeros_like(h)
        for s in range(0, n, ROW_CHUNK):
            z, t = logits2d[s:s + ROW_CHUNK], thr[s:s + ROW_CHUNK].unsqueeze(-1)
            zs = z.masked_fill(z < t, float("-inf"))
            lz = torch.logsumexp(zs, -1)
            ok = torch.isfinite(lz)
            lz = torch.where(ok, lz, torch.zeros_like(lz))
            e = (torch.exp(zs - lz.unsqueeze(-1)) * z.masked_fill(z < t, 0.0)).sum(-1)
            h[s:s + ROW_CHUNK] = torch.where(ok, lz - e, torch.zeros_like(e))
            mean_z[s:s + ROW_CHUNK], log_z[s:s + ROW_CHUNK] = e, lz
        ctx.save_for_backward(logits2d, thr, mean_z, log_z)
        return h

    @staticmethod
    def backward(ctx, g):
        logits2d, thr, mean_z, log_z = ctx.saved_tensors
        grad = torch.empty_like(logits2d)
        for s in range(0, logits2d.shape[0], ROW_CHUNK):
            z, t = logits2d[s:s + ROW_CHUNK], thr[s:s + ROW_CHUNK].unsqueeze(-1)
            q = torch.exp(z - log_z[s:s + ROW_CHUNK].unsqueeze(-1)).masked_fill(z < t, 0.0)
            grad[s:s + ROW_CHUNK] = -g[s:s + ROW_CHUNK].unsqueeze(-1) * q * (z - mean_z[s:s + ROW_CHUNK].unsqueeze(-1))
        return grad, None


def top_p_entropy(logits: torch.Tensor, top_p: float, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> (...) top-p renormalised entropy (differentiable) and nucleus size."""
    shape = logits.shape[:-1]
    z = logits.reshape(-1, logits.shape[-1])
    thr, cnt = nucleus_threshold(z.detach(), top_p, top_k)
    return _NucleusEntropy.apply(z, thr).view(shape), cnt.view(shape)


def peak_mask(h: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """Authors' ``mask_by_quantile(x, mask, 1, q)``: x > per-sequence nanquantile(q) of x over valid tokens."""
    x = h.detach().float().masked_fill(mask <= 0, float("nan"))
    lower = torch.nanquantile(x, quantile, dim=-1, keepdim=True)
    return (h.detach() > lower.to(h.dtype)) & (mask > 0)


def agg(x: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """verl ``agg_loss`` (token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm)."""
    mask = mask.to(x.dtype)
    if mode == "token-mean":
        return (x * mask).sum() / (mask.sum() + 1e-8)
    if mode == "seq-mean-token-mean":
        n = mask.sum(-1)
        per_seq = torch.where(n > 0, (x * mask).sum(-1) / n.clamp(min=1), torch.zeros_like(n))
        return per_seq.mean()
    if mode == "seq-mean-token-sum":
        return (x * mask).sum(-1).mean()
    if mode == "seq-mean-token-sum-norm":
        return (x * mask).sum(-1).mean() / mask.shape[-1]
    raise ValueError(f"unknown entropy_agg_mode {mode!r}")


@register_loss(
    # version 2: the regulariser is a per-micro-batch scalar term (issue 10)
    "siren", paper="siren", needs=("logits",), version=2, state=STATE,
    source=f"arXiv 2509.25133 (SIREN); {CODE} verl/verl/workers/actor/dp_actor.py update_policy (siren), "
           "efficient_top_p_sampling, mask_by_quantile",
    hparams={
        "entropy_coeff": HParam(0.005, "loss units per nat^2", "c, weight of (H_masked - H_anchor)^2",
                                "exp_scripts/siren.sh entropy_coeff=0.005"),
        "entropy_topp": HParam(0.8, "probability mass", "nucleus for the top-p entropy (tokens with cumulative "
                               "probability < p)", "exp_scripts/siren.sh entropy_topp=0.8"),
        "entropy_topk": HParam(10000, "tokens", "cap on the nucleus size (min(k, vocab))",
                               "exp_scripts/siren.sh entropy_topk=10000"),
        "mask_ratio": HParam(0.8, "quantile (per response)", "peak mask keeps tokens above this per-sequence "
                             "quantile of top-p entropy (top 20 %)", "exp_scripts/siren.sh mask_ratio=0.8"),
        "entropy_agg_mode": HParam("seq-mean-token-mean", "verl loss_agg_mode name", "aggregation of the masked "
                                   "entropy (and of the anchor)", "dp_actor.py entropy_agg_mode default; "
                                   "ray_trainer.py L988"),
        "clip_ratio_low": HParam(0.28, "ratio offset", "PPO clip 1 - eps_low", "exp_scripts/siren.sh clip_ratio=0.28"),
        "clip_ratio_high": HParam(0.28, "ratio offset", "PPO clip 1 + eps_high", "exp_scripts/siren.sh clip_ratio=0.28"),
        "clip_ratio_c": HParam(3.0, "ratio", "dual-clip cap for A < 0 (null: off)", "verl compute_policy_loss "
                               "clip_ratio_c default 3.0 (dp_actor.py config.get('clip_ratio_c', 3.0))", type=float | None),
        "entropy_anchor": HParam(None, "nats (null: measure at step 1)", "fixed anchor; null = masked top-p "
                                 "entropy of the first training micro-batch", "dp_actor.py config.entropy_anchor",
                                 type=float | None),
    },
)
def siren(ctx: TokenContext, *, entropy_coeff: float, entropy_topp: float, entropy_topk: int, mask_ratio: float,
          entropy_agg_mode: str, clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float | None,
          entropy_anchor: float | None):
    """SIREN: PPO loss + c (H_masked - H_anchor)^2 on top-p entropy of peak-entropy tokens. Returns the per-token
    PPO loss, the metrics and the regulariser (a per-micro-batch scalar term, see the module docstring)."""
    if ctx.logits is None:
        raise ValueError("siren needs ctx.logits (declare needs=('logits',))")
    pg, clipped = dual_clip_ppo(ctx, clip_ratio_low, clip_ratio_high, clip_ratio_c)
    h, nucleus = top_p_entropy(ctx.logits, entropy_topp, entropy_topk)
    h = h.to(pg.dtype)
    m = peak_mask(h, ctx.mask, mask_ratio)
    h_masked = agg(h * m, m, entropy_agg_mode)
    anchor = entropy_anchor
    if anchor is None:
        if ctx.generator is not None:
            anchor = _ANCHORS.setdefault(ctx.generator, float(h_masked.detach()))
        else:
            anchor = float(h_masked.detach())
    reg = entropy_coeff * (h_masked - anchor) ** 2
    n = max(ctx.n_valid, 1)
    metrics = {
        "method/frac_tokens_touched": int(m.sum()) / n,
        "clip_ratio/region_mean": int(clipped.sum()) / n,
        "siren/masked_topp_entropy": float(h_masked.detach()),
        "siren/anchor": float(anchor),
        "siren/reg_loss": float(reg.detach()),
        "siren/topp_entropy_mean": float(masked_mean(h.detach(), ctx.mask)),
        "siren/nucleus_size_mean": float(masked_mean(nucleus.to(pg.dtype), ctx.mask)),
    }
    return pg, metrics, reg
