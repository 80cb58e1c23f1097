"""Checkpoints of a training job (GRPO; the single-stage DPO and the SFT paths too; Tool-Light's two DPO stages
through :mod:`harness.train.stages`), and resuming from the last one after the job was killed.

A killed ``harness train`` used to restart from step 0. Now the job writes a checkpoint every ``save_steps``
optimizer steps into ``<job dir>/checkpoints/checkpoint-<step>/`` (outside the rule's declared outputs
``result.json``, ``metrics.jsonl`` and ``model/``, which ``snakemake --rerun-incomplete`` deletes), and the same
command run again continues from the newest one. At the smoke tiers the resumed job's per-step metrics, held-out
curve and final weights equal those of an uninterrupted run bit for bit (``tests/test_resume.py``; DPO:
``tests/test_diff_info.py``, SFT: ``tests/test_sft_stage.py``, whose trainers mix in
:class:`harness.train.resumable.HFCheckpointMixin`, holding HF's checkpoint and TRL's token counter).

A checkpoint is HF ``Trainer``'s own (weights, optimizer, scheduler, python/numpy/torch RNG states,
``trainer_state.json``; TRL adds its adaptive-entropy state), written by :meth:`Trainer._save_checkpoint` and read
back by ``Trainer.train(resume_from_checkpoint=...)``, plus two files of ours:

- ``harness_state.pt``: what HF does not hold: the trainer's seeded generators, TRL's micro-step counter and the
  generation batch still in use between two generations, the method's cross-step state (the registry's ``state=``
  hooks, e.g. SIREN's anchor, RiskPO's tracked quantiles), a synced reference model, and the job's records so far
  (per-step metrics, held-out evaluations, a ranking run's history). Pickled (``torch.save``): read back only
  from the job's own folder, once the manifest has matched the job.
- ``harness_checkpoint.json``: the manifest (job key, method, seed, step); a checkpoint of another job is refused.

Each checkpoint is written into a staging folder and renamed into place (a kill mid-save leaves no partial
checkpoint; staging leftovers are removed on the next start), older ones are pruned (the newest ``save_total_limit``
stay) and the folder is removed once the job's results are written. Without a checkpoint the job starts from zero.

A job of several processes (``accelerate launch``, :mod:`harness.plan.launch`) checkpoints the same way: every
process writes into one staging folder (``.staging-step<N>``, the same name on every process), HF writes the weights
and optimizer from the main process and each process's RNG state (``rng_state_<rank>.pth``), each process writes
its own harness state (``harness_state_rank<rank>.pt``: its generation batch, generators and method state are its
own), and after a barrier the main process writes the manifest (with ``processes``) and renames the folder into
place; a second barrier holds every process until it is there. A checkpoint resumes only under the same number of
processes (else a ResumeError naming both). The processes share the job folder (one node, or a shared file system).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from harness.config import ConfigError
from harness.config.tiers import SettingError, parse, setting
from harness.results import atomic_write_json
from harness.train.resumable import Stateful

CHECKPOINT_DIR = "checkpoints"   # under the job dir
MANIFEST = "harness_checkpoint.json"
STATE_FILE = "harness_state.pt"
FORMAT = 1
PREFIX = "checkpoint-"           # HF's PREFIX_CHECKPOINT_DIR


def state_file(rank: int, processes: int) -> str:
    """The harness state file of one process: :data:`STATE_FILE` for a one-process job, one per rank otherwise."""
    return STATE_FILE if processes == 1 else f"harness_state_rank{rank}.pt"


@dataclass(frozen=True)
class CheckpointSpec:
    """How often a GRPO job checkpoints and how many checkpoints it keeps. Read from the job's TRL settings under
    TRL's own names (``tiers.<tier>.trl.save_steps`` / ``save_total_limit``; HF's ``save_strategy`` stays "no":
    the harness triggers the saves), these defaults otherwise, so jobs that state neither keep their content key."""

    save_steps: int | float = setting(25, "optimizer steps", "checkpoint every N optimizer steps (a float < 1: that "
                                      "share of max_steps, as HF; 0: never). The last step is never checkpointed: "
                                      "the job writes its results then", "harness (issue 16): a save takes 0.1-0.4 s "
                                      "and 6-8 MB at the smoke tiers, <= 3 % of 25 steps' time; a tier with slow "
                                      "steps states a smaller value; HF save_steps")
    save_total_limit: int | None = setting(2, "checkpoints", "newest checkpoints kept (older ones are pruned after "
                                           "each save; at least 1; null: all)", "harness (issue 16); HF save_total_limit")

    def every(self, max_steps: int) -> int:
        """The interval in optimizer steps (0: never)."""
        s = self.save_steps
        return math.ceil(max_steps * s) if isinstance(s, float) and 0 < s < 1 else int(s)


def spec_of(job: dict) -> CheckpointSpec:
    """The job's checkpoint settings: ``save_steps`` and ``save_total_limit`` of its ``trl`` block, else defaults."""
    trl = job.get("trl") or {}
    try:
        spec = parse(CheckpointSpec, {k: trl[k] for k in ("save_steps", "save_total_limit") if k in trl},
                     f"job {job.get('job_key')} trl")
    except SettingError as e:
        raise ConfigError(str(e)) from None
    if spec.save_steps < 0 or (spec.save_total_limit is not None and spec.save_total_limit < 1):
        raise ConfigError(f"job {job.get('job_key')} trl: save_steps must be >= 0 and save_total_limit >= 1, got "
                          f"{spec.save_steps!r} and {spec.save_total_limit!r}")
    return spec


