"""Training monitors (issue 15): read-only diagnostics of the policy, logged under ``monitor/...`` in the per-step
metrics of every GRPO-trained method. They never feed the loss, the rewards or the advantages, and never draw from a
random generator: a run with monitors trains bit-identically to one without (``tests/test_monitors.py``).

* **Top-k indicators** (arXiv 2410.11677, likelihood over-optimisation). At every completion token the loss sees
  (``completion_mask * tool_mask``), the policy's temperature-scaled next-token distribution p: the top-k mass
  ``P_k = sum of the k largest p`` and the top-k entropy ``H_k = entropy of those k probabilities renormalised``
  (nats). ``monitor/topk/mass`` and ``monitor/topk/entropy`` are token means over the optimizer step's
  micro-batches. No extra forward: a hook keeps the backbone's last hidden states of the loss pass, and the LM head is
  applied to them as TRL's fused head does (logit scale, soft-capping, temperature); the first monitored batch
  checks that reconstruction against TRL's own token entropies and turns the indicator off, with a warning, if they
  disagree.
* **Reasoning utility** (arXiv 2508.20395). It reads the gold answer, so it runs after the rewards are computed, in
  eval mode under ``no_grad`` on copies of the token lists, and only writes metrics. A *step* is defined on the
  reasoning smoke tasks (:func:`harness.train.monitor_stats.steps_of`): the reasoning phase is the completion before its last ``\\boxed{``
  (:func:`harness.data.reasoning.phases`) without EOS/pad tokens and without a final `` so `` (the answer
  connector); it is cut before every planning-word token (`` then ``, `` check ``, `` so ``), so step j runs from
  its planning word up to the next one (tokens before the first planning word are step 1). `` then 7+5=12 then
  12+9=21 check 12+9=21 then 21+4=25 so \\boxed{25}`` has n = 4 steps; a redundant ``check`` is a step; a
  calculator call and the result the environment wrote belong to their step. For k = 0..n, ``H_k`` is the policy's
  mean token entropy (nats, training temperature) at the positions that predict the gold answer's tokens in the
  teacher-forced sequence ``prompt + Z_<=k + " so \\boxed{" + gold`` (closing ``}`` and EOS not scored).
  Per completion: the OLS slope of H_k on k, "falling" when it is below 0, and the number of steps n. All prefixes
  of a chain are scored in one forward (one packed row with a 4-D attention mask, :func:`harness.train.monitor_stats.pack_chain`), checked once
  per run against plain forwards (the monitor turns off, with a warning, for a model whose attention ignores it).

The settings are a job's ``monitors`` block (:class:`MonitorSpec`); a job without one (every job resolved before
monitors existed) trains without monitors, so its key and its pinned results stay valid.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from harness.config import ConfigError
from harness.config.tiers import MonitorSpec, SettingError, parse
from harness.train.monitor_stats import (StepProtocol, answer_scores, chain_scores, reasoning_protocol, steps_of,
                                         topk_from_hidden, utility_metrics)

#: mean |reconstructed - TRL's| token entropy (nats) above which the top-k indicator is turned off
HEAD_CHECK_TOL = 0.05
#: |packed - plain forward| answer entropy (nats) above which the reasoning-utility monitor is turned off (fp32 on
#: CPU agrees to ~1e-6; the margin is for bf16 autocast, whose sums depend on the batch shape)
PACK_CHECK_TOL = 0.02


def parse_monitors(values: dict | None, where: str = "monitors") -> MonitorSpec:
    """A :class:`MonitorSpec` from a ``monitors`` block; a wrong name, type or range is a ConfigError naming it."""
    try:
        return parse(MonitorSpec, values, where)
    except SettingError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{where}:") else f"{where}: {msg}") from None


@dataclass(frozen=True)
class Monitors:
    """What the trainer runs: the settings and, for the reasoning-utility monitor, the task's step protocol."""

    spec: MonitorSpec
    protocol: StepProtocol | None = None


def monitors_for_job(job: dict, tok) -> Monitors | None:
    """The job's monitors (``HarnessGRPOTrainer(monitors=...)``): None without a ``monitors`` block or when
    ``every_steps`` is 0; the step protocol on the reasoning smoke tasks (elsewhere no reasoning-utility monitor)."""
    if job.get("monitors") is None:
        return None
    spec = parse_monitors(job["monitors"], f"job {job.get('job_key', '?')} monitors")
    if spec.every_steps == 0:
        return None
    task = (job.get("data") or {}).get("task")
    smoke = (job.get("model") or {}).get("kind", "smoke") == "smoke"
    proto = reasoning_protocol(tok) if spec.utility and smoke and task in ("reasoning", "reasoning_calc") else None
    return Monitors(spec, proto)


