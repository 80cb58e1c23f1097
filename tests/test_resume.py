"""Resume after a kill (issue 16, harness/train/resume.py): a GRPO job checkpoints every ``save_steps`` steps into
``<job dir>/checkpoints/``; the same command run again after ``kill -9`` continues from the newest checkpoint, and
the result equals an uninterrupted run's bit for bit: every non-volatile field of ``result.json`` (per-step
metrics, held-out curve, digests), ``metrics.jsonl``, the final weights' file. Checked through the command line with
a real SIGKILL, for methods that keep state across steps (SIREN's anchor, RiskPO's tracked quantiles, T1's synced
reference model), and for a
ranking run whose small training set wraps around several epochs (sampler order, training history). The fast tests
check the refusals (another job's checkpoint, an incomplete one, unknown method state) and the pieces."""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError
from harness.methods.registry import (MethodState, RegistryError, all_methods, get_method, register_advantage,
                                      register_loss, unregister)
from harness.plan import job_dir, resolve_job
from harness.results import atomic_write_json
from harness.train.resumable import EpochSampler
from harness.train.resume import CHECKPOINT_DIR, MANIFEST, Checkpointer, ResumeError, spec_of, state_file

from conftest import ROOT, TINY_SMOKE, assert_resumed_identical, killed_and_resumed

#: 8 steps, generation every 2 steps: the checkpoint at step 3 falls between two generations (the batch in use is
#: part of it); step 6 is a generation boundary
TRL = {**TINY_SMOKE["trl_overrides"], "max_steps": 8, "save_steps": 3}


