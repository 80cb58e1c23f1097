"""The SFT stage: TRL's ``SFTTrainer`` on the task's gold chains (method and hyperparameters:
:mod:`harness.methods.sft`), for the SFT checkpoints rep_geometry (arXiv 2509.23024) compares with RL.

A job whose method is registered with ``trainer="sft"`` is trained here instead of by the GRPO trainer
(``harness.train.job.run_job`` dispatches; the DAG's ``train`` rule is unchanged), and writes what every job writes
(:mod:`harness.train.outputs`): ``JOB/model``, ``result.json`` (``trainer: sft``), ``metrics.jsonl`` and the MLflow
run, so the held-out evaluation, the geometry analysis, the verdict and the leaderboard read it unchanged.

- Data: the first ``max_steps x per_device_train_batch_size x gradient_accumulation_steps`` training rows of the
  job's smoke task (each once, in TRL's shuffled order, ``data_seed`` = the job's seed; a smaller training set is
  cycled in epochs), each with its gold
  completion (:func:`gold_completion`), as TRL prompt-completion rows: TRL appends EOS and, with
  ``completion_only_loss`` (the default), sets the prompt's labels to -100, so only completion tokens are trained.
- Settings: the job's ``trl`` block is the tier's (GRPO) settings. Its ``TrainingArguments`` fields (optimiser,
  schedule, batch, precision: ``learning_rate``, ``max_steps``, ``warmup_steps``...) are passed to ``SFTConfig``
  (``learning_rate`` absent: GRPOConfig's default, as the GRPO job would get); its GRPO-only fields (sampling,
  group size, clipping, the RL loss) have no meaning for SFT and are listed in ``result["sft"]["ignored_trl"]``; any
  other key, or one the harness sets itself, is a ConfigError naming the valid ones. ``max_completion_length`` is
  only read to report the share of gold completions longer than the GRPO job's cap (nothing is truncated).
- Metrics contract (:data:`harness.train.trainer.REQUIRED_METRICS`) at every step, for the reports that compare
  methods: reward / reward_std = the task's reward of the batch's gold completions (1.0 unless a gold chain is
  wrong), entropy = TRL's (of the trained tokens), policy_loss = the SFT loss, completion lengths of the batch;
  the per-token weight is 1 on every trained token, so cov(logp, A) is 0, no token is clipped and every token is
  touched.
- ``result["sft"]`` also records the held-out gold-chain NLL (per completion token) before and after training.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import random
import time
from pathlib import Path

import torch

from harness.config import ConfigError
from harness.config.tiers import EvalSpec, parse as parse_setting
from harness.results import content_hash
from harness.train.outputs import finish_policy, train_result, write_result

#: smoke tasks whose gold completion this module can render (:func:`gold_completion`)
GOLD_TASKS = ("addition", "reasoning")
#: SFTConfig fields the job sets itself: a job's ``trl`` block may not state them
HARNESS_SET = ("output_dir", "seed", "data_seed", "logging_steps", "report_to", "save_strategy", "use_cpu",
               "disable_tqdm", "remove_unused_columns")
COLUMNS = ("gold_reward", "gold_length")  # per-row statistics that ride along to the metrics contract


# ------------------------------------------------------------------------------------------ gold chains ------
def gold_completion(task: str, row: dict, rng: random.Random, *, check_rate: float = 0.0) -> str:
    """The correct completion of a training row, as the task's pre-training generator writes it with no wrong step
    (``reasoning``: :func:`harness.data.reasoning.trace` with ``noise=0``; ``addition``: the sum)."""
    if task == "addition":
        return str(row["answer"])
    if task == "reasoning":
        from harness.data.reasoning import Problem, trace

        problem = Problem(tuple(int(t) for t in row["prompt"].rstrip("=").split("+")))
        pieces, final = trace(problem, rng, noise=0.0, check_rate=check_rate, tool_rate=0.0)
        if str(final) != str(row["answer"]):
            raise RuntimeError(f"gold chain of {row['prompt']!r} ends at {final}, not the answer {row['answer']}")
        return "".join(text for text, _ in pieces)
    raise ConfigError(f"the sft method has no gold chains for smoke task {task!r}; valid: {', '.join(GOLD_TASKS)}")


def gold_rows(task: str, rows: list[dict], *, tok, reward_fn, check_rate: float, seed: int,
              max_completion_length: int | None = None) -> list[dict]:
    """TRL prompt-completion rows with the gold completion, its task reward and its trained length (tokens + EOS)."""
    rng = random.Random(seed)
    completions = [gold_completion(task, r, rng, check_rate=check_rate) for r in rows]
    rewards = reward_fn(completions, [r["answer"] for r in rows])
    out = []
    for r, c, rew in zip(rows, completions, rewards):
        n = len(tok(c, add_special_tokens=False)["input_ids"]) + 1
        out.append({"prompt": r["prompt"], "completion": c, "gold_reward": float(rew), "gold_length": n})
    return out


@torch.no_grad()
def gold_nll(model, tok, rows: list[dict], *, batch_size: int = 256) -> dict:
    """Mean negative log-likelihood per completion token (EOS included) of ``rows``' gold completions given their
    prompts (the SFT objective, without training), and the number of tokens it averages over."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        seqs = []
        for r in rows[i:i + batch_size]:
            p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
            c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append((p + c, [-100] * len(p) + c))
        width = max(len(s) for s, _ in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in seqs])
        lab = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in seqs])
        att = (torch.arange(width)[None] < torch.tensor([len(s) for s, _ in seqs])[:, None]).long()
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float()
        tgt = lab[:, 1:]
        mask = tgt != -100
        lp = torch.log_softmax(logits, -1).gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
        total += float(-(lp * mask).sum())
        count += int(mask.sum())
    model.train(was)
    return {"nll_per_token": total / max(count, 1), "tokens": count, "rows": len(rows)}


