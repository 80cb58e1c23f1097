"""Method registry: one decorator per extension point (style of verl's ``core_algos.py``).

A paper's method is a plain function registered under a name with the paper it comes from, the
source it was ported from and its hyperparameters (with units). The trainer looks methods up by
name; unknown names fail with the list of valid ones and registering a name twice fails.

Extension points, exactly as :class:`harness.train.trainer.HarnessGRPOTrainer` calls them (contexts are in
:mod:`harness.methods.context`; methods never see the trainer; ``hparams`` are the resolved hyperparameters):

- ``loss``: ``fn(ctx: TokenContext, **hparams) -> (per_token_loss (B, T) tensor, metrics dict[, scalar_loss])``, once
  per micro-batch; the trainer aggregates the per-token loss with TRL's normaliser for ``loss_type`` and adds the
  optional ``scalar_loss`` (a per-micro-batch term such as SIREN's regulariser) with weight 1 / gradient
  accumulation, whatever the ``loss_type`` (the authors' verl actor does the same). ``ctx.token_columns[name]``
  holds a rollout's per-token fields (an episode's ``turn_ids``) for the micro-batch, (B, T) padded with -1;
  ``ctx.score(prompts_ids, completions_ids)`` scores other sequences with gradients (training only).
- ``advantage``: ``fn(actx: AdvantageContext, **hparams) -> (advantages (N,) or (N, T), metrics dict)``, once per
  training generation batch, after TRL's rewards, over all processes in group order (``actx.completions`` holds
  the completion texts in the same order). ``needs=("adv_token_stats",)`` fills ``actx.logps``/``actx.entropies``
  and ``needs=("adv_hidden_states",)`` fills ``actx.hidden_states`` (N, T, d: the last hidden state, after the final
  norm, at the positions that predict the completion tokens), both taken from TRL's no-grad old-logprob pass when
  TRL makes one (``gradient_accumulation_steps`` not a multiple of ``steps_per_generation * num_iterations``, or
  vLLM with importance-sampling correction), else from one extra no-grad forward (hidden states: backbone only);
  ``adv_hidden_states/extra_forward`` logs which (0 or 1). ``actx.columns`` holds the batch's dataset columns and a
  rollout's extra fields per completion (an episode's ``won``, ``turn_ids``, ...); ``actx.prompt_ids``/``prompt_mask``
  (left-padded) and ``completion_mask`` serve methods that keep trajectories across steps.
- ``reward``: ``fn(rctx: RewardContext, **hparams) -> list[float | None]`` (one value per completion; None: not
  scored), once per generation batch (training and evaluation). It is appended to TRL's ``reward_funcs`` as
  ``<name>_reward`` with weight 1, after the task's reward functions, whose weights are multiplied by
  ``task_reward_weight`` (default 1: the rewards add; 0: the method's reward replaces the task's, which is only
  logged). ``label_free=True``: the trainer removes the ``answer`` column and the task's rewards from training.
  ``needs=("reward_token_stats",)`` fills ``rctx.entropies``/``rctx.logps``: from TRL's old-logprob pass over the
  batch where it runs (it comes before the rewards; no extra forward), else from one extra no-grad forward.
- ``rollout``, two kinds (``register_rollout(..., kind=)``):
  - ``kind="logits_processors"`` (default): ``fn(rctx: RolloutContext, **hparams) -> list[LogitsProcessor]``,
    before each HF ``generate`` call of the training rollouts (not under vLLM, not in evaluation); a processor
    may define ``metrics() -> dict``, logged after the call.
  - ``kind="rollout_func"``: ``fn(prompts: list, rctx: RolloutContext, **hparams) -> dict``, passed to TRL as
    ``rollout_func`` (replaces TRL's generation, training and evaluation). ``prompts`` is this process's slice of
    the batch, each prompt repeated ``rctx.group_size`` times consecutively; return one completion per entry:
    ``prompt_ids`` and ``completion_ids`` (``list[list[int]]``, completions non-empty), ``logprobs`` (None, or one
    float per completion token), optionally ``env_mask`` (one 0/1 per completion token; 0 = written by the
    environment/tool: no loss, no weight in entropy or advantage statistics, not counted in lengths) and
    ``phases`` (one phase id per completion token, for reward hooks); any other key is a list with one value per
    completion that reaches the reward functions (``RewardContext.columns``). For a task that plays episodes (the
    household task; :mod:`harness.evaluate.episodes`), a hook with an ``episodes`` parameter is called as
    ``fn(prompts, rctx, episodes=player, **hparams)``: ``player`` is a :class:`harness.evaluate.branching.EpisodePlayer`
    (the task's environment, template and budgets bound to the policy being trained and the run's sampling), and
    ``player.play(prompts, scheduler=None)`` returns the rollout dict (flat episodes, or one tree of G leaves per group
    grown by a scheduler). Such a hook replaces the task's rollout; any other rollout hook next to an episode task is
    refused.
- ``data``: ``fn(bctx: BatchContext, **hparams) -> BatchDecision | None``, twice per training generation batch
  (and twice more per refill round):
  ``bctx.stage == "prompts"`` before generation (replace the prompts: re-sample) and ``"scored"`` after rewards
  and advantages (``keep``: drop samples or groups from the loss; ``weights``: scale each sample's loss;
  ``resample``: dynamic sampling, refill the dropped groups with kept groups of extra generation rounds for fresh
  prompts, at most ``resample_max_rounds`` rounds; cost logged as ``<method>/resample_rounds``,
  ``<method>/extra_generations`` and ``<method>/unfilled_frac``; see :class:`~harness.methods.context.BatchDecision`).
- ``config``: no function body of its own: the method is a set of TRL ``GRPOConfig`` overrides.

A method may register at several points under one name (e.g. ``hapo``: rollout + advantage + loss). With no
hook at a point the trainer does exactly what TRL does there.

State across steps (e.g. SIREN's anchor, RiskPO's tracked quantiles) lives per training run, keyed by the run's
seeded generator (every context's ``generator``). A method that keeps such state registers ``state=``
:class:`MethodState` (``state_dict(generator) -> dict``, ``load_state_dict(generator, state)``, the ``keys`` a
snapshot may hold) at any of its points: the trainer saves it into each checkpoint and restores it when a killed job
resumes (:mod:`harness.train.resume`). A checkpoint whose method state is missing or holds unknown keys is refused
(:meth:`Method.load_state_dict`).
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

EXTENSION_POINTS = ("loss", "advantage", "reward", "rollout", "data", "config")
#: tensors a method can ask the trainer for (``needs=``): full-vocabulary logits of the current policy in the
#: loss, old-policy logits stored at generation time, token entropies at advantage time, token entropies and
#: log-probs at reward time, last hidden states at advantage time
NEEDS = ("logits", "old_logits", "adv_token_stats", "reward_token_stats", "adv_hidden_states")
#: kinds of ``rollout`` hook (see the module docstring)
ROLLOUT_KINDS = ("logits_processors", "rollout_func")
#: what trains a method's jobs (:attr:`Method.trainer`): the harness's GRPO trainer, TRL's ``DPOTrainer`` in
#: :mod:`harness.train.dpo` (the method's ``rollout`` hook samples the traces its pairs come from), or TRL's
#: ``SFTTrainer`` in :mod:`harness.train.sft` (gold chains of the task; the ``loss`` hook states the objective)
TRAINERS = ("grpo", "dpo", "sft")


class RegistryError(KeyError):
    """Unknown or duplicate registry entry (message names the valid choices)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, unit, where the value comes from (paper section / code line) and its type.

    ``type`` defaults to the default's type (a float also takes an int, never a bool); state it when the default
    does not say it: a ``None`` default (``type=float | None``) or several accepted types (``type=(int, str)``).
    A card value of another type is an error before anything runs (:meth:`Method.resolve`).

    ``trl=True``: a TRL ``GRPOConfig`` field the method sets (e.g. T1's entropy coefficient): the plan puts the
    resolved value into the job's TRL settings, so a card's tier can state it like any hyperparameter; the method's
    hooks never receive it (:meth:`Method.hook_hparams`)."""

    default: Any
    unit: str
    help: str
    source: str
    type: Any = None
    trl: bool = False

    @property
    def types(self) -> tuple[type, ...]:
        """The accepted Python types (``type(None)`` among them when null is allowed)."""
        declared = self.type if self.type is not None else type(self.default)
        out = _flatten_types(declared)
        if out == (type(None),):
            raise RegistryError(f"hyperparameter with default {self.default!r} needs an explicit type "
                                f"(e.g. type=float | None)")
        return out

    @property
    def type_name(self) -> str:
        return " or ".join("null" if t is type(None) else t.__name__ for t in self.types
                           if not (t is int and float in self.types))

    def accepts(self, value: Any) -> bool:
        ok = self.types
        if isinstance(value, bool):
            return bool in ok
        return isinstance(value, ok)


def _flatten_types(tp) -> tuple[type, ...]:
    if tp is None:
        return (type(None),)
    if isinstance(tp, tuple):
        out = tuple(t for x in tp for t in _flatten_types(x))
    elif typing.get_origin(tp) in (typing.Union, types.UnionType):
        out = tuple(t for x in typing.get_args(tp) for t in _flatten_types(x))
    elif isinstance(tp, type):
        out = (typing.get_origin(tp) or tp,)
    else:
        out = (typing.get_origin(tp),) if isinstance(typing.get_origin(tp), type) else ()
        if not out:
            raise RegistryError(f"not a hyperparameter type: {tp!r}")
    if float in out and int not in out:
        out += (int,)  # an int is a valid float (YAML writes 5 for 5.0)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class MethodState:
    """A method's cross-step state, for checkpoints. ``state_dict(generator) -> dict``: a snapshot of the state of
    the training run that owns ``generator`` (``{}`` while it has none yet; values ``torch.save`` can store; a copy,
    not a view); ``load_state_dict(generator, state)``: put a snapshot into that run (a fresh trainer resuming);
    ``keys``: the keys a snapshot may hold."""

    state_dict: Callable[[Any], dict]
    load_state_dict: Callable[[Any, dict], None]
    keys: tuple[str, ...]


@dataclass
class Method:
    """A registered method. Most methods use one extension point; a method may register a function at several
    points under the same name (e.g. an advantage and a loss), each point at most once."""

    name: str
    paper: str
    source: str
    hooks: dict[str, Callable | None] = field(default_factory=dict)
    hparams: dict[str, HParam] = field(default_factory=dict)
    trl_overrides: dict[str, Any] = field(default_factory=dict)
    requires_off_policy: bool = False
    needs: tuple[str, ...] = ()
    description: str = ""
    #: kind of the ``rollout`` hook (:data:`ROLLOUT_KINDS`), None without one
    rollout_kind: str | None = None
    #: factor on the task's reward weights when the method has a ``reward`` hook (0: the method's reward replaces
    #: them; the task's reward is still computed and logged)
    task_reward_weight: float = 1.0
    #: label-free training (``register_reward(label_free=True)``): the trainer drops the dataset's ``answer`` column
    #: and the task's reward functions (which read it) from training, so nothing in training can see a label;
    #: held-out evaluation still scores against the answers
    label_free: bool = False
    #: what trains the method's jobs (:data:`TRAINERS`); ``harness.train.job.run_job`` dispatches on it
    trainer: str = "grpo"
    #: implementation version: bump it when a change alters what the method computes (like an lm-eval task's
    #: version). Resolved jobs carry it (``method_version``, when > 1), so the content key changes and the DAG
    #: retrains instead of reusing results of the old implementation.
    version: int = 1
    #: cross-step state per training run (``register_*(..., state=)``), saved in checkpoints; None: stateless
    state: MethodState | None = None

    @property
    def point(self) -> str:
        return "+".join(self.hooks)

    @property
    def fn(self) -> Callable | None:
        """The per-token loss function (``loss`` point), if any."""
        return self.hooks.get("loss")

    def hook(self, point: str) -> Callable | None:
        return self.hooks.get(point)

    def resolve(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; an unknown hyperparameter name or a value of the wrong type (see
        :class:`HParam`) is an error naming the method, the field, the expected type and the value."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise RegistryError(
                f"method '{self.name}' has no hyperparameter {unknown[0]!r}; "
                f"valid: {', '.join(sorted(self.hparams)) or '(none)'}"
            )
        for k, v in overrides.items():
            hp = self.hparams[k]
            if not hp.accepts(v):
                raise RegistryError(f"method '{self.name}': {k} must be {hp.type_name}, got {v!r}"
                                    + (f" ({type(v).__name__})" if isinstance(v, str) and hp.types != (str,) else ""))
        values = {k: hp.default for k, hp in self.hparams.items()}
        values.update(overrides)
        return values

    def trl_hparams(self, values: dict[str, Any]) -> dict[str, Any]:
        """The resolved values that are TRL settings (``HParam(trl=True)``; a config-only method: all of them)."""
        return dict(values) if self.point == "config" else {k: v for k, v in values.items() if self.hparams[k].trl}

    def state_dict(self, generator) -> dict | None:
        """The run's method state for a checkpoint (None: the method keeps none)."""
        if self.state is None:
            return None
        snap = dict(self.state.state_dict(generator))
        self._check_state_keys(snap)
        return snap

    def load_state_dict(self, generator, state: dict | None) -> None:
        """Restore a checkpoint's method state into the run of ``generator``; a checkpoint without the state this
        method keeps, with state of a stateless method, or with unknown keys is an error (the checkpoint was not
        written by this version of the method)."""
        if state is None and self.state is None:
            return
        if self.state is None:
            raise RegistryError(f"the checkpoint holds state of method {self.name!r} (keys {sorted(state)}), but "
                                f"{self.name!r} keeps none (no register_*(..., state=))")
        if state is None:
            raise RegistryError(f"method {self.name!r} keeps state across steps ({', '.join(self.state.keys)}), "
                                "but the checkpoint holds none for it")
        self._check_state_keys(state)
        self.state.load_state_dict(generator, dict(state))

    def _check_state_keys(self, state: dict) -> None:
        unknown = sorted(set(state) - set(self.state.keys))
        if unknown:
            raise RegistryError(f"method {self.name!r}: unknown state key {unknown[0]!r}; valid: "
                                f"{', '.join(self.state.keys)}")

    def hook_hparams(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the method's hooks receive: :meth:`resolve` without the TRL settings."""
        values = self.resolve(overrides)
        return {k: v for k, v in values.items() if not self.hparams[k].trl}


_REGISTRY: dict[str, Method] = {}


def _register(point: str, name: str, *, paper: str, source: str, hparams: dict[str, HParam] | None = None,
              trl_overrides: dict[str, Any] | None = None, requires_off_policy: bool = False,
              needs: tuple[str, ...] = (), description: str = "", version: int | None = None,
              trainer: str | None = None, state: MethodState | None = None, **point_options):
    """``needs``: extra tensors the trainer must provide, among ``NEEDS``. ``version``: see :attr:`Method.version`.
    ``trainer``: see :attr:`Method.trainer` (default ``grpo``). ``state``: the method's cross-step state
    (:class:`MethodState`), the same object at every point that states it.
    ``point_options``: fields of :class:`Method` that belong to this point (``rollout_kind``,
    ``task_reward_weight``)."""
    if point not in EXTENSION_POINTS:
        raise RegistryError(f"unknown extension point {point!r}; valid: {', '.join(EXTENSION_POINTS)}")
    if trainer is not None and trainer not in TRAINERS:
        raise RegistryError(f"method {name!r}: unknown trainer {trainer!r}; valid: {', '.join(TRAINERS)}")
    bad = sorted(set(needs) - set(NEEDS))
    if bad:
        raise RegistryError(f"method {name!r}: unknown need {bad[0]!r}; valid: {', '.join(NEEDS)}")

    def deco(fn: Callable | None):
        m = _REGISTRY.get(name)
        if m is None:
            doc = description or ((fn.__doc__ or "").strip().split("\n")[0] if fn else "")
            m = _REGISTRY[name] = Method(name=name, paper=paper, source=source, description=doc)
        elif point in m.hooks or m.paper != paper:
            raise RegistryError(f"method {name!r} is already registered (by {m.paper}, at {m.point})")
        if state is not None and m.state is not None and m.state is not state:
            raise RegistryError(f"method {name!r}: a second, different state= (one MethodState per method)")
        for k, hp in (hparams or {}).items():
            try:
                hp.types  # every hyperparameter has a type: from its default or stated
            except RegistryError as e:
                raise RegistryError(f"method {name!r}: {k}: {e}") from None
        m.hooks[point] = fn
        m.hparams.update(hparams or {})
        m.trl_overrides.update(trl_overrides or {})
        m.requires_off_policy |= requires_off_policy
        m.needs = tuple(dict.fromkeys(m.needs + tuple(needs)))
        if version is not None:
            m.version = max(m.version, int(version))
        if trainer is not None:
            m.trainer = trainer
        if state is not None:
            m.state = state
        for k, v in point_options.items():
            setattr(m, k, v)
        return fn

    return deco


def register_loss(name: str, **kw):
    """Register a per-token loss ``fn(ctx, **hparams) -> (per_token_loss, metrics)``."""
    return _register("loss", name, **kw)


def register_advantage(name: str, **kw):
    """Register an advantage ``fn(actx: AdvantageContext, **hparams) -> (advantages, metrics)``."""
    return _register("advantage", name, **kw)


def register_reward(name: str, *, task_reward_weight: float = 1.0, label_free: bool = False, **kw):
    """Register a reward ``fn(rctx: RewardContext, **hparams) -> list[float | None]``, added to the task's reward
    functions; the task's weights are multiplied by ``task_reward_weight`` (0: the method's reward replaces them).
    ``label_free=True``: training never sees the answers (:attr:`Method.label_free`; ``rctx.answers`` is None)."""
    if not task_reward_weight >= 0:
        raise RegistryError(f"method {name!r}: task_reward_weight must be >= 0, got {task_reward_weight!r}")
    if label_free and task_reward_weight != 0:
        raise RegistryError(f"method {name!r}: a label-free reward replaces the task's (task_reward_weight=0)")
    return _register("reward", name, task_reward_weight=float(task_reward_weight), label_free=bool(label_free), **kw)


def register_rollout(name: str, *, kind: str = "logits_processors", **kw):
    """Register a rollout hook: ``kind="logits_processors"``: ``fn(rctx, **hparams) -> list[LogitsProcessor]``;
    ``kind="rollout_func"``: ``fn(prompts, rctx, **hparams) -> dict`` (TRL ``rollout_func`` output)."""
    if kind not in ROLLOUT_KINDS:
        raise RegistryError(f"method {name!r}: unknown rollout kind {kind!r}; valid: {', '.join(ROLLOUT_KINDS)}")
    return _register("rollout", name, rollout_kind=kind, **kw)


def register_data(name: str, **kw):
    """Register a data hook ``fn(bctx: BatchContext, **hparams) -> BatchDecision | None``."""
    return _register("data", name, **kw)


def unregister(name: str) -> None:
    """Remove a method (tests register toy methods under unique names and clean them out with this)."""
    _REGISTRY.pop(name, None)


def register_config(name: str, **kw) -> None:
    """Register a method that is only TRL configuration (``trl_overrides``), e.g. the GRPO baseline."""
    _register("config", name, **kw)(None)


def get_method(name: str) -> Method:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(f"unknown method {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


def all_methods() -> dict[str, Method]:
    _load_builtin_methods()
    return dict(sorted(_REGISTRY.items()))


#: modules of this folder that are infrastructure, not papers
_NOT_METHODS = {"registry", "context"}
_loaded = False


def _load_builtin_methods() -> None:
    """Import every module of ``harness/methods/`` (importing registers its methods): no central import list."""
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil
    from pathlib import Path

    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name not in _NOT_METHODS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True