def _job(paper: str, method: str, seed: int = 3, **trl) -> dict:
    job = resolve_job(paper, "smoke", method, seed, trl_overrides={**TRL, **trl})
    job["eval"] = TINY_SMOKE["eval"]
    return job


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_bit_identical(tiny_base, tmp_path):
    """`harness train` killed with SIGKILL after its first checkpoint; the same command again (what `snakemake
    --rerun-incomplete` runs, after deleting the declared outputs) resumes and ends where an uninterrupted run ends."""
    job = _job("entropy_mechanism", "grpo")
    out = tmp_path / job_dir(job)
    out.mkdir(parents=True)
    atomic_write_json(out / "job.json", job)
    cmd = [sys.executable, "-c", "import sys; from harness.face.cli import main; sys.exit(main())", "train",
           "--job", str(out / "job.json"), "--model-dir", str(tiny_base), "--out", str(out), "--data-dir", "."]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    ref = tmp_path / "ref"
    (out / "job.json").rename(tmp_path / "job.json")
    out.rename(ref)
    out.mkdir()
    (tmp_path / "job.json").rename(out / "job.json")

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not list((out / CHECKPOINT_DIR).glob("checkpoint-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == -signal.SIGKILL, f"the job ended before the kill: {err[-3000:]}"
    assert [p.name for p in (out / CHECKPOINT_DIR).glob("checkpoint-*")] == ["checkpoint-3"]
    for name in ("result.json", "metrics.jsonl", "model"):  # the rule's declared outputs: none written yet
        assert not (out / name).exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr and "checkpoint-3 (step 3 of 8)" in again.stderr
    assert_resumed_identical(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("paper,method,state_metric,trl", [
    ("siren", "siren", "siren/anchor", {}),
    ("riskpo", "riskpo", "riskpo/q_alpha_tracked", {}),
    ("t1", "t1", "kl", {"ref_model_sync_steps": 2, "ref_model_mixup_alpha": 0.5})])
def test_a_method_with_state_resumes_identical(paper, method, state_metric, trl, tiny_base, tmp_path, monkeypatch):
    """SIREN's step-1 anchor, RiskPO's tracked quantiles and T1's reference model (TRL's sync_ref_model, a soft
    update every 2 steps) come back from the checkpoint (without them the resumed run re-measures the anchor,
    restarts the tracking, or takes its KL to the base model, and its metrics and weights differ)."""
    job = _job(paper, method, **trl)
    ref, _ = killed_and_resumed(job, tmp_path / "job", monkeypatch, model_dir=tiny_base)
    assert_resumed_identical(ref, tmp_path / "job")
    values = [row[state_metric] for row in json.loads((tmp_path / "job" / "result.json").read_text())["metrics"]
              if state_metric in row]
    assert len(values) >= 4
    if method == "siren":
        assert len(set(values)) == 1  # one anchor for the run, measured at step 1


@pytest.mark.slow
@pytest.mark.parametrize("n_saves", [1, 2])
def test_a_ranking_run_resumes_across_epochs(n_saves, tiny_base, tmp_path, monkeypatch):
    """8 training rows, 4 prompts a step: an epoch every 2 steps. Killed after the checkpoint of step 3 (inside
    epoch 1) or step 6 (an epoch boundary): the resumed sampler draws the uninterrupted run's order for that epoch
    (TRL's sampler alone would restart at epoch 0's), and the per-row training history is restored. Only the newest
    checkpoint is kept (save_total_limit 1)."""
    job = resolve_job("one_shot_rlvr", "smoke", "grpo", 42, history={"n_train": 8})
    job["trl"].update(per_device_train_batch_size=16, num_generations=4, steps_per_generation=1, max_steps=7,
                      warmup_steps=0, save_steps=3, save_total_limit=1)
    job["eval"] = {"every_steps": 3, "n_val": 8, "temperature": 1.0, "max_new_tokens": 4}
    out = tmp_path / "job"
    ref, _ = killed_and_resumed(job, out, monkeypatch, model_dir=tiny_base, n_saves=n_saves,
                                checkpoint=f"checkpoint-{3 * n_saves}")
    assert_resumed_identical(ref, out)
    assert (ref / "train_history.json").read_text() == (out / "train_history.json").read_text()
    visits = json.loads((out / "train_history.json").read_text())["history"]
    assert set(visits) == {str(i) for i in range(8)} and all(len(v) >= 3 for v in visits.values())


# ------------------------------------------------------------------------------------------------ refusals
def _fake_checkpoint(out: Path, step: int, **manifest) -> Path:
    ck = out / CHECKPOINT_DIR / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    if manifest:
        atomic_write_json(ck / MANIFEST, {"kind": "train_checkpoint", "format": 1, "global_step": step, **manifest})
    return ck


def test_a_checkpoint_of_another_job_is_refused(tmp_path, capsys):
    """A checkpoint whose job key differs stops `harness train` before anything loads, naming both jobs."""
    from argparse import Namespace

    from harness.train.job import main_train

    job = _job("entropy_mechanism", "grpo")
    other = _job("entropy_mechanism", "grpo", max_steps=9)
    assert other["job_key"] != job["job_key"]
    _fake_checkpoint(tmp_path, 3, **{k: other[k] for k in ("job_key", "method", "seed", "tier")})
    atomic_write_json(tmp_path / "job.json", job)
    a = Namespace(job=str(tmp_path / "job.json"), model_dir=str(tmp_path / "no-model"), out=str(tmp_path),
                  data_dir=".", mlflow_uri=None, threads=1, upstream=[])
    assert main_train(a) == 2
    err = capsys.readouterr().err
    assert "belongs to another job" in err and other["job_key"] in err and job["job_key"] in err
    assert f"delete {tmp_path / CHECKPOINT_DIR}" in err


def test_incomplete_or_foreign_checkpoints(tmp_path):
    job = _job("entropy_mechanism", "grpo")
    mine = {k: job[k] for k in ("job_key", "method", "seed", "tier")}
    assert Checkpointer(tmp_path, job).latest is None  # no checkpoint: the job starts from zero
    # leftovers of a save or a removal that was killed are removed; they are never resumed from
    (tmp_path / CHECKPOINT_DIR / ".staging-x1" / "checkpoint-9").mkdir(parents=True)
    (tmp_path / CHECKPOINT_DIR / ".trash-x2" / "checkpoint-1").mkdir(parents=True)
    assert Checkpointer(tmp_path, job).latest is None
    assert sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir()) == []
    _fake_checkpoint(tmp_path, 3, **mine)
    assert Checkpointer(tmp_path, job).latest == tmp_path / CHECKPOINT_DIR / "checkpoint-3"
    _fake_checkpoint(tmp_path, 6)  # newest, without a manifest: not one of ours
    with pytest.raises(ResumeError, match="not a checkpoint written by harness train"):
        Checkpointer(tmp_path, job)
    atomic_write_json(tmp_path / CHECKPOINT_DIR / "checkpoint-6" / MANIFEST, {"format": 0, **mine})
    with pytest.raises(ResumeError, match="checkpoint format 0"):
        Checkpointer(tmp_path, job)
    atomic_write_json(tmp_path / CHECKPOINT_DIR / "checkpoint-6" / MANIFEST, {"format": 1, "global_step": 5, **mine})
    with pytest.raises(ResumeError, match="manifest says step 5"):
        Checkpointer(tmp_path, job)


def test_a_checkpoint_resumes_only_under_the_process_count_that_wrote_it(tmp_path):
    """Each process's generation batch, generators and method state are in its own file: a checkpoint of 2
    processes cannot resume a 1-process job (nor the other way round)."""
    from types import SimpleNamespace

    job = _job("entropy_mechanism", "grpo")
    mine = {k: job[k] for k in ("job_key", "method", "seed", "tier")}
    _fake_checkpoint(tmp_path, 3, **mine, processes=2)

    def trainer(n: int):
        return SimpleNamespace(accelerator=SimpleNamespace(num_processes=n, process_index=0),
                               add_callback=lambda cb: None)

    with pytest.raises(ResumeError, match="written by a job of 2 process.*this one runs 1"):
        Checkpointer(tmp_path, job).attach(trainer(1))
    _fake_checkpoint(tmp_path, 6, **mine)  # no `processes`: a checkpoint written before multi-process saves (1)
    with pytest.raises(ResumeError, match="written by a job of 1 process.*this one runs 2"):
        Checkpointer(tmp_path, job).attach(trainer(2))
    assert state_file(0, 1) == "harness_state.pt" and state_file(1, 2) == "harness_state_rank1.pt"


def test_checkpoint_settings():
    job = _job("entropy_mechanism", "grpo")
    assert (spec_of(job).every(8), spec_of(job).save_total_limit) == (3, 2)
    job["trl"].pop("save_steps")
    assert spec_of(job).every(400) == 25  # the default
    job["trl"].update(save_steps=0.25, save_total_limit=1)
    assert (spec_of(job).every(10), spec_of(job).save_total_limit) == (3, 1)  # HF's ratio of max_steps
    job["trl"]["save_total_limit"] = 0
    with pytest.raises(ConfigError, match="save_total_limit >= 1"):
        spec_of(job)
    job["trl"]["save_total_limit"] = "2"
    with pytest.raises(ConfigError, match="save_total_limit must be int or null"):
        spec_of(job)


# ------------------------------------------------------------------------------------------------ pieces
def test_epoch_sampler_replays_the_uninterrupted_order():
    """A fresh sampler told the epoch (HF's set_epoch) yields what an uninterrupted one yields in that epoch."""
    from trl.trainer.utils import RepeatSampler

    def sampler():
        return EpochSampler(RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=3, seed=5))

    one = sampler()
    orders = []
    for e in range(4):
        one.set_epoch(e)
        orders.append(list(one))
    assert len({tuple(o) for o in orders}) == 4  # the order changes every epoch
    for e in range(4):
        fresh = sampler()
        fresh.set_epoch(e)
        assert list(fresh) == orders[e]
    plain = RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=3, seed=5)
    assert [list(plain) for _ in range(4)] == orders  # the same orders as TRL's own sampler
    assert one.generator is one.inner.generator  # accelerate reads the generator through the wrapper


