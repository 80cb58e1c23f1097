"""Train the implicit PRM of a job (arXiv 2412.01981) and evaluate it by best-of-N: one step of the DAG
(``rules/prm.smk``), before the GRPO jobs that use it as a reward (:mod:`harness.methods.implicit_prm`).

1. sample ``samples`` responses of the base model for each of ``prompts`` training prompts (the job's
   temperature and completion length) and label each with the task's verifier (1 correct, 0 not);
2. train a copy of the base model as the PRM with the CE loss on ``r_theta(y) = beta log pi_theta(y)/pi_ref(y)``,
   ``pi_ref`` = the frozen base model (PRIME-RL/ImplicitPRM ``train/tasks/run_ce.sh`` + ``CETrainer``: AdamW betas
   (0.9, 0.95), no weight decay, gradient clip 1.0, cosine schedule to 0.1 lr with 3 % warm-up);
3. best-of-N on held-out prompts: ``bon_n`` fresh base-model samples per prompt, ranked by ``r_theta``; the
   verifier's accuracy of the top one vs the mean accuracy, with a bootstrap CI over prompts.

Writes OUT (the PRM + tokenizer, ``implicit_prm.json``: settings, the reference's directory, the training record;
``bon.json``: the best-of-N evaluation). Settings: :data:`DEFAULTS`, overridden by the upstream spec (``--spec``, the
card's ``tiers.<tier>.upstream.implicit_prm.prm_dir`` block); data, sampling temperature and length from the job.
``python -m harness.train.prm --job JOB.json --model-dir BASE --out OUT [--spec SPEC.json]``.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from harness.methods import implicit_prm as M


#: PRM settings (the upstream spec's keys) -> (default, unit, source)
DEFAULTS = {
    "beta": (0.05, "1/nats", f"{M.AT_PRM} {M.CE_SCRIPT}:6 beta=0.05"),
    "prompts": (512, "prompts", "training prompts sampled for the PRM's data (smoke scale; the paper: 33k MATH "
                "instructions x 8 responses [unverified])"),
    "samples": (8, "responses/prompt", "base-model responses per prompt, labelled by the verifier"),
    "lr": (5.0e-7, "1", f"{M.AT_PRM} {M.CE_SCRIPT}:11 LR=5e-7"),
    "epochs": (1, "epochs", f"{M.AT_PRM} {M.CE_SCRIPT}:10 max_epochs=1"),
    "batch_size": (64, "responses", f"{M.AT_PRM} {M.CE_SCRIPT}:29 train_batch_size 64"),
    "bon_n": (8, "samples", "N of the held-out best-of-N (eval/bon_eval.py sample_nums 1..64)"),
    "seed": (0, "1", "sampling, shuffling and the bootstrap"),
}
#: keys the DAG adds to an upstream spec (harness.plan.upstream_plan)
_SPEC_META = {"kind", "output", "key", "path", "tier", "model", "pretrain", "data"}


def settings(job: dict, spec: dict | None = None) -> dict:
    """The PRM's settings: :data:`DEFAULTS` updated with the upstream spec (an unknown key is an error naming the
    valid ones); sampling (temperature, completion length) and the held-out size from the consumer job."""
    spec = {k: v for k, v in (spec or {}).items() if k not in _SPEC_META}
    bad = sorted(set(spec) - set(DEFAULTS))
    if bad:
        raise ValueError(f"prm spec: unknown setting {bad[0]!r}; valid: {', '.join(DEFAULTS)}")
    out = {k: spec.get(k, d[0]) for k, d in DEFAULTS.items()}
    trl = job.get("trl", {})
    out.update(temperature=float(trl.get("temperature", 1.0)),
               max_new_tokens=int(trl.get("max_completion_length", 256)),
               n_heldout=int(job.get("eval", {}).get("n_val", 256)))
    return out


@torch.no_grad()
def sample(model, tok, prompts: list[str], n: int, *, temperature: float, max_new_tokens: int, seed: int,
           batch_size: int = 64) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt ids, n completions' ids cut after the first EOS, EOS included) per prompt; seeded."""
    model.eval()
    out = []
    eos = tok.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in range(0, len(prompts), batch_size):
            chunk = prompts[s:s + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            g = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                               num_return_sequences=n, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                               eos_token_id=eos)[:, enc["input_ids"].shape[1]:].tolist()
            for j, p in enumerate(chunk):
                comps = []
                for ids in g[j * n:(j + 1) * n]:
                    ids = ids[:ids.index(eos) + 1] if eos in ids else [t for t in ids if t != tok.pad_token_id]
                    comps.append(ids or [eos])
                out.append((M.encode_prompt(tok, p), comps))
    return out


