"""The SFT stage (harness/train/sft.py, method ``sft``): TRL's SFTTrainer on the task's gold chains, as a DAG job.

- gold chains: hand-written golden completions of the reasoning and addition tasks;
- training: a few SFT steps on a tiny reasoning model lower the held-out gold-chain NLL (recomputed here
  independently from the saved checkpoint), with the metrics contract logged every step;
- completion-only loss: TRL's labels are -100 exactly on the prompt; corrupting the model's predictions of the
  prompt tokens leaves TRL's loss unchanged (the same corruption moves it with ``completion_only_loss`` off, and a
  corruption of the first completion token's prediction moves it), and TRL's loss equals the registered objective;
- outputs: the files and result keys a GRPO job leaves, read by the held-out evaluation and the geometry analysis;
- bad settings: clear errors naming the valid choices.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError

from conftest import TINY_SMOKE

REASONING_DATA = {"task": "reasoning", "split_seed": 1234, "n_val": 64, "n_train": 200}


@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    """A tiny reasoning-task base model, barely pre-trained (seconds)."""
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("sft") / "base"
    pre = {**TINY_SMOKE["pretrain"], "steps": 10, "noise": 0.1, "check_rate": 0.0}
    pretrain(out, TINY_SMOKE["model"], pre, REASONING_DATA, log=lambda *a: None)
    return out


def _job(**trl):
    from harness.plan import resolve_job

    job = resolve_job("rep_geometry", "smoke-reasoning", "sft", 3,
                      trl_overrides={"max_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
                                     "warmup_steps": 0, **trl})
    job["data"] = dict(REASONING_DATA)
    job["eval"] = {"every_steps": 3, "n_val": 16, "temperature": 1.0, "max_new_tokens": 40}
    return job


def _tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# ------------------------------------------------------------------------------------------- gold chains -----
def test_an_sft_job_killed_after_a_checkpoint_resumes_identical(reasoning_base, tmp_path, monkeypatch):
    """The SFT path checkpoints like GRPO jobs (issue 16): a job dying right after its step-2 checkpoint, run again,
    ends where an uninterrupted run ends (per-step metrics including TRL's num_tokens, held-out curve, weights)."""
    from conftest import assert_resumed_identical, killed_and_resumed

    out = tmp_path / "run"
    ref, _ = killed_and_resumed(_job(max_steps=4, save_steps=2), out, monkeypatch, model_dir=reasoning_base,
                                checkpoint="checkpoint-2")
    a = json.loads((ref / "result.json").read_text())
    assert [m["step"] for m in a["metrics"]] == [1, 2, 3, 4] and "num_tokens" in a["metrics"][-1]
    assert_resumed_identical(ref, out)


def test_gold_chains_are_the_tasks_correct_traces():
    from harness.data.reasoning import boxed_reward
    from harness.train.sft import gold_completion

    row = {"prompt": "7+5+9+4=", "answer": "25"}
    gold = gold_completion("reasoning", row, random.Random(0))
    assert gold == " then 7+5=12 then 12+9=21 then 21+4=25 so \\boxed{25}"
    checked = gold_completion("reasoning", row, random.Random(0), check_rate=1.0)
    assert checked == (" then 7+5=12 check 7+5=12 then 12+9=21 check 12+9=21 then 21+4=25 check 21+4=25"
                       " so \\boxed{25}")
    assert boxed_reward([gold, checked], ["25", "25"]) == [1.0, 1.0]
    assert gold_completion("addition", {"prompt": "12+34=", "answer": "46"}, random.Random(0)) == "46"


# -------------------------------------------------------------------------------------- training (job) -----
def _independent_nll(model_dir, rows) -> float:
    """Per-token NLL of the gold completions (EOS included) given the prompts, one row at a time."""
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            p = tok.encode(r["prompt"], add_special_tokens=False)
            c = tok.encode(r["completion"], add_special_tokens=False) + [tok.eos_token_id]
            logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            for i, t in enumerate(c):
                total -= float(lp[len(p) + i - 1, t])
                n += 1
    return total / n


def test_sft_job_lowers_gold_nll_and_leaves_a_grpo_jobs_outputs(reasoning_base, tiny_base, tmp_path):
    from harness.analyze.geometry import analyze_geometry_job
    from harness.config.tiers import DataSpec, parse as parse_setting
    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.heldout import evaluate_heldout_job
    from harness.plan import resolve_job
    from harness.results import content_hash
    from harness.train import job as train
    from harness.train.sft import gold_rows
    from harness.train.trainer import REQUIRED_METRICS

    job = _job()
    out = tmp_path / "sft"
    r = train.run_job(job, model_dir=reasoning_base, out_dir=out, data_dir=Path("."), mlflow_uri=None)
    assert r["trainer"] == "sft" and [m["step"] for m in r["metrics"]] == [1, 2, 3, 4, 5, 6]
    for row in r["metrics"]:
        assert not set(REQUIRED_METRICS) - set(row), sorted(set(REQUIRED_METRICS) - set(row))
        assert row["reward"] == 1.0 and row["policy_loss"] == pytest.approx(row["loss"], rel=1e-6)
        assert 10 < row["completions/mean_length"] < 80 and math.isfinite(row["entropy"])
    assert [e["step"] for e in r["heldout"]] == [0, 3, 6]
    sft = r["sft"]
    assert sft["train_rows"] == 6 * 16 and sft["gold_reward_mean"] == 1.0
    assert {"num_generations", "temperature", "loss_type", "epsilon"} <= set(sft["ignored_trl"])
    # the gold-chain NLL on the held-out prompts: recomputed here from the base and the saved checkpoint
    task = smoke_task("reasoning")
    val_rows = task.splits(parse_setting(DataSpec, REASONING_DATA, "data"))[1]
    held = gold_rows("reasoning", val_rows[:16], tok=_tokenizer(reasoning_base), reward_fn=task.reward,
                     check_rate=0.0, seed=3)
    before, after = _independent_nll(reasoning_base, held), _independent_nll(out / "model", held)
    assert sft["gold_nll_heldout"]["before"]["nll_per_token"] == pytest.approx(before, rel=1e-4)
    assert sft["gold_nll_heldout"]["after"]["nll_per_token"] == pytest.approx(after, rel=1e-4)
    assert after < before - 0.05, (before, after)

    # the output contract: what a GRPO job leaves (its files, its result keys), and the readers of those files
    grpo_job = resolve_job("entropy_mechanism", "smoke", "grpo", 3, trl_overrides=TINY_SMOKE["trl_overrides"])
    grpo_job["eval"] = TINY_SMOKE["eval"]
    g = train.run_job(grpo_job, model_dir=tiny_base, out_dir=tmp_path / "grpo", data_dir=Path("."), mlflow_uri=None)
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(out) == files(tmp_path / "grpo")
    assert set(g) <= set(r)
    saved = json.loads((out / "result.json").read_text())
    assert saved["content_hash"] == content_hash(saved) and saved["job"] == job
    assert [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == saved["metrics"]
    (out / "job.json").write_text(json.dumps(job))
    ev = evaluate_heldout_job(out / "job.json", out / "model", data_dir=".", out=tmp_path / "heldout.json", k=2,
                              source={"method": "sft", "seed": 3}, bootstrap_iters=50)
    assert ev["source"]["method"] == "sft" and "heldout" in ev["benchmarks"]
    geo = analyze_geometry_job(out / "job.json", out / "model", out=tmp_path / "geometry.json", probe_size=32,
                               source={"method": "sft", "seed": 3})
    assert geo["result"]["rankme"] > 1 and geo["source"]["method"] == "sft"


# -------------------------------------------------------------------------------- completion-only loss -----
def _trainer(model_dir, tmp_path, rows, completion_only_loss=True):
    from transformers import AutoModelForCausalLM

    from harness.train.sft import build_trainer, sft_settings

    settings, _ = sft_settings({"max_steps": 1, "per_device_train_batch_size": len(rows)})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return build_trainer(model, _tokenizer(model_dir), rows, out_dir=tmp_path, seed=0, settings=settings,
                         completion_only_loss=completion_only_loss)


def _loss(trainer, batch, corrupt=None) -> float:
    """TRL's loss of ``batch``; ``corrupt[i]`` = the positions of row i whose final hidden state (the input of the LM
    head, so only the prediction of the next token) is replaced by noise."""
    norm = trainer.model.model.norm
    gen = torch.Generator().manual_seed(1)

    def hook(mod, args, out):
        out = out.clone()
        for i, pos in (corrupt or {}).items():
            out[i, pos] = 10 * torch.randn(out[i, pos].shape, generator=gen)
        return out

    handle = norm.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return float(trainer.compute_loss(trainer.model, dict(batch)))
    finally:
        handle.remove()


def test_prompt_tokens_get_no_loss(reasoning_base, tmp_path):
    from harness.data.smoke_tasks import smoke_task
    from harness.methods.context import TokenContext
    from harness.methods.registry import get_method
    from harness.train.sft import gold_rows

    task = smoke_task("reasoning")
    tok = _tokenizer(reasoning_base)
    problems = ["7+5+9+4=", "1+2+3=", "9+9+9+9+9+9+9+9=", "3+8+2+6+1="]
    rows = gold_rows("reasoning", [{"prompt": p, "answer": str(sum(map(int, p[:-1].split("+"))))} for p in problems],
                     tok=tok, reward_fn=task.reward, check_rate=0.0, seed=0)
    trainer = _trainer(reasoning_base, tmp_path, rows)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    ids, labels = batch["input_ids"], batch["labels"]
    n_prompt = []
    for i, r in enumerate(rows):  # TRL's tokenization and labels against the prompt and completion tokenized here
        p = tok.encode(r["prompt"], add_special_tokens=False)
        c = tok.encode(r["completion"], add_special_tokens=False) + [tok.eos_token_id]
        assert ids[i, :len(p) + len(c)].tolist() == p + c
        assert (labels[i, :len(p)] == -100).all() and labels[i, len(p):len(p) + len(c)].tolist() == c
        assert (labels[i, len(p) + len(c):] == -100).all()
        n_prompt.append(len(p))
    trainer.model.eval()
    clean = _loss(trainer, batch)
    # the predictions of prompt tokens 1..P-1 come from positions 0..P-2: corrupted, the loss does not move
    prompt_preds = {i: list(range(n - 1)) for i, n in enumerate(n_prompt)}
    assert _loss(trainer, batch, prompt_preds) == pytest.approx(clean, abs=1e-6)
    # ... while the prediction of the first completion token (position P-1) does count
    assert abs(_loss(trainer, batch, {i: [n - 1] for i, n in enumerate(n_prompt)}) - clean) > 1e-2
    # and with the loss on every token, the same prompt corruption moves it (the check can fail)
    full = _trainer(reasoning_base, tmp_path, rows, completion_only_loss=False)
    full.model.eval()
    fb = full.data_collator([full.train_dataset[i] for i in range(len(rows))])
    assert abs(_loss(full, fb, prompt_preds) - _loss(full, fb)) > 1e-2
    # TRL's loss is the registered objective (per-token NLL) averaged over the completion tokens
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    tgt = labels[:, 1:]
    mask = (tgt != -100).float()
    lp = torch.log_softmax(logits, -1).gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
    m = get_method("sft")
    per_token, metrics = m.fn(TokenContext.build(lp, lp, torch.zeros(len(rows)), mask), **m.hook_hparams())
    assert float((per_token * mask).sum() / mask.sum()) == pytest.approx(clean, rel=1e-5)
    assert metrics["method/frac_tokens_touched"] == 1.0


# ------------------------------------------------------------------------------------------- bad input -----
@pytest.mark.parametrize("change,match", [
    (lambda j: j["hparams"].update(chek_rate=0.1),
     "method 'sft' has no hyperparameter 'chek_rate'; valid: check_rate, completion_only_loss"),
    (lambda j: j["hparams"].update(check_rate=1.5), r"check_rate must be in \[0, 1\]"),
    (lambda j: j["trl"].update(num_generationz=8), r"'num_generationz' is not a TRL setting \(did you mean "
                                                   r"'num_generations'\?\); valid: transformers TrainingArguments"),
    (lambda j: j["trl"].update(seed=1), "'seed' is set by the SFT job itself"),
    (lambda j: j["trl"].pop("max_steps"), "needs trl max_steps >= 1"),
    (lambda j: j["data"].update(task="instruct"), "no gold chains|valid tasks: addition, reasoning"),
])
def test_unknown_settings_are_clear_errors(change, match, tmp_path):
    from harness.train import job as train

    job = _job()
    change(job)
    with pytest.raises(ConfigError, match=match):
        train.run_job(job, model_dir=tmp_path / "never-read", out_dir=tmp_path / "out", data_dir=Path("."),
                      mlflow_uri=None)
    assert not (tmp_path / "out" / "result.json").exists()
