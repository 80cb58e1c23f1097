"""Evaluate a checkpoint on the maths benchmarks through lm-eval, with our verifier, metrics, CIs and protocol.

``evaluate_checkpoint`` derives one lm-eval task per benchmark from the YAMLs in ``harness/evaluate/tasks`` (a generated
YAML that ``include``s the benchmark's greedy or sampled variant and sets k, temperature, top_p and max tokens),
runs ``lm_eval.simple_evaluate`` with ``TaskManager(include_path=..., include_defaults=False)`` and
``log_samples=True``, then recomputes every metric from the per-sample verdicts (avg@k, pass@1, pass@k, maj@k or
greedy accuracy, with seeded 95 % bootstrap CIs) and writes an atomic ``eval_result`` JSON carrying the protocol
and its hash. ``compare`` refuses results evaluated under different protocols, naming the differing fields.

The steps live in :mod:`harness.evaluate.lmeval_tasks` (task YAMLs, settings checks),
:mod:`harness.evaluate.lmeval_run` (:func:`evaluate_checkpoint`), :mod:`harness.evaluate.record` (the result) and
:mod:`harness.evaluate.compare` (:func:`compare`, :func:`leaderboard`); this module re-exports them and holds the CLI.

CLI: ``harness eval --model-dir D --benchmarks math500 [aime24 ...] --limit 50 --k 4 --temperature 0.6
--top-p 0.95 --max-gen-toks 1024 --seed 0 --out result.json`` (see :func:`cli_main`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from harness.config import ConfigError
from harness.config.backend import BACKENDS, VLLM_REQUIREMENT, VllmEngine
from harness.config.tiers import BenchmarkSpec
from harness.evaluate.compare import compare, leaderboard
from harness.evaluate.lmeval_run import evaluate_checkpoint
from harness.evaluate.lmeval_tasks import task_yaml
from harness.evaluate.record import RESULT_KIND, SCHEMA_VERSION, format_benchmarks, parse_source as _source

__all__ = ["RESULT_KIND", "SCHEMA_VERSION", "build_parser", "cli_main", "compare", "evaluate_checkpoint",
           "format_result", "leaderboard", "task_yaml"]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from harness.evaluate.tasks.common import BENCHMARKS

    p = argparse.ArgumentParser(prog="harness eval", description="Evaluate a checkpoint on maths benchmarks "
                                "(lm-eval + harness verifier), writing a result JSON with protocol hash and CIs.")
    p.add_argument("--model-dir", required=True, help="local Hugging Face model directory")
    p.add_argument("--benchmarks", required=True, nargs="+",
                   help=f"benchmarks (space or comma separated): {', '.join(BENCHMARKS)}")
    p.add_argument("--data-dir", default=None, help="benchmark data directory (default $RLVR_DATA_DIR or "
                   "../shared/data)")
    spec = BenchmarkSpec()  # a card's benchmark settings: one home for the defaults
    p.add_argument("--k", type=int, default=spec.k, help=f"samples per problem (default {spec.k})")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; 0 = greedy (default: 0 if k == 1, else 0.6)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default 0.95 when sampling)")
    p.add_argument("--max-gen-toks", type=int, default=spec.max_gen_toks,
                   help=f"max new tokens per response (default {spec.max_gen_toks})")
    p.add_argument("--max-length", type=int, default=None, help="model context length for lm-eval (default: "
                   "from the model config)")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat-template", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--system-instruction", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="HFLM device (backend hf)")
    p.add_argument("--dtype", default="float32", help="HFLM dtype (backend hf)")
    p.add_argument("--backend", choices=BACKENDS, default=spec.backend,
                   help=f"lm-eval model: hf (HFLM) or vllm (GPU; pip install {VLLM_REQUIREMENT}) (default {spec.backend})")
    engine = VllmEngine()
    p.add_argument("--tensor-parallel-size", type=int, default=engine.tensor_parallel_size,
                   help=f"vllm: GPUs per engine (default {engine.tensor_parallel_size})")
    p.add_argument("--data-parallel-size", type=int, default=engine.data_parallel_size,
                   help="vllm: engines (default: every visible GPU / tensor parallel size; more than one needs ray)")
    p.add_argument("--gpu-memory-utilization", type=float, default=engine.gpu_memory_utilization,
                   help=f"vllm: share of each GPU's memory for weights and KV cache (default "
                        f"{engine.gpu_memory_utilization})")
    p.add_argument("--bootstrap-iters", type=int, default=2000)
    p.add_argument("--verifier-timeout", type=float, default=5.0)
    p.add_argument("--verifier-workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared CPU more threads "
                   "oversubscribe and run several times slower)")
    p.add_argument("--samples-out", default=None, help="also write per-sample responses and verdicts (JSONL)")
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--source", default=None, help="what the checkpoint is, recorded in the result for leaderboards "
                   "and claims: method=M[,seed=S,tier=T,job_key=K,paper=P] (method 'base': the untrained model)")
    return p


def vllm_engine(a: argparse.Namespace) -> VllmEngine:
    """The vLLM engine settings of ``harness eval``'s arguments (used with ``--backend vllm`` only)."""
    return VllmEngine(tensor_parallel_size=a.tensor_parallel_size, data_parallel_size=a.data_parallel_size,
                      gpu_memory_utilization=a.gpu_memory_utilization)


def format_result(result: dict) -> str:
    return "\n".join([f"protocol {result['protocol_hash'][:16]}  wall {result['wall_seconds']:.1f}s  "
                      f"tokens/s {result['tokens_per_second'] or float('nan'):.1f}", *format_benchmarks(result)])


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``harness eval ...``; returns the exit status (2 on a configuration error)."""
    a = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    benches = [x for item in a.benchmarks for x in item.split(",") if x]
    temperature = a.temperature if a.temperature is not None else (0.0 if a.k == 1 else 0.6)
    top_p = a.top_p if a.top_p is not None else (1.0 if temperature == 0 else 0.95)
    try:
        result = evaluate_checkpoint(
            a.model_dir, benches, data_dir=a.data_dir, k=a.k, temperature=temperature, top_p=top_p,
            max_gen_toks=a.max_gen_toks, limit=a.limit, seed=a.seed, out=a.out,
            apply_chat_template=a.chat_template, system_instruction=a.system_instruction, max_length=a.max_length,
            batch_size=a.batch_size, device=a.device, dtype=a.dtype, bootstrap_iters=a.bootstrap_iters,
            verifier_timeout=a.verifier_timeout, verifier_workers=a.verifier_workers, samples_out=a.samples_out,
            threads=a.threads, source=_source(a.source), backend=a.backend, vllm=vllm_engine(a))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(result))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
