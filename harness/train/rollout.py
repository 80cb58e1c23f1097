"""The rollout extension point of :class:`harness.train.hooks.HookMixin` (so of the trainer): a method's logits
processors in HF ``generate``, a method's own ``rollout_func`` (with an EpisodePlayer for tasks that play episodes),
a task environment's rollout, and the policy's scoring of given sequences that the contexts hand to hooks
(``RolloutContext.generate``/``token_stats``, the reward hook's token stats, ``TokenContext.score``). Each hook gets
its context object, never the trainer."""
from __future__ import annotations

import contextlib
import copy
import functools

import torch
from transformers import StoppingCriteria
from trl import GRPOTrainer

from harness.methods.context import RolloutContext


class RolloutMixin:
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

    # -- scoring given sequences under the policy (the contexts' token_stats and score) ------------------------
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
