"""The one subclass of TRL's GRPOTrainer. Paper methods plug in through the registry.

- ``config`` methods (e.g. ``grpo``) run TRL's own loss unchanged; we only add the diagnostics.
- ``loss`` methods get a :class:`TokenContext` built from TRL's per-token log-probs, entropies, old
  log-probs and advantages, return ``(per_token_loss, metrics)``, and the loss is aggregated with TRL's
  normaliser for the configured ``loss_type``; a third element ``scalar_loss`` (per micro-batch, e.g. SIREN's
  regulariser) is added with weight 1 / gradient accumulation whatever the ``loss_type`` (:meth:`_loss_from_method`).
- ``advantage``, ``reward``, ``rollout`` and ``data`` hooks get their context objects (never the trainer), called as
  the registry's docstring (:mod:`harness.methods.registry`) says. A method without a hook at a point leaves TRL's
  behaviour there untouched. ``needs`` of an advantage method (token statistics, hidden states) are taken from
  TRL's no-grad old-logprob pass when it runs, else from one extra no-grad forward (:meth:`_method_advantages`).

Every step, for every method, the metrics contract (:data:`REQUIRED_METRICS`) is logged.
"""
from __future__ import annotations

import contextlib
import os

import torch
from trl import GRPOTrainer

from harness.methods.context import AdvantageContext, TokenContext
from harness.methods.registry import Method
from harness.train.hooks import TOKEN_COLUMN_PREFIX, HookMixin
from harness.train.resume import CheckpointMixin  # issue 16: checkpoints and resume
from harness.train.monitors import MonitorMixin, Monitors  # issue 15: monitors

COV_TOP_FRACTION = 0.02  # "top tail" of cov(logp, A): mean of the largest 2 % of token covariances

#: logged every step for every method (TRL logs the reward/length ones itself); a test asserts this.
REQUIRED_METRICS = (
    "reward", "reward_std", "entropy", "cov_logp_adv/mean", "cov_logp_adv/top_mean",
    "clip_ratio/region_mean", "method/frac_tokens_touched", "policy_loss",
    "completions/mean_length", "completions/clipped_ratio",
)

SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _plays_episodes(method: Method) -> bool:
    """issue 14: the method's ``rollout_func`` hook takes ``episodes=`` (an EpisodePlayer for tasks that play
    episodes: harness.evaluate.branching)."""
    import inspect

    return "episodes" in inspect.signature(method.hook("rollout")).parameters


