"""The one subclass of TRL's GRPOTrainer. Paper methods plug in through the registry. The class wires the run
together; its mixins hold the pieces: :mod:`harness.train.hooks` and :mod:`harness.train.rollout` (extension
points), :mod:`harness.train.advantage` (the advantage hook's inputs), :mod:`harness.train.loss` (the loss side),
:mod:`harness.train.resume` (checkpoints) and :mod:`harness.train.monitors`.

- ``config`` methods (e.g. ``grpo``) run TRL's own loss unchanged; we only add the diagnostics.
- ``loss`` methods get a :class:`TokenContext` built from TRL's per-token log-probs, entropies, old
  log-probs and advantages, return ``(per_token_loss, metrics)``, and the loss is aggregated with TRL's
  normaliser for the configured ``loss_type``; a third element ``scalar_loss`` (per micro-batch, e.g. SIREN's
  regulariser) is added with weight 1 / gradient accumulation whatever the ``loss_type``
  (:meth:`harness.train.loss.LossMixin._loss_from_method`).
- ``advantage``, ``reward``, ``rollout`` and ``data`` hooks get their context objects (never the trainer), called as
  the registry's docstring (:mod:`harness.methods.registry`) says. A method without a hook at a point leaves TRL's
  behaviour there untouched. ``needs`` of an advantage method (token statistics, hidden states) and a reward's
  token statistics are taken from TRL's no-grad old-logprob pass when it runs, else from one extra no-grad forward
  (:meth:`harness.train.advantage.AdvantageMixin._method_advantages`).

Every step, for every method, the metrics contract (:data:`REQUIRED_METRICS`) is logged.
"""
from __future__ import annotations

import os

import torch
from trl import GRPOTrainer

from harness.methods.registry import Method
from harness.train.advantage import AdvantageMixin
from harness.train.hooks import HookMixin
from harness.train.loss import LossMixin
from harness.train.resumable import CheckpointMixin  # issue 16: checkpoints and resume
from harness.train.monitors import MonitorMixin, Monitors  # issue 15: monitors

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


class HarnessGRPOTrainer(CheckpointMixin, MonitorMixin, LossMixin, AdvantageMixin, HookMixin,
                         GRPOTrainer):  # MonitorMixin: read-only monitors (issue 15)
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
