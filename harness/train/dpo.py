"""The DPO path of Tool-Light (arXiv 2509.23285; method and sampler: :mod:`harness.methods.tool_light`), and the
entry of every DPO-trained method: the others train one stage on pairs from their pair rule
(:mod:`harness.train.dpo_pairs`, with this module's TRL ``DPOTrainer`` subclass and ``DPOConfig``).

A job whose method is registered with ``trainer="dpo"`` (e.g. ``tool_light``) is trained here instead of by the GRPO
trainer (``harness.train.job.run_job`` dispatches; the DAG's ``train`` rule is unchanged, so the DPO stage is a rule
like any other and writes the same ``JOB/model``, ``result.json`` and ``metrics.jsonl``). Two stages, each:

1. sample the same ``questions_per_stage`` training questions with the stage's starting policy (stage 1: the base
   model, "pre-aligned"; stage 2: the stage-1 policy, "self-evolved on-policy"): an entropy-guided tree per
   question (main chain + branches) and ``vanilla_rollouts`` independent rollouts, the task's tool running inside
   generation (HF ``generate`` re-encodes each branch prefix: no KV-cache reuse; vLLM's prefix caching would);
2. one (chosen, rejected) pair per question (:func:`harness.methods.tool_light.build_pair`, the stage's rule); the
   pair's shared token prefix joins the prompt (TRL's completion mask is 0 there: no loss; DPO's sigmoid loss is the
   same either way, since a shared prefix cancels in the log-ratio difference);
3. TRL's ``DPOTrainer`` (sigmoid loss, reference = a frozen copy of the stage's starting policy) for the stage's share
   of ``max_steps``.

Every DPO step logs the metrics contract (reward/length of the batch's traces, TRL's entropy of the trained tokens,
cov(logp, A) with A = the DPO gradient weight of each sequence, +-beta sigmoid(-beta delta)), tagged with
``tool_light/stage``; ``result["stages"]`` keeps per-stage sampling, pair and DPO summaries and a held-out probe
(sampled accuracy, tool calls per response) of the base, stage-1 and stage-2 policies, which the card's claims read.

A killed job resumes: each stage's trainer checkpoints like any job's, and the end of stage 1 is recorded (policy,
records, RNG states) so that a restart goes on with stage 2 (:mod:`harness.train.stages`).
"""
from __future__ import annotations

import copy
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

from harness.config import ConfigError
from harness.config.tiers import EvalSpec, parse as parse_setting
from harness.results import content_hash
from harness.train.dpo_sampler import Sampler
from harness.train.outputs import finish_policy, train_result, write_result

STATS = ("reward", "length", "clipped")


