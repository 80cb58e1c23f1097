"""GPU check: GRPO with vLLM colocate and AIME-sized avg@32 generation on one GPU, without the hub.

A model of Qwen2.5-1.5B's architecture (``QWEN25_15B``: the values of the released config.json) with random weights,
built from its config, and a word-level tokenizer over its 151,936 ids, saved to a work folder; then, each phase in a
fresh process (a clean GPU):

1. ``grpo``: a few steps of TRL's GRPOTrainer with vLLM colocated (the harness's ``trl.use_vllm`` path,
   :func:`harness.config.backend.grpo_vllm_args`): median step time, the share of it spent in vLLM (generation and
   the weight sync), peak GPU memory.
2. ``throughput``: avg@32 generation at AIME size, 30 prompts x 32 samples (vLLM alone), in tokens/s, against the
   KV-cache bandwidth estimate of decoding::

       tokens/s  <=  BW * B / (W + B * c * kv)

   BW the GPU's memory bandwidth (measured here: a device-to-device copy, read + write), W the weight bytes read
   once per decode step, B the sequences decoded together (min(N, KV capacity / (P + G)), N = prompts x samples, the
   KV capacity in tokens from vLLM's cache), c = P + G/2 the mean context (P prompt, G generated tokens), and
   kv = 2 x layers x kv_heads x head_dim x 2 bytes the K and V of one token (28,672 bytes here). Each decode step
   reads W and every running sequence's cache and emits B tokens; compute and the shared prompt prefix are ignored.

Random weights seldom emit EOS, and the throughput phase ignores it: every sample runs to its length, so the work is
fixed. Prints one table; ``--json`` also writes the numbers. Needs one CUDA GPU, torch with CUDA, TRL 1.16 and
``vllm==0.30.0`` (harness.config.backend.VLLM_REQUIREMENT); without a GPU it exits 2 and says so.

    python benchmarks/gpu_check.py [--steps 5] [--gen-tokens 4096] [--json gpu_check.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Qwen2.5-1.5B's architecture (config.json of the released checkpoint); the weights here are random
QWEN25_15B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "hidden_act": "silu",
    "tie_word_embeddings": True, "use_sliding_window": False, "max_window_layers": 28, "attention_dropout": 0.0,
    "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151643, "use_cache": True,
}
EOS = "<|endoftext|>"
BYTES = 2  # bf16


def parameter_count(cfg: dict = QWEN25_15B) -> int:
    """Parameters of a Qwen2 config: embeddings (tied head), per layer q/k/v (with bias), o, MLP, two norms; final norm."""
    h, i, L, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return v * h * (1 if cfg["tie_word_embeddings"] else 2) + L * layer + h


def kv_bytes_per_token(cfg: dict = QWEN25_15B) -> int:
    """K and V of one token over all layers: 2 x layers x kv_heads x head_dim x bytes."""
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * BYTES


def kv_estimate(*, bandwidth: float, weight_bytes: float, n_seqs: int, capacity_tokens: int | None, prompt: int,
                gen: int, kv: int) -> dict:
    """The decode bandwidth bound (module docstring): tokens/s <= BW * B / (W + B * c * kv)."""
    b = n_seqs if capacity_tokens is None else max(1, min(n_seqs, capacity_tokens // (prompt + gen)))
    c = prompt + gen / 2
    return {"tokens_per_s": bandwidth * b / (weight_bytes + b * c * kv), "batch": b, "mean_context": c}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="GRPO steps (the first is warm-up; default 5)")
    p.add_argument("--grpo-batch", type=int, default=32, help="completions per GRPO step (x8 per prompt; default 32)")
    p.add_argument("--grpo-completion-tokens", type=int, default=1024, help="max completion tokens in GRPO")
    p.add_argument("--prompts", type=int, default=30, help="prompts of the throughput phase (AIME: 30)")
    p.add_argument("--samples", type=int, default=32, help="samples per prompt (avg@32)")
    p.add_argument("--gen-tokens", type=int, default=4096, help="tokens generated per sample (default 4096)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (default 128)")
    p.add_argument("--colocate-memory", type=float, default=0.3, help="vLLM's GPU memory share in GRPO (TRL's 0.3)")
    p.add_argument("--eval-memory", type=float, default=0.85, help="vLLM's GPU memory share in the throughput phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--workdir", default=None, help="folder for the model and phase results (default: a temp dir)")
    p.add_argument("--phase", choices=("all", "grpo", "throughput"), default="all", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("steps", "grpo_batch", "grpo_completion_tokens", "prompts", "samples", "gen_tokens", "prompt_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up)")
    if a.grpo_batch % 8:
        p.error(f"--grpo-batch must be a multiple of 8 (num_generations), got {a.grpo_batch}")
    for name in ("colocate_memory", "eval_memory"):
        if not 0 < getattr(a, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(a, name)}")
    if a.colocate_memory + 0.05 > 1:
        p.error("--colocate-memory leaves no room for training")
    return a


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def require_gpu() -> None:
    """Refuse clearly where this cannot run (exit 2): no CUDA GPU, or no vllm."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        fail("benchmarks/gpu_check.py needs one CUDA GPU and torch.cuda.is_available() is False here; it measures "
             "vLLM and GRPO on a GPU and has no CPU mode")
    if importlib.util.find_spec("vllm") is None:
        from harness.config.backend import VLLM_REQUIREMENT

        fail(f"benchmarks/gpu_check.py needs vllm: pip install {VLLM_REQUIREMENT}")