def label(tok, groups, answers, score) -> list[dict]:
    """Flat examples {prompt_ids, completion_ids, label} with the verifier's verdict on the decoded completion."""
    out = []
    for (p_ids, comps), ans in zip(groups, answers):
        for c in comps:
            out.append({"prompt_ids": p_ids, "completion_ids": c,
                        "label": float(bool(score(tok.decode(c, skip_special_tokens=True), ans)))})
    return out


def _logps_sum(model, examples, pad: int) -> torch.Tensor:
    """Sum of log pi(y_t | x, y_<t) over each completion (differentiable)."""
    rows = [e["prompt_ids"] + e["completion_ids"] for e in examples]
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    att = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    lp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    tok_lp = lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = torch.zeros_like(tok_lp)
    for i, e in enumerate(examples):
        p, c = len(e["prompt_ids"]), len(e["completion_ids"])
        m[i, p - 1:p - 1 + c] = 1.0
    return (tok_lp * m).sum(-1)


def ce_on(prm, ref_sums: torch.Tensor, examples, beta: float, pad: int, batch_size: int = 128) -> float:
    """Mean CE loss of the PRM over ``examples`` (no gradient)."""
    with torch.no_grad():
        s = torch.cat([_logps_sum(prm, examples[i:i + batch_size], pad) for i in range(0, len(examples), batch_size)])
    return float(M.ce_loss(s, ref_sums, torch.tensor([e["label"] for e in examples]), beta))


