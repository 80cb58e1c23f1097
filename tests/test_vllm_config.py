"""vLLM at the GPU tiers (issue 16), tested without a GPU: what would be passed to TRL's GRPOConfig, to lm-eval's vLLM
model and to vllm.LLM / SamplingParams in the held-out evaluation, and the errors for combinations that cannot work
(vLLM on a CPU tier, fields of the wrong mode, no GPU or no vllm at run time). The vLLM code paths themselves are
run with a stand-in ``vllm`` module that records its arguments; benchmarks/gpu_check.py only parses and refuses."""
from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.config import ConfigError, list_papers, load_card
from harness.config import backend as B

ROOT = Path(__file__).resolve().parents[1]
SMOKE = load_card("entropy_mechanism")["tiers"]["smoke"]
WHERE = "replications/x/card.yaml tiers/t"


def _tier(**blocks) -> dict:
    t = {k: v for k, v in SMOKE.items()}
    for k, v in blocks.items():
        t[k] = {**(t.get(k) or {}), **v} if isinstance(v, dict) else v
    return t


# ---- the tier check (harness validate, the DAG before anything runs)


def test_every_card_tier_passes_the_generation_check():
    for paper in list_papers():
        for tier, block in load_card(paper)["tiers"].items():
            B.check_tier_generation(block, f"{paper} {tier}")


@pytest.mark.parametrize("blocks,field", [
    ({"trl": {"use_vllm": True}}, "trl/use_vllm"),
    ({"eval": {"backend": "vllm"}}, "eval/backend"),
    ({"benchmarks": {"math500": {"limit": 5, "backend": "vllm"}}}, "benchmarks/math500/backend"),
])
def test_vllm_on_a_cpu_tier_is_refused(blocks, field):
    with pytest.raises(ConfigError, match=f"{WHERE}/{field}: vLLM needs a GPU and this is a CPU tier "
                                          r"\(resources.gpus is 0\)"):
        B.check_tier_generation(_tier(**blocks), WHERE)
    B.check_tier_generation(_tier(**blocks, resources={"gpus": 1}), WHERE)  # the same on a GPU tier


@pytest.mark.parametrize("blocks,message", [
    ({"eval": {"backend": "tgi"}}, r"eval/backend: unknown backend 'tgi'; valid: hf, vllm"),
    ({"trl": {"use_vllm": True, "vllm_mode": "remote"}}, r"vllm_mode: unknown mode 'remote'; valid: colocate, server"),
    ({"trl": {"vllm_mode": "colocate"}}, r"trl: vllm_mode has no effect without use_vllm: true"),
    ({"trl": {"use_vllm": "yes"}}, r"use_vllm must be true or false, got 'yes'"),
    ({"trl": {"use_vllm": True, "vllm_server_port": 8001}}, r"vllm_server_port: no effect with vllm_mode 'colocate'"),
    ({"trl": {"use_vllm": True, "vllm_mode": "server", "vllm_gpu_memory_utilization": 0.5}},
     r"vllm_gpu_memory_utilization: no effect with vllm_mode 'server': a server takes it as a `trl vllm-serve` flag"),
    ({"trl": {"use_vllm": True, "vllm_gpu_memory_utilization": 1.5}}, r"must be in \(0, 1\], got 1.5"),
    ({"trl": {"use_vllm": True, "vllm_tensor_parallel_size": 3}},
     r"vllm_tensor_parallel_size 3 must divide the job's 8 training processes"),
])
def test_bad_combinations_are_one_line_errors(blocks, message):
    with pytest.raises(ConfigError, match=message):
        B.check_tier_generation(_tier(**blocks, resources={"gpus": 8}), WHERE)


def test_validate_run_config_refuses_vllm_on_a_cpu_tier(tmp_path, monkeypatch):
    """Through the run config (what `harness validate` and the Snakefile call) on a card copy."""
    import harness.config as config

    card = (ROOT / "replications/entropy_mechanism/card.yaml").read_text()
    bad = tmp_path / "replications/entropy_mechanism/card.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text(card.replace("      loss_type: bnpo                     # verl",
                                "      use_vllm: true\n      loss_type: bnpo                     # verl", 1))
    (tmp_path / "config").symlink_to(ROOT / "config")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    config._load_card_cached.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"tiers/smoke/trl/use_vllm: vLLM needs a GPU"):
            config.load_run_config({"tier": "smoke", "paper": "entropy_mechanism"}, ROOT / "config/config.yaml")
    finally:
        config._load_card_cached.cache_clear()


# ---- training: GRPOConfig arguments