def test_method_state_protocol():
    """Round trip of a method's state, and the refusals: unknown keys, missing state, state of a stateless method,
    two different state objects for one method."""
    store: dict = {}
    state = MethodState(lambda g: dict(store.get(id(g), {})), lambda g, s: store.__setitem__(id(g), dict(s)),
                        keys=("q",))
    name = "_test_resume_stateful"
    unregister(name)
    try:
        register_advantage(name, paper="test", source="test", state=state)(lambda actx: None)
        m = get_method(name)
        g1, g2 = torch.Generator(), torch.Generator()
        assert m.state_dict(g1) == {}
        store[id(g1)] = {"q": torch.tensor([0.25, 0.75])}
        snap = m.state_dict(g1)
        m.load_state_dict(g2, snap)
        assert torch.equal(store[id(g2)]["q"], torch.tensor([0.25, 0.75]))
        with pytest.raises(RegistryError, match="unknown state key 'anchor'; valid: q"):
            m.load_state_dict(g2, {"anchor": 1.0})
        with pytest.raises(RegistryError, match="keeps state across steps .q., but the checkpoint holds none"):
            m.load_state_dict(g2, None)
        with pytest.raises(RegistryError, match="one MethodState per method"):
            register_loss(name, paper="test", source="test", state=MethodState(dict, dict, ("q",)))(lambda ctx: None)
    finally:
        unregister(name)
    grpo = get_method("grpo")
    assert grpo.state_dict(torch.Generator()) is None
    grpo.load_state_dict(torch.Generator(), None)
    with pytest.raises(RegistryError, match="holds state of method 'grpo'.*keeps none"):
        grpo.load_state_dict(torch.Generator(), {"q": 1})