def _dpo_classes():
    """TRL's DPOTrainer with the harness's data plumbing: pre-tokenized pairs pass through untouched, and the batch's
    trace statistics ride along (popped before TRL's loss) to log the metrics contract. The loss is TRL's."""
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class Collator(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            out["tl_stats"] = torch.tensor([[ex[f"{side}_{k}"] for k in STATS] for side in ("chosen", "rejected")
                                            for ex in examples], dtype=torch.float32)
            return out

    from harness.train.resumable import HFCheckpointMixin

    class Trainer(HFCheckpointMixin, DPOTrainer):  # checkpoints through the job's Checkpointer, where it has one
        CHECKPOINT_ATTRS = ("_total_train_tokens",)  # TRL's running count behind the logged num_tokens

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:  # already token ids (the sampled tokens, exactly)
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def compute_ref_log_probs(self, model, inputs):
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "tl_stats"})

        def _compute_loss(self, model, inputs, return_outputs):
            stats = inputs.pop("tl_stats")
            out = super()._compute_loss(model, inputs, return_outputs)
            loss = out[0] if return_outputs else out
            mode = "train" if self.model.training else "eval"
            self._contract(model, inputs, stats, float(loss.detach()), mode)
            return out

        @torch.no_grad()
        def _contract(self, model, inputs, stats, loss, mode):
            m = self._metrics[mode]
            ids, att, cm = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]

            def token_logps(net):
                logits = net(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float()
                return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)

            mask = cm[:, 1:].float()
            lp = token_logps(model)
            seq = (lp * mask).sum(1) - (token_logps(self.ref_model) * mask).sum(1)
            c, r = seq.chunk(2)
            w = self.beta * torch.sigmoid(-self.beta * (c - r))  # d(-loss)/d logp: +w chosen, -w rejected
            adv = torch.cat([w, -w])[:, None].expand_as(lp)
            sel = mask > 0
            cov = ((lp - lp[sel].mean()) * (adv - adv[sel].mean()))[sel]
            k = max(1, int(0.02 * cov.numel()))  # as loss.COV_TOP_FRACTION
            m["cov_logp_adv/mean"].append(float(cov.mean()))
            m["cov_logp_adv/top_mean"].append(float(torch.topk(cov, k).values.mean()))
            m["reward"].append(float(stats[:, 0].mean()))
            m["reward_std"].append(float(stats[:, 0].std()) if len(stats) > 1 else 0.0)
            m["completions/mean_length"].append(float(stats[:, 1].mean()))
            m["completions/clipped_ratio"].append(float(stats[:, 2].mean()))
            m["clip_ratio/region_mean"].append(0.0)  # DPO has no ratio clipping
            m["method/frac_tokens_touched"].append(1.0)  # every trained token gets DPO's weight instead of GRPO's
            m["policy_loss"].append(loss)

    return Trainer, Collator