# ------------------------------------------------------------------------------------------- settings -------
def sft_settings(trl: dict) -> tuple[dict, dict]:
    """(``SFTConfig`` keyword arguments from the job's ``trl`` block, its GRPO-only settings that SFT ignores)."""
    from transformers import TrainingArguments
    from trl import GRPOConfig

    ta = {f.name for f in dataclasses.fields(TrainingArguments)}
    grpo = {f.name for f in dataclasses.fields(GRPOConfig)}
    passed, ignored = {}, {}
    for k, v in sorted(trl.items()):
        if k in HARNESS_SET:
            raise ConfigError(f"job trl setting {k!r} is set by the SFT job itself; remove it (the harness sets "
                              f"{', '.join(HARNESS_SET)})")
        if k in ta:
            passed[k] = v
        elif k in grpo:
            ignored[k] = v
        else:
            hint = difflib.get_close_matches(k, sorted(ta | grpo), n=1)
            raise ConfigError(f"job trl setting {k!r} is not a TRL setting" + (f" (did you mean {hint[0]!r}?)" if hint
                              else "") + "; valid: transformers TrainingArguments fields (passed to SFTConfig) or "
                              "GRPOConfig fields (rollout and RL-loss settings, ignored by SFT)")
    if not isinstance(passed.get("max_steps"), int) or passed["max_steps"] < 1:
        raise ConfigError(f"the SFT job needs trl max_steps >= 1 (an int), got {passed.get('max_steps')!r}")
    passed.setdefault("learning_rate", GRPOConfig.learning_rate)  # what the GRPO job of the tier gets
    return passed, ignored


# ---------------------------------------------------------------------------------------------- trainer ------
def _sft_classes():
    """TRL's SFTTrainer whose batches carry their rows' gold reward and length (popped before TRL's loss) to log the
    metrics contract; data preparation, collation and the loss are TRL's."""
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class Collator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            out["sft_stats"] = torch.tensor([[float(ex[c]) for c in COLUMNS] for ex in examples])
            return out

    from harness.train.resumable import HFCheckpointMixin

    class Trainer(HFCheckpointMixin, SFTTrainer):  # checkpoints through the job's Checkpointer, where it has one
        CHECKPOINT_ATTRS = ("_total_train_tokens",)  # TRL's running count behind the logged num_tokens
        max_completion_length: int | None = None

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *COLUMNS]))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            stats = inputs.pop("sft_stats", None)
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if stats is not None and self.model.training:
                self._contract(stats, float((out[0] if return_outputs else out).detach()))
            return out

        def _contract(self, stats, loss: float):
            m = self._metrics["train"]
            reward, length = stats[:, 0], stats[:, 1]
            cap = self.max_completion_length
            m["reward"].append(float(reward.mean()))
            m["reward_std"].append(float(reward.std()) if len(reward) > 1 else 0.0)
            m["completions/mean_length"].append(float(length.mean()))
            m["completions/clipped_ratio"].append(float((length > cap).float().mean()) if cap else 0.0)
            m["cov_logp_adv/mean"].append(0.0)  # weight A = 1 on every trained token: cov(logp, A) = 0
            m["cov_logp_adv/top_mean"].append(0.0)
            m["clip_ratio/region_mean"].append(0.0)  # no ratio, no clipping
            m["method/frac_tokens_touched"].append(1.0)
            m["policy_loss"].append(loss)

    return Trainer, Collator