def test_grpo_args_without_vllm_are_the_trl_block_unchanged():
    trl = dict(SMOKE["trl"])
    assert B.grpo_vllm_args(trl, cuda_available=False, env={}) == trl


def test_grpo_args_refuse_vllm_without_a_gpu_or_without_vllm(monkeypatch):
    with pytest.raises(ConfigError, match=r"uses vLLM, which needs a GPU, and this machine has none"):
        B.grpo_vllm_args({"use_vllm": True}, cuda_available=False, env={})
    monkeypatch.setattr(B.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"vLLM, which is not installed: pip install vllm==0.30.0"):
        B.grpo_vllm_args({"use_vllm": True}, cuda_available=True, env={})


def test_grpo_args_colocate_and_server_are_valid_grpo_configs(monkeypatch, tmp_path):
    from trl import GRPOConfig

    monkeypatch.setattr(B, "require_vllm", lambda what, cuda_available: None)  # a GPU machine with vllm
    colo = B.grpo_vllm_args({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3},
                            cuda_available=True, env={B.SERVER_URL_ENV: "http://elsewhere:8000"})
    assert colo == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}
    server = B.grpo_vllm_args({"use_vllm": True, "vllm_mode": "server"}, cuda_available=True,
                              env={B.SERVER_URL_ENV: "http://vllm-0:8000"})
    assert server == {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://vllm-0:8000"}
    stated = {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "10.0.0.2"}  # the card's host wins
    assert B.grpo_vllm_args(stated, cuda_available=True, env={B.SERVER_URL_ENV: "http://vllm-0:8000"}) == stated
    with pytest.raises(ConfigError, match=r"RLVR_VLLM_SERVER_URL must be an http\(s\) URL"):
        B.grpo_vllm_args({"use_vllm": True, "vllm_mode": "server"}, cuda_available=True,
                         env={B.SERVER_URL_ENV: "vllm-0:8000"})
    for kw in (colo, server):  # TRL takes them as they are
        cfg = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **kw)
        assert (cfg.use_vllm, cfg.vllm_mode) == (True, kw["vllm_mode"])
    assert cfg.vllm_server_base_url == "http://vllm-0:8000"


def test_a_job_with_vllm_rollouts_stops_before_training_on_cpu(tiny_base, tmp_path):
    from harness.plan import resolve_job
    from harness.train.job import run_job

    job = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    job["trl"] = {**job["trl"], "use_vllm": True, "max_steps": 1}
    with pytest.raises(ConfigError, match=r"training \(trl.use_vllm\) uses vLLM, which needs a GPU"):
        run_job(job, model_dir=tiny_base, out_dir=tmp_path / "out", data_dir=ROOT.parent / "shared/data",
                mlflow_uri=None)
    assert not (tmp_path / "out" / "result.json").exists()


# ---- evaluation: lm-eval's vLLM model, vllm.LLM and SamplingParams


def test_lmeval_vllm_model_args():
    e = B.VllmEngine()
    assert B.lmeval_vllm_args("/m", e, seed=3, max_length=None, n_gpus=1) == {
        "pretrained": "/m", "dtype": "auto", "tensor_parallel_size": 1, "data_parallel_size": 1,
        "gpu_memory_utilization": 0.9, "seed": 3, "batch_size": "auto"}
    two = B.lmeval_vllm_args("/m", B.VllmEngine(tensor_parallel_size=2), seed=0, max_length=4096, n_gpus=2)
    assert (two["tensor_parallel_size"], two["data_parallel_size"], two["max_model_len"]) == (2, 1, 4096)
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 4 x data_parallel_size 1 needs 4 GPUs; this job sees 2"):
        B.lmeval_vllm_args("/m", B.VllmEngine(tensor_parallel_size=4), seed=0, max_length=None, n_gpus=2)
    if B.importlib.util.find_spec("ray") is None:
        with pytest.raises(ConfigError, match=r"runs 8 vLLM engines through ray, which is not installed"):
            B.lmeval_vllm_args("/m", e, seed=0, max_length=None, n_gpus=8)


def test_sampling_args_match_the_hf_heldout_protocol():
    assert B.sampling_args(n=1, temperature=0.0, max_tokens=64, seed=5) == {
        "n": 1, "temperature": 0.0, "max_tokens": 64, "seed": 5, "skip_special_tokens": True}
    assert B.sampling_args(n=8, temperature=1.0, max_tokens=64, seed=5) == {
        "n": 8, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 64, "seed": 5, "skip_special_tokens": True}
    with pytest.raises(ConfigError, match="greedy decoding"):
        B.sampling_args(n=4, temperature=0.0, max_tokens=8, seed=0)


