"""One DPO stage on pairs from a method's pair rule (the DPO-trained methods other than Tool-Light; diff_info,
arXiv 2505.23761: :mod:`harness.methods.diff_info`), with the Differential-Information probe the paper's entropy claim
needs. Reached through :func:`harness.train.dpo.run_dpo_job` (the DAG's ordinary ``train`` rule; the same outputs as
every job: ``JOB/model``, ``result.json``, ``metrics.jsonl``, the MLflow run); the trainer is
:mod:`harness.train.dpo`'s TRL ``DPOTrainer`` subclass (sigmoid loss, the metrics contract every step) with its
``DPOConfig`` and its sampler, which that module hands over as :class:`DPOParts` (so this module does not import it
back: no import cycle).

1. Sampling: ``samples_per_question`` responses of the base model per training question (the method's rollout hook
   through ``harness.train.dpo_sampler.Sampler``: plain sampling at the run's temperature, up to
   ``max_completion_length`` tokens), each scored by the task.
2. Pairs: the method's rule (:func:`harness.methods.diff_info.pick_pair`); the prompt is the question, chosen and
   rejected are whole responses (EOS included), so TRL's ``logps/chosen`` is the response's log-likelihood.
3. Probe, before training, every ``probe_every`` steps and at the end (no gradients, its own RNG stream, so it changes
   nothing in training): the DID entropy over fixed candidate sets (the distinct responses among ``probe_samples``
   base-model samples of each of the first ``probe_prompts`` held-out prompts, drawn once) and the drift
   ``log pi(y|x) - log pi_base(y|x)`` of the chosen and rejected responses of the first ``probe_pairs`` pairs (nats
   per response, and per token). The values join that step's metrics row (``diff_info/*``, logged to MLflow) and
   ``result["diff_info"]["probe"]``, which the card's analysis and claims read.
4. DPO for the job's ``max_steps`` (TRL setting) with the reference = a frozen copy of the base model.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from harness.config import ConfigError
from harness.config.tiers import DataSpec, EvalSpec, parse as parse_setting
from harness.results import content_hash
from harness.train.outputs import finish_policy, train_result, write_result


@dataclass(frozen=True)
class DPOParts:
    """What :mod:`harness.train.dpo` shares with this path: its sampler class (``Sampler``), the function returning its
    ``(DPOTrainer subclass, collator)`` (``_dpo_classes``) and its ``DPOConfig`` builder (``dpo_args``)."""
    sampler: type
    trainer_classes: Callable
    args: Callable


@torch.no_grad()
def seq_logps(model, prompts: list[list[int]], completions: list[list[int]], *, batch_size: int = 256):
    """``(log p(completion | prompt), completion length)`` per pair under ``model`` (float64 sums of the completion
    tokens' log-probabilities at temperature 1, as DPO scores them); right-padded batches, the same numbers as one
    sequence at a time."""
    out, lens = [], []
    pad = 0
    was = model.training
    model.eval()
    for s in range(0, len(prompts), batch_size):
        ps, cs = prompts[s:s + batch_size], completions[s:s + batch_size]
        seqs = [list(p) + list(c) for p, c in zip(ps, cs)]
        n = max(map(len, seqs))
        ids = torch.tensor([q + [pad] * (n - len(q)) for q in seqs])
        att = torch.tensor([[1] * len(q) + [0] * (n - len(q)) for q in seqs])
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).double()
        pos = torch.arange(n - 1)[None, :]
        start = torch.tensor([len(p) - 1 for p in ps])[:, None]
        end = torch.tensor([len(q) - 1 for q in seqs])[:, None]
        mask = (pos >= start) & (pos < end)
        out.append((lp * mask).sum(1))
        lens += [len(c) for c in cs]
    model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)), lens


class DIDProbe:
    """The DID entropy over fixed candidate sets and the chosen/rejected drift of fixed pairs (module docstring, 3),
    against the reference model's log-probabilities computed once."""

    def __init__(self, ref, *, cand_prompts: list[list[int]], cand_sets: list[list[list[int]]],
                 pair_prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]]):
        from harness.methods.diff_info import did_entropy

        self._entropy = did_entropy
        keep = [i for i, c in enumerate(cand_sets) if len(c) >= 2]  # one distinct candidate: no entropy to take
        self.sets = [(cand_prompts[i], cand_sets[i]) for i in keep]
        self.flat_p = [p for p, cs in self.sets for _ in cs]
        self.flat_c = [c for _, cs in self.sets for c in cs]
        self.sizes = [len(cs) for _, cs in self.sets]
        self.pair_p, self.chosen, self.rejected = pair_prompts, chosen, rejected
        self.ref_c, _ = seq_logps(ref, self.flat_p, self.flat_c)
        self.ref_ch, self.len_ch = seq_logps(ref, pair_prompts, chosen)
        self.ref_rj, self.len_rj = seq_logps(ref, pair_prompts, rejected)
        self.protocol = {"probe_prompts_used": len(self.sets),
                         "probe_prompts_single_candidate": len(cand_sets) - len(keep),
                         "candidates_mean": sum(self.sizes) / max(1, len(self.sizes)), "probe_pairs": len(chosen)}

    def __call__(self, model, step: int) -> dict:
        w = seq_logps(model, self.flat_p, self.flat_c)[0] - self.ref_c
        hs, hn, k = [], [], 0
        for n in self.sizes:
            h, h_norm = self._entropy(w[k:k + n])
            hs.append(h)
            hn.append(h_norm)
            k += n
        ch = seq_logps(model, self.pair_p, self.chosen)[0] - self.ref_ch
        rj = seq_logps(model, self.pair_p, self.rejected)[0] - self.ref_rj
        mean = lambda xs: float(sum(xs) / len(xs)) if len(xs) else None  # noqa: E731
        per_tok = lambda d, ls: mean([float(x) / n for x, n in zip(d, ls)])  # noqa: E731
        return {"step": int(step), "did_entropy": mean(hs), "did_entropy_norm": mean(hn),
                "chosen_drift": mean(ch.tolist()), "rejected_drift": mean(rj.tolist()),
                "chosen_drift_per_token": per_tok(ch, self.len_ch),
                "rejected_drift_per_token": per_tok(rj, self.len_rj),
                "margin_drift": mean((ch - rj).tolist())}


