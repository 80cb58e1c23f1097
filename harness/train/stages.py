"""Resuming a job of several training stages (Tool-Light's two DPO stages, :mod:`harness.train.dpo`).

Each stage is its own TRL trainer, so its step counter starts at 0 and its checkpoints (a
:class:`harness.train.resume.Checkpointer` each) live under ``<job dir>/checkpoints/stage<s>/``. Between two stages
the job writes a stage record, ``<job dir>/checkpoints/stage<s>-done/``: the policy's weights after stage ``s``, the
job's records so far (per-step metrics, held-out curve, per-stage summaries) and the python/numpy/torch RNG states,
with a manifest naming the job (another job's record is refused, as checkpoints are). A restart runs the job's
deterministic start again (data, base evaluation), loads the newest record, and goes on with the next stage: its
sampling draws the same numbers as in the uninterrupted run, and its trainer resumes from the stage's newest
checkpoint if there is one. A record is staged and renamed into place; the finished stage's checkpoints and older
records are then removed, and everything once the job's results are written. One process (the Tool-Light path does
not run under ``accelerate launch``).
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.results import atomic_write_json
from harness.train.resume import (CHECKPOINT_DIR, FORMAT, MANIFEST, Checkpointer, ResumeError, _fsync_tree,
                                  job_identity, read_manifest)

DONE = "stage{}-done"
STATE = "stage_state.pt"


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


class StageRecords:
    """The completed stages of one job under ``<out_dir>/checkpoints`` (see the module docstring)."""

    def __init__(self, out_dir: str | Path, job: dict, log=None):
        self.out_dir, self.full_job = Path(out_dir), job
        self.root = self.out_dir / CHECKPOINT_DIR
        self.job = job_identity(job)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        for junk in self.root.glob(".staging-*") if self.root.is_dir() else ():
            shutil.rmtree(junk, ignore_errors=True)  # a record whose write was killed

    def checkpointer(self, stage: int) -> Checkpointer:
        """The checkpoints of stage ``stage``'s trainer (``checkpoints/stage<s>/checkpoints``)."""
        return Checkpointer(self.root / f"stage{stage}", self.full_job, log=self.log)

    def latest(self) -> tuple[int, Path] | None:
        """(stage, folder) of the newest stage record, checked to be this job's; None without one."""
        found = sorted((int(p.name[len("stage"):-len("-done")]), p) for p in self.root.glob(DONE.format("*"))
                       if p.is_dir() and p.name[len("stage"):-len("-done")].isdigit()) if self.root.is_dir() else []
        if not found:
            return None
        stage, path = found[-1]
        man = read_manifest(path, self.job, self.root, "stage record")
        if man.get("stage") != stage:
            raise ResumeError(f"{path}: manifest says stage {man.get('stage')}, the folder {stage}; delete "
                              f"{self.root} to start this job from zero")
        return stage, path

    def save(self, stage: int, model, records: dict) -> Path:
        """Record the end of stage ``stage``: the model's weights, ``records`` and the RNG states, staged and renamed
        into place; then the stage's checkpoints and older records go."""
        t0 = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        final = self.root / DONE.format(stage)
        try:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            torch.save({"model": weights, "records": records, "rng": rng_state()}, staging / STATE)
            atomic_write_json(staging / MANIFEST, {"kind": "stage_record", "format": FORMAT, **self.job,
                                                  "stage": stage,
                                                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            size = _fsync_tree(staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in [self.root / f"stage{stage}", *(self.root / DONE.format(s) for s in range(1, stage))]:
            shutil.rmtree(old, ignore_errors=True)
        self.log(f"stage {stage} recorded: {size / 2**20:.1f} MB in {time.time() - t0:.2f} s -> {final}")
        return final

    def load(self, path: Path, model) -> dict:
        """The records of the stage record at ``path``; the model gets its weights and the process its RNG states."""
        try:
            state = torch.load(path / STATE, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            set_rng_state(state["rng"])
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            raise ResumeError(f"{path}: cannot restore it: {e}; delete {self.root} to start from zero") from None
        self.log(f"resuming after {path.name}")
        return state["records"]

    def clear(self) -> None:
        """Remove every record and stage checkpoint (the job's results are written)."""
        shutil.rmtree(self.root, ignore_errors=True)