def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


@pytest.fixture
def gpu(monkeypatch):
    """A machine that says it has one CUDA GPU (the vLLM paths only ask torch)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_lmeval_backend_vllm_loads_lm_evals_vllm_model(monkeypatch, gpu, tmp_path):
    from harness.evaluate import lmeval_run

    (tmp_path / "generation_config.json").write_text('{"repetition_penalty": 1.1, "temperature": 0.7}')

    seen = {}

    class VLLM:
        def __init__(self, **kw):
            seen.update(kw)
            self.max_length = kw.get("max_model_len")

    _fake_module(monkeypatch, "vllm")
    _fake_module(monkeypatch, "lm_eval.models.vllm_causallms", VLLM=VLLM)
    s = lmeval_run.Settings(benchmarks=["math500"], data_dir=Path("."), k=1, temperature=0.0, top_p=1.0,
                            max_gen_toks=256, limit=2, seed=7, apply_chat_template=False, system_instruction=None,
                            max_length=2048, batch_size=8, device="cpu", dtype="float32", bootstrap_iters=10,
                            backend="vllm")
    m = lmeval_run._load_model(tmp_path, None, s)
    assert seen == B.lmeval_vllm_args(str(tmp_path), B.VllmEngine(), seed=7, max_length=2048, n_gpus=1)
    # the protocol records the checkpoint's non-neutral generation defaults, as for HFLM (vLLM applies them too)
    assert m.max_length == 2048 and m.gen_defaults == {"repetition_penalty": 1.1}
    assert s.as_dict(2048)["backend"] == "vllm" and "backend" not in lmeval_run.Settings(
        **{**s.__dict__, "backend": "hf"}).as_dict(2048)  # hf results keep their settings


def test_harness_eval_backend_vllm_refuses_on_cpu():
    p = subprocess.run([sys.executable, "-m", "harness.evaluate.lmeval", "--model-dir", "/nonexistent",
                        "--benchmarks", "math500", "--limit", "1", "--backend", "vllm", "--out", "/tmp/never.json",
                        "--data-dir", str(ROOT.parent / "shared/data")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2, p.stderr[-2000:]
    assert "error: this evaluation (--backend vllm) uses vLLM, which needs a GPU" in p.stderr


def test_heldout_through_vllm_passes_token_ids_and_per_problem_seeds(monkeypatch, gpu):
    from harness.evaluate.heldout import heldout_samples_vllm

    calls = {}

    class Out:
        def __init__(self, texts):
            self.outputs = [types.SimpleNamespace(text=t) for t in texts]

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, prompts, params):
            calls.setdefault("generate", []).append((prompts, params))
            if isinstance(params, list):  # sampled: k texts per problem (problem 0: 2 of 3 right)
                return [Out([" 7", "8", "7 "]), Out(["1", "1", "1"])]
            return [Out(["7"]), Out(["3"])]

    _fake_module(monkeypatch, "vllm", LLM=LLM, SamplingParams=lambda **kw: kw)

    class Tok:
        def __call__(self, text, add_special_tokens):
            assert add_special_tokens is False
            return {"input_ids": [ord(c) for c in text]}

    greedy, sampled, texts = heldout_samples_vllm(
        "/ckpt", Tok(), ["3+4=", "1+1="], ["7", "2"], score=lambda t, a: t.strip() == a, k=3, temperature=1.0,
        max_new_tokens=4, seed=2)
    assert greedy == [True, False] and sampled == [[True, False, True], [False, False, False]]
    assert texts == [["7", "8", "7"], ["1", "1", "1"]]
    assert calls["engine"] == B.engine_args("/ckpt", B.VllmEngine(), seed=2, n_gpus=1)
    (gp, gparams), (sp, sparams) = calls["generate"]
    assert gp == sp == [{"prompt_token_ids": [51, 43, 52, 61]}, {"prompt_token_ids": [49, 43, 49, 61]}]
    assert gparams == B.sampling_args(n=1, temperature=0.0, max_tokens=4, seed=2)
    assert sparams == [B.sampling_args(n=3, temperature=1.0, max_tokens=4, seed=2 * 1000003 + i) for i in (0, 1)]


def test_heldout_vllm_refuses_on_cpu_and_for_smoke_tasks(tiny_base, tmp_path):
    from harness.evaluate.heldout import evaluate_heldout_job, heldout_samples_vllm
    from harness.plan import resolve_job

    with pytest.raises(ConfigError, match=r"held-out evaluation \(eval.backend: vllm\) uses vLLM, which needs a GPU"):
        heldout_samples_vllm("/ckpt", None, [], [], score=None, k=2, temperature=1.0, max_new_tokens=4, seed=0)
    job = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    job["eval"] = {**job["eval"], "backend": "vllm", "n_val": 4}
    with pytest.raises(ConfigError, match=r"smoke task 'addition' is evaluated with HF generate"):
        evaluate_heldout_job(job, tiny_base, data_dir=ROOT.parent / "shared/data", out=tmp_path / "h.json")
    assert not (tmp_path / "h.json").exists()


# ---- benchmarks/gpu_check.py: argument parsing, CPU refusal, the numbers it states


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_arguments():
    g = _gpu_check()
    a = g.parse_args([])
    assert (a.prompts, a.samples, a.steps, a.colocate_memory, a.phase) == (30, 32, 5, 0.3, "all")
    for bad, msg in ((["--grpo-batch", "12"], "multiple of 8"), (["--steps", "1"], "--steps must be >= 2"),
                     (["--samples", "0"], "--samples must be >= 1"), (["--eval-memory", "1.2"], r"in \(0, 1\]")):
        with pytest.raises(SystemExit) as e:
            g.parse_args(bad)
        assert e.value.code == 2


def test_gpu_check_refuses_without_a_gpu():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--steps", "2"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2 and p.stdout == ""
    assert "error: benchmarks/gpu_check.py needs one CUDA GPU and torch.cuda.is_available() is False" in p.stderr


def test_gpu_check_model_and_kv_estimate():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    g = _gpu_check()
    with torch.device("meta"):  # the config builds Qwen2.5-1.5B's shapes (1.54 B parameters, tied head)
        model = Qwen2ForCausalLM(Qwen2Config(**g.QWEN25_15B))
    assert sum(p.numel() for p in model.parameters()) == g.parameter_count() == 1_543_714_304
    assert g.kv_bytes_per_token() == 2 * 28 * 2 * 128 * 2 == 28_672
    # BW * B / (W + B * c * kv): 960 sequences fit; c = 128 + 4096 / 2
    est = g.kv_estimate(bandwidth=4.8e12, weight_bytes=2 * 1_543_714_304, n_seqs=960, capacity_tokens=None,
                        prompt=128, gen=4096, kv=28_672)
    assert est["batch"] == 960 and est["mean_context"] == 2176
    assert est["tokens_per_s"] == pytest.approx(4.8e12 * 960 / (3_087_428_608 + 960 * 2176 * 28_672))
    small = g.kv_estimate(bandwidth=4.8e12, weight_bytes=3e9, n_seqs=960, capacity_tokens=100 * 4224, prompt=128,
                          gen=4096, kv=28_672)
    assert small["batch"] == 100  # the KV cache holds 100 full sequences at once


def test_gpu_check_hf_backend_on_a_tiny_cpu_model(tmp_path):
    """--backend hf's two phases, on a tiny Qwen2 on the CPU: GRPO steps with TRL's HF generate timed, and avg@k with
    every sample run to its length in batches of --hf-batch."""
    g = _gpu_check()
    g.DEVICE = "cpu"
    g.QWEN25_15B = {**g.QWEN25_15B, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "bos_token_id": 299,
                    "eos_token_id": 299}
    a = g.parse_args(["--backend", "hf", "--steps", "2", "--grpo-batch", "8", "--grpo-completion-tokens", "6",
                      "--prompts", "3", "--samples", "2", "--gen-tokens", "5", "--prompt-tokens", "4", "--hf-batch", "4"])
    model = g.build_model(tmp_path / "model", a.seed)
    grpo = g.run_grpo(model, a)
    assert grpo["backend"] == "hf" and grpo["steps_timed"] == 1 and grpo["step_seconds"] > 0
    assert 0 < grpo["generation_share"] < 1
    t = g.run_throughput(model, a)
    assert t["tokens"] == 3 * 2 * 5  # min_new_tokens: no sample stops early; 6 sequences in calls of 4 and 2
    assert t["kv_capacity_tokens"] == 4 * (4 + 5) and t["estimate"]["batch"] == 4
    assert t["tokens_per_s"] == pytest.approx(t["tokens"] / t["seconds"])
    r = {"device": "cpu", "versions": g.versions(), "grpo": grpo, "throughput": {"error": "exit 1"}}
    text = g.table(r, a)
    assert "backend hf" in text and "HF generate" in text and "avg@2 generation" in text and "failed" in text
    with pytest.raises(SystemExit):
        g.parse_args(["--hf-batch", "4"])  # vllm backend: no hf batch
