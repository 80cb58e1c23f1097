"""The advantage hook's inputs (a mixin of :class:`harness.train.trainer.HarnessGRPOTrainer`): TRL's per-token
tensors and the policy's hidden states captured from TRL's own no-grad passes (so neither the advantage hook's
``needs`` nor the loss diagnostics cost a second forward when TRL makes one), the batch's columns and completions,
and the :class:`AdvantageContext` the hook is called with."""
from __future__ import annotations

import contextlib

import torch

from harness.methods.context import AdvantageContext


class AdvantageMixin:
    """Relies on the GRPOTrainer attributes it is mixed into; ``_score_batch`` wraps
    :meth:`harness.train.hooks.HookMixin._score_batch`, which comes after it in the trainer's bases."""

    # -- capture TRL's per-token tensors so diagnostics need no second forward pass -----------------
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        old_pass = self._in_generation and self._gen_stash is None and model is self.model
        if old_pass:
            # TRL's no-grad old-logprob pass during generation (the window's first policy pass; the reference pass,
            # of a separate model or of the same PEFT model, comes after it): also take the entropies that an
            # advantage method or a reward needs
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
            if old_pass:
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
