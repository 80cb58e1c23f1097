"""A job's model, tokenizer, train/held-out rows, reward function and scorer (smoke task or real data), and how its
task plays episodes (multi-turn games)."""
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


#: real-model tasks that play episodes -> the module with their ``check(d)``, ``rows`` and ``episode_spec(d, data_dir)``
EPISODE_TASKS = {"alfworld": "harness.data.alfworld_task", "arpo_tools": "harness.data.arpo_task"}


def episodes_of(job: dict, data_dir: str | Path | None = None):
    """How the job's task plays episodes (:class:`harness.envs.agent.EpisodeSpec`: the smoke household's, or the real
    ``alfworld`` / ``arpo_tools`` task's from the job's data block and ``data_dir``), or None for a single-turn
    task."""
    from harness.config.tiers import DataSpec, parse as parse_setting

    d = parse_setting(DataSpec, job["data"], "job data")
    if job["model"]["kind"] == "smoke":
        from harness.data.smoke_tasks import smoke_task

        return smoke_task(d.task).episodes
    if d.task in EPISODE_TASKS:
        from importlib import import_module

        from harness.config import ConfigError

        if data_dir is None:
            raise ConfigError(f"the {d.task} task reads its data from the data directory: pass data_dir")
        return import_module(EPISODE_TASKS[d.task]).episode_spec(d, data_dir)
    return None
