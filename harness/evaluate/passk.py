"""pass@k curves of a checkpoint on a resolved job's held-out set (any task, any list of k): ``passk.json``.

For each held-out problem, ``n`` completions are sampled (batched: ``batch_size`` prompts at a time, ``chunk``
samples per prompt per ``generate`` call; one seeded torch RNG stream, so a rerun gives the same samples), with the
task's environment when it has one (the smoke calculator of ``reasoning_calc``). With ``c`` correct of ``n``, the
unbiased estimator (Chen et al. 2021) is ``pass@k = 1 - C(n-c, k) / C(n, k)`` per problem, averaged over problems,
with a percentile bootstrap CI over problems. ``n >= 2k`` is recommended (the ASPO card's pitfall); ``k <= n`` is
required.

The result is an ``eval_result`` (:mod:`harness.evaluate.record`) with one benchmark ``<task>_passk``: ``k`` = n
(samples per problem), metrics ``pass@<k>`` for every requested k, ``ks``, and per problem ``n_correct`` and
``pass`` (the per-problem estimates, in the order of ``ks``), so claim checks need no estimator of their own. When
the task's environment opens calls with a token (``open_id``), each problem also records its samples' tool use:
``tool_use`` (share of samples with a call) and ``first_call_pos`` (mean completion-token index of the first call
over the samples that call; null if none does).

With ``answers`` (``--answers``; the support analysis of the pass@k boundary papers, :mod:`harness.analyze.support`)
each problem also records what its samples commit to and how uncertain each step was:

- ``answer_counts``: ``[[key, count], ...]`` over the n samples, most frequent first (ties by key). The key is the
  maj@k vote key (:func:`harness.evaluate.tasks.common.vote_key`): every verifier-correct sample is one cluster
  ``<correct>`` (math-verify equivalence, the invisible_leash card's pitfall), a wrong one its extracted answer
  after whitespace / ``\\left`` / ``\\dfrac`` normalisation, prefixed ``=``; a sample with no extracted answer is
  the key ``null`` (one category of its own);
- ``answer_entropy``: the entropy (nats) of that empirical distribution, ``-sum_a (c_a/n) log(c_a/n)``;
- ``token_entropy``: mean entropy (nats/token) of the sampling distribution at the samples' own tokens (the model's
  next-token distribution at the evaluation temperature, as the held-out evaluation's entropy; tokens up to and
  including the first EOS; positions a task environment wrote are left out), token-weighted within the problem;
  ``n_tokens``: those tokens.

The record then also names the definitions in its protocol (``extra.answer_stats``); without ``answers`` its
benchmark entry and protocol are what they were before (same fields, same protocol hash), so pinned pass@k
evaluations stay comparable (the reproducibility check compares exactly those). Every
record carries ``train_steps`` at the top level: the checkpoint's training length (the job's ``trl.max_steps``; 0
for a base model), which the support analysis groups checkpoints by.

Command line (the DAG's rules/passk.smk)::

    python -m harness.evaluate.passk --job JOB/job.json --model-dir JOB/model --out JOB/evals/passk.json \\
        --n 32 --ks 1,2,4,8,16 [--seed 0] [--answers] [--source method=grpo,seed=42,tier=...,job_key=...]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from harness.results.estimators import check_ks, pass_at_k, pass_at_k_enumerated  # noqa: F401 (this module's API)

DEFAULT_N = 32
DEFAULT_KS = (1, 2, 4, 8, 16)
#: the definitions behind the ``answers`` fields (in the protocol of a record that has them)
ANSWER_STATS = {"answer_key": "harness.evaluate.tasks.common.vote_key (verifier-correct: one cluster)",
                "no_answer": "one category", "answer_entropy": "nats, empirical distribution over the n samples",
                "token_entropy": "nats/token at the evaluation temperature, own tokens up to the first EOS, "
                                 "token-weighted per problem"}


def passk_file(n: int) -> str:
    """The file name of a checkpoint's pass@k evaluation with ``n`` samples per problem: ``passk.json`` for the
    default n (the name every earlier evaluation has), ``passk-n<n>.json`` otherwise, so evaluations of one
    checkpoint at two sample counts live side by side (rules/passk.smk)."""
    return "passk.json" if int(n) == DEFAULT_N else f"passk-n{int(n)}.json"


def answer_entropy(counts: Sequence[int]) -> float:
    """Entropy (nats) of the empirical distribution with these category counts (0 for one category)."""
    total = sum(counts)
    if total <= 0:
        raise ValueError("answer entropy: no samples")
    return float(-sum((c / total) * math.log(c / total) for c in counts if c > 0)) + 0.0


# ------------------------------------------------------------------------------------------- estimator ------
def curve(counts: Sequence[int], n: int, ks: Sequence[int], *, iters: int = 2000, seed: int = 0,
          alpha: float = 0.05) -> tuple[np.ndarray, dict]:
    """Per-problem estimates (P, len(ks)) and ``{"pass@k": {value, ci, ci_level, ci_method}}`` (bootstrap over
    problems: the same resampled problem sets for every k)."""
    ks = check_ks(ks, n)
    per = np.array([[pass_at_k(n, c, k) for k in ks] for c in counts], float)
    if per.size == 0:
        raise ValueError("pass@k: no problems")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per.shape[0], size=(int(iters), per.shape[0]))
    draws = per[idx].mean(axis=1)  # (iters, len(ks))
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    metrics = {f"pass@{k}": {"value": float(per[:, j].mean()), "ci": [float(lo[j]), float(hi[j])],
                             "ci_level": 1 - alpha, "ci_method": "bootstrap over problems"}
               for j, k in enumerate(ks)}
    return per, metrics


def apply_variant(job: dict, variant: dict | None) -> dict:
    """A job with a variant applied block by block (``data``, ``pretrain``, ``model``, ``eval``, ``hparams``,
    ``trl``: keys merged, a null value removes the key; ``method`` replaced), without its content keys (the plan
    re-keys it: ``harness.plan.keyed``). E.g. the text variant of a ``reasoning_calc`` job:
    ``{data: {task: reasoning}, pretrain: {tool_rate: null}}``."""
    blocks = ("data", "pretrain", "model", "eval", "hparams", "trl")
    bad = sorted(set(variant or {}) - {*blocks, "method"})
    if bad:
        raise ValueError(f"pass@k variant: unknown block {bad[0]!r}; valid: method, {', '.join(blocks)}")
    out = {k: v for k, v in json.loads(json.dumps(job)).items() if k not in ("job_key", "config_hash")}
    for block, change in (variant or {}).items():
        if block == "method":
            out["method"] = change
            continue
        merged = dict(out.get(block) or {})
        for key, value in (change or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        out[block] = merged
    return out


# ---------------------------------------------------------------------------------------------- sampling ------
class TokenEntropy:
    """A logits processor that changes nothing and records, per generation step, the entropy of each row's
    next-token distribution at ``temperature`` (it must come first in the processor list: it then sees the model's
    logits, before a task environment forces a token). ``entropies()`` is (rows, steps)."""

    def __init__(self, temperature: float):
        self.temperature = float(temperature)
        self.steps: list = []

    def __call__(self, input_ids, scores):
        import torch

        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        self.steps.append(-(logp.exp() * logp).nan_to_num(0.0).sum(-1))
        return scores

    def entropies(self):
        import torch

        return torch.stack(self.steps, dim=1)


def own_tokens(comp, eos_id: int, pad_id: int, env=None):
    """(rows, T) bool: completion tokens up to and including the first EOS, without padding and without the
    positions a task environment wrote (the held-out evaluation's token mask, :mod:`harness.evaluate.heldout`)."""
    import torch

    is_eos = comp == eos_id
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    valid = (~after_eos) & (comp != pad_id) | is_eos & ~after_eos
    if env is not None and hasattr(env, "env_mask"):
        valid = valid & torch.tensor([env.env_mask(i, comp.size(1)) for i in range(comp.size(0))], dtype=torch.bool)
    return valid


def _answer_key(text: str, correct: bool, extract: Callable[[str], str | None]) -> str | None:
    from harness.evaluate.tasks.common import vote_key

    return vote_key(SimpleNamespace(correct=bool(correct), extracted=None if correct else extract(text)))


def sample_problems(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    n: int, temperature: float, max_new_tokens: int, seed: int, batch_size: int = 64,
                    chunk: int = 16, environment=None, extract: Callable[[str], str | None] | None = None,
                    ) -> list[dict]:
    """One dict per problem: ``n_correct`` of ``n`` samples; with a call-token environment ``tool_use`` and
    ``first_call_pos``; with ``extract`` (the task's answer extractor) ``answer_counts``, ``answer_entropy``,
    ``token_entropy`` and ``n_tokens`` (module docstring). One seeded torch RNG stream: the same samples whether or
    not the answer statistics are taken (the entropy meter draws nothing)."""
    import torch
    from transformers import LogitsProcessorList

    from harness.evaluate.heldout import _with_env

    chunk = max(1, min(int(chunk), int(n)))
    out = [{"n_correct": 0} for _ in prompts]
    open_id = None
    t0 = time.time()
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for i in range(0, len(prompts), batch_size):
            p, a = prompts[i:i + batch_size], answers[i:i + batch_size]
            enc = tok(p, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            pos: list[list[int | None]] = [[] for _ in p]
            keys: list[dict] = [{} for _ in p]
            ent = [[0.0, 0] for _ in p]
            done = 0
            while done < n:
                m = min(chunk, n - done)
                env_kw, env = _with_env(environment, tok)
                meter = TokenEntropy(temperature) if extract is not None else None
                procs = [*([meter] if meter else []), *env_kw.get("logits_processor", [])]
                gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                     num_return_sequences=m, max_new_tokens=max_new_tokens,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                     **({"logits_processor": LogitsProcessorList(procs)} if procs else {}))
                comp = gen[:, enc["input_ids"].shape[1]:]
                texts = tok.batch_decode(comp, skip_special_tokens=True)
                open_id = getattr(env, "open_id", None)
                if meter is not None and comp.size(1):
                    valid = own_tokens(comp, tok.eos_token_id, tok.pad_token_id, env)
                    h = torch.where(valid, meter.entropies()[:, : comp.size(1)], 0.0)  # not h * valid: NaN at forced
                    h_sum, n_tok = h.sum(1).tolist(), valid.sum(1).tolist()
                for j, ans in enumerate(a):
                    for r in range(j * m, (j + 1) * m):
                        ok = bool(score(texts[r].strip(), ans))
                        out[i + j]["n_correct"] += ok
                        if open_id is not None:
                            ids = comp[r].tolist()
                            pos[j].append(ids.index(open_id) if open_id in ids else None)
                        if extract is not None:
                            key = _answer_key(texts[r].strip(), ok, extract)
                            keys[j][key] = keys[j].get(key, 0) + 1
                            if comp.size(1):
                                ent[j][0] += h_sum[r]
                                ent[j][1] += int(n_tok[r])
                done += m
            # progress (stderr: the rule's log), after each batch of problems
            print(f"pass@k sampling: {i + len(p)}/{len(prompts)} problems x {n} samples, {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            for j in range(len(p)):
                rec = out[i + j]
                if open_id is not None:
                    calls = [x for x in pos[j] if x is not None]
                    rec.update(tool_use=len(calls) / n, first_call_pos=float(np.mean(calls)) if calls else None)
                if extract is not None:
                    ranked = sorted(keys[j].items(), key=lambda kv: (-kv[1], "" if kv[0] is None else kv[0]))
                    rec.update(answer_counts=[[k, c] for k, c in ranked],
                               answer_entropy=answer_entropy([c for _, c in ranked]),
                               token_entropy=ent[j][0] / ent[j][1] if ent[j][1] else None, n_tokens=ent[j][1])
    return out


def sample_counts(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool], n: int,
                  temperature: float, max_new_tokens: int, seed: int, batch_size: int = 64, chunk: int = 16,
                  environment=None) -> tuple[list[int], list[dict] | None]:
    """Correct samples of ``n`` per problem, and per-problem tool statistics (None without a call token):
    :func:`sample_problems` without the answer statistics."""
    recs = sample_problems(model, tok, prompts, answers, score=score, n=n, temperature=temperature,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, chunk=chunk,
                           environment=environment)
    tools = [{k: r[k] for k in ("tool_use", "first_call_pos")} for r in recs if "tool_use" in r]
    return [r["n_correct"] for r in recs], (tools if tools else None)


def evaluate_passk_job(job, model_dir, *, data_dir, out, n: int = DEFAULT_N, ks: Sequence[int] = DEFAULT_KS,
                       seed: int = 0, source: dict | None = None, threads: int = 1, batch_size: int = 64,
                       chunk: int = 16, bootstrap_iters: int = 2000, answers: bool = False) -> dict:
    """pass@k of a checkpoint (trained or base) on a resolved job's held-out set (``eval.n_val`` problems, the
    tier's evaluation temperature and max tokens); writes the ``eval_result`` atomically and returns it.
    ``answers``: also the per-problem answer and token statistics (module docstring)."""
    import torch

    from harness.config.tiers import EvalSpec, parse as parse_setting
    from harness.data.load import load_model_and_data
    from harness.evaluate.heldout import _base_protocol, _smoke_task, check_job
    from harness.evaluate.record import bench_entry, eval_record, write_record
    from harness.results.protocol import protocol_fields

    t0 = time.time()
    job = check_job(job)
    ks = check_ks(ks, n)
    torch.set_num_threads(int(threads))
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    temperature, max_new = float(ev.temperature), int(ev.max_new_tokens)
    model, tok, _train, val_rows, _reward, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    val_rows = val_rows[: ev.n_val]
    task = _smoke_task(job)
    extract = None
    if answers:
        from harness.verify import extract_answer

        extract = task.vote_key if task else extract_answer
    recs = sample_problems(model, tok, [r["prompt"] for r in val_rows], [r["answer"] for r in val_rows],
                           score=score, n=n, temperature=temperature, max_new_tokens=max_new, seed=seed,
                           batch_size=batch_size, chunk=chunk, environment=task.environment if task else None,
                           extract=extract)
    counts = [r["n_correct"] for r in recs]
    per, metrics = curve(counts, n, ks, iters=bootstrap_iters, seed=seed)
    name = f"{job['data']['task']}_passk"
    base = _base_protocol(job, val_rows, tok, max_new=max_new, seed=seed)
    fields = protocol_fields(**{**base, "benchmark": name}, k=n,
                             sampling={"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0},
                             extra={"ks": ks, "estimator": "unbiased 1 - C(n-c,k)/C(n,k)",
                                    "batch_size": int(batch_size), "chunk": int(chunk),
                                    **({"answer_stats": ANSWER_STATS} if answers else {})})
    per_problem = [{"id": i, **r, "pass": [float(x) for x in per[i]]} for i, r in enumerate(recs)]
    tools = [r["tool_use"] for r in recs if "tool_use" in r]
    means = {}
    if answers:
        tok_h = [r["token_entropy"] for r in recs if r["token_entropy"] is not None]
        means = {"answer_entropy": float(np.mean([r["answer_entropy"] for r in recs])),
                 "token_entropy": float(np.mean(tok_h)) if tok_h else None}
    summary = {"metrics": metrics, "bootstrap": {"iters": int(bootstrap_iters), "seed": int(seed), "alpha": 0.05}}
    entry = bench_entry(task=name, k=n, summary=summary, per_problem=per_problem, protocol=fields, ks=ks,
                        **({"tool_use": float(np.mean(tools))} if tools else {}), **means)
    if source is None:
        source = {"method": "base", **({"tier": job["tier"]} if job.get("tier") else {})}
    steps = 0 if source.get("method") == "base" else (job.get("trl") or {}).get("max_steps")
    result = eval_record(benchmarks={name: entry}, protocol={name: fields}, source=source, model_dir=model_dir, t0=t0,
                         settings={"n": int(n), "ks": ks, "temperature": temperature, "max_gen_toks": max_new,
                                   "seed": int(seed), "batch_size": int(batch_size), "chunk": int(chunk)},
                         extra={"train_steps": None if steps is None else int(steps)})
    return write_record(result, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.evaluate.passk", description=__doc__.split("\n\n")[0])
    p.add_argument("--job", required=True, help="a resolved job.json (model, data, eval)")
    p.add_argument("--model-dir", required=True, help="the checkpoint (a job's model/ or a base model)")
    p.add_argument("--out", required=True, help="the eval_result to write (JOB/evals/passk.json)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="samples per problem")
    p.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), help="comma-separated k values (each <= n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", default=None, help="method=M[,seed=S,tier=T,job_key=K,paper=P] (default: base)")
    p.add_argument("--data-dir", default="../shared/data", help="real-data root (non-smoke tiers)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generate call")
    p.add_argument("--chunk", type=int, default=16, help="samples per prompt per generate call")
    p.add_argument("--answers", action="store_true",
                   help="also record per-problem answer counts, answer-level and token-level entropy")
    a = p.parse_args(argv)
    from harness.config import ConfigError
    from harness.evaluate.record import parse_source

    try:
        ks = [int(x) for x in a.ks.split(",") if x.strip()]
        r = evaluate_passk_job(a.job, a.model_dir, data_dir=a.data_dir, out=a.out, n=a.n, ks=ks, seed=a.seed,
                               source=parse_source(a.source), threads=a.threads, batch_size=a.batch_size,
                               chunk=a.chunk, answers=a.answers)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, b in r["benchmarks"].items():
        print(name, " ".join(f"{m}={v['value']:.3f}" for m, v in b["metrics"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
