r"""Reward against KL to the base model: trained checkpoints next to best-of-N and the KL-optimal policy of the base
model (Asymptotics of Language Model Alignment, arXiv 2404.01730; analysis ``reward_kl``).

Per checkpoint (``measure``; one file per checkpoint, as the DAG runs it, and one for the base model). The first
``prompts`` held-out prompts of the job's split, ``samples`` responses to each, sampled from the checkpoint at
``temperature`` with at most ``max_new_tokens`` tokens (the training rollouts' settings: the distribution GRPO's KL
penalty acts on), one seeded RNG stream. A response ends at its first EOS (included) or at the length limit. Then:

- ``reward``: the task's score of each response (correct or not), averaged per prompt, then over prompts;
- ``KL(pi || pi_base)``: per prompt the mean over the policy's own samples of the sequence log-ratio
  ``sum_t log pi(y_t | .) - log pi_base(y_t | .)`` (both at ``temperature``: TRL's training log-probs), an unbiased
  estimate of the sequence KL; then the mean over prompts. The base model's KL is 0 by definition (no second model);
- 95 % percentile bootstrap CIs over prompts (2000 resamples, seed 0); per prompt ``n_correct`` and ``kl``.

Collected per card (``collect``): the base model's per-prompt success rates ``s_i = n_correct / samples`` give, with
the binary reward, the exact best-of-N curve (plug-in ``s_i``; the unbiased ``pass@N`` of the same samples for
``N <= samples`` beside it) and the exact KL-optimal frontier (:mod:`harness.analyze.bon`), both ending at
(share of prompts with ``s_i > 0``, mean ``-log s_i``) as ``N`` or the tilt grow; ``log N - (N - 1)/N`` is recorded
as the x-axis reference (an upper bound here: correct responses tie). Each checkpoint's point gets the best-of-N and
the frontier reward at its KL (:func:`harness.analyze.bon.interp_reward`) and the gaps
``gap_bon = bon - reward``, ``above_optimum = reward - tilt``. All inputs must share one protocol hash.

Command line (the DAG's ``rules/analyze.smk``)::

    python -m harness.analyze.reward_kl --job JOB/job.json --model-dir JOB/model --ref-dir BASE \\
        --prompts 128 --samples 32 --seed 0 --temperature 1.0 --max-new-tokens 80 --source ... --out FILE
    python -m harness.analyze.reward_kl collect FILE... --settings P:T --source paper=P,tier=T --out FILE
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from harness.analyze.bon import binary_endpoint, bon_binary, bon_kl_formula, interp_reward, tilt_binary
from harness.analyze.cardargs import check_keys, checkpoint_command
from harness.analyze.record import same_protocol
from harness.results import content_hash

NAME = "reward_kl"
DEFAULTS = {"prompts": 128, "samples": 32, "seed": 0, "ns": [1, 2, 4, 8, 16, 32, 64]}
DENSE_N = np.unique(np.round(np.logspace(0, 6, 241), 6))          # best-of-N interpolation grid (real N)
LAMBDAS = np.concatenate([np.linspace(0, 2, 101), np.linspace(2.05, 30, 560)])  # tilt grid


def _ci(per_prompt: np.ndarray, iters: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    draws = per_prompt[rng.integers(0, len(per_prompt), size=(iters, len(per_prompt)))].mean(1)
    return [float(x) for x in np.quantile(draws, [0.025, 0.975])]


def _logps(model, seqs: list[list[int]], starts: list[int], temperature: float, batch: int = 512) -> np.ndarray:
    """Sum of log-probabilities (at ``temperature``) of ``seq[start:]`` given ``seq[:start]``, right-padded batches."""
    import torch

    out = []
    with torch.no_grad():
        for b in range(0, len(seqs), batch):
            ss, st = seqs[b:b + batch], starts[b:b + batch]
            n = max(map(len, ss))
            ids = torch.tensor([s + [0] * (n - len(s)) for s in ss])
            att = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in ss])
            logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float() / temperature
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).double()
            pos = torch.arange(n - 1)[None, :]
            mask = (pos >= torch.tensor(st)[:, None] - 1) & (pos < torch.tensor([len(s) for s in ss])[:, None] - 1)
            out.append((lp * mask).sum(1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def measure(job: dict, model_dir, *, ref_dir=None, prompts: int, samples: int, seed: int, temperature: float,
            max_new_tokens: int, data_dir=".", threads: int = 1, batch_prompts: int = 16) -> tuple[dict, dict]:
    """(settings, result) of one checkpoint (module docstring); ``ref_dir`` None: the checkpoint is the base."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.config.tiers import DataSpec, parse as parse_setting
    from harness.data.load import load_model_and_data
    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.heldout import check_job

    job = check_job(job)
    if job["model"]["kind"] == "smoke":
        task = parse_setting(DataSpec, job["data"], "job data").task
        if smoke_task(task).environment is not None:
            raise ValueError(f"reward_kl: smoke task {task!r} runs a tool inside generation (its tokens are not the "
                             "policy's); supported: tasks without a tool")
    if prompts < 1 or samples < 2 or temperature <= 0 or max_new_tokens < 1:
        raise ValueError("reward_kl: prompts >= 1, samples >= 2, temperature > 0 and max_new_tokens >= 1 are needed")
    torch.set_num_threads(threads)
    model, tok, _, val_rows, _, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    if len(val_rows) < prompts:
        raise ValueError(f"reward_kl: {prompts} prompts asked, the held-out split has {len(val_rows)}")
    rows = val_rows[:prompts]
    ref = AutoModelForCausalLM.from_pretrained(ref_dir).eval() if ref_dir is not None else None
    model.eval()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    n_correct, kl, lengths, cut = [], [], [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in range(0, len(rows), batch_prompts):
            part = rows[b:b + batch_prompts]
            enc = tok([r["prompt"] for r in part], return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False)
            with torch.no_grad():
                g = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                   num_return_sequences=samples, max_new_tokens=max_new_tokens, pad_token_id=pad,
                                   eos_token_id=eos)
            comp = g[:, enc["input_ids"].shape[1]:].tolist()
            seqs, starts, ok = [], [], []
            for j, c in enumerate(comp):
                c = c[:c.index(eos) + 1] if eos in c else c
                cut += eos not in c
                r = part[j // samples]
                p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
                seqs.append(p + c)
                starts.append(len(p))
                ok.append(bool(score(tok.decode(c, skip_special_tokens=True), r["answer"])))
                lengths.append(len(c))
            ratio = (_logps(model, seqs, starts, temperature) - _logps(ref, seqs, starts, temperature)
                     if ref is not None else np.zeros(len(seqs)))
            for i in range(len(part)):
                n_correct.append(int(sum(ok[i * samples:(i + 1) * samples])))
                kl.append(float(ratio[i * samples:(i + 1) * samples].mean()))
    acc = np.asarray(n_correct, float) / samples
    kls = np.asarray(kl)
    settings = {"prompts": prompts, "samples": samples, "seed": seed, "temperature": float(temperature),
                "max_new_tokens": int(max_new_tokens), "prompts_sha256": content_hash(rows),
                "task": (job.get("data") or {}).get("task")}
    result = {"reward": float(acc.mean()), "reward_ci": _ci(acc), "kl": float(kls.mean()), "kl_ci": _ci(kls),
              "mean_length": float(np.mean(lengths)), "truncated_frac": cut / len(lengths),
              "beta": (job.get("trl") or {}).get("beta"), "per_prompt": {"n_correct": n_correct, "kl": kl}}
    return settings, result


def collect(records: list[dict], settings: dict) -> dict:
    """The card's curve file's ``result`` from per-checkpoint records (module docstring)."""
    same_protocol(records, NAME, "prompts, samples, sampling and prompt digest")
    base = [r for r in records if (r.get("source") or {}).get("method") == "base"]
    if len(base) != 1:
        raise ValueError(f"reward_kl collect: needs exactly one record of the base model, got {len(base)}")
    n = int(records[0]["settings"]["samples"])
    counts = np.asarray(base[0]["result"]["per_prompt"]["n_correct"])
    s = counts / n
    from harness.results.estimators import pass_at_k

    ns = sorted(set(int(x) for x in settings.get("ns") or DEFAULTS["ns"]))
    r_plug, kl_bon = bon_binary(s, ns)
    bon = {"n": ns, "reward": r_plug.tolist(), "kl": kl_bon.tolist(), "kl_formula": bon_kl_formula(ns).tolist(),
           "reward_unbiased": [float(np.mean([pass_at_k(n, c, k) for c in counts])) if k <= n else None for k in ns]}
    dense_r, dense_kl = bon_binary(s, DENSE_N)
    tilt_r, tilt_kl = tilt_binary(s, LAMBDAS)
    end = binary_endpoint(s)
    runs = {}
    for r in records:
        src = r.get("source") or {}
        if src.get("method") == "base" or src.get("method") not in settings["methods"]:
            continue
        m = r["result"]
        b = interp_reward(dense_kl, dense_r, m["kl"], end)
        t = interp_reward(tilt_kl, tilt_r, m["kl"], end)
        runs[f"{src['method']}/seed{src.get('seed')}"] = {
            "method": src["method"], "seed": src.get("seed"), "job_key": src.get("job_key"), "beta": m.get("beta"),
            "record_hash": r.get("content_hash"), "kl": m["kl"], "kl_ci": m["kl_ci"], "reward": m["reward"],
            "reward_ci": m["reward_ci"], "bon_reward_at_kl": b, "tilt_reward_at_kl": t, "gap_bon": b - m["reward"],
            "above_optimum": m["reward"] - t}
    by_method = {}
    for meth in settings["methods"]:
        mine = [v for v in runs.values() if v["method"] == meth]
        if mine:
            by_method[meth] = {"beta": mine[0]["beta"], "seeds": sorted(v["seed"] for v in mine),
                               **{k: float(np.mean([v[k] for v in mine])) for k in ("kl", "reward", "gap_bon",
                                                                                    "above_optimum")}}
    return {"base": {"reward": float(s.mean()), "n_prompts": len(s), "samples": n, "n_correct": counts.tolist(),
                     "share_unsolved": float(np.mean(counts == 0)), "record_hash": base[0].get("content_hash")},
            "bon": bon, "bon_dense": {"n": DENSE_N.tolist(), "reward": dense_r.tolist(), "kl": dense_kl.tolist()},
            "tilt": {"lam": LAMBDAS.tolist(), "reward": tilt_r.tolist(), "kl": tilt_kl.tolist()},
            "endpoint": {"reward": end[0], "kl": end[1]}, "runs": dict(sorted(runs.items())), "by_method": by_method,
            "methods_without_runs": [m for m in settings["methods"] if m not in by_method]}


def parse_settings(raw: dict | None) -> dict:
    out = {**DEFAULTS, **check_keys(raw, ("prompts", "samples", "seed", "ns", "methods"), NAME)}
    if not isinstance(out.get("methods"), list) or not out["methods"]:
        raise ValueError("reward_kl settings: methods must be a non-empty list of the card's methods")
    for k in ("prompts", "samples", "seed"):
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < (2 if k == "samples" else
                                                                                 0 if k == "seed" else 1):
            raise ValueError(f"reward_kl settings: {k} must be an integer (samples >= 2, prompts >= 1, seed >= 0), "
                             f"got {out[k]!r}")
    if not all(isinstance(x, int) and x >= 1 for x in out["ns"]):
        raise ValueError(f"reward_kl settings: ns must be integers >= 1, got {out['ns']!r}")
    return out


def _report(r: dict, src: dict) -> str:
    m = r["result"]
    return f"{src.get('method')}: reward {m['reward']:.3f} {m['reward_ci']}, KL {m['kl']:.3f} nats {m['kl_ci']}"


def _report_collected(r: dict) -> list[str]:
    return [f"{k} (beta {v['beta']}): KL {v['kl']:.3f} nats, reward {v['reward']:.3f}, best-of-N gap "
            f"{v['gap_bon']:+.3f}, above the optimum {v['above_optimum']:+.3f}" for k, v in r["result"]["by_method"].items()]


def _options(p) -> None:
    p.add_argument("--ref-dir", default=None, help="the base model (omit for the base model itself: KL 0)")
    for k, d in (("prompts", 128), ("samples", 32), ("seed", 0), ("max-new-tokens", None)):
        p.add_argument(f"--{k}", type=int, default=d, required=d is None)
    p.add_argument("--temperature", type=float, required=True)


def main(argv=None) -> int:
    return checkpoint_command(
        NAME, __doc__, argv, options=_options, report=_report, parse=parse_settings, collect=collect,
        report_collected=_report_collected, collect_help="per-checkpoint reward_kl records (one of the base model)",
        measure=lambda a: measure(a.job, a.model_dir, ref_dir=a.ref_dir, prompts=a.prompts, samples=a.samples,
                                  seed=a.seed, temperature=a.temperature, max_new_tokens=a.max_new_tokens,
                                  data_dir=a.data_dir, threads=a.threads))


if __name__ == "__main__":
    sys.exit(main())
