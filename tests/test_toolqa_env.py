"""ARPO's reasoning set (harness/data/arpo_reasoning.py) and the tool-integrated QA environment over it
(harness/envs/toolqa.py): files in the authors' layout written here, bad input, and episodes with real tools (the
sandboxed python, a LocalCorpusSearch over a tiny corpus)."""
from __future__ import annotations

import copy
import hashlib
import json
import time

import pytest

from harness.config import ConfigError
from harness.data import arpo_reasoning as D
from harness.envs.base import TextEnv
from harness.envs.toolqa import (RESULT_FORMAT, STOP_STRINGS, ToolQAEnv, auto_print, extract_content,
                                 first_call_tag)
from harness.envs.tools import Limits, LocalCorpusSearch, PythonTool, Sandbox, SandboxError
from harness.verify import arpo_reward

T = "<think> r </think>"


def record(i: int, question: str, truth, ability: str = "qa", split: str = "train") -> dict:
    """A row as the authors' train_10k.parquet holds it."""
    return {"data_source": "DR_grpo_mix",
            "prompt": [{"content": D.SYSTEM_PROMPT, "role": "system"}, {"content": question, "role": "user"}],
            "ability": ability, "reward_model": {"ground_truth": truth, "style": "rule"},
            "extra_info": {"index": i, "need_tools_kwargs": True, "question": question, "split": split},
            "metadata": None}


RECORDS = [record(0, "What is 6 times 7?", "42", "math"), record(1, "What is the capital of Sablemark?", "Glimmerton"),
           record(2, "Who built the Oslo bridge?", "Ada Finch")]


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def write_parquet(path, recs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(recs), path)
    return path


# -- the loader ------------------------------------------------------------------------------------------------

def test_system_prompt_is_the_authors_bytes():
    assert hashlib.sha256(D.SYSTEM_PROMPT.encode()).hexdigest() == D.SYSTEM_PROMPT_SHA256
    assert D.SYSTEM_PROMPT.count("\x08oxed{") == 2 and "\\boxed" not in D.SYSTEM_PROMPT  # as released
    for tag in ("<think>", "<search>", "<python>", "<result>", "<answer>"):
        assert tag in D.SYSTEM_PROMPT
    assert D.HUB_ID == "dongguanting/ARPO-RL-Reasoning-10K"


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_load_reads_the_authors_layout_in_file_order(tmp_path, kind):
    path = (write_jsonl if kind == "jsonl" else write_parquet)(tmp_path / f"train.{kind}", RECORDS)
    rows = D.load(path)
    assert [r["id"] for r in rows] == ["train-0", "train-1", "train-2"]
    assert rows[0] == {"id": "train-0", "question": "What is 6 times 7?", "answer": "42", "source": "math",
                       "data_source": "DR_grpo_mix", "system": D.SYSTEM_PROMPT, "index": 0}
    assert [r["source"] for r in rows] == ["math", "qa", "qa"]
    assert D.load(path, limit=2) == rows[:2]


def test_load_finds_the_file_under_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "arpo_reasoning").mkdir()
    write_jsonl(tmp_path / "arpo_reasoning" / "train_10k.jsonl", RECORDS)
    assert len(D.load(data_dir=tmp_path)) == 3
    monkeypatch.setenv("RLVR_DATA_DIR", str(tmp_path))
    assert len(D.load()) == 3
    with pytest.raises(ConfigError, match=r"arpo_reasoning/train_10k.parquet.*dongguanting/ARPO-RL-Reasoning-10K"):
        D.load(data_dir=tmp_path / "nowhere")


def _broken(change):
    recs = copy.deepcopy(RECORDS)
    change(recs[1])
    return recs