def _sample(model, tok, rows, hp, *, method, temperature, max_len, score, sampler: type) -> list[list]:
    """``samples_per_question`` scored samples per row, through the method's rollout hook (``sampler``: the DPO
    path's ``Sampler`` class)."""
    from harness.methods.context import RolloutContext
    from harness.methods.diff_info import Sample
    from harness.methods.registry import get_method

    k = hp["samples_per_question"]
    s = sampler(model, tok, environment=None, temperature=temperature, max_new_tokens=max_len)
    rctx = RolloutContext(generator=None, step=0, max_steps=1, group_size=k, processing_class=tok,
                          temperature=temperature, max_completion_length=max_len, eos_token_ids=(tok.eos_token_id,),
                          pad_token_id=tok.pad_token_id, generate=s.generate,
                          tokenize=lambda ps: [tok(p, add_special_tokens=False)["input_ids"] for p in ps])
    out = get_method(method).hook("rollout")([r["prompt"] for r in rows for _ in range(k)], rctx, **hp)
    comps = out["completion_ids"]
    return [[Sample(list(c), bool(score(tok.decode(c, skip_special_tokens=True), r["answer"])))
             for c in comps[q * k:(q + 1) * k]] for q, r in enumerate(rows)]


def _pairs(rows, sampled, rule, *, tok, task, max_len) -> tuple[list[dict], dict]:
    """One pair per question by ``rule`` (:func:`harness.methods.diff_info.pick_pair`), as TRL token-id rows with the
    trace statistics the metrics contract logs; and a summary."""
    import random

    from harness.methods.diff_info import pick_pair
    from harness.train.sft import gold_completion

    rng = random.Random(0)  # not drawn from at check_rate 0: the gold chain is deterministic

    def gold_of(r) -> list[int] | None:
        if rule != "gold":
            return None
        return tok(gold_completion(task, r, rng), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    out, same = [], 0
    for r, samples in zip(rows, sampled):
        pair = pick_pair(samples, rule, gold_of(r) if any(s.correct for s in samples) else None)
        if pair is None:
            continue
        c, j = pair
        same += c == next(s.ids for s in samples if s.correct)
        prompt = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        row = {"prompt_ids": prompt, "chosen_ids": c, "rejected_ids": j}
        for side, ids, ok in (("chosen", c, 1.0), ("rejected", j, 0.0)):
            row.update({f"{side}_reward": ok, f"{side}_length": float(len(ids)),
                        f"{side}_clipped": float(ids[-1] != tok.eos_token_id and len(ids) >= max_len)})
        out.append(row)
    n = len(out)
    mean = lambda k: sum(r[k] for r in out) / n if n else None  # noqa: E731
    return out, {"questions": len(rows), "pairs": n, "chosen_length": mean("chosen_length"),
                 "rejected_length": mean("rejected_length"),
                 "chosen_is_first_correct_sample": same / n if n else None,
                 "sample_correct_frac": sum(s.correct for ss in sampled for s in ss) / max(1, sum(map(len, sampled)))}


def run_pair_job(job: dict, *, model_dir: Path, out_dir: Path, data_dir: Path, mlflow_uri: str | None,
                 parts: DPOParts, threads: int = 1, save_model: bool = True) -> dict:
    """Train one resolved pair-rule DPO job (module docstring); the outputs of :func:`harness.train.job.run_job`.
    ``parts``: the DPO path's sampler, trainer and config (:class:`DPOParts`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import set_seed

    from harness.data.load import load_model_and_data
    from harness.evaluate.heldout import evaluate_policy
    from harness.methods import diff_info as DI
    from harness.methods.registry import get_method
    from harness.train.callbacks import MetricsRecorder

    method, seed = job["method"], int(job["seed"])
    try:
        rule = DI.rule_of(method)
        hp = get_method(method).hook_hparams(job["hparams"])
        DI.check(hp)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    trl = dict(job["trl"])
    n_steps = int(trl.get("max_steps", 0))
    if n_steps < 1:
        raise ConfigError(f"{method}: the job's TRL max_steps must be >= 1, got {n_steps}")
    task = None
    if job["model"]["kind"] == "smoke":
        from harness.data.smoke_tasks import smoke_task

        task = parse_setting(DataSpec, job["data"], "job data").task
        if smoke_task(task).environment is not None:
            raise ConfigError(f"{method}: smoke task {task!r} runs a tool inside generation; the DID probe scores "
                              "whole responses of the policy, so only tasks without a tool are supported: addition, "
                              "reasoning")
    if rule == "gold":
        from harness.train.sft import GOLD_TASKS

        if task not in GOLD_TASKS:
            raise ConfigError(f"{method}: the gold rule needs the task's gold chains; tasks that have them: "
                              f"{', '.join(GOLD_TASKS)} (this job: {task or job['data'].get('task')!r})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    from harness.train.resumable import Contents
    from harness.train.resume import Checkpointer

    ckpt = Checkpointer(out_dir, job)  # <out_dir>/checkpoints; another job's checkpoint fails here
    set_seed(seed)
    model, tok, train_rows, val_rows, _, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    held = val_rows[: ev.n_val]
    temperature, max_len = float(trl.get("temperature", 1.0)), int(trl.get("max_completion_length", 256))
    digests = {"train": content_hash(train_rows), "heldout": content_hash(val_rows)}
    metrics: list[dict] = []
    evals: list[dict] = []

    def heldout(step: int):
        if not evals or evals[-1]["step"] != step:
            t0 = time.time()
            r = evaluate_policy(model, tok, [x["prompt"] for x in held], [x["answer"] for x in held], score=score,
                                temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                                seed=seed * 100003 + step)
            evals.append({"step": step, **r, "seconds": round(time.time() - t0, 3)})

    heldout(0)
    questions = train_rows[: hp["questions"]]
    t0 = time.time()
    sampled = _sample(model, tok, questions, hp, method=method, temperature=temperature, max_len=max_len, score=score,
                      sampler=parts.sampler)
    pairs, psum = _pairs(questions, sampled, rule, tok=tok, task=task, max_len=max_len)
    psum["sampling_seconds"] = round(time.time() - t0, 1)
    if not pairs:
        raise RuntimeError(f"{method}: no preference pair (none of {len(questions)} questions had a correct and a "
                           "wrong sample of the base model); more questions or samples_per_question needed")
    probe_rows = val_rows[: hp["probe_prompts"]]
    cand_prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in probe_rows]
    with torch.random.fork_rng(devices=[]):  # the probe's candidates: their own stream, training unchanged
        torch.manual_seed(seed * 7919 + 17)
        s = parts.sampler(model, tok, environment=None, temperature=temperature, max_new_tokens=max_len)
        flat = s.generate([p for p in cand_prompts for _ in range(hp["probe_samples"])])
    m = hp["probe_samples"]
    cand_sets = [DI.distinct(flat[i * m:(i + 1) * m]) for i in range(len(cand_prompts))]
    ref = copy.deepcopy(model).eval()
    pp = pairs[: hp["probe_pairs"]]
    probe = DIDProbe(ref, cand_prompts=cand_prompts, cand_sets=cand_sets, pair_prompts=[r["prompt_ids"] for r in pp],
                     chosen=[r["chosen_ids"] for r in pp], rejected=[r["rejected_ids"] for r in pp])
    probes = [probe(model, 0)]
    pending: dict = {}
    Trainer, Collator = parts.trainer_classes()

    class Rec(MetricsRecorder):
        def on_step_end(self, args, state, control, model=None, **kw):
            step = state.global_step
            if step % hp["probe_every"] == 0 or step == n_steps:
                probes.append(probe(model, step))
                pending.clear()
                pending.update({f"{DI.PREFIX}/{k}": v for k, v in probes[-1].items() if k != "step"}, step=step)
            if step % ev.every_steps == 0:
                heldout(step)

        def on_log(self, args, state, control, logs=None, **kw):
            n = len(self.rows)
            super().on_log(args, state, control, logs=logs, **kw)
            if len(self.rows) > n and pending.get("step") == self.rows[-1]["step"]:
                self.rows[-1].update({k: v for k, v in pending.items() if k != "step"})

    args = parts.args(out_dir, seed=seed, trl=trl, hp=hp, n_steps=n_steps)
    trainer = Trainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(pairs),
                      processing_class=tok, data_collator=Collator(pad_token_id=tok.pad_token_id),
                      callbacks=[Rec(metrics)])
    # restored from the last checkpoint, if any (the pairs, the probe's candidates and the reference model are
    # recomputed above from the seed, as in the interrupted run)
    parts = {"metrics": Contents(metrics), "heldout": Contents(evals), "probes": Contents(probes),
             "pending": Contents(pending)}
    trainer.train(resume_from_checkpoint=ckpt.attach(trainer, **parts))
    model = trainer.model
    heldout(n_steps)
    late = metrics[len(metrics) // 2:]
    avg = lambda k: float(sum(r[k] for r in late if k in r) / max(1, sum(k in r for r in late)))  # noqa: E731
    record = {"rule": rule, "pairs": psum,
              "dpo": {"loss_last_half": avg("loss"), "reward_accuracy_last_half": avg("rewards/accuracies"),
                      "margin_last_half": avg("rewards/margins")},
              "probe": {"settings": {k: hp[k] for k in ("probe_prompts", "probe_samples", "probe_pairs",
                                                        "probe_every")},
                        **probe.protocol, "steps": probes}}
    finish_policy(out_dir, model, tok, save_model=save_model)
    result = train_result(job, trainer="dpo", trl_args=args.to_dict(), dataset_digests=digests, t_start=t_start,
                          metrics=metrics, heldout=evals, **{DI.PREFIX: record})
    result = write_result(out_dir, result, trl_args=args.to_dict(), mlflow_uri=mlflow_uri)
    ckpt.clear()  # the results are written: the checkpoints are no longer needed
    return result