def build_model(out: Path, seed: int) -> Path:
    """Random-weight Qwen2.5-1.5B (bf16) and a word-level tokenizer over its ids, saved to ``out``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {f"<t{i}>": i for i in range(QWEN25_15B["vocab_size"])}
    del vocab[f"<t{QWEN25_15B['eos_token_id']}>"]
    vocab[EOS] = QWEN25_15B["eos_token_id"]
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=EOS, unk_token=EOS).save_pretrained(out)
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_15B)).to(torch.bfloat16)
    model.save_pretrained(out)
    return out


def random_prompt(rng: random.Random, n: int) -> list[int]:
    eos = QWEN25_15B["eos_token_id"]
    return [t for t in (rng.randrange(100, QWEN25_15B["vocab_size"]) for _ in range(n + 1)) if t != eos][:n]


def run_grpo(model_dir: Path, a: argparse.Namespace) -> dict:
    """A few GRPO steps with colocated vLLM: step times, time in vLLM (generate + weight sync), peak memory."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from harness.config.backend import grpo_vllm_args

    rng = random.Random(a.seed)
    prompts = [" ".join(f"<t{t}>" for t in random_prompt(rng, a.prompt_tokens)) for _ in range(4 * a.grpo_batch)]
    trl = grpo_vllm_args({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": a.colocate_memory,
                          "vllm_max_model_length": a.prompt_tokens + a.grpo_completion_tokens + 8},
                         cuda_available=True, env=os.environ)
    args = GRPOConfig(output_dir=str(model_dir.parent / "grpo"), max_steps=a.steps, per_device_train_batch_size=a.grpo_batch,
                      num_generations=8, max_completion_length=a.grpo_completion_tokens, learning_rate=1e-6, bf16=True,
                      gradient_checkpointing=True, logging_steps=1, report_to="none", save_strategy="no", seed=a.seed,
                      disable_tqdm=True, **trl)
    steps, vllm_s = [], [0.0]

    def reward(completions, **kw):  # any spread of rewards: the loss and its gradient are non-zero
        return [float(len(c) % 13) for c in completions]

    class Clock(TrainerCallback):
        def on_step_begin(self, *args_, **kw):
            torch.cuda.synchronize()
            self.t, self.v = time.perf_counter(), vllm_s[0]

        def on_step_end(self, *args_, **kw):
            torch.cuda.synchronize()
            steps.append((time.perf_counter() - self.t, vllm_s[0] - self.v))

    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Clock()])
    gen = trainer.vllm_generation
    for name in ("generate", "sync_weights"):
        fn = getattr(gen, name)

        def timed(*x, _fn=fn, **kw):
            torch.cuda.synchronize()
            t = time.perf_counter()
            try:
                return _fn(*x, **kw)
            finally:
                torch.cuda.synchronize()
                vllm_s[0] += time.perf_counter() - t

        setattr(gen, name, timed)
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed_steps = steps[1:]  # the first step compiles and warms up
    total = sum(s for s, _ in timed_steps)
    return {"step_seconds": statistics.median(s for s, _ in timed_steps), "steps_timed": len(timed_steps),
            "vllm_share": sum(v for _, v in timed_steps) / total if total else None,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device_used_gib": (lambda f, t: (t - f) / 2**30)(*torch.cuda.mem_get_info())}


def measure_bandwidth(nbytes: int = 2**31, iters: int = 20) -> float:
    """Device memory bandwidth in bytes/s: a device-to-device copy counts its bytes twice (read + write)."""
    import torch

    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        y.copy_(x)
    torch.cuda.synchronize()
    bw = 2 * nbytes * iters / (time.perf_counter() - t)
    del x, y
    torch.cuda.empty_cache()
    return bw


def run_throughput(model_dir: Path, a: argparse.Namespace) -> dict:
    """avg@k generation of ``prompts`` x ``samples`` sequences of ``gen_tokens`` (vLLM alone) and the estimate."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: its cache size readable
    bandwidth = measure_bandwidth()
    from vllm import LLM, SamplingParams

    from harness.config.backend import VllmEngine, engine_args

    engine = VllmEngine(gpu_memory_utilization=a.eval_memory, max_model_len=a.prompt_tokens + a.gen_tokens + 8)
    llm = LLM(**engine_args(str(model_dir), engine, seed=a.seed, n_gpus=1))
    rng = random.Random(a.seed)
    prompts = [{"prompt_token_ids": random_prompt(rng, a.prompt_tokens)} for _ in range(a.prompts)]
    llm.generate(prompts[:1], SamplingParams(max_tokens=16, ignore_eos=True))  # warm-up (graphs, kernels)
    params = SamplingParams(n=a.samples, temperature=0.6, top_p=0.95, max_tokens=a.gen_tokens, ignore_eos=True,
                            seed=a.seed, detokenize=False)
    t = time.perf_counter()
    out = llm.generate(prompts, params)
    seconds = time.perf_counter() - t
    tokens = sum(len(c.token_ids) for o in out for c in o.outputs)
    cache = llm.llm_engine.vllm_config.cache_config
    capacity = cache.num_gpu_blocks * cache.block_size if getattr(cache, "num_gpu_blocks", None) else None
    est = kv_estimate(bandwidth=bandwidth, weight_bytes=parameter_count() * BYTES, n_seqs=a.prompts * a.samples,
                      capacity_tokens=capacity, prompt=a.prompt_tokens, gen=a.gen_tokens, kv=kv_bytes_per_token())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "bandwidth_bytes_per_s": bandwidth,
            "kv_capacity_tokens": capacity, "estimate": est}


def table(r: dict, a: argparse.Namespace) -> str:
    g, t = r["grpo"], r["throughput"]
    est = t["estimate"]
    rows = [
        ("GRPO step time (median)", f"{g['step_seconds']:.2f} s",
         f"{a.grpo_batch} completions x {a.grpo_completion_tokens} tokens, steps 2..{a.steps}"),
        ("  share in vLLM (generate + sync)", f"{100 * g['vllm_share']:.0f} %", f"colocate, {a.colocate_memory} of memory"),
        ("  peak GPU memory", f"{g['peak_allocated_gib']:.1f} GiB", f"torch peak; {g['device_used_gib']:.1f} GiB used on the device"),
        (f"avg@{a.samples} generation ({a.prompts} x {a.samples})", f"{t['tokens_per_s']:,.0f} tok/s",
         f"{t['tokens'] / 1e6:.2f} M tokens in {t['seconds']:.1f} s, {a.gen_tokens} per sample"),
        ("  KV-bandwidth estimate", f"{est['tokens_per_s']:,.0f} tok/s",
         f"BW {t['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, B {est['batch']}, c {est['mean_context']:.0f}, "
         f"kv {kv_bytes_per_token()} B/token"),
        ("  measured / estimate", f"{t['tokens_per_s'] / est['tokens_per_s']:.2f}", ""),
    ]
    head = (f"gpu_check: {r['device']}; Qwen2.5-1.5B architecture, random weights, {parameter_count():,} parameters, "
            f"bf16; torch {r['versions']['torch']}, vllm {r['versions']['vllm']}, trl {r['versions']['trl']}")
    w = [max(len(x[i]) for x in rows) for i in range(3)]
    lines = [head, f"{'measure':<{w[0]}}  {'value':>{w[1]}}  note", "-" * (w[0] + w[1] + w[2] + 4)]
    return "\n".join([*lines, *(f"{m:<{w[0]}}  {v:>{w[1]}}  {n}" for m, v, n in rows)])


def main(argv=None) -> int:
    a = parse_args(argv)
    require_gpu()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    model_dir = work / "model"
    if a.phase != "all":
        fn = run_grpo if a.phase == "grpo" else run_throughput
        (work / f"{a.phase}.json").write_text(json.dumps(fn(model_dir, a)))
        return 0
    import torch
    import trl
    import vllm

    build_model(model_dir, a.seed)
    passthrough = [x for x in (argv if argv is not None else sys.argv[1:]) if x]
    r = {"device": f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)",
         "versions": {"torch": torch.__version__, "vllm": vllm.__version__, "trl": trl.__version__}}
    for phase in ("grpo", "throughput"):  # each in a fresh process: the GPU is clean for the next
        p = subprocess.run([sys.executable, __file__, *passthrough, "--workdir", str(work), "--phase", phase])
        if p.returncode:
            fail(f"phase {phase} failed (exit {p.returncode}); its output is above")
        r[phase] = json.loads((work / f"{phase}.json").read_text())
    print(table(r, a))
    if a.json:
        Path(a.json).write_text(json.dumps({**r, "args": vars(a)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