@pytest.mark.parametrize("change,message", [
    (lambda r: r.pop("reward_model"), r"missing column\(s\) reward_model"),
    (lambda r: r.pop("prompt"), r"missing column\(s\) prompt"),
    (lambda r: r["reward_model"].pop("ground_truth"), r"reward_model.ground_truth is missing"),
    (lambda r: r["reward_model"].update(ground_truth=42), r"ground_truth must be a string, got int"),
    (lambda r: r.update(prompt=[{"role": "system", "content": "x"}]), r"no \(non-empty\) user message"),
    (lambda r: r.update(prompt="What?"), r"prompt must be a list of \{role, content\} messages"),
    (lambda r: r["extra_info"].update(index=0), r"duplicate id 'train-0'.*first at .*:1"),
])
def test_a_bad_jsonl_row_names_the_file_and_line(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", _broken(change))
    with pytest.raises(D.ArpoDataError, match=f"bad.jsonl:2: .*{message}") as e:
        D.load(path)
    assert isinstance(e.value, ConfigError)


def test_bad_files_are_named(tmp_path):
    path = write_parquet(tmp_path / "cols.parquet", [{k: v for k, v in r.items() if k != "reward_model"}
                                                     for r in RECORDS])
    with pytest.raises(D.ArpoDataError, match=r"cols.parquet: missing column\(s\) reward_model; it has"):
        D.load(path)
    path = write_parquet(tmp_path / "row.parquet", _broken(lambda r: r["reward_model"].update(ground_truth=None)))
    with pytest.raises(D.ArpoDataError, match=r"row.parquet:row 1: reward_model.ground_truth is missing"):
        D.load(path)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(D.ArpoDataError, match="junk.parquet: not a readable parquet file"):
        D.load(tmp_path / "junk.parquet")
    (tmp_path / "bad.jsonl").write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(D.ArpoDataError, match=r"bad.jsonl:2: not valid JSON"):
        D.load(tmp_path / "bad.jsonl")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ConfigError, match=r"unknown file type '.csv'"):
        D.load(tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="no ARPO reasoning file"):
        D.load(tmp_path / "missing.parquet")


