"""pass@N on the smoke held-out set for one checkpoint: wall time, and sampling throughput of three samplers.

    python benchmarks/bench_passk.py [--tier smoke-reasoning] [--n 256] [--problems 0] [--model-dir DIR]
                                     [--threads 2] [--batch-size 64] [--chunk 16] [--probe-problems 64]
                                     [--repeats 2] [--out FILE.json]

1. ``dag``: the pass@k evaluation as the DAG runs it (:func:`harness.evaluate.passk.sample_counts`: ``batch-size``
   prompts per ``generate`` call, ``chunk`` samples each, scoring included) on ``--problems`` held-out problems
   (0: the tier's ``eval.n_val``) with ``--n`` samples each: the wall time of one pass@N, and tokens/s.
2. On ``--probe-problems`` problems, interleaved ``--repeats`` times, side by side at the same batch:
   - ``hf_generate``: plain HF ``generate`` with ``num_return_sequences = chunk`` (HF copies each prompt ``chunk``
     times and pre-fills every copy);
   - ``prefix_cache``: the prompt pre-filled once per problem, its KV cache repeated ``chunk`` times
     (``DynamicCache.batch_repeat_interleave``), then sampling continues from it: the prompt's KV cache reused for
     the k samples.
   tokens/s counts completion tokens up to and including EOS (padding after it is not counted).

The checkpoint defaults to the tier's pinned base model (``results/models/<key>``; else pass ``--model-dir``).
Numbers are for this machine under its current load (the 1-min load average is recorded at the start and the end, and
the pass@N run's process CPU time beside its wall time): run it side by side, never compare across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import git_commit, machine  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]


def _job(tier: str) -> dict:
    from harness.plan import resolve_job

    return resolve_job("entropy_mechanism", tier, "grpo", 42)


def _completion_tokens(comp, eos_id: int, pad_id: int) -> int:
    n = 0
    for row in comp.tolist():
        k = 0
        for t in row:
            k += 1
            if t == eos_id:
                break
        else:
            while k and row[k - 1] == pad_id and pad_id != eos_id:
                k -= 1
        n += k
    return n


def sample(model, tok, prompts, *, chunk, temperature, max_new, batch_size, reuse_prefix: bool) -> int:
    """Completion tokens of ``chunk`` samples per prompt: HF ``generate`` with ``num_return_sequences``
    (``reuse_prefix=False``), or from each prompt's KV cache pre-filled once and repeated ``chunk`` times."""
    import torch
    from transformers import DynamicCache

    tokens = 0
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            if not reuse_prefix:
                out = model.generate(**enc, num_return_sequences=chunk, **sampling)
            else:
                cache = DynamicCache()
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                      past_key_values=cache, use_cache=True)  # the prompt but its last token, once per problem
                cache.batch_repeat_interleave(chunk)
                out = model.generate(input_ids=ids.repeat_interleave(chunk, 0),
                                     attention_mask=mask.repeat_interleave(chunk, 0), cache=cache, **sampling)
            tokens += _completion_tokens(out[:, ids.shape[1]:], tok.eos_token_id, tok.pad_token_id)
    return tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tier", default="smoke-reasoning")
    p.add_argument("--n", type=int, default=256, help="samples per problem of the pass@N run")
    p.add_argument("--problems", type=int, default=0, help="held-out problems of the pass@N run (0: eval.n_val)")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--probe-problems", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-dag", action="store_true", help="only the side-by-side sampler probe")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    import torch

    from harness.data.load import load_model_and_data
    from harness.evaluate.heldout import _smoke_task
    from harness.evaluate.passk import sample_counts
    from harness.results.store import base_model_key

    torch.set_num_threads(a.threads)
    job = _job(a.tier)
    model_dir = Path(a.model_dir) if a.model_dir else ROOT / "results" / "models" / base_model_key(job)
    if not (model_dir / "config.json").is_file():
        sys.exit(f"error: no model at {model_dir}; pass --model-dir (a pre-trained base model or a job's model/)")
    model, tok, _train, val, _reward, score = load_model_and_data(job, model_dir, ROOT / ".." / "shared" / "data")
    model.eval()
    temperature, max_new = float(job["eval"]["temperature"]), int(job["eval"]["max_new_tokens"])
    n_problems = a.problems or int(job["eval"]["n_val"])
    prompts = [r["prompt"] for r in val]
    report = {"kind": "passk_benchmark", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "git_commit": git_commit(ROOT),
              "command": shlex.join(["python", "benchmarks/bench_passk.py",
                                     *(argv if argv is not None else sys.argv[1:])]),
              "load_average_start": os.getloadavg()[0], "tier": a.tier, "model_dir": str(model_dir),
              "threads": a.threads, "batch_size": a.batch_size, "chunk": a.chunk, "temperature": temperature,
              "max_new_tokens": max_new}

    if not a.skip_dag:
        counted = [0]
        gen = model.generate

        def counting(*args, **kw):
            out = gen(*args, **kw)
            counted[0] += _completion_tokens(out[:, kw["input_ids"].shape[1]:], tok.eos_token_id, tok.pad_token_id)
            return out

        model.generate = counting
        task = _smoke_task(job)
        t0, c0 = time.perf_counter(), time.process_time()
        counts, _ = sample_counts(model, tok, prompts[:n_problems], [r["answer"] for r in val[:n_problems]],
                                  score=score, n=a.n, temperature=temperature, max_new_tokens=max_new, seed=0,
                                  batch_size=a.batch_size, chunk=a.chunk,
                                  environment=task.environment if task else None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        model.generate = gen
        solved = sum(c > 0 for c in counts) / len(counts)
        report["dag"] = {"n": a.n, "problems": n_problems, "wall_s": wall, "cpu_s": cpu, "tokens": counted[0],
                         "tokens_per_s": counted[0] / wall, f"pass@{a.n}": solved}
        print(f"pass@{a.n} on {n_problems} problems ({a.n * n_problems} samples): {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({a.threads} threads), {counted[0] / wall:,.0f} tokens/s, pass@{a.n} = {solved:.3f}", flush=True)

    probe = prompts[:a.probe_problems]
    rows = {"hf_generate": [], "prefix_cache": []}
    for r in range(a.repeats):
        order = list(rows) if r % 2 == 0 else list(rows)[::-1]
        for name in order:
            torch.manual_seed(r)
            t0 = time.perf_counter()
            tokens = sample(model, tok, probe, chunk=a.chunk, temperature=temperature, max_new=max_new,
                            batch_size=a.batch_size, reuse_prefix=name == "prefix_cache")
            rows[name].append({"s": time.perf_counter() - t0, "tokens": tokens})
    report["probe"] = {"problems": len(probe), "samples_per_problem": a.chunk, "repeats": rows}
    print(f"\nside by side: {len(probe)} problems x {a.chunk} samples, batch {a.batch_size}, {a.threads} threads")
    print(f"{'sampler':<14} {'seconds (each repeat)':<26} {'tokens/s (mean)':>16}")
    for name, rs in rows.items():
        tps = sum(x["tokens"] for x in rs) / sum(x["s"] for x in rs)
        secs = ", ".join(f"{x['s']:.2f}" for x in rs)
        print(f"{name:<14} {secs:<26} {tps:>16,.0f}")
    report["load_average_end"] = os.getloadavg()[0]
    print(f"1-min load average {report['load_average_start']:.2f} at the start, {report['load_average_end']:.2f} at the end")
    if a.out:
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