#: module-level stores of method modules that never outlive one generation batch (no checkpoint falls inside one)
TRANSIENT = {("implicit_prm", "_PENDING"), ("implicit_prm", "_BETA")}  # reward hook -> advantage hook, same batch


def _stores(path: Path) -> list[str]:
    """Module-level names bound to an empty mutable container ({}, [], dict(), set(), deque(), WeakKeyDictionary())."""
    out = []
    for node in ast.parse(path.read_text()).body:
        target, value = ((node.targets[0], node.value) if isinstance(node, ast.Assign) else
                         (node.target, node.value) if isinstance(node, ast.AnnAssign) else (None, None))
        if not isinstance(target, ast.Name) or value is None:
            continue
        empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and not getattr(value, "keys", None)
                 and not getattr(value, "elts", None))
        containers = ("dict", "list", "set", "deque", "WeakKeyDictionary", "WeakValueDictionary", "defaultdict")
        call = (isinstance(value, ast.Call) and not value.args
                and ast.unparse(value.func).split(".")[-1] in containers)
        if empty or call:
            out.append(target.id)
    return out


def test_every_method_with_cross_step_state_saves_it():
    """A method module that keeps a store across calls (keyed by the run's generator) registers state= hooks for
    every method it defines, so its state is in the checkpoints."""
    methods = all_methods()
    checked = 0
    for path in sorted((ROOT / "harness" / "methods").glob("*.py")):
        mod = path.stem
        stores = [s for s in _stores(path) if (mod, s) not in TRANSIENT and mod not in ("registry", "context")]
        if not stores:
            continue
        mine = [m for m in methods.values()
                if any(fn is not None and fn.__module__ == f"harness.methods.{mod}" for fn in m.hooks.values())]
        assert mine, f"{mod} keeps {stores} across calls but registers no method (nothing would checkpoint them)"
        stateless = [m.name for m in mine if m.state is None]
        assert not stateless, f"{mod} keeps {stores} across calls, but {stateless} register no state="
        checked += len(mine)
    assert checked >= 11  # siren, riskpo, hidden_state_verl, ares x2, aepo_entropy x2, hapo x2, laser x3