def build_trainer(model, tok, rows: list[dict], *, out_dir: Path, seed: int, settings: dict,
                  completion_only_loss: bool = True, max_completion_length: int | None = None, callbacks=()):
    """A TRL ``SFTTrainer`` on ``rows`` (:func:`gold_rows`) with ``settings`` (:func:`sft_settings`' first value;
    ``bf16`` and ``gradient_checkpointing`` default to off, as in the GRPO job)."""
    from datasets import Dataset
    from trl import SFTConfig

    settings = dict(settings)
    args = SFTConfig(output_dir=str(Path(out_dir) / "trainer"), seed=seed, data_seed=seed, logging_steps=1,
                     report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                     bf16=bool(settings.pop("bf16", False)),
                     gradient_checkpointing=bool(settings.pop("gradient_checkpointing", False)),
                     completion_only_loss=completion_only_loss, max_length=None, packing=False, loss_type="nll",
                     **settings)
    Trainer, Collator = _sft_classes()
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                      data_collator=Collator(pad_token_id=tok.pad_token_id), callbacks=list(callbacks))
    trainer.max_completion_length = max_completion_length
    return trainer


def run_sft_job(job: dict, *, model_dir: Path, out_dir: Path, data_dir: Path, mlflow_uri: str | None,
                threads: int = 1, save_model: bool = True, upstream: dict | None = None) -> dict:
    """Train one resolved SFT job (same outputs as :func:`harness.train.job.run_job`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(threads)
    from transformers import set_seed

    from harness.data.load import load_model_and_data
    from harness.methods import sft as SFT
    from harness.methods.registry import RegistryError, get_method
    from harness.train.callbacks import MetricsRecorder, PeriodicEval

    method, seed = job["method"], int(job["seed"])
    try:
        hp = get_method(method).resolve(job["hparams"])
        SFT.check(hp)
    except (RegistryError, ValueError) as e:
        raise ConfigError(f"job {job.get('job_key')}: {e}") from None
    if upstream or job.get("upstream") or job.get("history") is not None:
        raise ConfigError(f"job {job.get('job_key')}: the sft method takes no upstream inputs and records no history")
    task = (job.get("data") or {}).get("task")
    if job["model"]["kind"] != "smoke" or task not in GOLD_TASKS:
        raise ConfigError(f"the sft method trains on gold chains of a smoke task; valid tasks: "
                          f"{', '.join(GOLD_TASKS)} (job: model {job['model']['kind']}, task {task!r})")
    settings, ignored = sft_settings(dict(job["trl"]))
    cap = job["trl"].get("max_completion_length")
    n_rows = settings["max_steps"] * int(settings.get("per_device_train_batch_size", 8)) * int(
        settings.get("gradient_accumulation_steps", 1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from harness.train.resume import Checkpointer

    ckpt = Checkpointer(out_dir, job)  # <out_dir>/checkpoints; another job's checkpoint fails here
    t_start = time.time()
    set_seed(seed)
    model, tok, train_rows, val_rows, reward_fn, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    digests = {"train": content_hash(train_rows), "heldout": content_hash(val_rows)}
    rows = gold_rows(task, train_rows[:n_rows], tok=tok, reward_fn=reward_fn, check_rate=hp["check_rate"], seed=seed)
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    held = val_rows[: ev.n_val]
    held_gold = gold_rows(task, held, tok=tok, reward_fn=reward_fn, check_rate=hp["check_rate"], seed=seed)
    nll_before = gold_nll(model, tok, held_gold)

    metrics: list[dict] = []
    evals: list[dict] = []

    cb_eval = PeriodicEval(tok, [r["prompt"] for r in held], [r["answer"] for r in held], score=score,
                           every_steps=ev.every_steps, temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                           seed=seed, sink=evals.append)
    cb_metrics = MetricsRecorder(metrics)
    trainer = build_trainer(model, tok, rows, out_dir=out_dir, seed=seed, settings=settings,
                            completion_only_loss=hp["completion_only_loss"], max_completion_length=cap,
                            callbacks=[cb_metrics, cb_eval])
    trainer.train(resume_from_checkpoint=ckpt.attach(trainer, metrics=cb_metrics, heldout=cb_eval))
    model = trainer.model
    finish_policy(out_dir, model, tok, save_model=save_model)
    lengths = [r["gold_length"] for r in rows]
    n = max(len(rows), 1)
    result = train_result(job, trainer="sft", trl_args=trainer.args.to_dict(), dataset_digests=digests,
                          t_start=t_start, metrics=metrics, heldout=evals,
                          sft={"train_rows": len(rows), "gold_digest": content_hash(rows), "ignored_trl": ignored,
                "gold_reward_mean": sum(r["gold_reward"] for r in rows) / n,
                "completion_tokens": {"mean": sum(lengths) / n, "max": max(lengths, default=0)},
                "longer_than_max_completion_length": sum(k > cap for k in lengths) / n if cap else 0.0,
                "gold_nll_heldout": {"before": nll_before, "after": gold_nll(model, tok, held_gold)}})
    result = write_result(out_dir, result, trl_args=trainer.args.to_dict(), mlflow_uri=mlflow_uri)
    ckpt.clear()  # the results are written: the checkpoints are no longer needed
    return result
