"""The real-model agent task ``arpo_tools`` (harness.data.arpo_task): what the ARPO and AEPO (agentic) paper tiers
train on.

- Rows are question ids of the named sets (files in the authors' layout under ``<data_dir>/arpo_reasoning/``), cut
  to n_train / n_val; the data block is checked when a job is planned (a set name, a tool-call template, the search
  backend spec), and a missing set names where it was looked for.
- End to end with a tiny untrained model (the path, not the policy): one GRPO step through
  ``harness.train.job.run_job`` plays one tool-integrated episode per completion (the environment scores each with
  the authors' reward: an untrained model writes no well-formed answer, so every episode gets the format's -1), and
  ``evaluate_heldout_job`` writes an eval_result whose protocol covers the questions played and the turn format.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.config.tiers import DataSpec, parse
from tests.test_toolqa_env import RECORDS, record, write_jsonl

DATA = {"task": "arpo_tools", "train": "train_small", "val": "valid_small", "n_train": 3, "n_val": 2,
        "template": "arpo_tools", "max_turns": 2, "max_new_tokens_per_turn": 6, "max_episode_tokens": 1024,
        "invalid_penalty": 0.0}


@pytest.fixture()
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "arpo_reasoning").mkdir(parents=True)
    write_jsonl(root / "arpo_reasoning" / "train_small.jsonl",
                RECORDS + [record(3, "What is 2 plus 2?", "4", "math")])
    write_jsonl(root / "arpo_reasoning" / "valid_small.jsonl",
                [record(0, "What is 1 plus 1?", "2", "math", "test"), record(1, "Name the moon.", "Luna", "qa", "test")])
    (root / "corpus").mkdir()
    (root / "corpus" / "sablemark.txt").write_text("Sablemark\nThe capital of Sablemark is Glimmerton.\n")
    return root


def test_rows_are_question_ids_in_file_order(data_dir):
    from harness.data.arpo_task import rows

    train, val = rows(parse(DataSpec, DATA), data_dir)
    assert [r["prompt"] for r in train] == ["train-0", "train-1", "train-2"]  # the rows' own split and index
    assert [r["answer"] for r in val] == ["2", "Luna"]
    train, _ = rows(parse(DataSpec, {**DATA, "n_train": None}), data_dir)
    assert len(train) == 4


def test_bad_data_blocks_are_refused_before_anything_runs(data_dir):
    from harness.data.arpo_task import check, rows, search_backend

    with pytest.raises(ConfigError, match=r"tiers/paper/data: data.val: the arpo_tools task needs a set name"):
        check(parse(DataSpec, {**DATA, "val": None}), "tiers/paper/data")
    with pytest.raises(ConfigError, match="'verl_agent' reads <action> tags"):
        check(parse(DataSpec, {**DATA, "template": "verl_agent"}))
    with pytest.raises(ConfigError, match=r"data.max_episode_tokens: template 'arpo_tools' continues a turn cut"):
        check(parse(DataSpec, {**DATA, "max_episode_tokens": None}))  # a segment runs to the budget: it needs one
    with pytest.raises(ConfigError, match=r"data.search: 'bing'; valid: null .*local:<folder under data_dir>"):
        check(parse(DataSpec, {**DATA, "search": "bing"}))
    with pytest.raises(ConfigError, match=r"no ARPO reasoning set 'train_10k': looked for .*train_10k.parquet"):
        rows(parse(DataSpec, {**DATA, "train": "train_10k"}), data_dir)
    with pytest.raises(ConfigError, match="no folder"):
        search_backend("local:nowhere", data_dir)
    assert search_backend("local:corpus", data_dir).search("capital Sablemark", 1)[0].title == "Sablemark"
    # and ALFWorld refuses the tool-call template
    from harness.data.alfworld_task import check as alfworld_check

    with pytest.raises(ConfigError, match="'arpo_tools' is a tool-call format"):
        alfworld_check(parse(DataSpec, {"task": "alfworld", "train": "valid_unseen", "val": "valid_unseen",
                                        "template": "arpo_tools"}))


def test_a_paper_tier_with_a_bad_block_fails_at_planning():
    from harness.plan import _check_smoke_task

    t = {"model": {"kind": "hf", "name": "Qwen/Qwen2.5-7B-Instruct"}, "data": {**DATA, "template": "compact"}}
    with pytest.raises(ConfigError, match=r"card.yaml tiers/paper/data: data.template: 'compact' reads <action>"):
        _check_smoke_task(t, "card.yaml tiers/paper")
    _check_smoke_task({**t, "data": DATA}, "card.yaml tiers/paper")


def _tiny_model_dir(path: Path) -> Path:
    """A tiny random model with a word-level tokenizer over the tool tags and a few words."""
    from conftest import tiny_word_model

    return tiny_word_model(path, {"<python>", "</python>", "<search>", "</search>", "<result>", "</result>",
                                  "<answer>", "</answer>", "<think>", "</think>", "print", "the", "capital", "is"},
                           max_positions=8192)


def test_one_grpo_step_and_the_heldout_evaluation_play_tool_episodes(tmp_path, data_dir):
    from harness.evaluate.heldout import evaluate_heldout_job
    from harness.train.job import run_job

    model_dir = _tiny_model_dir(tmp_path / "base")
    data = {**DATA, "search": "local:corpus"}
    job = {"tier": "test", "method": "grpo", "seed": 1, "hparams": {}, "job_key": "test",
           "model": {"kind": "hf", "name": "local/tiny"}, "data": data,
           "eval": {"every_steps": 1, "n_val": 2, "temperature": 1.0, "final_k": 2},
           "trl": {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2, "steps_per_generation": 1,
                   "max_completion_length": 4096, "learning_rate": 1.0e-4, "beta": 0.0, "temperature": 1.0}}
    r = run_job(job, model_dir=model_dir, out_dir=tmp_path / "job", data_dir=data_dir, mlflow_uri=None)
    m = r["metrics"][0]
    assert {"episodes/success_rate", "episodes/model_tokens"} <= set(m)
    assert m["episodes/success_rate"] == 0.0 and m["reward"] == -1.0  # no well-formed answer: the format's -1
    ev = evaluate_heldout_job(job, tmp_path / "job" / "model", data_dir=data_dir, out=tmp_path / "heldout.json",
                              bootstrap_iters=50)
    name = next(b for b in ev["benchmarks"] if not b.endswith("_greedy"))
    assert "valid_small" in json.dumps(ev["benchmarks"][name])
    extra = ev["protocol"]["benchmarks"][name]["extra"]
    assert extra["env"]["env"] == "toolqa" and extra["env"]["n_rows"] == 2  # the questions played
    assert extra["env"]["search"]["backend"] and extra["parser"] == "whole_turn" and extra["inline"] is True
    assert extra["stops"] == ["</python>", "</search>"] and extra["reward"].startswith("ARPO deep_research")
    assert ev["benchmarks"][name]["mean_env_reward"] == -1.0  # the environment's scores, beside the success rate
    assert json.loads((tmp_path / "heldout.json").read_text())["content_hash"] == ev["content_hash"]
