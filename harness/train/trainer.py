"""The one subclass of TRL's GRPOTrainer. Paper methods plug in through the registry.

- ``config`` methods (e.g. ``grpo``) run TRL's own loss unchanged; we only add the diagnostics.
- ``loss`` methods get a :class:`TokenContext` built from TRL's per-token log-probs, entropies, old
  log-probs and advantages, return ``(per_token_loss, metrics)``, and the loss is aggregated with TRL's
  normaliser for the configured ``loss_type``.

Every step, for every method, the metrics contract (:data:`REQUIRED_METRICS`) is logged.
"""
from __future__ import annotations

import torch
from trl import GRPOTrainer

from harness.methods.context import AdvantageContext, TokenContext
from harness.methods.registry import Method

COV_TOP_FRACTION = 0.02  # "top tail" of cov(logp, A): mean of the largest 2 % of token covariances

#: logged every step for every method (TRL logs the reward/length ones itself); a test asserts this.
REQUIRED_METRICS = (
    "reward", "reward_std", "entropy", "cov_logp_adv/mean", "cov_logp_adv/top_mean",
    "clip_ratio/region_mean", "method/frac_tokens_touched", "policy_loss",
    "completions/mean_length", "completions/clipped_ratio",
)

SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


class HarnessGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, method: Method, hparams: dict | None = None, method_seed: int = 0, **kwargs):
        self.method = method
        self.hparams = method.resolve(hparams)
        self._generator = torch.Generator().manual_seed(int(method_seed))
        self._stash: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_rewards_per_func: torch.Tensor | None = None
        self._in_generation = False
        self._gen_stash: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_adv_frac = 0.0
        super().__init__(*args, **kwargs)
        if "loss" in method.hooks:
            if self.loss_type not in SUPPORTED_LOSS_TYPES:
                raise ValueError(f"loss method {method.name!r} supports loss_type in {SUPPORTED_LOSS_TYPES}, "
                                 f"got {self.loss_type!r}")
            if self.beta != 0.0 or self._entropy_bonus_enabled or self.top_entropy_quantile < 1.0:
                raise ValueError(f"loss method {method.name!r} owns the per-token loss; set beta=0, "
                                 "entropy_coef=0 and top_entropy_quantile=1")

    # -- capture TRL's per-token tensors so diagnostics need no second forward pass -----------------
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        if self._in_generation:
            # TRL's no-grad old-logprob pass during generation: also take the entropies an advantage method needs
            kwargs["compute_entropy"] = True
        logps, ents, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if ents is not None:
            self._stash = (logps, ents)
            if self._in_generation:
                self._gen_stash = (logps.detach(), ents.detach())
        return logps, ents, aux

    # -- rollout extension point: logits processors for the training rollouts only -------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        fn = self.method.hook("rollout")
        if fn is None or self.use_vllm or not self.model.training:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        import functools

        from transformers import LogitsProcessorList

        procs = fn(self, **self.hparams)
        model = self.accelerator.unwrap_model(self.model)
        model.generate = functools.partial(type(model).generate, model, logits_processor=LogitsProcessorList(procs))
        try:
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                has_tool_images)
        finally:
            del model.generate  # back to the class method (PeriodicEval and users see plain generation)
        for p in procs:
            for k, v in getattr(p, "metrics", lambda: {})().items():
                self._metrics["train"][k].append(float(v))
        return out

    # -- advantage extension point ---------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = out  # gathered over processes, group order
        return out

    def _generate_and_score_completions(self, inputs):
        self._gen_stash = None
        self._in_generation = "adv_token_stats" in self.method.needs
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            self._in_generation = False
        if "old_logits" in self.method.needs:
            with torch.no_grad():
                out["old_logits"] = self._policy_logits(self.model, out).detach()
        fn = self.method.hook("advantage")
        if fn is not None and self.model.training:
            out["advantages"] = self._method_advantages(fn, out)
        return out

    def _method_advantages(self, fn, out) -> torch.Tensor:
        acc = self.accelerator
        rpf = self._last_rewards_per_func
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        logps = ents = None
        gen = self._gen_stash
        if "adv_token_stats" in self.method.needs and gen is not None and gen[0].shape == out["completion_ids"].shape:
            logps, ents = gen  # from TRL's old-logprob pass over this batch: no extra forward
        elif "adv_token_stats" in self.method.needs:
            with torch.no_grad():
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
                logps, ents, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, att, out["completion_ids"].size(1), compute_entropy=True)
        gather = lambda x: acc.gather(acc.pad_across_processes(x, dim=1)) if x is not None else None  # noqa: E731
        actx = AdvantageContext(rewards=rewards, group_size=self.num_generations, mask=gather(mask),
                                completion_ids=gather(out["completion_ids"]), scale_rewards=self.scale_rewards,
                                logps=gather(logps), entropies=gather(ents), generator=self._generator,
                                step=self.state.global_step, max_steps=max(self.state.max_steps, 1))
        adv, metrics = fn(actx, **self.hparams)
        n = out["prompt_ids"].size(0)
        i = acc.process_index
        adv = adv[i * n:(i + 1) * n]
        if adv.dim() == 2:
            adv = adv[:, : out["completion_ids"].size(1)]
        self._last_adv_frac = float(metrics.get("method/frac_tokens_touched", 0.0))
        for k, v in metrics.items():
            self._metrics["train"][k].append(float(v))
        return adv.to(out["completion_ids"].device)

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
                                  max_steps=max(self.state.max_steps, 1))

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
        per_token_loss, metrics = self.method.fn(ctx, **self.hparams)
        if "advantage" in self.method.hooks and "method/frac_tokens_touched" not in metrics:
            metrics["method/frac_tokens_touched"] = self._last_adv_frac
        mode = "train" if self.model.training else "eval"
        loss, policy_loss = self._aggregate(per_token_loss, ctx.mask, inputs, mode)
        self._metrics[mode]["policy_loss"].append(policy_loss)
        for k, v in metrics.items():
            self._metrics[mode][k].append(float(v))
        self._metrics[mode]["entropy"].append(float((ents.detach() * ctx.mask).sum() / ctx.mask.sum().clamp(min=1)))
        self._log_diagnostics(ctx, mode)
        return loss

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
        if cov.numel() == 0:
            return
        k = max(1, int(COV_TOP_FRACTION * cov.numel()))
        m = self._metrics[mode]
        m["cov_logp_adv/mean"].append(float(cov.mean()))
        m["cov_logp_adv/top_mean"].append(float(torch.topk(cov, k).values.mean()))