def frozen_copy(model):
    """The stage's DPO reference: a frozen deep copy of ``model`` computing with its own weights. A policy a
    trainer has prepared (stage 1's) carries an instance-level ``forward`` wrapper whose closure holds the
    original module's forward; ``copy.deepcopy`` copies the wrapper but not its closure, so the copy would compute
    with the policy's live weights (measured before this: stage 2's reference logits equalled the policy's, and the
    logged cov(logp, A) of stage 2 with them; TRL's loss, which reads its reference log-probs otherwise, was right).
    Dropping the instance attributes restores each module's class ``forward``."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        m.__dict__.pop("forward", None)
        m.__dict__.pop("_original_forward", None)
    return ref.eval()


def _sample_stage(model, tok, rows, hp, *, environment, score, temperature, max_len, rctx_log):
    """Trees + vanilla rollouts for ``rows`` with ``model``: (traces per question, summary)."""
    from harness.methods import tool_light as TL
    from harness.methods.context import RolloutContext

    s = Sampler(model, tok, environment=environment, temperature=temperature, max_new_tokens=max_len)
    ctx = RolloutContext(generator=None, step=0, max_steps=1, group_size=1, processing_class=tok,
                         temperature=temperature, max_completion_length=max_len, eos_token_ids=(tok.eos_token_id,),
                         pad_token_id=tok.pad_token_id, generate=s.generate, token_stats=s.token_stats,
                         log_metric=rctx_log)
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    trees = TL.sample_tree(prompts, ctx, hp, env_mask=s.env_mask, close_id=s.close_id)
    n_v = hp["vanilla_rollouts"]
    flat = s.generate([p for p in prompts for _ in range(n_v)], **TL._gen_kwargs(hp)) if n_v else []
    out = []
    for q, (row, tree) in enumerate(zip(rows, trees)):
        vanilla = [TL.Trace(list(c), s.env_mask(list(c)), "vanilla") for c in flat[q * n_v:(q + 1) * n_v]]
        for t in tree + vanilla:
            t.correct = bool(score(tok.decode(t.ids, skip_special_tokens=True), row["answer"]))
            t.calls = sum(1 for x in t.ids if x == s.close_id) if s.close_id is not None else 0
            t.truncated = t.ids[-1] != tok.eos_token_id and len(t.ids) >= max_len
        out.append((tree, vanilla))
    tree_new = sum(len(t.ids) - t.prefix_len for tree, _ in out for t in tree)
    van_tok = sum(len(t.ids) for _, v in out for t in v)
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else None  # noqa: E731
    summary = {
        "questions": len(rows), "tree_traces": sum(len(t) for t, _ in out), "vanilla_traces": len(flat),
        "tree_tokens_generated": tree_new, "vanilla_tokens_generated": van_tok,
        "tree_correct_frac": mean([t.correct for tree, _ in out for t in tree]),
        "vanilla_correct_frac": mean([t.correct for _, v in out for t in v]),
        "main_correct_frac": mean([tree[0].correct for tree, _ in out]),
        "tree_solved_frac": mean([any(t.correct for t in tree) for tree, _ in out]),
        "vanilla_solved_frac": mean([any(t.correct for t in v) for _, v in out]) if n_v else None,
        "calls_per_trace": mean([t.calls for tree, v in out for t in tree + v]),
    }
    for k in ("tree", "vanilla"):
        toks = summary[f"{k}_tokens_generated"]
        solved = summary[f"{k}_solved_frac"]
        summary[f"{k}_solved_per_1k_tokens"] = (solved * len(rows) * 1000 / toks) if toks and solved is not None else None
    return out, summary


def build_pairs(sampled, rule: str, prompts: list[list[int]], format_pairs: bool = False) -> tuple[list[dict], dict]:
    """One pair per question with a correct trace and a rejectable one; the shared prefix joins the prompt."""
    from harness.methods import tool_light as TL

    rows, kinds = [], defaultdict(int)
    for p, (tree, vanilla) in zip(prompts, sampled):
        pair = TL.build_pair(tree + vanilla, rule, format_pairs)
        if pair is None:
            continue
        c, r = pair
        cp = min(TL.common_prefix(c.ids, r.ids), len(c.ids) - 1, len(r.ids) - 1)
        kinds["economy" if r.correct else ("correctness" if c.correct else "format")] += 1
        row = {"prompt_ids": p + c.ids[:cp], "chosen_ids": c.ids[cp:], "rejected_ids": r.ids[cp:],
               "shared_prefix": cp, "chosen_calls": c.calls, "rejected_calls": r.calls}
        for side, t in (("chosen", c), ("rejected", r)):
            row.update({f"{side}_reward": float(t.correct), f"{side}_length": float(sum(t.env)),
                        f"{side}_clipped": float(t.truncated)})
        rows.append(row)
    n = len(rows)
    summary = {"pairs": n, "pairs_both_correct": kinds["economy"], "pairs_wrong_rejected": kinds["correctness"],
               "pairs_format": kinds["format"],
               "chosen_calls": sum(r["chosen_calls"] for r in rows) / n if n else None,
               "rejected_calls": sum(r["rejected_calls"] for r in rows) / n if n else None,
               "shared_prefix_tokens": sum(r["shared_prefix"] for r in rows) / n if n else None}
    return rows, summary


@torch.no_grad()
def probe(model, tok, prompts, answers, *, score, environment, temperature, max_new_tokens, seed) -> dict:
    """One sampled response per held-out prompt: accuracy and tool calls per response (the stage comparisons)."""
    s = Sampler(model, tok, environment=environment, temperature=temperature, max_new_tokens=max_new_tokens)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        outs = s.generate(ids)
    n = max(len(outs), 1)
    return {"sampled_acc": sum(bool(score(tok.decode(o, skip_special_tokens=True), a)) for o, a in zip(outs, answers)) / n,
            "calls_per_response": sum(sum(t == s.close_id for t in o) for o in outs) / n if s.close_id is not None else 0.0,
            "mean_length": sum(sum(s.env_mask(o)) for o in outs) / n}


def stage_steps(max_steps: int, fraction: float) -> tuple[int, int]:
    if max_steps < 2:
        raise ConfigError(f"tool_light trains two DPO stages: max_steps must be >= 2, got {max_steps}")
    s1 = min(max(1, round(max_steps * fraction)), max_steps - 1)
    return s1, max_steps - s1


def dpo_args(out_dir: Path, *, seed: int, trl: dict, hp: dict, n_steps: int):
    """TRL's ``DPOConfig`` of one DPO stage: the method's ``learning_rate``, ``pairs_per_step``, ``warmup_ratio``
    (linear warm-up, then cosine) and ``beta`` (sigmoid loss); precision, gradient accumulation and clipping from the
    job's TRL settings; CPU unless a GPU is there; no saving or reporting (the harness writes the outputs)."""
    from trl import DPOConfig

    return DPOConfig(output_dir=str(Path(out_dir) / "trainer"), seed=seed, data_seed=seed, logging_steps=1,
                     report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                     bf16=bool(trl.get("bf16", False)), gradient_checkpointing=bool(trl.get("gradient_checkpointing", False)),
                     learning_rate=hp["learning_rate"], max_steps=n_steps,
                     per_device_train_batch_size=hp["pairs_per_step"],
                     gradient_accumulation_steps=int(trl.get("gradient_accumulation_steps", 1)),
                     lr_scheduler_type="cosine", warmup_steps=int(round(hp["warmup_ratio"] * n_steps)),
                     max_grad_norm=float(trl.get("max_grad_norm", 1.0)), beta=hp["beta"], loss_type=["sigmoid"],
                     max_length=None, remove_unused_columns=False, disable_tqdm=True)


