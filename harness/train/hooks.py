"""The trainer's reward, advantage and data hooks (a mixin of :class:`harness.train.trainer.HarnessGRPOTrainer`;
the rollout hook is :class:`harness.train.rollout.RolloutMixin`): each hook gets its context object, never the
trainer, as the registry's docstring says."""
from __future__ import annotations

import torch

from harness.methods.context import BatchContext, BatchDecision, RewardContext
from harness.train.refill import RefillMixin
from harness.train.rollout import RolloutMixin

#: issue 14: key prefix of the per-token rollout columns in TRL's batch dict (:meth:`HookMixin._token_column_tensors`)
TOKEN_COLUMN_PREFIX = "token_column:"


class HookMixin(RolloutMixin, RefillMixin):
    """Reward, advantage and data extension points (the rollout one through :class:`RolloutMixin`); relies on the
    GRPOTrainer attributes it is mixed into."""

    # -- reward extension point ------------------------------------------------------------------------
    def _generate(self, prompts):
        out = super()._generate(prompts)
        self._last_prompt_ids = out[0]  # aligned with the completion ids the reward functions get
        # issue 14: a rollout_func's extra fields (out[5], env_mask already taken out) and the completions' lengths,
        # for the per-token columns (:meth:`_token_column_tensors`)
        self._last_rollout_fields = (tuple(out[5] or ()), [len(c) for c in out[1]])
        return out

    def _method_reward_func(self):
        """The method's ``reward`` hook as a TRL reward function (named ``<method>_reward`` in the metrics)."""
        def reward(prompts, completions, completion_ids, **kwargs):
            return self._call_reward_hook(prompts, completions, completion_ids, kwargs)

        reward.__name__ = f"{self.method.name}_reward"
        return reward

    def _call_reward_hook(self, prompts, completions, completion_ids, kwargs) -> list:
        for k in ("trainer_state", "log_extra", "environments"):
            kwargs.pop(k, None)
        log_metric = kwargs.pop("log_metric", None)
        answers, phases = kwargs.pop("answer", None), kwargs.pop("phases", None)
        if phases is None and self.phase_fn is not None:
            phases = [list(self.phase_fn(list(ids))) for ids in completion_ids]
        logps = ents = None
        if "reward_token_stats" in self.method.needs:
            logps, ents = self._reward_token_stats(completion_ids)
        training = self.model.training
        rctx = RewardContext(prompts=prompts, completions=completions, completion_ids=completion_ids,
                             group_size=self.num_generations if training else self.num_generations_eval,
                             answers=answers, columns=kwargs, entropies=ents, logps=logps, phases=phases,
                             generator=self._generator, step=self.state.global_step,
                             max_steps=max(self.state.max_steps, 1), training=training, log_metric=log_metric)
        out = list(self.method.hook("reward")(rctx, **self.hparams))
        if len(out) != len(completion_ids):
            raise ValueError(f"reward of {self.method.name!r} returned {len(out)} values for {len(completion_ids)} "
                             "completions")
        return out

    def _trl_old_logprob_pass(self) -> bool:
        """Whether TRL's generation computes the old per-token log-probs (its condition in
        ``_generate_and_score_completions``: generation misaligned with the optimizer steps, or vLLM's importance
        sampling correction); that pass comes before the rewards."""
        every = self.args.steps_per_generation * self.num_iterations
        return bool(self.args.gradient_accumulation_steps % every != 0
                    or (self.use_vllm and getattr(self, "vllm_importance_sampling_correction", False)))

    def _reward_token_stats(self, completion_ids) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-token log-probs and entropies of the batch's completions under the current policy for a reward that
        needs them: from TRL's old-logprob pass over this batch where it ran (no extra forward), else one no-grad
        forward (:meth:`_token_stats`)."""
        gen, lens = self._gen_stash, [len(list(x)) for x in completion_ids]
        if gen is not None and gen[0].shape[0] == len(lens) and gen[0].shape[1] >= max(lens, default=0):
            return ([gen[0][i, :n].float().cpu() for i, n in enumerate(lens)],
                    [gen[1][i, :n].float().cpu() for i, n in enumerate(lens)])
        return self._token_stats(self._last_prompt_ids, completion_ids)

    # -- advantage and data extension points -----------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = out  # gathered over processes, group order
        # this process's completion texts (conversational: the last message's content), for AdvantageContext
        self._last_completions = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return out

    def _generate_and_score_completions(self, inputs):
        data_fn = self.method.hook("data") if self.model.training else None
        if data_fn is not None:
            inputs = self._data_prompts(data_fn, inputs)
        out = self._score_batch(inputs)
        if data_fn is not None:
            out = self._data_scored(data_fn, inputs, out)
        return out

    def _score_batch(self, inputs: list) -> dict:
        """TRL's generation and scoring of ``inputs``, plus the old logits and advantage hook the method asks for."""
        self._gen_stash = None
        # the stash of TRL's old-logprob pass (below, before the rewards), where TRL makes that pass at all
        self._in_generation = bool({"adv_token_stats", "reward_token_stats"} & set(self.method.needs)) and \
            self._trl_old_logprob_pass()
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            self._in_generation = False
        out.update(self._token_column_tensors(inputs, out))  # issue 14: per-token rollout columns
        if "old_logits" in self.method.needs:
            with torch.no_grad():
                out["old_logits"] = self._policy_logits(self.model, out).detach()
        fn = self.method.hook("advantage")
        if fn is not None and self.model.training:
            out["advantages"] = self._method_advantages(fn, out)
        return out

    # -- issue 14: per-token rollout columns for loss hooks, and scoring given sequences with gradients ----------
    # -- issue 14: per-token rollout columns for loss hooks ------------------------------------------------------
    def _token_column_tensors(self, inputs: list, out: dict) -> dict[str, torch.Tensor]:
        """The rollout_func's per-token fields (every row a list of numbers, one per completion token, e.g. an
        episode's ``turn_ids``) as (n, T) tensors under ``TOKEN_COLUMN_PREFIX + name`` in TRL's batch dict, padded
        with -1 past each completion (long when every value is an int, else float32). TRL's shuffle and
        micro-batch split cut every (n, T) tensor of the dict by rows, so each micro-batch keeps its rows' columns
        (:attr:`TokenContext.token_columns`)."""
        names, lens = getattr(self, "_last_rollout_fields", ((), []))
        self._last_rollout_fields = ((), [])
        ids = out["completion_ids"]
        if not names or len(lens) != ids.size(0) or len(inputs) != ids.size(0):
            return {}
        cols = {}
        for name in names:
            vals = [r.get(name) for r in inputs]
            if not all(isinstance(v, (list, tuple)) and len(v) == n and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) for v, n in zip(vals, lens)):
                continue
            dtype = torch.long if all(isinstance(x, int) for v in vals for x in v) else torch.float32
            t = torch.full(ids.shape, -1, dtype=dtype)
            for i, v in enumerate(vals):
                t[i, :min(len(v), ids.size(1))] = torch.as_tensor(list(v)[:ids.size(1)], dtype=dtype)
            cols[TOKEN_COLUMN_PREFIX + name] = t.to(ids.device)
        return cols

    def _truncated(self, out: dict) -> torch.Tensor:
        """(N,) bool over all processes, group order: completions cut at ``max_completion_length`` (no EOS; TRL's
        ``completions/clipped_ratio`` definition)."""
        ids, m = out["completion_ids"], out["completion_mask"]
        last = ids.gather(1, (m.sum(1) - 1).clamp(min=0).long().unsqueeze(1)).squeeze(1)
        stop = torch.tensor([*self.eos_token_ids, self._tokenizer.pad_token_id], device=ids.device)
        return self.accelerator.gather(~torch.isin(last, stop)).cpu()

    def _weighted_rewards(self) -> torch.Tensor:
        """(N,) weighted sums of the reward functions over all processes, group order; NaN where unscorable."""
        rpf = self._last_rewards_per_func
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        return rewards

    def _data_prompts(self, fn, inputs: list) -> list:
        """Stage "prompts": the hook sees one row per group and may replace them (each new row is sampled G times).
        Replacing rows needs a batch of whole groups; otherwise ``rows`` are the first of every G inputs."""
        g = self.num_generations
        groups = [inputs[i:i + g] for i in range(0, len(inputs), g)]
        whole = not len(inputs) % g and all(r.get("prompt") == grp[0].get("prompt") for grp in groups for r in grp)
        bctx = BatchContext(stage="prompts", group_size=g, rows=[dict(grp[0]) for grp in groups],
                            dataset=self.train_dataset, generator=self._generator, step=self.state.global_step,
                            max_steps=max(self.state.max_steps, 1))
        dec = fn(bctx, **self.hparams)
        self._log_decision(dec)
        if dec is None or dec.rows is None:
            return inputs
        if not whole:
            raise ValueError(f"data hook of {self.method.name!r}: this process's generation batch must hold whole "
                             "groups (per-device generation batch divisible by num_generations)")
        if len(dec.rows) != len(groups):
            raise ValueError(f"data hook of {self.method.name!r} returned {len(dec.rows)} rows for {len(groups)} "
                             "groups")
        return [dict(r) for r in dec.rows for _ in range(g)]

    def _scored_context(self, inputs: list, out: dict) -> BatchContext:
        from accelerate.utils import gather_object

        acc = self.accelerator
        mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        gather = lambda x: acc.gather(acc.pad_across_processes(x, dim=1) if x.dim() > 1 else x)  # noqa: E731
        return BatchContext(stage="scored", group_size=self.num_generations, rows=gather_object(list(inputs)),
                            dataset=self.train_dataset, rewards=self._weighted_rewards(),
                            advantages=gather(out["advantages"]), mask=gather(mask),
                            completion_ids=gather(out["completion_ids"]), truncated=self._truncated(out),
                            generator=self._generator, step=self.state.global_step,
                            max_steps=max(self.state.max_steps, 1))

    def _checked_decision(self, dec: BatchDecision | None, n_all: int):
        """(keep (N,) bool or None, weights (N,) float or None) of a stage-"scored" decision, checked."""
        keep = weights = None
        if dec is not None and dec.weights is not None:
            weights = torch.as_tensor(dec.weights, dtype=torch.float32).detach().flatten().cpu()
            if weights.numel() != n_all or not torch.all(torch.isfinite(weights) & (weights >= 0)):
                raise ValueError(f"data hook of {self.method.name!r}: weights must be {n_all} finite values >= 0")
        if dec is not None and dec.keep is not None:
            keep = torch.as_tensor(dec.keep).detach().flatten().cpu().bool()
            if keep.numel() != n_all:
                raise ValueError(f"data hook of {self.method.name!r}: keep must have {n_all} values")
        return keep, weights

    def _data_scored(self, fn, inputs: list, out: dict) -> dict:
        """Stage "scored": ``keep`` leaves dropped samples out of the loss mask and the token normaliser; ``weights``
        scale each sample's advantage; ``resample`` first refills dropped groups (:meth:`_refill`)."""
        acc = self.accelerator
        bctx = self._scored_context(inputs, out)
        dec = fn(bctx, **self.hparams)
        if dec is None:
            return out
        keep, weights = self._checked_decision(dec, bctx.rewards.numel())
        all_mask = bctx.mask.float().cpu()
        if dec.resample:
            rounds = extra = unfilled = 0
            if keep is not None and not keep.all():
                touched = ~keep  # the samples the refill replaces
                frac = float(all_mask[touched].sum() / all_mask.sum().clamp(min=1))
                dec.metrics.setdefault("method/frac_tokens_touched", frac)
                out, weights, rounds, extra, unfilled = self._refill(fn, out, keep, weights, dec.resample_max_rounds)
                keep = None  # every place holds a group to train on
                mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
                all_mask = acc.gather(acc.pad_across_processes(mask, dim=1)).float().cpu()
            for name, v in (("resample_rounds", rounds), ("extra_generations", extra), ("unfilled_frac", unfilled)):
                self._metrics["train"][f"{self.method.name}/{name}"].append(float(v))
        n_all, n = all_mask.size(0), out["prompt_ids"].size(0)
        local = slice(acc.process_index * n, (acc.process_index + 1) * n)
        touched = torch.zeros(n_all, dtype=torch.bool)
        if weights is not None:
            touched |= weights != 1.0
            adv = out["advantages"]
            wl = weights[local].to(adv.device, adv.dtype)
            out["advantages"] = adv * (wl.unsqueeze(1) if adv.dim() == 2 else wl)
        if keep is not None:
            touched |= ~keep
            tm = out.get("tool_mask")
            tm = torch.ones_like(out["completion_mask"]) if tm is None else tm
            out["tool_mask"] = tm * keep[local].to(tm.device, tm.dtype).unsqueeze(1)
            out["num_items_in_batch"] = acc.gather((out["completion_mask"] * out["tool_mask"]).sum()).sum()
            dec.metrics.setdefault("data/kept_frac", float(keep.float().mean()))
        if "method/frac_tokens_touched" not in dec.metrics:
            dec.metrics["method/frac_tokens_touched"] = float(all_mask[touched].sum() / all_mask.sum().clamp(min=1))
        self._log_decision(dec)
        return out

    def _log_decision(self, dec: BatchDecision | None) -> None:
        for k, v in (dec.metrics if dec is not None else {}).items():
            if k == "method/frac_tokens_touched":
                self._last_adv_frac = float(v)  # logged with every micro-batch by _compute_loss
            else:
                self._metrics["train"][k].append(float(v))
