"""The trainer's rollout, reward and data hooks (a mixin of :class:`harness.train.trainer.HarnessGRPOTrainer`):
each hook gets its context object, never the trainer, as the registry's docstring says."""
from __future__ import annotations

import contextlib
import copy
import functools

import torch
from transformers import StoppingCriteria
from trl import GRPOTrainer

from harness.methods.context import BatchContext, BatchDecision, RewardContext, RolloutContext
from harness.train.refill import RefillMixin

#: issue 14: key prefix of the per-token rollout columns in TRL's batch dict (:meth:`HookMixin._token_column_tensors`)
TOKEN_COLUMN_PREFIX = "token_column:"


class HookMixin(RefillMixin):
    """Generation-side extension points; relies on the GRPOTrainer attributes it is mixed into."""

    # -- rollout extension point ------------------------------------------------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """``kind="logits_processors"``: the hook's processors join HF ``generate`` in the training rollouts only."""
        fn = self.method.hook("rollout")
        if (fn is None or (self.method.rollout_kind or "logits_processors") != "logits_processors" or self.use_vllm
                or not self.model.training):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        from transformers import LogitsProcessorList

        procs = fn(self._rollout_context(in_generation=True), **self.hparams)
        with self._patched_generate(logits_processor=LogitsProcessorList(procs)):
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                has_tool_images)
        for p in procs:
            for k, v in getattr(p, "metrics", lambda: {})().items():
                self._metrics["train"][k].append(float(v))
        return out

    @contextlib.contextmanager
    def _patched_generate(self, **generate_kwargs):
        """Extra keyword arguments for the policy's HF ``generate`` while the block runs. Nested blocks merge: logits
        processors of an outer block (a task's environment) run after the inner block's (a method's)."""
        from transformers import LogitsProcessorList

        model = self.accelerator.unwrap_model(self.model)
        prev = model.__dict__.get("generate")
        kw = dict(generate_kwargs)
        if isinstance(prev, functools.partial):
            outer = dict(prev.keywords)
            if "logits_processor" in kw and "logits_processor" in outer:
                kw["logits_processor"] = LogitsProcessorList([*kw["logits_processor"], *outer["logits_processor"]])
            kw = {**outer, **kw}
        model.generate = functools.partial(type(model).generate, model, **kw)
        try:
            yield
        finally:
            if prev is None:
                del model.generate  # back to the class method (PeriodicEval and users see plain generation)
            else:
                model.generate = prev

    def _env_rollout_func(self, prompts: list, _trainer=None) -> dict:
        """TRL's ``rollout_func`` for a task with an environment (the smoke calculator): the environment is a logits
        processor that writes its tokens into the rollout; those positions get ``env_mask`` 0, which TRL turns into
        ``tool_mask`` (no loss, no entropy, no length). A method's logits-processor rollout hook still applies."""
        from transformers import LogitsProcessorList

        mode = "train" if self.model.training else "eval"
        prompt_ids = self._tokenize_prompts(prompts)[0]
        env = self.task_environment(self._tokenizer)
        g = self.num_generations if mode == "train" else self.num_generations_eval
        with self._patched_generate(logits_processor=LogitsProcessorList([env])):
            completion_ids, logprobs = self._generate_single_turn(prompt_ids, None, {}, g)
        env_mask = [env.env_mask(i, len(c)) for i, c in enumerate(completion_ids)]
        n = max(len(completion_ids), 1)
        for name, value in env.metrics(completion_ids).items():
            self._metrics[mode][name].append(value / n)
        return {"prompt_ids": [list(p) for p in prompt_ids], "completion_ids": [list(c) for c in completion_ids],
                "logprobs": logprobs, "env_mask": env_mask}

    def _rollout_context(self, in_generation: bool = False) -> RolloutContext:
        training = self.model.training
        mode = "train" if training else "eval"
        return RolloutContext(
            generator=self._generator, step=self.state.global_step, max_steps=max(self.state.max_steps, 1),
            group_size=self.num_generations if training else self.num_generations_eval,
            processing_class=self.processing_class, training=training, temperature=self.temperature,
            max_completion_length=self.max_completion_length, eos_token_ids=tuple(self.eos_token_ids),
            pad_token_id=self._tokenizer.pad_token_id,
            tokenize=lambda prompts: [list(ids) for ids in self._tokenize_prompts(prompts)[0]],
            generate=None if in_generation else self._context_generate, token_stats=self._token_stats,
            log_metric=lambda name, value: self._metrics[mode][name].append(float(value)))

    def _method_rollout_func(self, prompts: list, _trainer=None) -> dict:
        """TRL's ``rollout_func`` for ``kind="rollout_func"`` hooks: the hook gets a RolloutContext, not the trainer
        (issue 14: and ``episodes=``, an EpisodePlayer, when the task plays episodes)."""
        with self._episode_player() as player:
            extra = {} if player is None else {"episodes": player}
            out = self.method.hook("rollout")(prompts, self._rollout_context(), **extra, **self.hparams)
        n, name = len(prompts), self.method.name
        missing = sorted({"prompt_ids", "completion_ids", "logprobs"} - set(out))
        if missing:
            raise ValueError(f"rollout of {name!r} returned no {missing}")
        if len(out["prompt_ids"]) != n or len(out["completion_ids"]) != n:
            raise ValueError(f"rollout of {name!r} must return one prompt/completion per prompt entry ({n}), got "
                             f"{len(out['prompt_ids'])}/{len(out['completion_ids'])}")
        if any(len(c) == 0 for c in out["completion_ids"]):
            raise ValueError(f"rollout of {name!r} returned an empty completion")
        for key in ("env_mask", "phases", "logprobs"):
            v = out.get(key)
            if v is not None and [len(x) for x in v] != [len(c) for c in out["completion_ids"]]:
                raise ValueError(f"rollout of {name!r}: {key} needs one value per completion token")
        return out

    @contextlib.contextmanager
    def _episode_player(self):
        """issue 14 (ARPO, AEPO): for a task that plays episodes (``episodes=`` EpisodeSettings), an
        :class:`harness.evaluate.branching.EpisodePlayer` over the policy unwrapped for generation, with the run's
        sampling settings (as :func:`harness.train.episodes.make_rollout_func`); None for other tasks."""
        settings = getattr(self, "task_episodes", None)
        if settings is None:
            yield None
            return
        from trl.models.utils import unwrap_model_for_generation

        from harness.evaluate.branching import EpisodePlayer

        kw = {k: getattr(self, k) for k in ("top_p", "top_k", "min_p", "repetition_penalty")
              if getattr(self, k, None) is not None}
        kw.update(self.args.generation_kwargs or {})
        kw["eos_token_id"] = list(self.eos_token_ids)
        mode = "train" if self.model.training else "eval"
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                         gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
                                         ) as model, torch.no_grad():
            yield EpisodePlayer(model, self._tokenizer, settings,
                                self.num_generations if mode == "train" else self.num_generations_eval,
                                temperature=self.temperature, generation_kwargs=kw,
                                log_metric=lambda name, value: self._metrics[mode][name].append(float(value)))

    def _context_generate(self, prompts_ids, **gen_kwargs) -> list[list[int]]:
        """``RolloutContext.generate``: one sampled completion per input sequence (TRL's generation path)."""
        call_kw = {k: gen_kwargs.pop(k) for k in ("logits_processor", "stopping_criteria") if k in gen_kwargs}
        stop = gen_kwargs.pop("stop_strings", None)
        prompts_ids = [list(p) for p in prompts_ids]
        if self.use_vllm or self.use_transformers_continuous_batching:
            if gen_kwargs or call_kw or stop:
                raise NotImplementedError("RolloutContext.generate takes gen_kwargs with HF generate only")
            return GRPOTrainer._generate_single_turn(self, prompts_ids, None, {}, 1)[0]
        unknown = sorted(k for k in gen_kwargs if not hasattr(self.generation_config, k))
        if unknown:
            raise TypeError(f"RolloutContext.generate: {unknown[0]!r} is not a GenerationConfig field")
        recorder = None
        if stop:
            from transformers import StoppingCriteriaList

            recorder = _StopStrings(self._tokenizer, [stop] if isinstance(stop, str) else list(stop))
            call_kw["stopping_criteria"] = StoppingCriteriaList([*call_kw.get("stopping_criteria", []), recorder])
        saved = self.generation_config
        if gen_kwargs:
            self.generation_config = copy.deepcopy(saved)
            self.generation_config.update(**gen_kwargs)
        try:
            with self._patched_generate(**call_kw):
                completions, _ = GRPOTrainer._generate_single_turn(self, prompts_ids, None, {}, 1)
        finally:
            self.generation_config = saved
        if recorder is not None and recorder.done_at is not None:
            completions = [c[:n] if n > 0 else c for c, n in zip(completions, recorder.done_at.tolist())]
        return completions

    def _token_stats(self, prompts_ids, completions_ids) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-token log-probs and entropies of given completions under the current policy (no grad, TRL's
        temperature-scaled fused head, TRL's padding); one 1-D CPU tensor per completion."""
        ids, att, width = self._padded_sequences(prompts_ids, completions_ids)
        bs = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        with torch.no_grad():  # TRL's own method: no stash of this trainer's diagnostics
            logps, ents, _ = GRPOTrainer._get_per_token_logps_and_entropies(
                self, self.model, ids, att, width, batch_size=bs, compute_entropy=True)
        lens = [len(list(x)) for x in completions_ids]
        return ([logps[i, :n].float().cpu() for i, n in enumerate(lens)],
                [ents[i, :n].float().cpu() for i, n in enumerate(lens)])

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
            logps, ents = self._token_stats(self._last_prompt_ids, completion_ids)
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
        self._in_generation = "adv_token_stats" in self.method.needs
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

    def _padded_sequences(self, prompts_ids, completions_ids) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input ids, attention mask, completion width) of prompts (left-padded) + completions (right-padded),
        TRL's padding, on the trainer's device."""
        from trl.trainer.utils import pad

        def padded(seqs, side):
            kw = dict(padding_side=side, pad_to_multiple_of=self.pad_to_multiple_of)
            return (pad(seqs, padding_value=self._tokenizer.pad_token_id, **kw),
                    pad([torch.ones_like(x) for x in seqs], padding_value=0, **kw))

        p_ids, p_mask = padded([torch.tensor(list(x), dtype=torch.long) for x in prompts_ids], "left")
        c_ids, c_mask = padded([torch.tensor(list(x), dtype=torch.long) for x in completions_ids], "right")
        dev = self.accelerator.device
        return torch.cat([p_ids, c_ids], 1).to(dev), torch.cat([p_mask, c_mask], 1).to(dev), c_ids.size(1)

    def _sequence_scorer(self, model):
        """:attr:`TokenContext.score`: per-token log-probs and entropies of given completions under ``model`` (the
        policy being trained), WITH gradients, TRL's temperature-scaled fused head; (B, T) tensors right-padded to
        the longest completion (SPEAR's replayed trajectories are scored this way inside the loss)."""
        def score(prompts_ids, completions_ids):
            ids, att, t = self._padded_sequences(prompts_ids, completions_ids)
            logps, ents, _ = GRPOTrainer._get_per_token_logps_and_entropies(self, model, ids, att, t,
                                                                            compute_entropy=True)
            return logps, ents

        return score

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


class _StopStrings(StoppingCriteria):
    """Stops a row once its generated text contains one of ``stops`` and records how many tokens it had generated
    then (``done_at``, -1: never). Decodes a short window of the newest tokens (works with any tokenizer, unlike
    HF's ``StopStringCriteria``, which needs a BPE-style vocabulary)."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, [x for x in stops if x]
        self.window = max((len(x) for x in self.stops), default=1) + 4
        self.first_len: int | None = None
        self.done_at: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.first_len is None:
            self.first_len = input_ids.size(1)
            self.done_at = torch.full((input_ids.size(0),), -1, dtype=torch.long)
        gen = input_ids[:, self.first_len - 1:]
        texts = self.tokenizer.batch_decode(gen[:, -self.window:], skip_special_tokens=True)
        done = torch.tensor([any(x in t for x in self.stops) for t in texts], dtype=torch.bool)
        self.done_at[done & (self.done_at < 0)] = gen.size(1)
        return done.to(input_ids.device)
