import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

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
