import os
import shutil
from pathlib import Path

import pytest
import yaml

import harness  # noqa: F401  (the portable CPU numerics before any test imports NumPy or torch: harness.config.numerics)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

@pytest.fixture(autouse=True)
def _registry_left_as_found():
    """A method a test registers does not outlive the test (README tables and registry scans see the package's
    methods only). Module- and session-scoped fixtures clean up their own."""
    import sys

    reg = sys.modules.get("harness.methods.registry")
    if reg is not None:
        reg._load_builtin_methods()  # a paper module first imported during the test registers package methods
    before = set(reg._REGISTRY) if reg else None
    yield
    reg = sys.modules.get("harness.methods.registry")
    if reg is not None and before is not None:
        for name in set(reg._REGISTRY) - before:
            reg.unregister(name)


TINY_SMOKE = {  # a few-second version of the smoke tier, for tests
    "pretrain": {"seed": 0, "steps": 40, "batch_size": 64, "lr": 1.0e-3, "noise": 0.3},
    "model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "eval": {"every_steps": 2, "n_val": 64, "temperature": 1.0, "max_new_tokens": 4},
    "trl_overrides": {"max_steps": 4, "per_device_train_batch_size": 32, "warmup_steps": 0},
}


def assert_matches_golden(loss, grad, exp, *, rtol=1e-8, atol=1e-12):
    """A method's loss and its gradient w.r.t. the token log-probs equal the golden values computed from the
    authors' code (fixture fields ``loss`` and ``grad_log_prob``); default tolerances for float64 inputs (the
    authors' masked_mean adds 1e-8 to the denominator: relative differences ~1e-10)."""
    import torch

    assert loss.item() == pytest.approx(exp["loss"], rel=rtol, abs=atol)
    torch.testing.assert_close(grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64), rtol=rtol, atol=atol)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny smoke-tier base model pre-trained for a few steps (seconds)."""
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "base"
    pretrain(out, TINY_SMOKE["model"], TINY_SMOKE["pretrain"], {"task": "addition", "split_seed": 1234, "n_val": 512},
             log=lambda *a: None)
    return out


def tiny_grpo_trainer(model_dir, out_dir, method, *, reward_funcs, hparams=None, rows=None, callbacks=(),
                      trainer_kwargs=None, **grpo_settings):
    """A ``HarnessGRPOTrainer`` on a tiny model for one test: ``set_seed(0)``, then the tokenizer and the model from
    ``model_dir``, a CPU fp32 ``GRPOConfig`` (no gradient checkpointing, logging every step, no reports, saves or
    progress bars, seed 0) plus the caller's ``grpo_settings`` (batch size, num_generations, lengths, lr, max_steps,
    beta, loss_type, the method's TRL overrides...), the training rows (a list of dicts, or a ready ``Dataset``;
    default: 64 addition rows of the smoke task), method seed 0.

    ``method``: a registered name or a Method. ``trainer_kwargs``: extra ``HarnessGRPOTrainer`` arguments (phase_fn,
    task hooks...), or a function of the tokenizer returning them. Returns ``(trainer, tokenizer, logs)``: ``logs``
    collects every ``on_log`` dict; the model is ``trainer.model``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import GRPOConfig

    from harness.data import smoke
    from harness.methods.registry import get_method
    from harness.train.trainer import HarnessGRPOTrainer

    set_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    records: list[dict] = []

    class Rec(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            records.append(dict(logs or {}))

    args = GRPOConfig(output_dir=str(out_dir), use_cpu=True, bf16=False, gradient_checkpointing=False,
                      logging_steps=1, report_to="none", save_strategy="no", seed=0, disable_tqdm=True,
                      **grpo_settings)
    if rows is None:
        rows = smoke.rows(smoke.split_pairs(512, 1234)[0][:64])
    extra = trainer_kwargs(tok) if callable(trainer_kwargs) else dict(trainer_kwargs or {})
    trainer = HarnessGRPOTrainer(model=model, reward_funcs=reward_funcs, args=args,
                                 train_dataset=rows if isinstance(rows, Dataset) else Dataset.from_list(rows),
                                 processing_class=tok, callbacks=[Rec(), *callbacks],
                                 method=get_method(method) if isinstance(method, str) else method, hparams=hparams,
                                 method_seed=0, **extra)
    return trainer, tok, records


class Killed(Exception):
    """A training job made to die right after a checkpoint (:func:`killed_and_resumed`)."""


def killed_and_resumed(job: dict, out: Path, monkeypatch, *, model_dir, n_saves: int = 1,
                       checkpoint: str | None = None, saver: tuple | None = None, left: list[str] | None = None,
                       **kw) -> tuple[Path, dict]:
    """(reference folder, resumed result): ``job`` run uninterrupted in ``out`` (then moved to ``out``.ref), run again
    dying right after its ``n_saves``-th save is in place (``saver``: (class, method) of the save, by default
    ``(Checkpointer, "save")``, e.g. ``(StageRecords, "save")``; ``checkpoint``: the one checkpoint folder expected
    then; ``left``: the folders expected under ``checkpoints/`` then; no result written), and run a third time in
    ``out``, which resumes. Any trainer: GRPO, DPO, SFT jobs through :func:`harness.train.job.run_job`."""
    from harness.train.job import run_job
    from harness.train.resume import CHECKPOINT_DIR, Checkpointer

    args = dict(model_dir=model_dir, data_dir=Path("."), mlflow_uri=None, **kw)
    run_job(job, out_dir=out, **args)
    ref = out.with_name(out.name + ".ref")
    out.rename(ref)
    owner, name = saver or (Checkpointer, "save")
    orig, saved = getattr(owner, name), []

    def save(self, *a, **k):
        saved.append(orig(self, *a, **k))
        if len(saved) == n_saves:
            raise Killed(saved[-1])
        return saved[-1]

    with monkeypatch.context() as m:
        m.setattr(owner, name, save)
        with pytest.raises(Killed):
            run_job(job, out_dir=out, **args)
    if checkpoint is not None:
        assert [p.name for p in (out / CHECKPOINT_DIR).glob("checkpoint-*")] == [checkpoint]
    if left is not None:
        assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir() if not p.name.startswith(".")) == left
    assert not (out / "result.json").exists()
    return ref, run_job(job, out_dir=out, **args)


