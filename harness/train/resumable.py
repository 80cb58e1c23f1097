"""What a checkpoint holds, on the trainer's side (:mod:`harness.train.resume` writes and finds the files): the
:class:`CheckpointMixin` of :class:`harness.train.trainer.HarnessGRPOTrainer` (HF's saves go through the job's
``Checkpointer``; the run's state beyond HF's checkpoint), the train sampler that replays an uninterrupted run's
epochs (:class:`EpochSampler`), and the ``state_dict`` protocol of the parts a job restores (:class:`Stateful`,
:class:`AttrState`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import Sampler


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class AttrState:
    """``state_dict``/``load_state_dict`` over some attributes of an object (deep copies), e.g. the ranking run's
    :class:`harness.data.selection.HistoryRecorder` (``history``, ``rows``)."""

    def __init__(self, obj, names: tuple[str, ...]):
        self.obj, self.names = obj, tuple(names)

    def state_dict(self) -> dict:
        return {n: copy.deepcopy(getattr(self.obj, n)) for n in self.names}

    def load_state_dict(self, state: dict) -> None:
        for n in self.names:
            setattr(self.obj, n, copy.deepcopy(state[n]))


class Contents:
    """``state_dict``/``load_state_dict`` over the contents of a list or dict that a job's callbacks fill (deep
    copies; loading replaces the contents in place, so every holder of the container sees them)."""

    def __init__(self, container: list | dict):
        self.container = container

    def state_dict(self) -> dict:
        return {"contents": copy.deepcopy(self.container)}

    def load_state_dict(self, state: dict) -> None:
        value = copy.deepcopy(state["contents"])
        if isinstance(self.container, dict):
            self.container.clear()
            self.container.update(value)
        else:
            self.container[:] = value


class EpochSampler(Sampler):
    """TRL's ``RepeatSampler`` (``inner``) whose epoch ``e`` yields the order an uninterrupted run draws in epoch
    ``e``. TRL's sampler draws one permutation per epoch from one seeded generator, so the fresh sampler of a job
    resumed in epoch e > 0 would replay epoch 0's order; HF calls ``set_epoch(e)`` before each epoch, and this
    re-seeds the generator and skips the e permutations before it when the sampler is not already there."""

    def __init__(self, inner):
        self.inner, self._drawn = inner, 0

    def __getattr__(self, name):  # accelerate reads ``generator`` (and TRL's fields) from the sampler
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        g = getattr(self.inner, "generator", None)
        if epoch == self._drawn or not getattr(self.inner, "shuffle", False) or self.inner.seed is None:
            return
        g.manual_seed(self.inner.seed)
        for _ in range(epoch):
            torch.randperm(self.inner.num_samples, generator=g)
        self._drawn = epoch

    def __iter__(self):
        self._drawn += 1
        return iter(self.inner)


class HFCheckpointMixin:
    """The trainer's side of checkpoints for any HF ``Trainer`` (TRL's DPOTrainer in the DPO pair path): HF's
    ``_save_checkpoint`` goes through the job's :class:`Checkpointer` (``checkpointer``, set by
    :meth:`Checkpointer.attach`; without one HF's behaviour is unchanged) into its staging folder, and
    :meth:`checkpoint_state`/:meth:`load_checkpoint_state` hold what HF's checkpoint does not (nothing here; the
    GRPO trainer's :class:`CheckpointMixin` holds its generators, generation batch and method state)."""

    checkpointer: Any = None  # the job's harness.train.resume.Checkpointer (this module may not import it: a cycle)
    _staging_root: str | None = None
    #: plain trainer attributes a checkpoint holds as they are (e.g. TRL DPOTrainer's ``_total_train_tokens``, its
    #: logged ``num_tokens``); any class of the trainer may name its own (the MRO's are collected)
    CHECKPOINT_ATTRS: tuple[str, ...] = ()

    def _checkpoint_attrs(self) -> list[str]:
        return sorted({a for c in type(self).__mro__ for a in vars(c).get("CHECKPOINT_ATTRS", ())})

    def _get_output_dir(self, trial) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        if self.checkpointer is None:
            return super()._save_checkpoint(model, trial)

        def write_hf(root: Path) -> None:  # HF (and TRL) write checkpoint-<step> under the staging root
            self._staging_root = str(root)
            try:
                super(HFCheckpointMixin, self)._save_checkpoint(model, trial)
            finally:
                self._staging_root = None

        self.checkpointer.save(self, write_hf)

    def create_model_card(self, *args, **kwargs):
        """None: TRL writes a hub model card into ``output_dir`` at every checkpoint; the harness publishes none."""
        return None

    def checkpoint_state(self) -> dict:
        return {"attrs": {a: copy.deepcopy(getattr(self, a)) for a in self._checkpoint_attrs()}}

    def load_checkpoint_state(self, state: dict) -> None:
        if set(state) != {"attrs"} or sorted(state["attrs"]) != self._checkpoint_attrs():
            raise ValueError(f"trainer state {sorted(state)} (attributes {sorted(state.get('attrs') or {})}), "
                             f"expected attributes {self._checkpoint_attrs()}")
        for name, value in state["attrs"].items():
            setattr(self, name, value)