# ------------------------------------------------------------------------------------------------ the trainer --
class MonitorMixin:
    """The monitors in :class:`harness.train.trainer.HarnessGRPOTrainer` (relies on its attributes: ``state``,
    ``model``, ``accelerator``, ``temperature``, ``_metrics``, ``_stash``, ``_hidden_capture``, ``_last_prompt_ids``,
    ``_tokenizer``, ``args``). Call :meth:`_monitor_setup` once the model is prepared. The monitors' state goes into
    a checkpoint (``CHECKPOINT_ATTRS``, :mod:`harness.train.resume`), so a resumed run logs what an uninterrupted one
    does."""

    CHECKPOINT_ATTRS = ("_utility_window", "_topk_on", "_utility_on", "_head_checked", "_utility_checked")

    def _monitor_setup(self, monitors: Monitors | None) -> None:
        self.monitors = monitors
        self._utility_window = -1
        self._topk_on = monitors is not None
        self._utility_on = monitors is not None and monitors.spec.utility and monitors.protocol is not None
        self._head_checked = self._utility_checked = False
        if monitors is not None:
            v = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
            if not 1 <= monitors.spec.top_k < v:
                raise ConfigError(f"monitors: top_k must be between 1 and the vocabulary size - 1 ({v - 1}), "
                                  f"got {monitors.spec.top_k}")

    def _monitor_due(self) -> bool:
        return (self.monitors is not None and self.model.training
                and self.state.global_step % self.monitors.spec.every_steps == 0)

    # -- top-k: the hidden states of the loss pass, through the LM head -----------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (self._topk_on and self._monitor_due()):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        chunks: list[torch.Tensor] = []
        self._stash = None
        with self._hidden_capture(model, inputs["completion_ids"].size(1), chunks):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        hidden = torch.cat(chunks)[: mask.size(0)] if chunks else None
        if hidden is not None and hidden.shape[:2] == mask.shape and mask.sum() > 0:
            self._log_topk(model, hidden, mask)
        return loss

    def _log_topk(self, model, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        unwrapped = self.accelerator.unwrap_model(model)
        hk, mass, full = topk_from_hidden(unwrapped, hidden, mask, self.monitors.spec.top_k, self.temperature)
        stash = self._stash
        if not self._head_checked and stash is not None and stash[1] is not None and stash[1].shape == mask.shape:
            gap = float((full - stash[1].detach()[mask > 0].float()).abs().mean())
            self._head_checked = True
            if gap > HEAD_CHECK_TOL:
                self._topk_on = False
                warnings.warn(f"top-k monitor off: its LM-head reconstruction misses TRL's token entropy by {gap:.3g} "
                              f"nats (tolerance {HEAD_CHECK_TOL}); this model's head is not supported")
                return
        self._metrics["train"]["monitor/topk/entropy"].append(float(hk.mean()))
        self._metrics["train"]["monitor/topk/mass"].append(float(mass.mean()))

    # -- reasoning utility: after the rewards, never into them -------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._utility_on and self._monitor_window_due():
            self._log_utility(inputs, completions, completion_ids_list)
        return out

    def _monitor_window_due(self) -> bool:
        if self.monitors is None or not self.model.training:
            return False
        window = self.state.global_step // self.monitors.spec.every_steps
        if window == self._utility_window:
            return False
        self._utility_window = window
        return True

    @contextlib.contextmanager
    def _quiet_forward(self):
        """No grad, eval mode (no dropout) and the random state restored: the policy's forwards leave no trace."""
        model = self.model
        was = model.training
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self.accelerator.autocast():
            model.eval()
            try:
                yield model
            finally:
                model.train(was)

    def _log_utility(self, inputs, completions, completion_ids_list) -> None:
        p, prompt_ids = self.monitors.protocol, self._last_prompt_ids
        n = len(completion_ids_list)
        if not n or prompt_ids is None or len(prompt_ids) != n or any(r.get("answer") is None for r in inputs):
            return  # e.g. a label-free method: the rows carry no answer, so there is nothing to monitor
        m = min(n, self.monitors.spec.utility_samples or n)
        chains, records = [], []
        for i in sorted({j * n // m for j in range(m)}):
            gold, text = p.encode(str(inputs[i]["answer"])), completions[i]
            if not gold:
                continue
            text = text[-1]["content"] if isinstance(text, list) else text
            r, ends = steps_of(completion_ids_list[i], p)
            chains.append(([int(t) for t in prompt_ids[i]], r, ends, [*p.connector, *gold], len(gold)))
            records.append({"correct": bool(p.is_correct(text, str(inputs[i]["answer"]))),
                            "level": inputs[i].get("level")})
        pad = self._tokenizer.pad_token_id
        with self._quiet_forward() as model:
            scores = chain_scores(model, chains, temperature=self.temperature, pad_id=pad)
            if chains and not self._utility_checked:  # the packed row against plain forwards, once (first chain)
                self._utility_checked = True
                pr, r, ends, sfx, g = chains[0]
                plain, _ = answer_scores(model, [pr + r[:e] + sfx for e in (ends[0], ends[-1])], [g, g],
                                         temperature=self.temperature, pad_id=pad)
                gap = max(abs(float(plain[0]) - scores[0][0][0]), abs(float(plain[1]) - scores[0][0][-1]))
                if gap > PACK_CHECK_TOL:
                    self._utility_on = False
                    warnings.warn(f"reasoning-utility monitor off: this model's attention does not follow the packed "
                                  f"rows' 4-D mask (answer entropy off by {gap:.3g} nats)")
                    return
        for rec, (h, nll) in zip(records, scores):
            rec.update(H=h, nll=nll)
        for k, v in utility_metrics(records).items():
            self._metrics["train"][f"monitor/utility/{k}"].append(float(v))
