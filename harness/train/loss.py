"""The loss side of :class:`harness.train.trainer.HarnessGRPOTrainer` (a mixin): ``config`` methods run TRL's loss
unchanged; ``loss`` methods get a :class:`TokenContext` and their per-token loss is aggregated with TRL's normaliser
(:meth:`LossMixin._loss_from_method`); both log the per-micro-batch diagnostics (:meth:`LossMixin._log_diagnostics`)."""
from __future__ import annotations

import torch

from harness.methods.context import TokenContext
from harness.train.hooks import TOKEN_COLUMN_PREFIX

COV_TOP_FRACTION = 0.02  # "top tail" of cov(logp, A): mean of the largest 2 % of token covariances


class LossMixin:
    """Relies on the GRPOTrainer attributes it is mixed into, the hooks' ``_sequence_scorer`` and the per-token
    tensors :class:`harness.train.advantage.AdvantageMixin` stashes from TRL's passes (``_stash``)."""

    def _compute_loss(self, model, inputs):
        if self.method.point != "loss" and "loss" not in self.method.hooks:
            self._stash = None
            loss = super()._compute_loss(model, inputs)
            logps, ents = self._stash
            ctx = self._context(inputs, logps, ents)
            mode = "train" if self.model.training else "eval"
            if not self._entropy_bonus_enabled:
                self._metrics[mode]["policy_loss"].append(float(loss.detach()))
            frac = self._last_adv_frac
            if self.top_entropy_quantile < 1.0:  # TRL's 80/20 mask: the share of valid tokens it drops
                kept = self.get_high_entropy_mask(ctx.entropies.detach(), ctx.mask, 1 - self.top_entropy_quantile)
                frac = 1.0 - float((kept * ctx.mask).sum() / ctx.mask.sum().clamp(min=1))
            self._metrics[mode]["method/frac_tokens_touched"].append(frac)
            self._log_diagnostics(ctx, mode)
            return loss
        return self._method_loss(model, inputs)

    def _context(self, inputs, logps, ents) -> TokenContext:
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        return TokenContext.build(logps, old, inputs["advantages"], mask, entropies=ents,
                                  generator=self._generator, step=self.state.global_step,
                                  max_steps=max(self.state.max_steps, 1),
                                  token_columns={k[len(TOKEN_COLUMN_PREFIX):]: v for k, v in inputs.items()
                                                 if k.startswith(TOKEN_COLUMN_PREFIX)})  # issue 14

    def _policy_logits(self, model, inputs) -> torch.Tensor:
        """(B, T, V) temperature-scaled logits over the completion tokens: the model's plain forward (TRL's fused
        head is bypassed), one (B, T, V) tensor, float32."""
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        t = inputs["completion_ids"].size(1)
        logits = model(input_ids=ids, attention_mask=att, logits_to_keep=t + 1, use_cache=False).logits
        return logits[:, :-1, :].float() / self.temperature

    def _method_loss(self, model, inputs):
        logits = None
        if "logits" in self.method.needs:
            logits = self._policy_logits(model, inputs)
            logz = torch.logsumexp(logits, dim=-1)
            logps = torch.gather(logits, -1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1) - logz
            with torch.no_grad():
                ents = logz - (torch.softmax(logits, -1) * logits).sum(-1)
        else:
            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            logps, ents, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=True)
        ctx = self._context(inputs, logps, ents)
        ctx.logits, ctx.old_logits = logits, inputs.get("old_logits")
        ctx.score = self._sequence_scorer(model) if self.model.training else None  # issue 14 (HookMixin)
        out = self.method.fn(ctx, **self.hparams)  # (per_token_loss, metrics[, scalar_loss])
        metrics = out[1]
        if "advantage" in self.method.hooks and "method/frac_tokens_touched" not in metrics:
            metrics["method/frac_tokens_touched"] = self._last_adv_frac
        mode = "train" if self.model.training else "eval"
        loss, policy_loss = self._loss_from_method(out, ctx.mask, inputs, mode)
        self._metrics[mode]["policy_loss"].append(policy_loss)
        for k, v in metrics.items():
            self._metrics[mode][k].append(float(v))
        self._metrics[mode]["entropy"].append(float((ents.detach() * ctx.mask).sum() / ctx.mask.sum().clamp(min=1)))
        self._log_diagnostics(ctx, mode)
        return loss

    # -- loss method output -> loss: TRL's token normaliser, plus an optional per-micro-batch scalar term --------------
    def _loss_from_method(self, out, mask, inputs, mode):
        """(loss, policy_loss) of a loss method's output ``(per_token_loss, metrics[, scalar_loss])``. The per-token
        loss is aggregated with TRL's ``loss_type`` normaliser (:meth:`_aggregate`). ``scalar_loss`` (a 0-d tensor,
        one value per micro-batch, e.g. SIREN's regulariser c (H - H_anchor)^2) is added with verl's micro-batch
        weight, 1 / gradient-accumulation steps, for every ``loss_type``: spread over the tokens instead, the token
        normaliser would rescale it (by n_valid / (B L_max) under dr_grpo)."""
        loss, policy_loss = self._aggregate(out[0], mask, inputs, mode)
        if len(out) > 2 and out[2] is not None:
            ga = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + out[2] / ga
            policy_loss += float(out[2].detach())
        return loss, policy_loss

    def _aggregate(self, per_token_loss, mask, inputs, mode):
        """TRL 1.16's normalisers (``_compute_loss``), so a loss method is comparable with the baseline."""
        ga = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type == "grpo":
            loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
            return loss / ga, float(loss.detach())
        if self.loss_type == "bnpo":
            loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
            return loss / ga, float(loss.detach())
        if self.loss_type == "dr_grpo":
            loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length)
            return loss / ga, float(loss.detach())
        norm = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            norm = norm * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = (per_token_loss * mask).sum() / norm
        return loss, float(loss.detach())

    def _log_diagnostics(self, ctx: TokenContext, mode: str) -> None:
        cov = ctx.token_cov()[ctx.mask > 0]
        m = self._metrics[mode]
        if cov.numel() == 0:  # every token left out (e.g. a data hook dropped all groups): nothing co-varies. NaN:
            # TRL's log() averages the finite values only, so the step's mean is over the micro-batches with tokens
            # (a 0.0 here would pull it towards 0), and a step with none logs no value (the recorder drops None)
            m["cov_logp_adv/mean"].append(float("nan"))
            m["cov_logp_adv/top_mean"].append(float("nan"))
            return
        k = max(1, int(COV_TOP_FRACTION * cov.numel()))
        m["cov_logp_adv/mean"].append(float(cov.mean()))
        m["cov_logp_adv/top_mean"].append(float(torch.topk(cov, k).values.mean()))