class ResumeError(ConfigError):
    """A checkpoint that cannot be resumed (another job's, incomplete, or holding state this code does not know)."""


def _steps(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in root.glob(f"{PREFIX}*") if root.is_dir() else ():
        tail = p.name[len(PREFIX):]
        if p.is_dir() and tail.isdigit():
            out.append((int(tail), p))
    return sorted(out)


def _discard(path: Path, root: Path) -> None:
    """Remove a checkpoint: renamed out of the ``checkpoint-*`` names first (atomic), so a kill mid-removal never
    leaves a partial checkpoint that looks complete."""
    trash = Path(tempfile.mkdtemp(dir=root, prefix=".trash-"))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_tree(path: Path) -> int:
    """fsync every file under ``path`` (a node crash after the rename must not find empty files); total bytes."""
    total = 0
    for f in sorted(path.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return total


class Checkpointer(TrainerCallback):
    """A training job's checkpoints under ``<out_dir>/checkpoints``. Created before the job loads anything, so a
    checkpoint of another job fails at once; :meth:`attach` joins it to the trainer and restores the parts from the
    newest checkpoint; the trainer's ``_save_checkpoint`` calls :meth:`save`; :meth:`clear` removes the folder once
    the job's results are written. ``parts``: name -> object with ``state_dict()``/``load_state_dict()``."""

    def __init__(self, out_dir: str | Path, job: dict, spec: CheckpointSpec | None = None, log=None):
        self.root = Path(out_dir) / CHECKPOINT_DIR
        self.job = job_identity(job)
        self.spec = spec if spec is not None else spec_of(job)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.parts: dict[str, Stateful] = {}
        self.trainer = None
        self.saves: list[dict] = []  # per save: step, seconds, bytes
        self.latest_processes = 1     # the number of processes that wrote the newest checkpoint
        for junk in self.root.glob(".staging-*") if self.root.is_dir() else ():
            shutil.rmtree(junk, ignore_errors=True)   # a save or a removal that was killed
        for junk in self.root.glob(".trash-*") if self.root.is_dir() else ():
            shutil.rmtree(junk, ignore_errors=True)
        self.latest = self._latest()

    def _latest(self) -> Path | None:
        """The newest checkpoint, checked to be this job's (a ResumeError otherwise)."""
        found = _steps(self.root)
        if not found:
            return None
        step, path = found[-1]
        man = read_manifest(path, self.job, self.root)
        if man.get("global_step") != step:
            raise ResumeError(f"{path}: manifest says step {man.get('global_step')}, the folder {step}")
        self.latest_processes = int(man.get("processes", 1))
        return path

    # -- resume ---------------------------------------------------------------------------------------------------
    def attach(self, trainer, **parts: Stateful) -> str | None:
        """Join the trainer (its checkpoints go through :meth:`save`) and restore the trainer's and ``parts``' state
        from the newest checkpoint. Returns the path for ``trainer.train(resume_from_checkpoint=...)`` (None: start
        from zero)."""
        self.trainer, self.parts = trainer, dict(parts)
        acc = trainer.accelerator
        trainer.checkpointer = self
        trainer.add_callback(self)
        if self.latest is None:
            return None
        if self.latest_processes != acc.num_processes:
            raise ResumeError(f"{self.latest} was written by a job of {self.latest_processes} process(es); this one "
                              f"runs {acc.num_processes}: launch it as before, or delete {self.root} to start from "
                              "zero")
        state = torch.load(self.latest / state_file(acc.process_index, acc.num_processes), map_location="cpu",
                           weights_only=False)
        want, have = set(self.parts) | {"trainer"}, set(state)
        if want != have:
            raise ResumeError(f"{self.latest}: checkpoint holds the state of {sorted(have)}, this job has "
                              f"{sorted(want)}; delete {self.root} to start from zero")
        try:
            trainer.load_checkpoint_state(state["trainer"])
            for name, part in self.parts.items():
                part.load_state_dict(state[name])
        except (KeyError, ValueError, TypeError) as e:
            raise ResumeError(f"{self.latest}: cannot restore it: {e}") from None
        self.log(f"resuming from {self.latest} (step {_steps(self.root)[-1][0]} of {trainer.args.max_steps})")
        return str(self.latest)

    # -- save -----------------------------------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kw):
        every = self.spec.every(state.max_steps)
        if every > 0 and state.global_step % every == 0 and state.global_step < state.max_steps:
            control.should_save = True  # HF then calls the trainer's _save_checkpoint

    def save(self, trainer, write_hf) -> Path:
        """One checkpoint: ``write_hf(staging_root)`` writes HF's ``checkpoint-<step>`` under the staging root, then
        our state and manifest join it, it is fsynced and renamed into place, and older checkpoints are pruned."""
        t0 = time.time()
        step = int(trainer.state.global_step)
        acc = trainer.accelerator
        n, main = acc.num_processes, acc.is_main_process
        if n > 1:  # one staging folder, named alike on every process
            staging = self.root / f".staging-step{step}"
            if main:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            acc.wait_for_everyone()
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        final, size = self.root / f"{PREFIX}{step}", 0
        try:
            write_hf(staging)
            ck = staging / f"{PREFIX}{step}"
            ck.mkdir(parents=True, exist_ok=True)
            state = {"trainer": trainer.checkpoint_state(),
                     **{name: part.state_dict() for name, part in self.parts.items()}}
            torch.save(state, ck / state_file(acc.process_index, n))
            if n > 1:
                acc.wait_for_everyone()  # every process's files are in the staging folder
            if main:
                size = self._seal(ck, final, step, sorted(state), n)
        finally:
            if main:
                shutil.rmtree(staging, ignore_errors=True)
        if n > 1:
            acc.wait_for_everyone()  # no process goes on before the checkpoint is in place
        if not main:
            return final
        keep = self.spec.save_total_limit
        for _, old in _steps(self.root)[:-keep] if keep else ():
            _discard(old, self.root)
        rec = {"step": step, "seconds": round(time.time() - t0, 3), "bytes": size}
        self.saves.append(rec)
        self.log(f"checkpoint step {step}: {size / 2**20:.1f} MB in {rec['seconds']} s -> {final}")
        return final

    def _seal(self, ck: Path, final: Path, step: int, parts: list[str], processes: int) -> int:
        """The manifest joins the staged checkpoint ``ck``, which is fsynced and renamed to ``final``; its bytes."""
        atomic_write_json(ck / MANIFEST, {"kind": "train_checkpoint", "format": FORMAT, **self.job,
                                          "global_step": step, "parts": parts, "processes": processes,
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        size = _fsync_tree(ck)
        if final.exists():  # only after a manual change of the folder: the newer write wins
            _discard(final, self.root)
        os.replace(ck, final)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return size

    def clear(self) -> None:
        """Remove the checkpoints (the job's results are written)."""
        if self.root.is_dir():
            for _, path in _steps(self.root):
                _discard(path, self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def job_identity(job: dict) -> dict:
    """What a checkpoint's (or stage record's) manifest names of its job."""
    return {k: job[k] for k in ("job_key", "method", "seed", "tier")}


def read_manifest(path: Path, identity: dict, root: Path, what: str = "checkpoint") -> dict:
    """The manifest of ``path`` (a checkpoint, or a stage record: ``what``), checked to be readable, of this harness's
    format and of the job ``identity`` names; a ResumeError naming what to delete otherwise."""
    try:
        man = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ResumeError(f"{path}: not a {what} written by harness train ({MANIFEST}: {e}); delete {root} to "
                          "start the job from zero") from None
    if man.get("format") != FORMAT:
        raise ResumeError(f"{path}: {what} format {man.get('format')!r}, this harness reads {FORMAT}; "
                          f"delete {root} to start the job from zero")
    theirs = {k: man.get(k) for k in identity}
    if theirs != identity:
        raise ResumeError(f"{path} belongs to another job ({_describe(theirs)}), not to this one "
                          f"({_describe(identity)}); delete {root} to start this job from zero")
    return man


def _describe(job: dict[str, Any]) -> str:
    return f"job_key {job.get('job_key')}, {job.get('tier')}/{job.get('method')}, seed {job.get('seed')}"