def run_dpo_job(job: dict, *, model_dir: Path, out_dir: Path, data_dir: Path, mlflow_uri: str | None,
                threads: int = 1, save_model: bool = True, upstream: dict | None = None) -> dict:
    """Train one resolved DPO job (same outputs as :func:`harness.train.job.run_job`): Tool-Light's two stages here;
    every other DPO-trained method is one stage on pairs from a pair rule
    (:func:`harness.train.dpo_pairs.run_pair_job`, e.g. diff_info's)."""
    if job["method"] != "tool_light":
        from harness.train.dpo_pairs import DPOParts, run_pair_job

        return run_pair_job(job, model_dir=model_dir, out_dir=out_dir, data_dir=data_dir, mlflow_uri=mlflow_uri,
                            parts=DPOParts(Sampler, _dpo_classes, dpo_args), threads=threads, save_model=save_model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import set_seed

    from harness.data.load import load_model_and_data
    from harness.evaluate.heldout import evaluate_policy
    from harness.methods import tool_light as TL
    from harness.methods.registry import get_method
    from harness.train.callbacks import MetricsRecorder
    from harness.train.resumable import Contents
    from harness.train.stages import StageRecords

    records = StageRecords(out_dir, job)  # <out_dir>/checkpoints: stage records and each stage's checkpoints
    done = records.latest()  # (stage, folder) of the newest record; another job's fails here, before any work
    method, seed = job["method"], int(job["seed"])
    hp = get_method(method).hook_hparams(job["hparams"])
    TL._check(hp)
    trl = dict(job["trl"])
    steps = stage_steps(int(trl.get("max_steps", 0)), hp["stage1_fraction"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    set_seed(seed)
    model, tok, train_rows, val_rows, _, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    env = None  # the task's tool (smoke tasks; as harness.train.job.task_hooks gives the GRPO trainer)
    if job["model"]["kind"] == "smoke":
        from harness.config.tiers import DataSpec
        from harness.data.smoke_tasks import smoke_task

        env = smoke_task(parse_setting(DataSpec, job["data"], "job data").task).environment
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    held = val_rows[: ev.n_val]
    h_prompts, h_answers = [r["prompt"] for r in held], [r["answer"] for r in held]
    temperature, max_len = float(trl.get("temperature", 1.0)), int(trl.get("max_completion_length", 256))
    questions = train_rows[: hp["questions_per_stage"]]
    q_ids = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in questions]
    digests = {"train": content_hash(train_rows), "heldout": content_hash(val_rows)}
    metrics: list[dict] = []
    evals: list[dict] = []
    stages: list[dict] = []
    Trainer, Collator = _dpo_classes()

    def heldout(step: int):
        if evals and evals[-1]["step"] == step:
            return
        t0 = time.time()
        r = evaluate_policy(model, tok, h_prompts, h_answers, score=score, temperature=ev.temperature,
                            max_new_tokens=ev.max_new_tokens, seed=seed * 100003 + step, environment=env)
        evals.append({"step": step, **r, "seconds": round(time.time() - t0, 3)})

    def probe_now(step: int) -> dict:
        return probe(model, tok, h_prompts, h_answers, score=score, environment=env, temperature=ev.temperature,
                     max_new_tokens=ev.max_new_tokens, seed=seed * 7919 + step)

    heldout(0)
    base_probe = probe_now(0)
    offset = 0
    if done is not None:  # a restart after stage done[0]: its policy, records and RNG states (harness.train.stages)
        rec = records.load(done[1], model)
        metrics[:], evals[:], stages[:] = rec["metrics"], rec["heldout"], rec["stages"]
        offset = sum(steps[:done[0]])
    for s, n_steps in enumerate(steps, start=1):
        if done is not None and s <= done[0]:
            continue
        logged: dict[str, list[float]] = defaultdict(list)
        sampled, samp = _sample_stage(model, tok, questions, hp, environment=env, score=score,
                                      temperature=temperature, max_len=max_len,
                                      rctx_log=lambda k, v: logged[k].append(v))
        rule = hp[f"pair_rule_stage{s}"]
        pairs, psum = build_pairs(sampled, rule, q_ids, hp["format_pairs"])
        if not pairs:
            raise RuntimeError(f"tool_light stage {s}: no preference pair (no question of {len(questions)} had a "
                               "correct trace and a rejectable one); more questions_per_stage or rollouts needed")

        class Rec(MetricsRecorder):
            def __init__(self, off, stage):
                super().__init__(metrics, off, {f"{TL.PREFIX}/stage": stage})

            def on_step_end(self, args, state, control, model=None, **kw):
                if (self.offset + state.global_step) % ev.every_steps == 0:
                    heldout(self.offset + state.global_step)

        args = dpo_args(out_dir, seed=seed, trl=trl, hp=hp, n_steps=n_steps)
        ref = frozen_copy(model)
        trainer = Trainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(pairs),
                          processing_class=tok, data_collator=Collator(pad_token_id=tok.pad_token_id),
                          callbacks=[Rec(offset, s)])
        n0 = offset  # the stage's rows start after the earlier stages' (a resumed stage restores its own)
        ckpt = records.checkpointer(s)
        trainer.train(resume_from_checkpoint=ckpt.attach(trainer, metrics=Contents(metrics), heldout=Contents(evals)))
        model = trainer.model
        offset += n_steps
        heldout(offset)
        rows = metrics[n0:]
        late = rows[len(rows) // 2:]
        avg = lambda k, rs: float(sum(r[k] for r in rs if k in r) / max(1, sum(k in r for r in rs)))  # noqa: E731
        stages.append({"stage": s, "name": "pre-aligned" if s == 1 else "self-evolved on-policy",
                       "sampled_by": "base" if s == 1 else "stage1", "pair_rule": rule, "steps": [offset - n_steps + 1, offset],
                       "sampling": {**samp, **{k: float(sum(v)) for k, v in logged.items()}}, "pairs": psum,
                       "dpo": {"loss_last_half": avg("loss", late), "reward_accuracy_last_half": avg("rewards/accuracies", late),
                               "margin_last_half": avg("rewards/margins", late)},
                       "heldout": evals[-1], "probe": probe_now(offset)})
        del ref
        if s < len(steps):
            records.save(s, model, {"metrics": metrics, "heldout": evals, "stages": stages})
    finish_policy(out_dir, model, tok, save_model=save_model)
    result = train_result(job, trainer="dpo", trl_args=args.to_dict(), dataset_digests=digests, t_start=t_start,
                          metrics=metrics, heldout=evals, stages=stages, base_probe=base_probe)
    out = write_result(out_dir, result, trl_args=args.to_dict(), mlflow_uri=mlflow_uri)
    records.clear()  # the results are written: the stage records and checkpoints are no longer needed
    return out