def assert_resumed_identical(ref: Path, out: Path) -> None:
    """A resumed job's outputs (``out``) equal the uninterrupted run's (``ref``): the result and ``metrics.jsonl``
    but for the volatile fields (timings, provenance), floats bit for bit; the same weights file; no checkpoints
    left once the results are written."""
    import hashlib
    import json

    from harness.results import compare_results
    from harness.train.resume import CHECKPOINT_DIR

    a, b = (json.loads((d / "result.json").read_text()) for d in (ref, out))
    assert len(a["metrics"]) == a["job"]["trl"]["max_steps"] and len(a["heldout"]) >= 2
    assert compare_results(a, b) == []
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (ref, out)]
    assert compare_results(rows[0], rows[1]) == []
    sha = [hashlib.sha256((d / "model" / "model.safetensors").read_bytes()).hexdigest() for d in (ref, out)]
    assert sha[0] == sha[1]
    assert not (out / CHECKPOINT_DIR).exists(), "the checkpoints are removed once the results are written"


def tiny_word_model(path: Path, words, *, max_positions: int = 4096) -> Path:
    """A 1-layer Llama-shaped model (random weights, seed 0) with a word-level tokenizer: ``words`` are one token
    each, every other printable character is a token of its own; saved to ``path``."""
    import string

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.data.wordlevel import word_level_tokenizer

    words = sorted(set(words))
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n") - set(words))
    tok = word_level_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"] + words + chars, words)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=max_positions,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_project_copy(dest: Path, *, tiny: bool = True) -> Path:
    """A copy of the project (DAG, config, cards) whose smoke tier is tiny; run with RLVR_HARNESS_ROOT=dest."""
    for name in ("Snakefile", "rules", "config", "profiles", "replications"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    (dest / "results").mkdir()
    if tiny:
        card_path = dest / "replications" / "entropy_mechanism" / "card.yaml"
        card = yaml.safe_load(card_path.read_text())
        t = card["tiers"]["smoke"]
        t["pretrain"], t["model"], t["eval"] = TINY_SMOKE["pretrain"], TINY_SMOKE["model"], TINY_SMOKE["eval"]
        t["trl"].update(TINY_SMOKE["trl_overrides"])
        card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    cfg = dest / "config" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("data_dir: ../shared/data", f"data_dir: {ROOT.parent / 'shared' / 'data'}"))
    return dest


def snakemake_dry_run(config: list[str], work_dir) -> tuple[str, dict[str, int]]:
    """``snakemake -n --nolock --config <config> work_dir=<work_dir>`` from the repo root: its stdout and the job
    counts of its "Job stats" table (rule -> count). Fails the test with snakemake's stderr if it fails."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--nolock", "--config", *config,
                          f"work_dir={work_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return out.stdout, counts
