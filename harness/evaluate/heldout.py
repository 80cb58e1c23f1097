"""Held-out evaluation: the policy on the tier's held-out prompts, during training (:class:`harness.train.callbacks.PeriodicEval`)
and for final checkpoints (``harness eval-heldout``).

Every ``every_steps`` optimizer steps the policy answers the held-out prompts greedily and by sampling at
the training temperature; we record greedy accuracy, sampled accuracy and the mean token entropy of the
sampled completions (nats/token, temperature-scaled like TRL's training entropy).
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def _greedy_batches(model, tok, prompts, answers, *, batch_size: int, max_new_tokens: int, seed: int):
    """Seeded loop over prompt batches: yields (answers, encoded prompts, generate kwargs, greedy completions). The
    caller samples inside the same forked RNG stream (seeded once; the caller's RNG is restored at the end)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            p, a = prompts[i:i + batch_size], answers[i:i + batch_size]
            enc = tok(p, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            common = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            g = model.generate(**enc, do_sample=False, **common)
            yield a, enc, common, tok.batch_decode(g[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def evaluate_policy(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    temperature: float = 1.0, max_new_tokens: int = 4, seed: int = 0,
                    batch_size: int = 512) -> dict:
    was_training = model.training
    model.eval()
    out = {"greedy_acc": 0.0, "sampled_acc": 0.0, "entropy": 0.0, "mean_length": 0.0}
    n_tok = 0
    for a, enc, common, texts in _greedy_batches(model, tok, prompts, answers, batch_size=batch_size,
                                                 max_new_tokens=max_new_tokens, seed=seed):
        out["greedy_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
        s = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                           output_logits=True, return_dict_in_generate=True, **common)
        comp = s.sequences[:, enc["input_ids"].shape[1]:]
        texts = tok.batch_decode(comp, skip_special_tokens=True)
        out["sampled_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
        logits = torch.stack(s.logits, dim=1).float() / temperature        # (B, T, V)
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)                                 # (B, T)
        # valid = generated tokens up to and including the first eos
        is_eos = comp == tok.eos_token_id
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        valid = (~after_eos) & (comp != tok.pad_token_id) | is_eos & ~after_eos
        out["entropy"] += float((ent * valid).sum())
        out["mean_length"] += float(valid.sum())
        n_tok += int(valid.sum())
    n = len(prompts)
    model.train(was_training)
    return {"greedy_acc": out["greedy_acc"] / n, "sampled_acc": out["sampled_acc"] / n,
            "entropy": out["entropy"] / max(n_tok, 1), "mean_length": out["mean_length"] / n}


# ---------------------------------------------------------------------------
# Final-checkpoint evaluation on the tier's held-out set (``harness eval-heldout``; the Snakemake ``eval_heldout``
# rule): per-problem verdicts of k samples and of the greedy answer, in the same ``eval_result`` schema and with a
# protocol hash like the lm-eval benchmarks, so that leaderboards and claims read both the same way.
# ---------------------------------------------------------------------------

DEFAULT_FINAL_K = 8


@torch.no_grad()
def heldout_samples(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    k: int, temperature: float, max_new_tokens: int, seed: int,
                    batch_size: int = 256) -> tuple[list[bool], list[list[bool]], list[list[str]]]:
    """Greedy verdict per problem, k sampled verdicts per problem, and the k sampled completions (vote keys)."""
    model.eval()
    greedy, sampled, texts_all = [], [], []
    for a, enc, common, texts in _greedy_batches(model, tok, prompts, answers, batch_size=batch_size,
                                                 max_new_tokens=max_new_tokens, seed=seed):
        greedy += [bool(score(t, ans)) for t, ans in zip(texts, a)]
        s = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                           num_return_sequences=k, **common)
        texts = tok.batch_decode(s[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, ans in enumerate(a):
            mine = [t.strip() for t in texts[j * k:(j + 1) * k]]
            sampled.append([bool(score(t, ans)) for t in mine])
            texts_all.append(mine)
    return greedy, sampled, texts_all


def evaluate_heldout(paper: str, tier: str, model_dir, *, data_dir, out, seed: int = 0, k: int | None = None,
                     source: dict | None = None, threads: int = 1, bootstrap_iters: int = 2000) -> dict:
    """Evaluate a checkpoint (trained or base) on the tier's held-out set; writes an ``eval_result`` atomically.

    Two entries: ``heldout`` (k samples per problem at the tier's evaluation temperature: avg@k, pass@1, pass@k,
    maj@k) and ``heldout_greedy`` (greedy accuracy). The protocol covers the held-out rows' digest (prompts,
    including any chat template, and answers), sampling, max tokens, k, the scorer and the seed.
    """
    from pathlib import Path

    from harness.evaluate import metrics as M
    from harness.plan import resolve_job
    from harness.results.protocol import protocol_fields, protocol_hash
    from harness.results import atomic_write_json, content_hash, provenance
    from harness.data.load import load_model_and_data

    t0 = time.time()
    torch.set_num_threads(threads)
    if source is None:  # the base model: any job of the tier gives its data, evaluation and model settings
        from harness.config import load_card

        card = load_card(paper)
        job = resolve_job(paper, tier, card["baseline"], int(card["tiers"][tier]["seeds"][0]))
    else:
        job = resolve_job(paper, tier, source["method"], int(source["seed"]))
    ev = job["eval"]
    k = int(k or ev.get("final_k", DEFAULT_FINAL_K))
    temperature, max_new = float(ev.get("temperature", 1.0)), int(ev.get("max_new_tokens", 4))
    model, tok, _train, val_rows, _reward, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    val_rows = val_rows[: ev.get("n_val")]
    prompts, answers = [r["prompt"] for r in val_rows], [r["answer"] for r in val_rows]
    greedy, sampled, texts = heldout_samples(model, tok, prompts, answers, score=score, k=k, temperature=temperature,
                                             max_new_tokens=max_new, seed=seed)
    smoke = job["model"]["kind"] == "smoke"
    if smoke:  # the trained completion must equal the answer (the training reward)
        scorer = {"name": "exact_match", "strip": True}
    else:
        from harness.verify import verifier_config

        scorer = {"name": "harness.verify", **verifier_config()}
    task = job["data"]["task"]
    base = dict(benchmark=f"{task}_heldout", data_sha256=content_hash(val_rows),
                problems={"n_problems": len(val_rows), "n_val": ev.get("n_val"),
                          "split_seed": job["data"].get("split_seed")},
                prompt_template="held-out rows as trained (chat template, if any, applied in the rows)",
                chat_template=getattr(tok, "chat_template", None), max_gen_toks=max_new, verifier=scorer,
                seeds={"eval": int(seed)}, task_version=1)
    entries, protocols = {}, {}
    for name, corr, votes, sampling, kk in (
            ("heldout", sampled, texts if smoke else None, {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}, k),
            ("heldout_greedy", [[g] for g in greedy], None, {"do_sample": False}, 1)):
        fields = protocol_fields(**{**base, "benchmark": f"{task}_{name}"}, sampling=sampling, k=kk)
        summary = M.summarize(corr, votes, greedy=name.endswith("greedy"), iters=bootstrap_iters, seed=seed)
        protocols[name] = fields
        entries[name] = {
            "task": f"{task}_{name}", "n_problems": len(corr), "k": kk, "metrics": summary["metrics"],
            "bootstrap": summary["bootstrap"], "protocol_hash": protocol_hash(fields),
            "per_problem": [{"id": i, "n_correct": int(sum(c))} for i, c in enumerate(corr)],
        }
    protocol = {"benchmarks": protocols}
    result = {
        "kind": "eval_result", "schema_version": 1, "model_dir": str(Path(model_dir)),
        "source": source or {"paper": paper, "tier": tier, "method": "base"},
        "benchmarks": entries, "protocol": protocol, "protocol_hash": protocol_hash(protocol),
        "settings": {"k": k, "temperature": temperature, "max_gen_toks": max_new, "seed": int(seed)},
        "wall_seconds": round(time.time() - t0, 2), "provenance": provenance(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out, result, hashed=True)
    return result