# -- the environment -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_tool() -> PythonTool:
    try:
        return PythonTool(Sandbox(Limits(wall_s=1.0, memory_bytes=512 << 20, output_bytes=4096)))
    except SandboxError as e:
        pytest.skip(f"this machine cannot sandbox: {e}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "sablemark.txt").write_text("Sablemark\nGlimmerton is the capital of Sablemark, a river town.\n")
    (root / "bridge.txt").write_text("Oslo bridge\nThe Oslo bridge was built by Ada Finch in 1901.\n")
    return LocalCorpusSearch(root)


@pytest.fixture()
def env(python_tool, corpus, tmp_path):
    rows = D.load(write_jsonl(tmp_path / "t.jsonl", RECORDS))
    e = ToolQAEnv(rows, search=corpus, python=python_tool, max_tool_calls=5)
    yield e
    e.close()


def answer(x: str) -> str:
    return f"{T}<answer> The final answer is \\[ \\boxed{{{x}}} \\] </answer>"


def test_reset_serves_the_question(env):
    assert isinstance(env, TextEnv)
    assert env.game_ids() == ["train-0", "train-1", "train-2"]
    step = env.reset("train-1")
    assert (step.observation, step.admissible, step.steps, step.done) == ("What is the capital of Sablemark?", (), 0,
                                                                          False)
    assert (env.task, env.task_type) == ("What is the capital of Sablemark?", "qa")
    with pytest.raises(KeyError, match="train-0"):
        env.reset("train-9")


def test_a_python_call_is_answered_and_inlined(env):
    env.reset("train-0")
    turn = f"{T}<python>\nx = 6 * 7\nx\n</python>"  # the authors' rewrite prints a last bare expression
    step = env.step(turn)
    assert (step.observation, step.valid, step.done, step.steps) == ("42", True, False, 1)
    assert step.info["tool"] == "python" and step.info["error"] is None
    assert env.trajectory == turn + RESULT_FORMAT.format(output="42")
    step = env.step(f"{T}<python>x = 1</python>")
    assert step.observation == "Tool(python) returned empty output."  # the authors' text for no output
    step = env.step(f"{T}<python>import sys; sys.stdout.write('  ')</python>")
    assert step.observation == "2"  # as the authors run it: print(sys.stdout.write('  ')), stripped
    step = env.step(f"{T}<python>1/0</python>")
    assert step.valid and "ZeroDivisionError" in step.observation and step.info["error"] == "exit_code"
    final = env.step(answer("42"))
    assert final.done and final.won and final.steps == 5
    assert final.info["reward"] == 1.0 == arpo_reward.score(env.trajectory, "42")


def test_a_search_call_is_answered_from_the_corpus_and_both_tools_earn_the_bonus(env):
    env.reset("train-1")
    step = env.step(f'{T}<search> "capital of Sablemark" </search>')
    assert step.info["tool"] == "search" and step.observation.startswith("Page 1: ")
    assert "Glimmerton is the capital of Sablemark" in step.observation.split("\n")[0]
    env.step(f"{T}<python>print(len('Glimmerton'))</python>")
    final = env.step(answer("Glimmerton"))
    assert final.done and final.won and final.info["reward"] == pytest.approx(1.1)  # F1 1 + the multi-tool bonus
    assert final.info["f1"] == 1.0 and final.info["format_ok"] and final.info["calls"] == 2
    with pytest.raises(RuntimeError, match="reset"):
        env.step("more")


def test_search_without_a_backend_is_an_error_text(python_tool):
    env = ToolQAEnv([{"id": "q", "question": "?", "answer": "x", "source": "qa"}], python=python_tool)
    env.reset("q")
    step = env.step(f"{T}<search> anything </search>")
    assert not step.done and step.info["error"] == "backend_error" and "no search backend" in step.observation
    assert env.protocol()["search"] is None


def test_an_infinite_loop_is_stopped_by_the_timeout_and_reported(env):
    env.reset("train-0")
    t = time.monotonic()
    step = env.step(f"{T}<python>\nwhile True:\n    pass\n</python>")
    assert time.monotonic() - t < 8
    assert not step.done and step.info["error"] == "timeout" and "time limit of 1 s exceeded" in step.observation
    assert env.step(answer("41")).info["reward"] == 0.0  # the episode goes on; a wrong answer in good format


def test_a_wrong_or_malformed_final_answer_is_scored(env):
    env.reset("train-2")
    step = env.step(answer("Ada"))
    assert step.done and not step.won and step.info["reward"] == pytest.approx(2 / 3) and step.info["end"] == "answer"
    env.reset("train-2")
    step = env.step("Ada Finch")  # no tags: the authors' format penalty
    assert step.done and step.info["reward"] == -1.0 and not step.info["format_ok"]


def test_the_call_past_the_limit_ends_the_episode(python_tool, corpus):
    env = ToolQAEnv([{"id": "q", "question": "?", "answer": "3", "source": "math"}], search=corpus,
                    python=python_tool, max_tool_calls=2)
    env.reset("q")
    for i in range(2):
        assert not env.step(f"{T}<python>print({i})</python>").done
    step = env.step(f"{T}<python>print(2)</python>")
    assert step.done and not step.won and step.info["end"] == "call_limit" and step.info["calls"] == 2
    assert step.info["reward"] == -1.0  # scored as is: no answer, a call without result
    assert env.trajectory.endswith("<python>print(2)</python>")


def test_an_empty_call_ends_the_episode_and_a_stray_closing_tag_is_answered(env):
    env.reset("train-0")
    step = env.step(f"{T}<python>  </python>")
    assert step.done and step.info["end"] == "empty_call" and step.info["reward"] == -1.0
    env.reset("train-0")
    step = env.step(f"{T} print(1) </python>")
    assert not step.done and not step.valid and "</python> without <python>" in step.observation


def test_turn_parsing_follows_the_authors():
    assert first_call_tag("a </search> b </python>") == "search"
    assert first_call_tag("<python>x</python> then </search>") == "python"
    assert first_call_tag("<answer>x</answer>") is None
    assert extract_content("<python>a</python> <result>1</result> <python> b </python>", "python") == "b"
    assert extract_content("no call </python>", "python") == ""
    assert auto_print("x = 2\nx * 3") == "x = 2\nprint(x * 3)"
    assert auto_print("print(1)") == "print(1)" and auto_print("def f(:") == "def f(:"
    assert STOP_STRINGS == ("</python>", "</search>")


def test_protocol_fixes_rows_tools_and_reward(env, python_tool, corpus):
    p = env.protocol()
    assert p["n_rows"] == 3
    assert p["rows_sha256"] == D.rows_digest(D.rows_from_records((str(i), r) for i, r in enumerate(RECORDS)))
    assert p["max_tool_calls"] == 5 and p["python"]["limits"]["wall_s"] == 1.0 and p["python"]["auto_print"]
    assert p["search"]["backend"] == "LocalCorpusSearch" and p["search"]["corpus_docs"] == 2
    assert p["reward"]["commit"].startswith("ff66660") and p["reward"]["name"] == "arpo_deep_research"
    json.dumps(p)
    fewer = ToolQAEnv([{"id": "q", "question": "?", "answer": "x", "source": "qa"}], search=corpus,
                      python=python_tool)
    assert fewer.protocol()["rows_sha256"] != p["rows_sha256"] and fewer.max_tool_calls == 3  # ARPO's call_limit
    with pytest.raises(ConfigError, match="max_tool_calls"):
        ToolQAEnv([{"id": "q", "question": "?", "answer": "x", "source": "qa"}], python=python_tool,
                  max_tool_calls=-1)
    with pytest.raises(ConfigError, match="missing answer"):
        ToolQAEnv([{"id": "q", "question": "?", "source": "qa"}], python=python_tool)
