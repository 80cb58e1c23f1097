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
fixed. Prints one table; ``--json`` also writes the numbers and the table (``harness readme`` shows the table of
``benchmarks/gpu_check.json``). Needs one CUDA GPU, torch with CUDA, TRL 1.16 and ``vllm==0.30.0``
(harness.config.backend.VLLM_REQUIREMENT); without a GPU it exits 2 and says so.

``--backend hf`` runs both phases with transformers' ``generate`` instead (TRL's ``use_vllm: false``, the CPU tiers'
path), for a GPU machine where vLLM cannot be installed: vllm 0.30.0 needs torch 2.13.0's CUDA build, and a machine
with another torch and no package index cannot take it. Its throughput is HF generate's, sampled with the same
parameters (temperature 0.6, top-p 0.95, no top-k), in batches of ``--hf-batch`` sequences; the estimate then takes
B = that batch. A phase that fails is reported in the table and the exit status is 1.

    python benchmarks/gpu_check.py [--steps 5] [--gen-tokens 4096] [--json gpu_check.json]
    python benchmarks/gpu_check.py --backend hf --gen-tokens 1024 --hf-batch 960 --json gpu_check.json
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
    p.add_argument("--backend", choices=("vllm", "hf"), default="vllm",
                   help="generation in both phases: vllm (TRL's colocate mode; default) or hf (transformers generate)")
    p.add_argument("--hf-batch", type=int, default=None,
                   help="--backend hf: sequences per generate call in the throughput phase (default: all at once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--workdir", default=None, help="folder for the model and phase results (default: a temp dir)")
    p.add_argument("--phase", choices=("all", "grpo", "throughput"), default="all", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("steps", "grpo_batch", "grpo_completion_tokens", "prompts", "samples", "gen_tokens", "prompt_tokens",
                 "hf_batch"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
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
    if a.hf_batch is not None and a.backend != "hf":
        p.error("--hf-batch is for --backend hf")
    return a


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


#: where the phases run; only tests set "cpu" (with a tiny config in QWEN25_15B) to exercise the hf path
DEVICE = "cuda"


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def require_gpu(backend: str = "vllm") -> None:
    """Refuse clearly where this cannot run (exit 2): no CUDA GPU, or no vllm for the vllm backend."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        fail("benchmarks/gpu_check.py needs one CUDA GPU and torch.cuda.is_available() is False here; it measures "
             "vLLM and GRPO on a GPU and has no CPU mode")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        from harness.config.backend import VLLM_REQUIREMENT

        fail(f"benchmarks/gpu_check.py needs vllm: pip install {VLLM_REQUIREMENT} (or --backend hf: transformers "
             "generate in both phases)")


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
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_15B)).to(torch.bfloat16)
    model.save_pretrained(out)
    return out


def random_prompt(rng: random.Random, n: int) -> list[int]:
    eos = QWEN25_15B["eos_token_id"]
    return [t for t in (rng.randrange(100, QWEN25_15B["vocab_size"]) for _ in range(n + 1)) if t != eos][:n]


def run_grpo(model_dir: Path, a: argparse.Namespace) -> dict:
    """A few GRPO steps (vLLM colocated, or HF generate): step times, time generating, peak memory."""
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rng = random.Random(a.seed)
    prompts = [" ".join(f"<t{t}>" for t in random_prompt(rng, a.prompt_tokens)) for _ in range(4 * a.grpo_batch)]
    if a.backend == "vllm":
        from harness.config.backend import grpo_vllm_args

        trl = grpo_vllm_args({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": a.colocate_memory,
                              "vllm_max_model_length": a.prompt_tokens + a.grpo_completion_tokens + 8},
                             cuda_available=True, env=os.environ)
    else:
        trl = {"use_vllm": False}
    cuda = DEVICE == "cuda"
    args = GRPOConfig(output_dir=str(model_dir.parent / "grpo"), max_steps=a.steps, per_device_train_batch_size=a.grpo_batch,
                      num_generations=8, max_completion_length=a.grpo_completion_tokens, learning_rate=1e-6, bf16=cuda,
                      use_cpu=not cuda, gradient_checkpointing=True, logging_steps=1, report_to="none",
                      save_strategy="no", seed=a.seed, disable_tqdm=True, **trl)
    steps, gen_s = [], [0.0]

    def reward(completions, **kw):  # any spread of rewards: the loss and its gradient are non-zero
        return [float(len(c) % 13) for c in completions]

    class Clock(TrainerCallback):
        def on_step_begin(self, *args_, **kw):
            sync()
            self.t, self.g = time.perf_counter(), gen_s[0]

        def on_step_end(self, *args_, **kw):
            sync()
            steps.append((time.perf_counter() - self.t, gen_s[0] - self.g))

    # the word-level tokenizer named: AutoTokenizer would build Qwen2's BPE class over it (model_type qwen2), which
    # turns every "<tN>" word into nothing
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args, processing_class=tok,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Clock()])
    # TRL 1.16's one generation call per batch: vLLM's weight sync and generate, or the HF model's generate
    fn = trainer._generate_single_turn

    def timed(*x, **kw):
        sync()
        t = time.perf_counter()
        try:
            return fn(*x, **kw)
        finally:
            sync()
            gen_s[0] += time.perf_counter() - t

    trainer._generate_single_turn = timed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed_steps = steps[1:]  # the first step compiles and warms up
    total = sum(s for s, _ in timed_steps)
    return {"backend": a.backend, "step_seconds": statistics.median(s for s, _ in timed_steps),
            "steps_timed": len(timed_steps), "generation_share": sum(g for _, g in timed_steps) / total if total else None,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "device_used_gib": (lambda f, t: (t - f) / 2**30)(*torch.cuda.mem_get_info()) if cuda else None}


def measure_bandwidth(nbytes: int = 2**31, iters: int = 20) -> float:
    """Device memory bandwidth in bytes/s: a device-to-device copy counts its bytes twice (read + write)."""
    import torch

    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=DEVICE)
    y = torch.empty_like(x)
    y.copy_(x)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        y.copy_(x)
    sync()
    bw = 2 * nbytes * iters / (time.perf_counter() - t)
    del x, y
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return bw


def generate_vllm(model_dir: Path, a: argparse.Namespace, prompts: list[list[int]]) -> tuple[int, float, int | None]:
    """avg@k with vLLM alone: (tokens generated, seconds, KV cache capacity in tokens)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: its cache size readable
    from vllm import LLM, SamplingParams

    from harness.config.backend import VllmEngine, engine_args

    engine = VllmEngine(gpu_memory_utilization=a.eval_memory, max_model_len=a.prompt_tokens + a.gen_tokens + 8)
    llm = LLM(**engine_args(str(model_dir), engine, seed=a.seed, n_gpus=1))
    batch = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(batch[:1], SamplingParams(max_tokens=16, ignore_eos=True))  # warm-up (graphs, kernels)
    params = SamplingParams(n=a.samples, temperature=0.6, top_p=0.95, max_tokens=a.gen_tokens, ignore_eos=True,
                            seed=a.seed, detokenize=False)
    t = time.perf_counter()
    out = llm.generate(batch, params)
    seconds = time.perf_counter() - t
    cache = llm.llm_engine.vllm_config.cache_config
    capacity = cache.num_gpu_blocks * cache.block_size if getattr(cache, "num_gpu_blocks", None) else None
    return sum(len(c.token_ids) for o in out for c in o.outputs), seconds, capacity


def generate_hf(model_dir: Path, a: argparse.Namespace, prompts: list[list[int]]) -> tuple[int, float, int | None]:
    """avg@k with transformers generate, ``--hf-batch`` sequences per call, every sample ``gen_tokens`` long (EOS
    suppressed until then, as vLLM's ignore_eos): (tokens generated, seconds, the tokens one call holds)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(DEVICE).eval()
    seqs = [p for p in prompts for _ in range(a.samples)]
    batch = a.hf_batch or len(seqs)
    sample = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 0,
              "pad_token_id": QWEN25_15B["eos_token_id"], "eos_token_id": QWEN25_15B["eos_token_id"]}

    def generate(rows: list[list[int]], n: int) -> int:
        ids = torch.tensor(rows, device=DEVICE)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             **sample)
        return int(out.shape[0] * (out.shape[1] - ids.shape[1]))

    torch.manual_seed(a.seed)
    with torch.no_grad():
        generate(seqs[:min(batch, 8)], 16)  # warm-up (kernels, allocator)
        sync()
        t = time.perf_counter()
        tokens = sum(generate(seqs[i:i + batch], a.gen_tokens) for i in range(0, len(seqs), batch))
        sync()
    return tokens, time.perf_counter() - t, min(batch, len(seqs)) * (a.prompt_tokens + a.gen_tokens)


def run_throughput(model_dir: Path, a: argparse.Namespace) -> dict:
    """avg@k generation of ``prompts`` x ``samples`` sequences of ``gen_tokens`` and the bandwidth estimate."""
    import torch

    bandwidth = measure_bandwidth()
    rng = random.Random(a.seed)
    prompts = [random_prompt(rng, a.prompt_tokens) for _ in range(a.prompts)]
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens, seconds, capacity = (generate_vllm if a.backend == "vllm" else generate_hf)(model_dir, a, prompts)
    est = kv_estimate(bandwidth=bandwidth, weight_bytes=parameter_count() * BYTES, n_seqs=a.prompts * a.samples,
                      capacity_tokens=capacity, prompt=a.prompt_tokens, gen=a.gen_tokens, kv=kv_bytes_per_token())
    return {"backend": a.backend, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "bandwidth_bytes_per_s": bandwidth, "kv_capacity_tokens": capacity, "estimate": est,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None}


def table(r: dict, a: argparse.Namespace) -> str:
    g, t = r["grpo"], r["throughput"]
    gen = "vLLM generate + weight sync" if a.backend == "vllm" else "HF generate"
    rows = []
    if "error" in g:
        rows.append(("GRPO steps", "failed", g["error"]))
    else:
        mode = f"vLLM colocate, {a.colocate_memory} of memory" if a.backend == "vllm" else "HF generate (use_vllm: false)"
        rows += [
            ("GRPO step time (median)", f"{g['step_seconds']:.2f} s",
             f"{a.grpo_batch} completions x {a.grpo_completion_tokens} tokens, steps 2..{a.steps}; {mode}"),
            ("  share in generation", f"{100 * g['generation_share']:.0f} %", gen),
        ]
        if g["peak_allocated_gib"] is not None:  # None: not on a GPU (tests)
            rows.append(("  peak GPU memory", f"{g['peak_allocated_gib']:.1f} GiB",
                         f"torch peak; {g['device_used_gib']:.1f} GiB used on the device"))
    if "error" in t:
        rows.append((f"avg@{a.samples} generation", "failed", t["error"]))
    else:
        est = t["estimate"]
        batch = f", {est['batch']} sequences per call" if a.backend == "hf" else ""
        rows += [
            (f"avg@{a.samples} generation ({a.prompts} x {a.samples})", f"{t['tokens_per_s']:,.0f} tok/s",
             f"{t['tokens'] / 1e6:.2f} M tokens in {t['seconds']:.1f} s, {a.gen_tokens} per sample; {gen}{batch}"),
            ("  KV-bandwidth estimate", f"{est['tokens_per_s']:,.0f} tok/s",
             f"BW {t['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, B {est['batch']}, c {est['mean_context']:.0f}, "
             f"kv {kv_bytes_per_token()} B/token"),
            ("  measured / estimate", f"{t['tokens_per_s'] / est['tokens_per_s']:.2f}", ""),
        ]
        if t.get("peak_allocated_gib") is not None:
            rows.append(("  peak GPU memory", f"{t['peak_allocated_gib']:.1f} GiB", "torch peak, generation"))
    v = r["versions"]
    head = (f"gpu_check: {r['device']}; Qwen2.5-1.5B architecture, random weights, {parameter_count():,} parameters, "
            f"bf16; backend {a.backend}; torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
            f"vllm {v['vllm']}")
    w = [max(len(x[i]) for x in rows) for i in range(3)]
    lines = [head, f"{'measure':<{w[0]}}  {'value':>{w[1]}}  note", "-" * (w[0] + w[1] + w[2] + 4)]
    return "\n".join([*lines, *(f"{m:<{w[0]}}  {v:>{w[1]}}  {n}" for m, v, n in rows)])


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    require_gpu(a.backend)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    model_dir = work / "model"
    if a.phase != "all":
        fn = run_grpo if a.phase == "grpo" else run_throughput
        (work / f"{a.phase}.json").write_text(json.dumps(fn(model_dir, a)))
        return 0
    import torch

    build_model(model_dir, a.seed)
    passthrough = [x for x in (argv if argv is not None else sys.argv[1:]) if x]
    props = torch.cuda.get_device_properties(0)
    r = {"device": f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB)", "versions": versions(),
         "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python benchmarks/gpu_check.py", *passthrough])}
    failed = False
    for phase in ("grpo", "throughput"):  # each in a fresh process: the GPU is clean for the next
        print(f"gpu_check: phase {phase} ...", flush=True)
        p = subprocess.run([sys.executable, __file__, *passthrough, "--workdir", str(work), "--phase", phase])
        if p.returncode:
            failed = True
            r[phase] = {"error": f"exit {p.returncode}; its output is above the table"}
        else:
            r[phase] = json.loads((work / f"{phase}.json").read_text())
    text = table(r, a)
    print(text)
    if a.json:
        tmp = Path(a.json).with_suffix(".tmp")
        tmp.write_text(json.dumps({**r, "args": vars(a), "table": text}, indent=1) + "\n")
        tmp.replace(a.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