def train_prm(prm, ref, examples: list[dict], *, beta: float, lr: float, epochs: int, batch_size: int, seed: int,
              pad: int = 0, log=print) -> dict:
    """CE training of ``prm`` (in place) against the frozen ``ref``; returns the per-step losses and the CE over
    all examples before and after."""
    from transformers import get_scheduler

    ref.eval()
    with torch.no_grad():
        ref_sums = torch.cat([_logps_sum(ref, examples[i:i + 128], pad) for i in range(0, len(examples), 128)])
    for i, e in enumerate(examples):
        e["_i"] = i
    steps = max(1, math.ceil(epochs * (len(examples) // batch_size or 1)))
    opt = torch.optim.AdamW(prm.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=math.ceil(steps * 0.03),
                          num_training_steps=steps, scheduler_specific_kwargs={"min_lr": lr * 0.1})
    before = ce_on(prm, ref_sums, examples, beta, pad)
    rng = random.Random(seed)
    losses, step, t0 = [], 0, time.time()
    prm.train()
    while step < steps:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for s in range(0, max(len(order) - batch_size + 1, 1), batch_size):
            if step >= steps:
                break
            batch = [examples[i] for i in order[s:s + batch_size]]
            idx = torch.tensor([e["_i"] for e in batch])
            loss = M.ce_loss(_logps_sum(prm, batch, pad), ref_sums[idx], torch.tensor([e["label"] for e in batch]),
                             beta)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0 or step == steps:
                log(f"prm step {step}/{steps}: CE {losses[-1]:.4f} ({time.time() - t0:.0f} s)")
    prm.eval()
    for e in examples:
        e.pop("_i", None)
    return {"steps": steps, "losses": losses, "ce_before": before, "ce_after": ce_on(prm, ref_sums, examples, beta,
                                                                                      pad)}


def bon_eval(prm, ref, tok, groups, answers, score, *, beta: float, iters: int = 2000, seed: int = 0) -> dict:
    """Best-of-N on ``groups`` ((prompt ids, N completions) per prompt): per prompt the verifier's outcome of each
    sample and its r_theta; summary: top-by-PRM accuracy vs mean accuracy and their difference with a bootstrap CI
    over prompts."""
    import numpy as np

    ex = label(tok, groups, answers, score)
    n = len(groups[0][1])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    p_ids, c_ids = [e["prompt_ids"] for e in ex], [e["completion_ids"] for e in ex]
    lp, lr = M.sequence_logps(prm, p_ids, c_ids, pad), M.sequence_logps(ref, p_ids, c_ids, pad)
    scores = [beta * float((a - b).sum()) for a, b in zip(lp, lr)]
    outcomes = [e["label"] for e in ex]
    b = M.best_of_n(scores, outcomes, n)
    d = np.array(b["per_group_bon"]) - np.array(b["per_group_mean"])
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, len(d), size=(iters, len(d)))].mean(1)
    return {"n": n, "prompts": len(groups), "bon_acc": b["bon"], "mean_acc": b["mean"], "diff": float(d.mean()),
            "diff_95ci": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
            "pair_acc": M.pairwise_accuracy(torch.tensor(scores), torch.tensor(outcomes), n),
            "per_prompt": [{"scores": scores[i * n:(i + 1) * n], "correct": outcomes[i * n:(i + 1) * n]}
                           for i in range(len(groups))]}


def run(job: dict, model_dir: Path, out_dir: Path, data_dir: Path, *, spec: dict | None = None, threads: int = 1,
        log=print) -> dict:
    """The whole step: sample and label, train, best-of-N; writes the PRM to ``out_dir`` (atomically) with
    ``implicit_prm.json`` and ``bon.json``."""
    from transformers import AutoModelForCausalLM

    from harness.data.load import load_model_and_data
    from harness.results import atomic_dir

    torch.set_num_threads(threads)
    st = settings(job, spec)
    torch.manual_seed(st["seed"])
    ref, tok, train_rows, val_rows, _reward, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    prm = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = random.Random(st["seed"]).sample(train_rows, min(st["prompts"], len(train_rows)))
    t0 = time.time()
    groups = sample(ref, tok, [r["prompt"] for r in rows], st["samples"], temperature=st["temperature"],
                    max_new_tokens=st["max_new_tokens"], seed=st["seed"])
    ex = label(tok, groups, [r["answer"] for r in rows], score)
    acc = sum(e["label"] for e in ex) / len(ex)
    log(f"sampled {len(ex)} responses of {len(rows)} prompts in {time.time() - t0:.0f} s; verifier accuracy {acc:.3f}")
    rec = train_prm(prm, ref, ex, beta=st["beta"], lr=st["lr"], epochs=st["epochs"], batch_size=st["batch_size"],
                    seed=st["seed"], pad=pad, log=log)
    log(f"CE over the training responses: {rec['ce_before']:.4f} -> {rec['ce_after']:.4f}")
    held = val_rows[: st["n_heldout"]]
    hg = sample(ref, tok, [r["prompt"] for r in held], st["bon_n"], temperature=st["temperature"],
                max_new_tokens=st["max_new_tokens"], seed=st["seed"] + 1)
    bon = bon_eval(prm, ref, tok, hg, [r["answer"] for r in held], score, beta=st["beta"], seed=st["seed"])
    log(f"best-of-{bon['n']} on {bon['prompts']} held-out prompts: {bon['bon_acc']:.3f} vs mean {bon['mean_acc']:.3f} "
        f"(diff {bon['diff']:+.3f}, 95 % CI {bon['diff_95ci'][0]:+.3f} .. {bon['diff_95ci'][1]:+.3f})")
    meta = {"settings": st, "ref_model_dir": str(Path(model_dir).resolve()), "train_accuracy": acc,
            "n_examples": len(ex), **{k: v for k, v in rec.items()}, "seconds": round(time.time() - t0, 1)}
    with atomic_dir(Path(out_dir)) as tmp:
        prm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (Path(tmp) / M.META_FILE).write_text(json.dumps(meta, indent=1))
        (Path(tmp) / "bon.json").write_text(json.dumps({"kind": "implicit_prm_bon", "settings": st, **bon}))
    return {"meta": meta, "bon": bon}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.train.prm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", required=True, help="a resolved job.json of an implicit_prm job (settings, data, seed)")
    p.add_argument("--model-dir", required=True, help="the base model (the PRM's start and pi_ref)")
    p.add_argument("--out", required=True, help="the PRM's directory (rules/prm.smk: upstream/prm/<key>/model)")
    p.add_argument("--spec", default=None, help="the upstream spec.json (PRM settings); default: DEFAULTS")
    p.add_argument("--data-dir", default="../shared/data", help="real-data root (non-smoke tiers)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    from harness.config import ConfigError
    from harness.train.job import load_job

    try:
        spec = json.loads(Path(a.spec).read_text()) if a.spec else None
        r = run(load_job(a.job), Path(a.model_dir), Path(a.out), Path(a.data_dir), spec=spec, threads=a.threads,
                log=lambda m: print(m, flush=True))
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: PRM in {a.out}, best-of-N {r['bon']['bon_acc']:.3f} vs {r['bon']['mean_acc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
