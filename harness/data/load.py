"""A job's model, tokenizer, train/held-out rows, reward function and scorer (smoke task or real data)."""
from __future__ import annotations

from pathlib import Path


def load_model_and_data(job: dict, model_dir: Path, data_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data import smoke

    if job["model"]["kind"] == "smoke":
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        train_pairs, val_pairs = smoke.split_pairs(job["data"]["n_val"], job["data"]["split_seed"])
        train_rows, val_rows = smoke.rows(train_pairs), smoke.rows(val_pairs)
        score = lambda completion, answer: completion.strip() == answer  # noqa: E731
        return model, tok, train_rows, val_rows, smoke.exact_match_reward, score
    from harness.data import realdata

    return realdata.load(job, model_dir, data_dir)
