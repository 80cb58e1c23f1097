"""The real-model agent task ``alfworld`` (harness.data.alfworld_task): what the agent cards' paper tiers train on.

- Rows are the manifest's game ids in its order, cut to n_train / n_val; the splits and template are checked when a
  job is planned (a bad split names the valid ones; a split without a committed manifest names the command that
  writes it).
- End to end on the local valid_unseen games (a tiny untrained Qwen2-shaped model with a word-level tokenizer: the
  path, not the policy): one GRPO step through ``harness.train.job.run_job`` plays one episode per completion in the
  real games (episode metrics logged, the held-out evaluation during training plays episodes too), and
  ``evaluate_heldout_job`` writes an eval_result whose entries name the split and the task types, its protocol
  covering the games played.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.config.tiers import DataSpec, parse

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
needs_engine = pytest.mark.skipif(importlib.util.find_spec("alfworld") is None
                                  or not (DATA_DIR / "alfworld" / "json_2.1.1" / "valid_unseen").is_dir(),
                                  reason="alfworld not installed or no ../shared/data/alfworld")
DATA = {"task": "alfworld", "train": "valid_unseen", "val": "valid_unseen", "n_train": 3, "n_val": 2,
        "max_turns": 2, "max_new_tokens_per_turn": 6, "max_episode_tokens": 2048}


def test_rows_are_manifest_ids_in_order():
    from harness.data.alfworld_task import rows
    from harness.envs.alfworld import load_manifest, manifest_path

    ids = [g["id"] for g in load_manifest(manifest_path("valid_unseen"))["games"]]
    train, val = rows(parse(DataSpec, DATA))
    assert [r["prompt"] for r in train] == ids[:3] and [r["prompt"] for r in val] == ids[:2]
    assert {r["answer"] for r in train + val} == {""}
    train, _ = rows(parse(DataSpec, {**DATA, "n_train": None}))
    assert len(train) == 134


def test_bad_data_blocks_are_refused_before_anything_runs():
    from harness.data.alfworld_task import check, rows

    with pytest.raises(ConfigError, match=r"tiers/paper/data: data.val: .*got 'valid'; valid: train, valid_seen, "
                                          r"valid_unseen"):
        check(parse(DataSpec, {**DATA, "val": "valid"}), "tiers/paper/data")
    with pytest.raises(ConfigError, match="unknown template 'react'; valid: verl_agent, compact, observation"):
        check(parse(DataSpec, {**DATA, "template": "react"}))
    with pytest.raises(ConfigError, match="max_turns must be >= 1"):
        check(parse(DataSpec, {**DATA, "max_turns": 0}))
    # a split whose games are not here: the manifest is not committed, and the error says how to write it
    with pytest.raises(ConfigError, match=r"no manifest of the ALFWorld train games .*python -m harness.envs.alfworld "
                                          r"--split train"):
        rows(parse(DataSpec, {**DATA, "train": "train"}))


def test_a_paper_tier_with_an_unknown_split_fails_at_planning(monkeypatch):
    """harness.plan checks an alfworld job's data block when it resolves the job (harness validate, the DAG)."""
    from harness.plan import _check_smoke_task

    t = {"model": {"kind": "hf", "name": "Qwen/Qwen2.5-1.5B-Instruct"}, "data": {**DATA, "train": "training"}}
    with pytest.raises(ConfigError, match=r"card.yaml tiers/paper/data: data.train: .*'training'"):
        _check_smoke_task(t, "card.yaml tiers/paper")
    _check_smoke_task({**t, "data": DATA}, "card.yaml tiers/paper")


def _tiny_model_dir(path: Path) -> Path:
    """A tiny random model with a word-level tokenizer over ALFWorld's words: enough to play (badly) through the
    real path."""
    from conftest import tiny_word_model
    from harness.envs.agent import TAGS, VERL_AGENT

    return tiny_word_model(path, set(VERL_AGENT.words()) | set(TAGS) | {"go", "to", "take", "from", "open", "look",
                                                                         "examine"})


@needs_engine
def test_one_grpo_step_and_the_heldout_evaluation_play_real_alfworld_games(tmp_path):
    from harness.evaluate.heldout import evaluate_heldout_job
    from harness.train.job import run_job

    model_dir = _tiny_model_dir(tmp_path / "base")
    job = {"tier": "test", "method": "grpo", "seed": 1, "hparams": {}, "job_key": "test",
           "model": {"kind": "hf", "name": "local/tiny"}, "data": DATA,
           "eval": {"every_steps": 1, "n_val": 2, "temperature": 1.0, "final_k": 2},
           "trl": {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2, "steps_per_generation": 1,
                   "max_completion_length": 2048, "learning_rate": 1.0e-4, "beta": 0.0, "temperature": 1.0}}
    r = run_job(job, model_dir=model_dir, out_dir=tmp_path / "job", data_dir=DATA_DIR, mlflow_uri=None)
    m = r["metrics"][0]
    assert {"episodes/success_rate", "episodes/model_tokens"} <= set(m)
    assert m["episodes/success_rate"] == 0.0  # a random 1-layer model does not solve ALFWorld in two turns
    assert m["reward"] <= 0.0  # untagged turns are penalised, no win
    held = r["heldout"][-1]
    assert held["greedy_acc"] == held["sampled_acc"] == 0.0
    ev = evaluate_heldout_job(job, tmp_path / "job" / "model", data_dir=DATA_DIR, out=tmp_path / "heldout.json",
                              bootstrap_iters=50)
    assert set(ev["benchmarks"]) == {"alfworld_heldout", "alfworld_heldout_greedy"}
    entry = ev["benchmarks"]["alfworld_heldout"]
    assert "valid_unseen" in json.dumps(entry)
    proto = ev["protocol"]["benchmarks"]["alfworld_heldout"]
    assert proto["problems"]["split"] == proto["extra"]["env"]["split"] == "valid_unseen"
    assert proto["extra"]["env"]["n_games"] == 2 and proto["extra"]["env"]["max_steps"] == 2  # the games played
    assert json.loads((tmp_path / "heldout.json").read_text())["content_hash"] == ev["content_hash"]