class HarnessGRPOTrainer(CheckpointMixin, MonitorMixin, HookMixin, GRPOTrainer):  # MonitorMixin: read-only monitors (issue 15)
    """TRL's ``GRPOTrainer`` plus ``method`` (a registry entry), its ``hparams`` overrides, ``method_seed`` (seeds the
    generator every context carries), ``phase_fn(completion_ids: list[int]) -> list[int]`` (the task's phase id
    per completion token, for ``RewardContext.phases``; optional) and ``environment(tokenizer)`` (a task's
    environment as a logits processor with ``env_mask(row, n)`` and ``metrics(completion_ids)``; optional: the
    rollouts then go through TRL's ``rollout_func`` with ``env_mask``) and ``history`` (a
    :class:`harness.data.selection.HistoryRecorder`: every training generation batch's per-row accuracy, from the
    first reward function, the task's, is recorded; the rows carry ``row_index``)."""

    def __init__(self, model, reward_funcs=None, args=None, *rest, method: Method, hparams: dict | None = None,
                 method_seed: int = 0, phase_fn=None, environment=None, history=None,
                 monitors: Monitors | None = None, episodes=None, **kwargs):
        self.method = method
        self.task_episodes = episodes  # issue 14: the task's EpisodeSettings (harness.evaluate.branching), or None
        self.history = history
        self.task_environment = environment
        self.hparams = method.hook_hparams(hparams)
        self.phase_fn = phase_fn
        self._generator = torch.Generator().manual_seed(int(method_seed))
        self._stash: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_rewards_per_func: torch.Tensor | None = None
        self._last_prompt_ids: list | None = None
        self._in_generation = False
        self._gen_stash: tuple[torch.Tensor, torch.Tensor] | None = None
        self._capture_hidden = False  # while True, the policy's no-grad passes record their hidden states
        self._gen_hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # (completion ids, (n, T, d) states)
        self._last_adv_frac = 0.0
        n_task = None
        if method.hook("reward") is not None:  # the method's reward joins the task's reward functions
            if not isinstance(reward_funcs, (list, tuple)):
                reward_funcs = [] if reward_funcs is None else [reward_funcs]
            reward_funcs = list(reward_funcs)
            if method.label_free:  # no label anywhere in training: neither the answers nor the rewards that read them
                reward_funcs = []
                if args is not None and args.reward_weights is not None:
                    args.reward_weights = []
                if rest:
                    raise TypeError(f"label-free method {method.name!r}: pass train_dataset by keyword")
                ds = kwargs.get("train_dataset")
                if ds is not None and "answer" in (getattr(ds, "column_names", None) or []):
                    kwargs["train_dataset"] = ds.remove_columns(["answer"])
            n_task = len(reward_funcs)
            reward_funcs = reward_funcs + [self._method_reward_func()]
            if args is not None and args.reward_weights is not None:
                args.reward_weights = [*args.reward_weights, 1.0]
        if environment is not None:  # the task's environment (e.g. the smoke calculator) writes into rollouts
            if method.hook("rollout") is not None and method.rollout_kind == "rollout_func":
                raise ValueError(f"method {method.name!r} brings its own rollout_func, which cannot run the task's "
                                 "environment; use a task without tools")
            if kwargs.get("rollout_func") is not None:
                raise ValueError("a task environment and a rollout_func cannot both be given")
            kwargs["rollout_func"] = self._env_rollout_func
        elif kwargs.get("rollout_func") is not None and method.hook("rollout") is not None:
            # a task's episode rollout (multi-turn: harness.train.episodes) never calls the single-turn generation
            # a logits-processor hook patches, and a method's rollout_func would replace the episodes
            if episodes is not None and method.rollout_kind == "rollout_func" and _plays_episodes(method):
                # issue 14 (ARPO, AEPO): a rollout_func hook with an ``episodes`` parameter plays the task's
                # episodes itself (harness.evaluate.branching.EpisodePlayer): it replaces the task's rollout
                kwargs["rollout_func"] = self._method_rollout_func
            else:
                raise ValueError(f"method {method.name!r} has a rollout hook (kind "
                                 f"{method.rollout_kind or 'logits_processors'!r}), which cannot run inside "
                                 "the task's multi-turn episode rollout; use a single-turn task (a "
                                 "rollout_func hook with an `episodes` parameter plays episodes itself)")
        elif method.hook("rollout") is not None and method.rollout_kind == "rollout_func":
            if kwargs.get("rollout_func") is not None:
                raise ValueError(f"method {method.name!r} brings its own rollout_func; do not pass one")
            kwargs["rollout_func"] = self._method_rollout_func
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        self._monitor_setup(monitors)  # issue 15: monitor/* metrics (harness.train.monitors); None: off
        if n_task is not None and method.task_reward_weight != 1.0:
            w = self.reward_weights.clone()
            w[:n_task] *= method.task_reward_weight
            self.reward_weights = w
            self.args.reward_weights = w.tolist()
        if "loss" in method.hooks:
            if self.loss_type not in SUPPORTED_LOSS_TYPES:
                raise ValueError(f"loss method {method.name!r} supports loss_type in {SUPPORTED_LOSS_TYPES}, "
                                 f"got {self.loss_type!r}")
            if self.beta != 0.0 or self._entropy_bonus_enabled or self.top_entropy_quantile < 1.0:
                raise ValueError(f"loss method {method.name!r} owns the per-token loss; set beta=0, "
                                 "entropy_coef=0 and top_entropy_quantile=1")

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards (and the hooks' bookkeeping); a ranking run also records each row's training accuracy: the
        task's reward (the first reward function, 0/1 correctness) of its completions in this batch."""
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_columns = self._batch_columns(inputs)
        if self.history is not None and self.model.training:
            rows = list(inputs)
            if self.accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                rows = gather_object(rows)
            self.history.record(rows, out[:, 0].detach().cpu().tolist())
        return out

    def train(self, *args, **kwargs):
        """TRL's training loop; the ``output_dir`` transformers creates up front is removed again when nothing was
        written into it (the harness saves the model and results itself, with ``save_strategy="no"``)."""
        try:
            return super().train(*args, **kwargs)
        finally:
            out = self.args.output_dir
            if out and self.args.should_save and os.path.isdir(out) and not os.listdir(out):
                os.rmdir(out)

    # -- several processes (accelerate launch; harness.plan.launch) ---------------------------------------------
    def log(self, logs, start_time=None):
        """TRL's log. With several processes, the per-micro-batch values each process appended to ``_metrics`` (the
        harness's diagnostics and method metrics are per process) are pooled over the processes first, so a logged
        value is the mean over every micro-batch of the step on every process, as on one process. TRL's own metrics
        are gathered before they are appended (the same value on every process): pooling keeps their mean."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            m = self._metrics["train" if self.model.training else "eval"]
            pooled = gather_object([{k: list(v) for k, v in m.items()}])  # a collective: log runs on every process
            m.clear()
            for part in pooled:
                for k, v in part.items():
                    m[k].extend(v)
        return super().log(logs, start_time)

    def save_final_policy(self, out_dir, tok) -> None:
        """The final policy under ``out_dir/model`` (:func:`harness.train.outputs.save_policy`). Called by every
        process: under DeepSpeed ZeRO-3 or FSDP the full weights are gathered first (a collective, transformers'
        ``save_model``), then the main process writes; one plain process saves as before."""
        from pathlib import Path

        from harness.train.outputs import save_policy

        if self.accelerator.num_processes == 1 and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            return save_policy(Path(out_dir), self.model, tok)
        import shutil

        final, tmp = Path(out_dir) / "model", Path(out_dir) / ".model.launch.tmp"  # one path on every process
        if self.accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.save_model(str(tmp))  # transformers: gathers sharded weights, writes on the main process only
        if self.accelerator.is_main_process:
            tok.save_pretrained(tmp)
            (tmp / "training_args.bin").unlink(missing_ok=True)  # the model dir holds the policy, as with one process
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        self.accelerator.wait_for_everyone()

    # -- capture TRL's per-token tensors so diagnostics need no second forward pass -----------------
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._in_generation:
            # TRL's no-grad old-logprob pass during generation: also take the entropies an advantage method needs
            kwargs["compute_entropy"] = True
        # the batch's first no-grad pass of the policy (a PEFT reference pass on the same model comes after it)
        capture = (self._capture_hidden and model is self.model and not torch.is_grad_enabled()
                   and self._gen_hidden is None)
        chunks: list[torch.Tensor] = []
        with self._hidden_capture(model, logits_to_keep, chunks) if capture else contextlib.nullcontext():
            logps, ents, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        if capture and chunks:  # "adv_hidden_states" from TRL's old-logprob pass over this batch: no extra forward
            self._gen_hidden = (input_ids[:, -logits_to_keep:].detach(), torch.cat(chunks))
        if ents is not None:
            self._stash = (logps, ents)
            if self._in_generation:
                self._gen_stash = (logps.detach(), ents.detach())
        return logps, ents, aux

    # -- "adv_hidden_states": the policy's final hidden states (after the last norm) at the completion positions --
    @contextlib.contextmanager
    def _hidden_capture(self, model, t: int, chunks: list):
        """While the block runs, every forward of ``model``'s backbone (TRL's fused head calls it, so does a plain
        forward) appends its last hidden state at the positions that predict the ``t`` completion tokens
        (``last_hidden_state[:, -t-1:-1]``, what the LM head scores) to ``chunks``, detached."""
        def keep(_module, _inputs, out):
            h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            chunks.append(h[:, -t - 1:-1].detach())

        handle = self.accelerator.unwrap_model(model).base_model.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def _score_batch(self, inputs: list) -> dict:
        """The hooks' scoring of a generation batch (:class:`~harness.train.hooks.HookMixin`); a method that needs
        ``adv_hidden_states`` has them recorded from TRL's old-logprob pass, when TRL makes one."""
        self._gen_hidden = None
        self._capture_hidden = "adv_hidden_states" in self.method.needs and self.model.training
        try:
            return super()._score_batch(inputs)
        finally:
            self._capture_hidden = False

    def _adv_hidden_states(self, out: dict) -> torch.Tensor:
        """(n, T, d) hidden states of this process's batch: those recorded from TRL's old-logprob pass when it ran
        over exactly these completions, else one extra no-grad forward of the backbone (no LM head), in chunks of
        the per-device batch size."""
        rec = self._gen_hidden
        self._gen_hidden = None
        ids = out["completion_ids"]
        if rec is not None and rec[0].shape == ids.shape and torch.equal(rec[0], ids):
            self._metrics["train"]["adv_hidden_states/extra_forward"].append(0.0)
            return rec[1]
        self._metrics["train"]["adv_hidden_states/extra_forward"].append(1.0)
        full = torch.cat([out["prompt_ids"], ids], dim=1)
        att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        bs, t, chunks = self.args.per_device_train_batch_size, ids.size(1), []
        backbone = self.accelerator.unwrap_model(self.model).base_model
        with torch.no_grad(), self.accelerator.autocast():
            for s in range(0, full.size(0), bs):
                h = backbone(input_ids=full[s:s + bs], attention_mask=att[s:s + bs], use_cache=False).last_hidden_state
                chunks.append(h[:, -t - 1:-1])
        return torch.cat(chunks)

    def _batch_columns(self, inputs) -> dict[str, list]:
        """:attr:`AdvantageContext.columns`: every column of the batch's rows but the prompt (dataset columns and a
        rollout_func's extra fields, which TRL merges into the rows), gathered over processes in group order."""
        rows = list(inputs)
        keys = sorted({k for r in rows for k in r} - {"prompt"})
        cols = {k: [r.get(k) for r in rows] for k in keys}
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            cols = {k: gather_object(v) for k, v in cols.items()}
        return cols

    def _gathered_completions(self) -> list[str] | None:
        texts = getattr(self, "_last_completions", None)
        if texts is None or self.accelerator.num_processes == 1:
            return texts
        from accelerate.utils import gather_object

        return gather_object(texts)

    def _method_advantages(self, fn, out) -> torch.Tensor:
        acc = self.accelerator
        rewards = self._weighted_rewards()
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
        hidden = self._adv_hidden_states(out) if "adv_hidden_states" in self.method.needs else None
        gather = lambda x: acc.gather(acc.pad_across_processes(x, dim=1)) if x is not None else None  # noqa: E731
        actx = AdvantageContext(rewards=rewards, group_size=self.num_generations, mask=gather(mask),
                                completion_ids=gather(out["completion_ids"]), scale_rewards=self.scale_rewards,
                                logps=gather(logps), entropies=gather(ents), truncated=self._truncated(out),
                                hidden_states=gather(hidden),
                                generator=self._generator, step=self.state.global_step,
                                max_steps=max(self.state.max_steps, 1),
                                completions=self._gathered_completions(),
                                columns=getattr(self, "_last_columns", None),
                                # issue 14: what a method needs to keep trajectories across steps (SPEAR's replay)
                                prompt_ids=acc.gather(acc.pad_across_processes(
                                    out["prompt_ids"], dim=1, pad_index=self._tokenizer.pad_token_id, pad_first=True)),
                                prompt_mask=acc.gather(acc.pad_across_processes(out["prompt_mask"], dim=1,
                                                                                pad_first=True)),
                                completion_mask=gather(out["completion_mask"]))
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
