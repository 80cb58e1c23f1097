"""The GAIA agent loop end to end on the project's invented fixtures (tests/fixtures/gaia: NOT GAIA content):
loader -> tools -> scorer with a scripted policy (golden verdicts, metrics, counts), a causal LM policy (a tiny
random model: seeding, budgets, context limit, environment mask), bad input (a malformed record names file and
line; a hanging or flooding tool is a counted failed call within its limit; an unknown tool, a malformed call, a
call past the budget and a turn without action are counted, penalised steps), and the Snakemake rule."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.data.gaia import load_split
from harness.envs import gaia_agent as A
from harness.envs.tools import FileReader, Guarded, Limits, PythonTool, Sandbox, SandboxError, Toolbox, ToolResult
from harness.evaluate import gaia as G
from harness.results import content_hash

FIX = Path(__file__).parent / "fixtures" / "gaia"
RECS = {r.task_id[:8]: r for r in load_split(FIX, "validation")}
SUM = RECS["0b5e3c1a"]  # truth 55, no attachment
#: the fixture script's verdicts per task (attempt 0, attempt 1): tests/fixtures/gaia/agent_script.json "expect"
GOLDEN = {"0b5e3c1a": [True, False], "1c6f4d2b": [True, True], "2d7a5e3c": [False, True], "3e8b6f4d": [False, False],
          "4f9c7a5e": [True, False]}


def call(name: str, **args) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


class Echo:
    name, description = "echo", "returns its argument"

    def __call__(self, argument: str) -> ToolResult:
        return ToolResult(f"echo: {argument}")


class Turns:
    """A policy replaying fixed turns (the same for every task and attempt)."""
    name = "turns"

    def __init__(self, *turns: str):
        self.turns = turns

    def __call__(self, messages, *, task_id, attempt, step):
        return self.turns[step] if step < len(self.turns) else self.turns[-1]


def _python(wall_s: float) -> PythonTool:
    try:
        return PythonTool(Sandbox(Limits(wall_s=wall_s, memory_bytes=512 << 20)))
    except SandboxError as e:
        pytest.skip(f"this machine cannot sandbox: {e}")


@pytest.fixture(scope="module")
def python_tool() -> PythonTool:
    """The smoke preset's wall limit (the fixture script's flood must reach the output limit first)."""
    return _python(G.PRESETS["smoke"]["tool_wall_s"])


@pytest.fixture(scope="module")
def fast_python() -> PythonTool:
    return _python(1.0)


# --- parsing ------------------------------------------------------------------------------------------------------

def test_parse_turn_reads_calls_and_names_what_is_malformed():
    calls, outside = A.parse_turn("thinking\n" + call("python", code="print('FINAL ANSWER: 3')") + "\nmore")
    assert calls == [A.Call("python", "print('FINAL ANSWER: 3')")] and "FINAL ANSWER" not in outside
    assert A.parse_turn('<tool_call>{"name": "web_search", "arguments": "glimmer"}</tool_call>')[0] == \
        [A.Call("web_search", "glimmer")]
    bad = [A.parse_turn(t)[0][0].problem for t in (
        "<tool_call>{not json}</tool_call>", '<tool_call>{"arguments": {"code": "1"}}</tool_call>',
        '<tool_call>{"name": "python", "arguments": {"code": "1", "x": "2"}}</tool_call>',
        '<tool_call>{"name": "python", "arguments": {"code": ')]
    assert "not JSON" in bad[0] and '"name"' in bad[1] and '{"code": "<text>"}' in bad[2] and "never closed" in bad[3]
    assert A.parse_turn("no call here. FINAL ANSWER: 4") == ([], "no call here. FINAL ANSWER: 4")


# --- the loop with the fixture script: loader -> tools -> scorer --------------------------------------------------

@pytest.fixture(scope="module")
def scripted(tmp_path_factory, python_tool):
    out = tmp_path_factory.mktemp("gaia")
    settings = G.resolve_settings("smoke")
    recs = G.load_records("fixtures")
    policy = A.ScriptedPolicy.from_file(G.FIXTURE_SCRIPT)
    corpus = G.corpus_dir("fixtures", ".")
    r = G.evaluate_gaia(recs, policy, settings, corpus=corpus, python=python_tool, out=out / "result.json",
                        transcripts=out / "t.jsonl", source={"method": "scripted"},
                        inputs=G.input_hashes(recs, corpus=corpus, script=G.FIXTURE_SCRIPT))
    return r, out


def test_scripted_run_gives_the_golden_verdicts_and_named_metrics(scripted):
    r, _ = scripted
    b = r["benchmarks"]["gaia"]
    assert {p["id"][:8]: [a["correct"] for a in p["attempts"]] for p in b["per_problem"]} == GOLDEN
    m = {k: v["value"] for k, v in b["metrics"].items()}
    assert m == pytest.approx({"pass@1": 0.5, "mean_of_k": 0.5, "best_of_k": 0.8})
    assert b["by_level"] == {"1": {"tasks": 2, "k": 2, "mean_of_k": 0.75, "best_of_k": 1.0},
                             "2": {"tasks": 2, "k": 2, "mean_of_k": 0.25, "best_of_k": 0.5},
                             "3": {"tasks": 1, "k": 2, "mean_of_k": 0.5, "best_of_k": 1.0}}
    assert r["tool_stats"] == {"tool_calls": 9, "failed_tool_calls": 1, "invalid": 6, "format_errors": 4,
                               "mean_steps": 2.3, "stop_reasons": {"final_answer": 9, "max_steps": 1},
                               "errors": {"malformed_call": 1, "output_limit": 1, "unknown_tool": 1}}
    rewards = {p["id"][:8]: [a["reward"] for a in p["attempts"]] for p in b["per_problem"]}
    assert rewards == {"0b5e3c1a": [1.0, 0.0], "1c6f4d2b": [1.0, 0.9], "2d7a5e3c": [0.0, 0.9],
                       "3e8b6f4d": [0.0, -0.4], "4f9c7a5e": [1.0, 0.0]}
    first = b["per_problem"][0]["attempts"][1]
    assert first["unexecuted_calls"] == 1 and first["stop_reason"] == "final_answer"  # a call in the answer turn


def test_result_has_provenance_and_no_dataset_text(scripted):
    r, out = scripted
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["content_hash"] == content_hash(on_disk)
    assert on_disk["config_hash"] == G.config_hash(on_disk["settings"]) and on_disk["settings"]["preset"] == "smoke"
    assert set(on_disk["inputs"]) == {"metadata", "attachments", "records_sha256", "corpus", "script"}
    assert len(on_disk["protocol_hash"]) == 64 and on_disk["protocol"]["benchmarks"]["gaia"]["k"] == 2
    text = (out / "result.json").read_text()
    for rec in RECS.values():  # GAIA's terms: no question, truth or answer in a result file
        assert rec.question[:40] not in text
    assert "Oslo, Lima" not in text and "Oslo, Hanoi" not in text  # the truth and a model answer of one task
    attempts = [a for p in on_disk["benchmarks"]["gaia"]["per_problem"] for a in p["attempts"]]
    assert attempts and not any("answer" in a for a in attempts)


def test_tool_results_are_fed_back_to_the_policy(scripted):
    _, out = scripted
    eps = {(e["task_id"][:8], e["attempt"]): e for e in map(json.loads, (out / "t.jsonl").read_text().splitlines())}
    msgs = eps[("0b5e3c1a", 0)]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[0]["content"].startswith("You are a general AI assistant") and "- python (code):" in msgs[0]["content"]
    assert msgs[3]["content"] == "<tool_response>\n55\n</tool_response>"
    assert "mango | 6.75" in eps[("1c6f4d2b", 0)]["messages"][3]["content"]
    assert "local:glimmer_bridge.txt" in eps[("3e8b6f4d", 0)]["messages"][3]["content"]
    assert "ERROR (unknown_tool): no tool 'spreadsheet'" in eps[("1c6f4d2b", 1)]["messages"][3]["content"]
    nudges = [m for m in eps[("3e8b6f4d", 1)]["messages"] if m["content"] == A.NUDGE]
    assert len(nudges) == 3  # 4 turns without action; no reply after the last one


def test_protocol_hash_is_stable_and_follows_the_settings(python_tool):
    recs = [SUM]
    policy = A.ScriptedPolicy({SUM.task_id: [["FINAL ANSWER: 55"]]})
    runs = [G.evaluate_gaia(recs, policy, G.resolve_settings("smoke", over), python=python_tool)
            for over in ({}, {}, {"max_steps": "6"})]
    assert runs[0]["protocol_hash"] == runs[1]["protocol_hash"] != runs[2]["protocol_hash"]
    assert runs[0]["config_hash"] == runs[1]["config_hash"] != runs[2]["config_hash"]


def test_completion_spans_mask_the_environment_text():
    chatml = lambda ms, gen: "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in ms) + (  # noqa
        "<|im_start|>assistant\n" if gen else "")
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": call("echo", input="x")},
            {"role": "user", "content": "<tool_response>\necho: x\n</tool_response>"},
            {"role": "assistant", "content": "FINAL ANSWER: x"}]
    prompt, spans = A.completion_spans(chatml, msgs)
    assert prompt == chatml(msgs[:2], True) and prompt + "".join(t for t, _ in spans) == chatml(msgs, False)
    assert [p for _, p in spans] == [True, False, True]
    assert spans[1][0] == "<|im_start|>user\n<tool_response>\necho: x\n</tool_response><|im_end|>\n" \
                          "<|im_start|>assistant\n"
    drop_past = lambda ms, gen: chatml([m for m in ms[:-1] if m["role"] != "assistant"] + ms[-1:], gen)  # noqa
    with pytest.raises(ValueError, match="re-renders earlier turns"):
        A.completion_spans(drop_past, msgs)


# --- budgets and bad tool behaviour --------------------------------------------------------------------------------

def test_the_call_budget_and_step_budget_end_a_looping_agent():
    box = Toolbox([Echo()])
    ep = A.run_episode(SUM, Turns(call("echo", input="again")), box, A.Budget(max_steps=5, max_tool_calls=2))
    assert ep.stop_reason == "max_steps" and ep.steps == 5 and ep.answer is None and not ep.correct
    assert ep.tool_calls == 2 and box.calls == {"echo": 2}
    assert ep.errors == {"call_budget": 2} and ep.invalid == 2 and ep.unexecuted_calls == 1  # the 5th turn's call
    assert ep.reward == pytest.approx(-0.2)
    assert "budget of 2 tool calls is spent" in ep.messages[-2]["content"]


def test_unknown_tools_malformed_calls_and_empty_turns_are_counted_and_penalised():
    turns = Turns(call("calculator", expression="54+1"), '<tool_call>{"name": "echo"}</tool_call>', "hmm",
                  call("echo", input="55") + "\n", "FINAL ANSWER: 55")
    ep = A.run_episode(SUM, turns, Toolbox([Echo()]), A.Budget(max_steps=6, invalid_penalty=0.25))
    assert ep.correct and ep.stop_reason == "final_answer" and ep.steps == 5
    assert ep.errors == {"unknown_tool": 1, "malformed_call": 1} and ep.format_errors == 1 and ep.invalid == 3
    assert ep.failed_tool_calls == 0 and ep.tool_calls == 2  # the unknown tool's call was made; the malformed not
    assert ep.reward == pytest.approx(1.0 - 3 * 0.25)
    assert "valid: echo" in ep.messages[3]["content"] and '{"input": "<text>"}' in ep.messages[5]["content"]
    assert ep.messages[7]["content"] == A.NUDGE


def test_a_hanging_tool_is_abandoned_at_its_timeout_and_counted_as_failed():
    release = threading.Event()

    class Hang:
        name, description = "echo", "never answers"

        def __call__(self, argument: str) -> ToolResult:
            release.wait(60)
            return ToolResult("late")

    t = time.monotonic()
    turns = Turns(call("echo", input="x"), "FINAL ANSWER: 55")
    ep = A.run_episode(SUM, turns, Toolbox([Guarded(Hang(), timeout_s=0.5)]), A.Budget(max_steps=3))
    release.set()
    assert time.monotonic() - t < 5
    assert ep.errors == {"timeout": 1} and ep.failed_tool_calls == 1 and ep.invalid == 0
    assert ep.correct and ep.reward == 1.0 and "did not answer within 0.5 s" in ep.messages[3]["content"]


def test_a_flooding_or_crashing_tool_is_cut_and_counted():
    class Big:
        name, description = "echo", "floods"

        def __call__(self, argument: str) -> ToolResult:
            return ToolResult("x" * int(argument))

    guard = Guarded(Big(), max_chars=1000)
    long, flood = guard("3000"), guard("10000000")
    assert long.ok and len(long.text) < 1100 and "first 1000 of 3000 characters" in long.text
    assert flood.error == "output_limit" and len(flood.text) < 1200
    crash = Guarded(type("C", (), {"name": "c", "description": "", "__call__": lambda s, a: 1 / 0})())("x")
    assert crash.error == "tool_crashed" and "ZeroDivisionError" in crash.text
    ep = A.run_episode(SUM, Turns(call("echo", input="10000000"), "FINAL ANSWER: 55"), Toolbox([guard]))
    assert ep.errors == {"output_limit": 1} and ep.failed_tool_calls == 1 and len(ep.messages[3]["content"]) < 1300


def test_sandboxed_python_that_hangs_or_floods_is_a_failed_call(fast_python):
    box = A.gaia_toolbox(SUM, python=fast_python, max_chars=2000)
    turns = Turns(call("python", code="while True:\n    pass"), call("python", code="print('y' * 50_000_000)"),
                  call("python", code="print(sum(range(11)))"), "FINAL ANSWER: 55")
    t = time.monotonic()
    ep = A.run_episode(SUM, turns, box, A.Budget(max_steps=5))
    assert time.monotonic() - t < 20
    assert ep.errors == {"timeout": 1, "output_limit": 1} and ep.failed_tool_calls == 2 and ep.correct
    assert "time limit of 1 s exceeded" in ep.messages[3]["content"]
    assert ep.messages[7]["content"] == "<tool_response>\n55\n</tool_response>"


# --- bad input ------------------------------------------------------------------------------------------------------

def _data_dir(tmp_path: Path, lines: list[str]) -> Path:
    folder = tmp_path / "gaia" / "2023" / "validation"
    folder.mkdir(parents=True)
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def _cli(tmp_path, *args) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = G.main(["--out", str(tmp_path / "r.json"), *args])
    return rc, err.getvalue()


def test_a_malformed_record_names_the_file_and_line(tmp_path):
    good = (FIX / "2023" / "validation" / "metadata.jsonl").read_text().splitlines()[0]
    d = _data_dir(tmp_path, [good, '{"task_id": "t2", "Question": "q?", "Level": 1'])
    rc, err = _cli(tmp_path, "--data", "data_dir", "--data-dir", str(d), "--policy", "scripted")
    assert rc == 2 and f"{d / 'gaia/2023/validation/metadata.jsonl'}:2: not valid JSON" in err
    bad_level = json.dumps({**json.loads(good), "task_id": "t3", "Level": 7})
    d2 = _data_dir(tmp_path / "b", [good, bad_level])
    rc, err = _cli(tmp_path, "--data", "data_dir", "--data-dir", str(d2), "--policy", "scripted")
    assert rc == 2 and "metadata.jsonl:2: Level is 7; valid: 1, 2, 3" in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--policy", "scripted", "--preset", "huge"], "unknown GAIA preset 'huge'; valid: smoke, full"),
    (["--policy", "scripted", "--set", "max_step=3"], "unknown GAIA setting 'max_step'; valid: k, max_steps"),
    (["--policy", "scripted", "--set", "k=two"], "GAIA setting k='two' is not a int"),
    (["--policy", "scripted", "--split", "test"], "GAIA split 'test' has no truths to score; valid: validation"),
    (["--policy", "lm"], "--policy lm needs --model-dir"),
    (["--policy", "scripted", "--data", "data_dir", "--data-dir", "/nonexistent"], "no GAIA split folder"),
])
def test_bad_settings_name_the_valid_choices(tmp_path, args, message):
    rc, err = _cli(tmp_path, *args)
    assert rc == 2 and message in err


def test_a_bad_policy_script_names_the_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"tasks": {"a": "not a list"}}')
    with pytest.raises(ConfigError, match=f"{p}: task a: expected a non-empty list"):
        A.ScriptedPolicy.from_file(p)
    p.write_text("{\n oops")
    with pytest.raises(ConfigError, match=f"{p}:2: not JSON"):
        A.ScriptedPolicy.from_file(p)
    with pytest.raises(ConfigError, match="the policy script has no task"):
        A.run_episode(SUM, A.ScriptedPolicy({"other": [["x"]]}), Toolbox([Echo()]))


# --- a causal LM as the policy --------------------------------------------------------------------------------------

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.data.wordlevel import word_level_tokenizer

    special = ["<pad>", "<bos>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = special + [chr(i) for i in range(32, 127)] + ["\n"]
    tok = word_level_tokenizer(vocab, special + ["\n"])
    tok.chat_template = CHATML
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
                                         eos_token_id=2))
    return model, tok


def test_an_lm_policy_runs_the_loop_reproducibly_within_its_budgets(tiny_lm):
    from harness.evaluate.gaia_policy import LMPolicy, rollout_tokens

    model, tok = tiny_lm

    def episode(seed, **kw):
        policy = LMPolicy(model, tok, temperature=1.0, max_new_tokens=12, max_context_tokens=4096, seed=seed, **kw)
        return policy, A.run_episode(SUM, policy, Toolbox([FileReader([])]), A.Budget(max_steps=3))

    policy, ep = episode(1)
    assert ep.stop_reason == "max_steps" and ep.steps == 3 and not ep.correct and ep.format_errors == 3
    assert policy.turns == 3 and all(len(ids) <= 12 for ids in policy.turn_ids.values())
    assert policy.generated_tokens == sum(len(ids) for ids in policy.turn_ids.values())
    assert episode(1)[1].messages == ep.messages and episode(2)[1].messages != ep.messages
    prompt, ids, mask = rollout_tokens(tok, policy.render, ep.messages)
    assert tok.decode(prompt) == policy.render(ep.messages[:2], True)
    own = tok.decode([i for i, m in zip(ids, mask) if m])
    assert own == "".join(m["content"] + "<|im_end|>\n" for m in ep.messages if m["role"] == "assistant")
    assert A.NUDGE in tok.decode([i for i, m in zip(ids, mask) if not m])
    small = LMPolicy(model, tok, max_new_tokens=12, max_context_tokens=100)
    ep = A.run_episode(SUM, small, Toolbox([FileReader([])]))
    assert ep.stop_reason == "context_limit" and ep.steps == 0 and small.turns == 0


# --- Snakemake ------------------------------------------------------------------------------------------------------

def test_snakemake_plans_the_fixtures_and_runs_the_scripted_loop(tmp_path):
    from conftest import make_project_copy

    proj = make_project_copy(tmp_path, tiny=False)
    shutil.copytree(FIX, proj / "tests" / "fixtures" / "gaia")
    env = {**os.environ, "RLVR_HARNESS_ROOT": str(proj), "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run(["snakemake", "--cores", "1", *a], cwd=proj, env=env, capture_output=True,  # noqa
                                    text=True, timeout=600)
    dry = run("-n", "gaia_fixtures")
    assert dry.returncode == 0, dry.stderr[-2000:]
    for rule, n in (("gaia_eval", 2), ("gaia_prepare_model", 1), ("gaia_model_spec", 1), ("gaia_fixtures", 1)):
        assert any(line.split() == [rule, str(n)] for line in dry.stdout.splitlines()), dry.stdout[-2000:]
    target = "work/gaia/fixtures/validation/scripted-smoke/result.json"
    real = run(target)
    assert real.returncode == 0, real.stderr[-3000:]
    r = json.loads((proj / target).read_text())
    b = r["benchmarks"]["gaia"]
    assert {p["id"][:8]: [a["correct"] for a in p["attempts"]] for p in b["per_problem"]} == GOLDEN
    assert b["metrics"]["best_of_k"]["value"] == 0.8 and r["source"] == {"method": "scripted"}
    assert (proj / target).with_name("transcripts.jsonl").is_file() and r["content_hash"] == content_hash(r)
