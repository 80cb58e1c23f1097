"""Several training processes give the result of one process on the same global batch (issue 16).

Each extension point is trained for a few steps with one registered method: on 2 CPU processes under
``accelerate launch`` (TRL's ``multi_gpu`` config, which on CPU is torchrun with the gloo backend: what
:mod:`harness.plan.launch` runs for a multi-process job) with ``per_device_train_batch_size`` 8, and in one process
with 16 (both: 4 groups of G = 4 per step). The final weights, the per-step loss and reward must agree.

- loss: ``forking_tokens`` with ``selection_scope: all_processes`` (global top-k and kept-token mean); control:
  ``micro_batch`` (the authors' scope, the default) at 2 processes ranks each process's tokens alone and trains a
  different policy (the scopes are tested at the token level too, on a real 2-process gloo group).
- advantage: ``egpo`` (token entropies gathered over the processes, padded); reward: ``empo`` (label-free: the
  share of the group in the completion's answer cluster; groups never span processes here, per_device % G == 0);
  data: ``t1`` (stage "scored": keeps 2 of each group's 4, over the processes; token normaliser recomputed);
  rollout: HAPO's logits-processor rollout hook with its advantage hook (entropy-dependent sampling temperature from
  statistics of all processes), registered here as ``mp_hapo_rollout``.

What makes the comparison exact: sampling is made independent of how the batch is split. A seeded Gumbel-max
sampler (:class:`SeededSampler`), the last logits processor of every training rollout, draws each token from the
(method-processed) distribution with a seed of (prompt, member of its group, position, step), so both runs train on
the same completions; prompts have equal length (no padding differences). The optimizer is SGD (Adam would amplify
rounding in near-zero gradients to ~lr). What is left is rounding in a different summation order (a gradient is
summed over 16 rows, or over 8 rows per process and then all-reduced) and in matrix products of other shapes. The
model runs in float64, but TRL's fused LM head (trl/kernels/chunked_logprob.py) computes log-probs, entropies and
their gradients in float32 whatever the model's dtype, so the rounding is float32's: measured at most 6e-9 on any
weight after 3 steps at lr 0.1 (the weights move by ~2e-2; the micro_batch control differs by ~2e-2). Tolerances:
1e-7 absolute on every weight, 1e-5 relative (1e-7 absolute) on the logged loss and reward. ``loss_type`` is
``dapo`` (normaliser: the active tokens of the whole batch; ``bnpo`` divides by each process's own tokens, which by
design differs from one process when the processes' token counts differ).

CPU-heavy: one ``accelerate launch`` runs every case (a few minutes under load); run this file alone, under nice.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
G, GLOBAL_BATCH, STEPS, PROCS = 4, 16, 3, 2
ATOL = 1e-7      # float32 rounding (TRL's fused LM head) after 3 SGD steps: see the module docstring
CONTROL_MIN = 1e-6  # the micro_batch control must differ by at least this much

CASES = {
    "loss": ("forking_tokens", {"selection_scope": "all_processes"}),
    "loss_micro_batch": ("forking_tokens", {"selection_scope": "micro_batch"}),
    "advantage": ("egpo", {}),
    "reward": ("empo", {"reward_mode": "verl", "answer_mode": "plain", "verify_timeout": 0.0}),
    "data": ("t1", {"n_keep": 2, "selection": "max_variance", "advantage_over": "kept"}),
    "rollout": ("mp_hapo_rollout", {"temperature_tau": 0.5}),
}
EQUIVALENT = [c for c in CASES if c != "loss_micro_batch"]


def register_test_methods() -> None:
    """``mp_hapo_rollout``: HAPO's rollout hook (logits processors) and the advantage hook that feeds it."""
    from harness.methods import hapo
    from harness.methods.registry import get_method, register_advantage, register_rollout

    try:
        get_method("mp_hapo_rollout")
        return
    except KeyError:
        pass
    register_rollout("mp_hapo_rollout", paper="test", source="tests/test_multiprocess.py",
                     hparams={"temperature_tau": hapo.LOSS_HPARAMS["temperature_tau"]})(hapo.hapo_rollout)
    register_advantage("mp_hapo_rollout", paper="test", source="tests/test_multiprocess.py",
                       needs=("adv_token_stats",), hparams=hapo.ADV_HPARAMS)(hapo.hapo_code_advantage)