class CheckpointMixin(HFCheckpointMixin):
    """The GRPO trainer's side of checkpoints (mixed into :class:`harness.train.trainer.HarnessGRPOTrainer`): as
    :class:`HFCheckpointMixin`, plus the train sampler as an :class:`EpochSampler` and, in
    :meth:`checkpoint_state`/:meth:`load_checkpoint_state`, the run's state beyond HF's checkpoint."""

    #: TRL's micro-step counter, the last data/advantage hook's share of touched tokens
    CHECKPOINT_ATTRS: tuple[str, ...] = ("_step", "_last_adv_frac")

    def _get_train_sampler(self, dataset=None):
        return EpochSampler(super()._get_train_sampler(dataset))

    def _generation_every(self) -> int:
        return self.args.steps_per_generation * self.num_iterations

    def checkpoint_state(self) -> dict:
        """The run's state beyond HF's checkpoint: the seeded generators (method contexts, refill draws), the
        ``CHECKPOINT_ATTRS``, the generation batch still in use when the step is not a generation boundary, the
        method's cross-step state (:meth:`harness.methods.registry.Method.state_dict`) and a synced reference
        model's weights (TRL's ``sync_ref_model``)."""
        refill = getattr(self, "_refill_generator", None)
        ref = None
        if self.ref_model is not None and self.args.sync_ref_model:
            ref = {k: v.detach().cpu().clone()
                   for k, v in self.accelerator.unwrap_model(self.ref_model).state_dict().items()}
        return {"generator": self._generator.get_state(),
                "refill_generator": None if refill is None else refill.get_state(),
                "attrs": {a: copy.deepcopy(getattr(self, a)) for a in self._checkpoint_attrs()},
                "buffered_inputs": self._buffered_inputs if self._step % self._generation_every() else None,
                "method": self.method.state_dict(self._generator), "ref_model": ref}

    def load_checkpoint_state(self, state: dict) -> None:
        """Restore :meth:`checkpoint_state` into this (fresh) trainer; unknown or missing keys are errors."""
        keys = {"generator", "refill_generator", "attrs", "buffered_inputs", "method", "ref_model"}
        if set(state) != keys:
            raise ValueError(f"trainer state keys {sorted(state)}, expected {sorted(keys)}")
        if sorted(state["attrs"]) != self._checkpoint_attrs():
            raise ValueError(f"trainer attributes {sorted(state['attrs'])}, expected {self._checkpoint_attrs()}")
        self._generator.set_state(state["generator"])
        if state["refill_generator"] is not None:
            self._refill_generator = torch.Generator()
            self._refill_generator.set_state(state["refill_generator"])
        for name, value in state["attrs"].items():
            setattr(self, name, value)
        if (state["buffered_inputs"] is None) != (self._step % self._generation_every() == 0):
            raise ValueError(f"micro-step {self._step}: the generation batch in use is missing or unexpected")
        self._buffered_inputs = _to_device(state["buffered_inputs"], self.accelerator.device)
        try:
            self.method.load_state_dict(self._generator, state["method"])
        except KeyError as e:  # RegistryError: missing, unexpected or unknown method state
            raise ValueError(str(e)) from None
        if (state["ref_model"] is not None) != (self.ref_model is not None and bool(self.args.sync_ref_model)):
            raise ValueError("the synced reference model's weights are missing or unexpected")
        if state["ref_model"] is not None:
            self.accelerator.unwrap_model(self.ref_model).load_state_dict(state["ref_model"])


def _to_device(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj
