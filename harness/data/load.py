"""A job's model, tokenizer, train/held-out rows, reward function and scorer (smoke task or real data)."""
from __future__ import annotations

from pathlib import Path


def load_model_and_data(job: dict, model_dir: Path, data_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if job["model"]["kind"] == "smoke":
        from harness.config.tiers import DataSpec, parse as parse_setting
        from harness.data.smoke_tasks import smoke_task

        data = parse_setting(DataSpec, job["data"], "job data")
        task = smoke_task(data.task)
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        train_rows, val_rows = task.splits(data)
        return model, tok, train_rows, val_rows, task.reward, task.score
    from harness.data import realdata

    return realdata.load(job, model_dir, data_dir)