class SeededSampler:
    """A logits processor that samples each token by Gumbel-max with its own seed, from (the prompt's tokens
    without padding, the row's member index in its group, the position, the training step): the same draws whatever
    the batch size or process. Returns a one-hot score row, so HF ``generate``'s own sampling picks that token."""

    def __init__(self, pad_id: int, group: int, step: int):
        self.pad_id, self.group, self.step, self.start = pad_id, group, step, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.size(1)
        out = torch.full_like(scores, float("-inf"))
        for r in range(input_ids.size(0)):
            prompt = [t for t in input_ids[r, : self.start].tolist() if t != self.pad_id]
            key = json.dumps([prompt, r % self.group, input_ids.size(1) - self.start, self.step]).encode()
            gen = torch.Generator().manual_seed(int(hashlib.sha256(key).hexdigest()[:15], 16))
            u = torch.rand(scores.size(1), generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
            out[r, int(torch.argmax(scores[r].double() - torch.log(-torch.log(u))))] = 0.0
        return out


def closeness_reward(completions, answer, **kwargs) -> list[float]:
    """The task reward of these runs: -|completion - answer| / 100 for a number (at least -1), else -1. Graded, so
    the groups of the (barely pre-trained) tiny model have reward variance; exact match would give zero advantages."""
    out = []
    for c, a in zip(completions, answer):
        c = c.strip()
        out.append(max(-1.0, -abs(int(c) - int(a)) / 100) if c.isdigit() else -1.0)
    return out


def run_case(model_dir: Path, out_dir: Path, name: str, per_device: int) -> dict:
    """Train case ``name`` for STEPS steps; returns the final weights and the per-step logs (every process)."""
    from transformers import LogitsProcessorList

    from conftest import tiny_grpo_trainer
    from harness.data import smoke

    method, hparams = CASES[name]
    rows = smoke.rows(smoke.split_pairs(512, 1234)[0][:64])  # prompts "ab+cd=": one length, no padding
    assert len({len(r["prompt"]) for r in rows}) == 1
    trainer, tok, logs = tiny_grpo_trainer(
        model_dir, out_dir / name, method, reward_funcs=[closeness_reward], hparams=hparams, rows=rows,
        per_device_train_batch_size=per_device, num_generations=G, max_completion_length=4, max_steps=STEPS,
        learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", loss_type="dapo", beta=0.0)
    trainer.model.to(torch.float64)
    init = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    inner = trainer._generate_single_turn

    def seeded(*args, **kwargs):  # outermost processor: runs after the method's (HookMixin._patched_generate)
        sampler = SeededSampler(tok.pad_token_id, G, trainer.state.global_step)
        with trainer._patched_generate(logits_processor=LogitsProcessorList([sampler])):
            return inner(*args, **kwargs)

    trainer._generate_single_turn = seeded
    trainer.train()
    params = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    steps = [{k: v for k, v in log.items() if isinstance(v, (int, float))} for log in logs if "loss" in log]
    return {"params": params, "init": init, "logs": steps, "processes": trainer.accelerator.num_processes}


def _worker(model_dir: str, out_dir: str) -> None:
    """Entry point under ``accelerate launch``: every case, results written by the main process."""
    from accelerate import PartialState

    register_test_methods()
    for name in CASES:
        res = run_case(Path(model_dir), Path(out_dir), name, GLOBAL_BATCH // PROCS)
        if PartialState().is_main_process:
            torch.save(res, Path(out_dir) / f"{name}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_runs(tiny_base, tmp_path_factory):
    """Every case on 2 processes: the launch line harness.plan.launch writes for a CPU job, with this file as the
    program."""
    from harness.plan.launch import config_file

    out = tmp_path_factory.mktemp("mp2")
    cmd = ["accelerate", "launch", "--config_file", str(config_file("multi_gpu")), "--num_processes", str(PROCS),
           "--num_machines", "1", "--machine_rank", "0", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", str(Path(__file__).resolve()), "--worker", str(tiny_base), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3000, env=env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    return {name: torch.load(out / f"{name}.pt") for name in CASES}


@pytest.fixture(scope="module")
def one_process_runs(tiny_base, tmp_path_factory):
    from harness.methods.registry import unregister

    register_test_methods()
    out = tmp_path_factory.mktemp("mp1")
    try:
        return {name: run_case(tiny_base, out, name, GLOBAL_BATCH) for name in CASES}
    finally:  # a test-only method must not reach the registry scans of later tests (README table, resume)
        unregister("mp_hapo_rollout")


def _max_param_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", EQUIVALENT)
def test_two_processes_train_as_one(case, one_process_runs, two_process_runs):
    one, two = one_process_runs[case], two_process_runs[case]
    assert (one["processes"], two["processes"]) == (1, PROCS)
    assert _max_param_diff(one["params"], one["init"]) > 1e-3  # it trained: equal weights are not trivially equal
    assert _max_param_diff(one["params"], two["params"]) <= ATOL
    assert len(one["logs"]) == len(two["logs"]) == STEPS
    for a, b in zip(one["logs"], two["logs"]):
        for key in ("loss", "reward"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (case, key, a, b)


def test_micro_batch_scope_is_per_process(one_process_runs, two_process_runs):
    """The authors' scope ranks each process's tokens alone: at 2 processes it trains another policy than one
    process (the control that shows the comparison above can fail), while all_processes does not."""
    diff = _max_param_diff(one_process_runs["loss_micro_batch"]["params"],
                           two_process_runs["loss_micro_batch"]["params"])
    assert diff > CONTROL_MIN
    # one process: the two scopes are the same computation
    assert _max_param_diff(one_process_runs["loss_micro_batch"]["params"], one_process_runs["loss"]["params"]) == 0


# ---- forking_tokens' two selection scopes on a real 2-process gloo group (token level, golden masks)

#: rank 0 holds the high-entropy tokens; rank 1's last token is padding
SCOPE_ENT = [[[5.0, 4.0, 3.0, 2.0], [1.5, 1.4, 1.3, 1.2]], [[1.0, 0.9, 0.8, 0.7], [0.6, 0.5, 0.4, 0.3]]]
SCOPE_MASK = [[[1, 1, 1, 1], [1, 1, 1, 1]], [[1, 1, 1, 1], [1, 1, 1, 0]]]


def _scope_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from harness.methods import forking_tokens as ft
    from harness.methods.context import TokenContext

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    ent, mask = torch.tensor(SCOPE_ENT[rank]), torch.tensor(SCOPE_MASK[rank], dtype=torch.float32)
    res = {scope: ft.entropy_top_mask(ent, mask, 0.25, scope) for scope in ft.SCOPES}
    # a process without valid tokens still joins the gather (a collective): no hang, nothing kept there
    res["one_empty"] = ft.entropy_top_mask(ent, mask * (rank == 0), 0.25, "all_processes")
    for scope in ft.SCOPES:
        lp = torch.zeros(2, 4, requires_grad=True)
        ctx = TokenContext.build(lp, lp.detach(), torch.ones(2), mask, entropies=ent)
        _, metrics = ft.forking_tokens(ctx, top_entropy_ratio=0.25, selection_scope=scope, clip_ratio_low=0.2,
                                       clip_ratio_high=0.28, clip_ratio_c=None)
        res[f"scale_{scope}"] = metrics["forking/loss_scale"]
    torch.save(res, Path(out) / f"{rank}.pt")
    dist.destroy_process_group()


def test_forking_tokens_scopes_on_two_processes(tmp_path):
    import time

    import torch.multiprocessing as mp

    ctx = mp.start_processes(_scope_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.time() + 600
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("the 2-process scope check hung (a collective was skipped on one process)")
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    t = lambda rows: torch.tensor(rows, dtype=torch.bool)  # noqa: E731
    # micro_batch (the authors'): each process ranks its own valid tokens, top_k_count(8) = top_k_count(7) = 2
    assert torch.equal(r0["micro_batch"], t([[1, 1, 0, 0], [0, 0, 0, 0]]))
    assert torch.equal(r1["micro_batch"], t([[1, 1, 0, 0], [0, 0, 0, 0]]))
    # all_processes: one threshold over the 15 valid tokens, top_k_count(15) = 4, all of them on rank 0
    assert torch.equal(r0["all_processes"], t([[1, 1, 1, 1], [0, 0, 0, 0]]))
    assert not r1["all_processes"].any()
    assert torch.equal(r0["one_empty"], t([[1, 1, 0, 0], [0, 0, 0, 0]])) and not r1["one_empty"].any()
    # the kept-token mean divides by the scope's counts: per process 8/2 and 7/2; over both 15/4 on each
    assert (r0["scale_micro_batch"], r1["scale_micro_batch"]) == (4.0, 3.5)
    assert r0["scale_all_processes"] == r1["scale_all_processes"] == 3.75


# ---- a whole training job under the launch line harness.plan.launch writes (rule train_multi), 2 CPU processes


def test_harness_train_runs_under_the_launch_line(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    from conftest import TINY_SMOKE
    from harness.plan import resolve_job
    from harness.plan.launch import Launch, launch_prefix

    job = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    job["model"] = TINY_SMOKE["model"]
    # 2 x 16 = 4 groups of 8; the entropy bonus gives a gradient even where the tiny model earns no reward
    job["trl"].update(max_steps=2, per_device_train_batch_size=16, warmup_steps=0, entropy_coef=0.1)
    job["eval"].update(every_steps=2, n_val=16)
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = tmp_path / "run"
    line = launch_prefix(Launch(processes=2), key=job["job_key"], trl=job["trl"])
    cmd = (f"{line} harness train --job {tmp_path / 'job.json'} --model-dir {tiny_base} --out {out} "
           "--data-dir ../shared/data --threads 1")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=3000, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    r = json.loads((out / "result.json").read_text())
    assert r["launch"] == {"num_processes": 2, "distributed_type": "MULTI_CPU"}
    assert [m["step"] for m in r["metrics"]] == [1, 2] and [e["step"] for e in r["heldout"]] == [0, 2]
    assert all(math.isfinite(m["loss"]) for m in r["metrics"])
    assert (out / "metrics.jsonl").read_text().count("\n") == 2
    files = sorted(f.name for f in (out / "model").iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files and "training_args.bin" not in files
    assert not (out / ".model.launch.tmp").exists()
    trained = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_base).state_dict()
    assert max(float((trained[k] - base[k]).abs().max()) for k in base) > 0  # the saved policy is the trained one


def _launched_train(tiny_base, job_path: Path, out: Path) -> str:
    from harness.plan.launch import Launch, launch_prefix

    job = json.loads(job_path.read_text())
    line = launch_prefix(Launch(processes=2), key=job["job_key"], trl=job["trl"])
    return (f"{line} harness train --job {job_path} --model-dir {tiny_base} --out {out} --data-dir ../shared/data "
            "--threads 1")


@pytest.mark.slow
def test_a_killed_two_process_job_resumes_bit_identical(tiny_base, tmp_path):
    """`kill -9` of a 2-process job (the launcher and its workers) after its first checkpoint; the same launch line
    again resumes every process from its own state and ends where an uninterrupted 2-process run ends."""
    import signal
    import time

    from conftest import TINY_SMOKE
    from harness.plan import resolve_job
    from harness.results import compare_results
    from harness.train.resume import CHECKPOINT_DIR, MANIFEST

    job = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    job["model"] = TINY_SMOKE["model"]
    # 2 x 8 = 2 groups of 8 per step; a checkpoint at step 2 of 4 (between two generations: the batch in use is in it)
    job["trl"].update(max_steps=4, per_device_train_batch_size=8, warmup_steps=0, entropy_coef=0.1, save_steps=2)
    job["eval"].update(every_steps=2, n_val=16)
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", _launched_train(tiny_base, tmp_path / "job.json", out)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=3000)

    ref, out = tmp_path / "ref", tmp_path / "run"
    p = run(out)  # the uninterrupted run, in the same folder (the trainer's output_dir is in its settings' digest)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    out.rename(ref)
    proc = subprocess.Popen(["bash", "-c", _launched_train(tiny_base, tmp_path / "job.json", out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 3000
    while not list((out / CHECKPOINT_DIR).glob("checkpoint-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    import psutil  # accelerate's dependency

    # the launcher and both workers at once, as a scheduler kills a job (torch's elastic agent starts the workers in
    # their own process groups, so the launcher's group alone would leave them running)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for pr in tree:
        pr.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    psutil.wait_procs(tree[1:], timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job ended before the kill"
    ck = out / CHECKPOINT_DIR / "checkpoint-2"
    assert [c.name for c in (out / CHECKPOINT_DIR).glob("checkpoint-*")] == [ck.name]
    assert json.loads((ck / MANIFEST).read_text())["processes"] == 2
    files = {f.name for f in ck.iterdir()}
    assert {"harness_state_rank0.pt", "harness_state_rank1.pt", "rng_state_0.pth", "rng_state_1.pth"} <= files
    assert not (out / "result.json").exists()

    p = run(out)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    log = p.stdout + p.stderr
    assert "resuming from" in log and "checkpoint-2 (step 2 of 4)" in log, log[-6000:]
    a, b = (json.loads((d / "result.json").read_text()) for d in (ref, out))
    assert len(a["metrics"]) == 4 and a["launch"]["num_processes"] == 2
    assert compare_results(a, b) == []
    sha = [hashlib.sha256((d / "model" / "model.safetensors").read_bytes()).hexdigest() for d in (ref, out)]
    assert sha[0] == sha[1]
    assert not (out / CHECKPOINT_DIR).exists()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _worker(sys.argv[2], sys.argv[3])


def test_cold_start_runs_under_the_launch_line(tmp_path):
    """The SFT cold start (rule cold_start_model) under 2 CPU processes: one model directory, written once, the
    record says 2 processes, no temporary directories left."""
    from test_cold_start import _tiny_chat_model, row

    from harness.plan.launch import Launch, launch_prefix

    base = _tiny_chat_model(tmp_path / "base")
    (tmp_path / "data").mkdir()
    rows = [row(("human", f"{a}+{b}?"), ("gpt", str(a + b))) for a in range(4) for b in range(4)]
    (tmp_path / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trl = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-2,
           "num_train_epochs": 1.0, "logging_steps": 1}
    spec = {"model": {"kind": "hf", "name": str(base), "cold_start": {"data": {"file": "rows.jsonl"}, "trl": trl}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "models" / "sft-x" / "base"
    line = launch_prefix(Launch(processes=2), key="cold-start-test", trl=trl)
    cmd = (f"{line} harness cold-start --spec {tmp_path / 'spec.json'} --out {out} --data-dir {tmp_path / 'data'} "
           "--threads 1")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=3000, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    rec = json.loads((out / "source.json").read_text())["cold_start"]
    assert rec["processes"] == 2 and rec["rows_trained"] == 16 and rec["steps"] == 2  # 16 rows / (2 x 2 x 2)
    assert sorted(p.name for p in out.parent.iterdir()) == ["base"]  # no .launch.tmp / .trainer left
    files = {f.name for f in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "source.json"} <= files and "training_args.bin" not in files
