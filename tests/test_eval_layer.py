"""Evaluation layer (issue 3): metrics, protocol hashes, data digests, lm-eval tasks, evaluate_checkpoint, lm_eval CLI.

The end-to-end tests run a tiny random Llama (hidden 32, one layer, the smoke tokenizer: digits, '+', '=' and
' ' only -- everything else is <unk>) through lm-eval on CPU. They check plumbing, not accuracy.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.evaluate import metrics as M
from harness.evaluate.record import CORE_FIELDS, ENTRY_FIELDS
from harness.config import ConfigError
from harness.results.protocol import ProtocolMismatch, assert_same_protocol, diff_fields, protocol_fields, protocol_hash

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
TASKS_DIR = ROOT / "harness" / "evaluate" / "tasks"
needs_data = pytest.mark.skipif(not (DATA_DIR / "math500" / "test.jsonl").is_file(), reason="no ../shared/data")


# ---------------------------------------------------------------------------
# Metrics (hand-computed values)
# ---------------------------------------------------------------------------

def test_pass_at_k_unbiased_estimator_golden():
    assert M.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)          # 1 - C(3,2)/C(5,2)
    assert M.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)       # 1 - C(7,5)/C(10,5)
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)                # pass@1 = c/n
    assert M.pass_at_k(4, 0, 2) == 0.0
    assert M.pass_at_k(4, 3, 2) == 1.0                                # n - c < k
    assert M.pass_at_k(4, 4, 4) == 1.0
    with pytest.raises(ValueError):
        M.pass_at_k(4, 5, 2)
    with pytest.raises(ValueError):
        M.pass_at_k(4, 1, 5)


def test_avg_pass_maj_greedy_golden():
    correct = [[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert M.avg_at_k(correct) == pytest.approx(4 / 12)
    # pass@1 per problem = c/n: (3/4 + 0 + 1/4) / 3; pass@2: (1 + 0 + (1 - C(3,2)/C(4,2))) / 3
    assert M.pass_at_k_per_problem(correct, 1).mean() == pytest.approx(1 / 3)
    assert M.pass_at_k_per_problem(correct, 2).mean() == pytest.approx((1 + 0 + 0.5) / 3)
    assert M.pass_at_k_per_problem(correct, 4).tolist() == [1.0, 0.0, 1.0]
    answers = [["5", "7", "5", "5"],        # majority 5 (correct)
               ["7", "7", None, "8"],       # majority 7 (wrong)
               ["3", "9", "3", "9"]]        # tie 3/9 -> 3 (first seen), wrong
    assert M.majority_vote(answers, correct).tolist() == [True, False, False]
    assert M.maj_at_k(answers, correct) == pytest.approx(1 / 3)
    # ties go to the earliest first occurrence, whatever the hash order
    assert M.majority_vote([["b", "a"]], [[1, 0]]).tolist() == [True]
    assert M.majority_vote([["a", "b"]], [[1, 0]]).tolist() == [True]
    assert M.majority_vote([["a", "b"]], [[0, 1]]).tolist() == [False]
    assert M.majority_vote([[None, None]], [[0, 0]]).tolist() == [False]  # no answer, no vote
    assert M.greedy_accuracy([1, 0, 1, 1]) == 0.75
    with pytest.raises(ValueError):
        M.greedy_accuracy([[1, 0]])
    with pytest.raises(ValueError):
        M.avg_at_k([[0.5, 1]])


def test_bootstrap_ci_golden():
    # mean of 2 draws from {0, 1}: 0 (1/4), 1/2 (1/2), 1 (1/4) -> 95 % interval [0, 1]
    assert M.bootstrap_ci([0, 1], iters=20000, seed=0) == (0.0, 1.0)
    # 4 draws from {0,0,0,1}: #ones ~ Bin(4, 1/4), CDF 0.316 0.738 0.949 0.996 -> [0, 3/4]
    assert M.bootstrap_ci([0, 0, 0, 1], iters=20000, seed=0) == (0.0, 0.75)
    assert M.bootstrap_ci([0.5, 0.5, 0.5], iters=100, seed=3) == (0.5, 0.5)
    # two-level: one problem, samples [1, 0]; resampling the samples gives 0, 1/2, 1 -> [0, 1];
    # resampling problems only cannot move it
    assert M.avg_at_k_ci([[1, 0]], iters=20000, seed=0) == (0.0, 1.0)
    assert M.avg_at_k_ci([[1, 0]], iters=20000, seed=0, two_level=False) == (0.5, 0.5)
    assert M.avg_at_k_ci([[1, 1], [1, 1]], iters=100, seed=0) == (1.0, 1.0)


def test_summarize_seeded_and_complete():
    rng = np.random.default_rng(1)
    correct = (rng.random((40, 4)) < 0.4).astype(int)
    answers = [[("<correct>" if c else f"={j % 2}") for j, c in enumerate(row)] for row in correct]
    s1 = M.summarize(correct, answers, iters=500, seed=7)
    s2 = M.summarize(correct, answers, iters=500, seed=7)
    assert s1 == s2
    assert set(s1["metrics"]) == {"avg@k", "pass@1", "pass@k", "maj@k"}
    assert s1["n_problems"] == 40 and s1["k"] == 4
    for m in s1["metrics"].values():
        assert m["ci"][0] <= m["value"] <= m["ci"][1] and m["ci_level"] == 0.95
    assert s1["metrics"]["avg@k"]["value"] == pytest.approx(correct.mean())
    assert s1["metrics"]["pass@1"]["value"] == pytest.approx(correct.mean())
    assert s1["metrics"]["pass@k"]["value"] == pytest.approx((correct.sum(1) > 0).mean())
    # the two-level interval (samples too) is wider than resampling problems only
    one = M.avg_at_k_ci(correct, iters=4000, seed=0, two_level=False)
    two = M.avg_at_k_ci(correct, iters=4000, seed=0)
    assert two[1] - two[0] > one[1] - one[0]
    g = M.summarize([[1], [0], [1], [1]], greedy=True, iters=200, seed=0)
    assert list(g["metrics"]) == ["greedy_acc"] and g["metrics"]["greedy_acc"]["value"] == 0.75


# ---------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------

def _fields(**over):
    kw = dict(benchmark="math500", data_sha256="35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
              prompt_template="{problem}\nAnswer in \\boxed{}.", chat_template=None,
              sampling={"do_sample": True, "temperature": 0.6, "top_p": 0.95, "until": ["</s>"]},
              max_gen_toks=1024, k=4, verifier={"version": "1", "mode": "boxed", "timeout": 5.0},
              seeds={"torch": 0}, problems={"limit": 50})
    kw.update(over)
    return protocol_fields(**kw)


def test_protocol_hash_stable():
    f = _fields()
    # golden: changes only if the protocol format changes (then bump PROTOCOL_VERSION)
    assert protocol_hash(f) == "8c52db067d5692cb5a2e3341066791451ddac89f170cbb7d79c9ec2bbfbb4e4e"
    assert protocol_hash(dict(reversed(list(f.items())))) == protocol_hash(f)   # key order is irrelevant
    assert protocol_hash(_fields(sampling={"until": ["</s>"], "top_p": 0.95, "temperature": 0.6,
                                           "do_sample": True})) == protocol_hash(f)
    for over in [{"k": 8}, {"max_gen_toks": 2048}, {"chat_template": "{{ messages }}"}, {"seeds": {"torch": 1}},
                 {"verifier": {"version": "2", "mode": "boxed", "timeout": 5.0}}, {"data_sha256": "0" * 64},
                 {"prompt_template": "{problem}"}, {"system_instruction": "Think."}]:
        assert protocol_hash(_fields(**over)) != protocol_hash(f), over
    assert _fields(chat_template="{{ messages }}")["chat_template_sha256"] == \
        hashlib.sha256(b"{{ messages }}").hexdigest()


def test_assert_same_protocol_names_differing_fields():
    a = {"protocol": _fields(), "protocol_hash": protocol_hash(_fields())}
    same = copy.deepcopy(a)
    assert assert_same_protocol([a, same]) == a["protocol_hash"]
    other = _fields(k=8, sampling={"do_sample": True, "temperature": 1.0, "top_p": 0.95, "until": ["</s>"]})
    b = {"protocol": other, "protocol_hash": protocol_hash(other)}
    with pytest.raises(ProtocolMismatch) as e:
        assert_same_protocol([a, b])
    assert e.value.fields == ["k", "sampling.temperature"]
    assert "k: 4 vs 8" in str(e.value) and "sampling.temperature: 0.6 vs 1.0" in str(e.value)
    assert diff_fields(a["protocol"], b["protocol"]) == ["k", "sampling.temperature"]
    edited = copy.deepcopy(a)
    edited["protocol"]["k"] = 16  # edited without recomputing the hash
    with pytest.raises(ProtocolMismatch, match="does not match its protocol"):
        assert_same_protocol([a, edited])
    with pytest.raises(ProtocolMismatch, match="no protocol"):
        assert_same_protocol([a, {"metrics": {}}])


# ---------------------------------------------------------------------------
# Data digests and task files
# ---------------------------------------------------------------------------

@needs_data
def test_tampered_benchmark_file_names_file_and_both_digests(tmp_path, monkeypatch):
    from harness.data.realdata import manifest
    from harness.results import file_sha256
    from harness.evaluate.tasks import common

    src = DATA_DIR / "math500" / "test.jsonl"
    dst = tmp_path / "math500" / "test.jsonl"
    dst.parent.mkdir()
    data = bytearray(src.read_bytes())
    i = data.index(b"polar")
    data[i] = ord("P")  # one byte changed
    dst.write_bytes(bytes(data))
    expected = manifest()["math500"]["sha256"]
    actual = file_sha256(dst)
    assert actual != expected
    with pytest.raises(ConfigError) as e:
        common.load(benchmark="math500", data_dir=str(tmp_path))
    msg = str(e.value)
    assert str(dst) in msg and expected in msg and actual in msg
    # the same through the environment variable, and before any model is touched
    monkeypatch.setenv("RLVR_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=actual):
        common.load(benchmark="math500")
    from harness.evaluate.lmeval import evaluate_checkpoint

    with pytest.raises(ConfigError, match=expected):
        evaluate_checkpoint(tmp_path / "no-such-model", ["math500"], k=1, temperature=0.0, top_p=1.0,
                            max_gen_toks=8, limit=1, seed=0, out=None)


def _task_files():
    import yaml

    out = {}
    for p in sorted(TASKS_DIR.glob("*/*.yaml")):
        if p.parent.name == "_common":
            continue
        cfg = yaml.safe_load(p.read_text())
        out[cfg["task"]] = cfg
    return out


def test_task_yamls_sampling_explicit_and_no_repeats_trap():
    from harness.evaluate.tasks.common import BENCHMARKS

    tasks = _task_files()
    for b in BENCHMARKS:
        assert f"{b}_greedy" in tasks and f"{b}_avg4" in tasks, b
    for name, cfg in tasks.items():
        meta, gk = cfg["metadata"], cfg["generation_kwargs"]
        assert "version" in meta, name
        assert cfg["dataset_kwargs"]["benchmark"] in BENCHMARKS
        (filt,) = cfg["filter_list"]
        (fn,) = filt["filter"]
        assert fn["function"] == "take_first_k" and fn["k"] == cfg["repeats"] == meta["k"], name
        assert isinstance(gk["max_gen_toks"], int) and gk["until"], name
        if name.endswith("_greedy"):
            assert cfg["repeats"] == 1 and gk["do_sample"] is False and gk["temperature"] == 0.0, name
        else:
            assert cfg["repeats"] > 1 and gk["do_sample"] is True and gk["temperature"] > 0, name
            assert 0 < gk["top_p"] <= 1 and gk["top_k"] == 0, name
            assert name == f"{cfg['dataset_kwargs']['benchmark']}_avg{cfg['repeats']}"


def test_process_results_scores_k_samples_and_refuses_one():
    from harness.evaluate.tasks import common

    doc = {"answer": "\\frac{1}{2}"}
    resps = ["so \\boxed{0.5}", "\\boxed{3}", "it is \\boxed{ 3 }", "no answer", "\\boxed{\\dfrac12}"]
    # 2 of 5 correct; votes: <correct> x2 (first at 0), "3" x2 (first at 1) -> tie -> the correct cluster wins
    out = common.process_results(doc, [resps])
    assert out == {"avg_at_k": pytest.approx(0.4), "pass_at_k": 1.0, "maj_at_k": 1.0}
    out = common.process_results(doc, [resps[1:]])  # "3" x2 beats <correct> x1
    assert out == {"avg_at_k": pytest.approx(0.25), "pass_at_k": 1.0, "maj_at_k": 0.0}
    assert common.process_results_greedy(doc, [["\\boxed{1/2}"]]) == {"acc": 1.0}
    with pytest.raises(RuntimeError, match="take_first_k"):
        common.process_results(doc, ["\\boxed{2}"])  # what lm-eval's default take_first passes


@needs_data
def test_task_index_and_loader():
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from harness.evaluate.tasks import common

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert {"math500_greedy", "math500_avg4", "aime24_avg32", "olympiadbench_numeric_greedy"} <= set(tm.all_subtasks)
    ds = common.load(benchmark="aime24", data_dir=str(DATA_DIR))["test"]
    assert len(ds) == 30 and ds[0]["answer"] and ds[0]["problem"]
    assert common.doc_to_text(ds[0]).startswith(ds[0]["problem"]) and "\\boxed{}" in common.doc_to_text(ds[0])
    amc = common.load_docs("amc23", DATA_DIR)
    assert amc[0]["answer"] == "27"  # stored as 27.0
    excl = common.excluded_problems("minerva_math", DATA_DIR)
    assert excl and all(e["reason"].startswith("gold_") for e in excl)


# ---------------------------------------------------------------------------
# End to end (tiny model, CPU, offline)
# ---------------------------------------------------------------------------

def _save_tiny_llama(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.data import smoke

    torch.manual_seed(0)
    tok = smoke.build_tokenizer()
    tok.model_max_length = 4096
    conf = LlamaConfig(vocab_size=len(smoke.VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=4096,
                       tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(conf).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("lm_eval")
    return _save_tiny_llama(tmp_path_factory.mktemp("eval_model") / "tiny")


@needs_data
def test_evaluate_checkpoint_end_to_end(tiny_model, tmp_path):
    from harness.evaluate.lmeval import compare, evaluate_checkpoint, leaderboard
    from harness.results import content_hash

    out = tmp_path / "eval.json"
    r = evaluate_checkpoint(tiny_model, ["math500"], data_dir=DATA_DIR, k=2, temperature=1.0, top_p=1.0,
                            max_gen_toks=8, limit=4, seed=0, out=out, max_length=4096, bootstrap_iters=200,
                            threads=1, samples_out=tmp_path / "samples.jsonl")
    on_disk = json.loads(out.read_text())
    assert on_disk == r and on_disk["kind"] == "eval_result"
    assert on_disk["content_hash"] == content_hash(on_disk)
    assert on_disk["protocol_hash"] == protocol_hash(on_disk["protocol"])
    b = on_disk["benchmarks"]["math500"]
    assert b["n_problems"] == 4 and b["k"] == 2 and len(b["per_problem"]) == 4
    for m in ("avg@k", "pass@k", "pass@1", "maj@k"):
        lo, hi = b["metrics"][m]["ci"]
        assert lo <= b["metrics"][m]["value"] <= hi
    assert sum(b["verdict_status"].values()) == 8  # 4 problems x 2 samples, each verified
    assert b["protocol_hash"] == protocol_hash(on_disk["protocol"]["benchmarks"]["math500"])
    p = on_disk["protocol"]["benchmarks"]["math500"]
    assert p["k"] == 2 and p["max_gen_toks"] == 8 and p["sampling"]["temperature"] == 1.0
    assert p["sampling"]["do_sample"] is True and p["data_sha256"].startswith("35dc4108")
    assert p["verifier"]["version"] and p["problems"]["limit"] == 4
    assert on_disk["tokens_per_second"] > 0 and on_disk["wall_seconds"] > 0
    assert "lm_eval" in on_disk["provenance"]["versions"]
    _assert_record_conventions(on_disk)
    assert on_disk["source"] is None and {"tokens_per_second", "generation_seconds"} <= set(on_disk)
    assert set(ENTRY_FIELDS) <= set(b) and "task_yaml" in b and "verdict_status" in b
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 4

    # greedy needs k = 1 (k identical samples would be the greedy trap)
    with pytest.raises(ConfigError, match="greedy"):
        evaluate_checkpoint(tiny_model, ["math500"], data_dir=DATA_DIR, k=2, temperature=0.0, top_p=1.0,
                            max_gen_toks=8, limit=2, seed=0, out=None)

    # a second run under another protocol (greedy): comparisons refuse, naming the fields
    out2 = tmp_path / "eval_greedy.json"
    r2 = evaluate_checkpoint(tiny_model, ["math500"], data_dir=DATA_DIR, k=1, temperature=0.0, top_p=1.0,
                             max_gen_toks=8, limit=4, seed=0, out=out2, max_length=4096, bootstrap_iters=200,
                             threads=1)
    assert list(r2["benchmarks"]["math500"]["metrics"]) == ["greedy_acc"]
    with pytest.raises(ProtocolMismatch) as e:
        compare(out, out2)
    assert "k" in e.value.fields and "sampling.temperature" in e.value.fields and "sampling.do_sample" in e.value.fields
    assert "math500" in str(e.value) and "sampling.temperature: 1.0 vs 0.0" in str(e.value)
    with pytest.raises(ProtocolMismatch):
        leaderboard([out, out2], "math500")
    same = compare(out, out)
    assert same["benchmarks"]["math500"]["metrics"]["avg@k"]["diff"] == 0.0
    assert same["benchmarks"]["math500"]["metrics"]["avg@k"]["n_paired"] == 4


@needs_data
def test_lm_eval_cli_include_path(tiny_model, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RLVR_DATA_DIR": str(DATA_DIR),
           "RLVR_VERIFY_WORKERS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "--include_path", str(TASKS_DIR), "--tasks", "math500_avg4",
           "--model", "hf", "--model_args", f"pretrained={tiny_model},max_length=4096,dtype=float32",
           "--device", "cpu", "--batch_size", "8", "--limit", "2", "--gen_kwargs", "max_gen_toks=8",
           "--output_path", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "avg_at_k" in proc.stdout and "pass_at_k" in proc.stdout
    (res_file,) = list((tmp_path / "out").rglob("results_*.json"))
    res = json.loads(res_file.read_text())["results"]["math500_avg4"]
    assert math.isfinite(res["avg_at_k,all_k"]) and math.isfinite(res["pass_at_k,all_k"])
    assert "maj_at_k,all_k" in res


# ---------------------------------------------------------------------------
# One eval_result builder (harness.evaluate.record), shared by lm-eval and held-out evaluations
# ---------------------------------------------------------------------------

CREATED_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


def _assert_record_conventions(r: dict) -> None:
    """The field set and conventions every eval_result shares (harness.evaluate.record's docstring)."""
    import re

    assert set(CORE_FIELDS) - {"content_hash"} <= set(r), set(CORE_FIELDS) - set(r)
    assert r["kind"] == "eval_result" and r["schema_version"] == 1
    assert re.match(CREATED_RE, r["created"]), r["created"]
    assert r["wall_seconds"] == round(r["wall_seconds"], 2) >= 0
    assert r["model_dir"] is None or Path(r["model_dir"]).is_absolute()
    assert r["protocol_hash"] == protocol_hash(r["protocol"])
    if "content_hash" in r:
        from harness.results import content_hash

        assert r["content_hash"] == content_hash(r)
    assert list(r["protocol"]["benchmarks"]) == list(r["benchmarks"])
    for name, e in r["benchmarks"].items():
        assert e["protocol_hash"] == protocol_hash(r["protocol"]["benchmarks"][name])
        assert e["n_problems"] == len(e["per_problem"])


def _toy_entry(name="toy", k=2, corr=((1, 0), (1, 1), (0, 0))):
    from harness.evaluate.record import bench_entry

    fields = _fields(benchmark=name, k=k)
    summary = M.summarize([list(c) for c in corr], None, iters=50, seed=0)
    per_problem = [{"id": i, "n_correct": sum(c)} for i, c in enumerate(corr)]
    return bench_entry(task=name, k=k, summary=summary, per_problem=per_problem, protocol=fields), fields


def test_eval_record_field_set_and_refusals(tmp_path):
    import time

    from harness.evaluate.record import eval_record, write_record

    entry, fields = _toy_entry()
    assert set(entry) == set(ENTRY_FIELDS) and entry["n_problems"] == 3 and entry["k"] == 2
    t0 = time.time() - 1.23456
    r = eval_record(benchmarks={"toy": entry}, protocol={"toy": fields}, source={"method": "grpo", "seed": 7},
                    settings={"k": 2}, model_dir=tmp_path / "m", t0=t0, extra={"generated_tokens": 5})
    _assert_record_conventions(r)
    assert set(r) == set(CORE_FIELDS) - {"content_hash"} | {"generated_tokens"}
    assert 1.23 <= r["wall_seconds"] < 60 and r["model_dir"] == str((tmp_path / "m").resolve())
    on_disk = write_record(r, tmp_path / "r.json")
    assert on_disk == json.loads((tmp_path / "r.json").read_text()) and on_disk["content_hash"]
    assert write_record(r, None) is r
    # an entry whose hash does not match its protocol, mismatched names, or extras replacing core fields: refused
    with pytest.raises(ValueError, match="does not match"):
        eval_record(benchmarks={"toy": entry}, protocol={"toy": _fields(k=4)}, source=None, settings={},
                    model_dir=None, t0=t0)
    with pytest.raises(ValueError, match="differ"):
        eval_record(benchmarks={"toy": entry}, protocol={"other": fields}, source=None, settings={}, model_dir=None,
                    t0=t0)
    with pytest.raises(ValueError, match="created"):
        eval_record(benchmarks={"toy": entry}, protocol={"toy": fields}, source=None, settings={}, model_dir=None,
                    t0=t0, extra={"created": "yesterday"})
    from harness.evaluate.record import bench_entry

    with pytest.raises(ValueError, match="n_problems"):
        bench_entry(task="t", k=1, summary={"metrics": {}, "bootstrap": {}}, per_problem=[], protocol=fields,
                    n_problems=0)


def test_source_option_keys():
    from harness.evaluate.record import parse_source

    assert parse_source(None) is None
    assert parse_source("method=grpo,seed=42,tier=smoke,job_key=dcc43c5fc9e6") == {
        "method": "grpo", "seed": 42, "tier": "smoke", "job_key": "dcc43c5fc9e6"}
    assert parse_source("paper=p,tier=smoke,method=base") == {"paper": "p", "tier": "smoke", "method": "base"}
    for bad, msg in (("seed=4", "method required"), ("method=grpo,run=1", "keys are"), ("grpo", "expected"),
                     ("method=grpo,seed=x", "integer")):
        with pytest.raises(ConfigError, match=msg):
            parse_source(bad)


# ---------------------------------------------------------------------------
# Held-out evaluation of a resolved job (tiny random smoke-tokenizer model, CPU)
# ---------------------------------------------------------------------------

def _pinned_base_heldout() -> dict:
    """The pinned bapo smoke replication's base-model held-out evaluation (found through its verdict's hashes)."""
    from harness.results.store import replications

    rep = replications(ROOT / "results")[("bapo", "smoke")]
    return next(e for e in rep["evals"] if e["source"]["method"] == "base" and "heldout" in e["benchmarks"])


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory):
    return _save_tiny_llama(tmp_path_factory.mktemp("heldout_model") / "tiny")


def _bapo_job(**eval_over) -> dict:
    from harness.plan import resolve_job

    job = resolve_job("bapo", "smoke", "grpo", 42)
    return {**job, "eval": {**job["eval"], **eval_over}}


def test_heldout_job_eval_fields_and_determinism(smoke_model, tmp_path):
    from harness.evaluate.heldout import evaluate_heldout_job

    job = _bapo_job(n_val=32, final_k=2)
    kw = dict(data_dir=tmp_path, seed=0, bootstrap_iters=100)
    r1 = evaluate_heldout_job(job, smoke_model, out=tmp_path / "a.json", **kw)
    assert r1 == json.loads((tmp_path / "a.json").read_text())
    _assert_record_conventions(r1)
    assert set(r1["benchmarks"]) == {"heldout", "heldout_greedy"}
    assert all(set(e) == set(ENTRY_FIELDS) for e in r1["benchmarks"].values())
    assert r1["source"] == {"method": "base", "tier": "smoke"}  # no source: the job tier's base model
    assert r1["settings"] == {"k": 2, "temperature": 1.0, "max_gen_toks": 4, "seed": 0}
    h, g = r1["benchmarks"]["heldout"], r1["benchmarks"]["heldout_greedy"]
    assert (h["k"], h["n_problems"], g["k"], g["n_problems"]) == (2, 32, 1, 32)
    assert set(h["metrics"]) == {"avg@k", "pass@1", "pass@k", "maj@k"} and list(g["metrics"]) == ["greedy_acc"]
    # the same inputs give the same numbers and hashes, whether the job is a dict or its job.json
    (tmp_path / "job.json").write_text(json.dumps(job))
    r2 = evaluate_heldout_job(str(tmp_path / "job.json"), smoke_model, out=tmp_path / "b.json",
                              source={"method": "grpo", "seed": 42, "job_key": job["job_key"]}, **kw)
    assert r2["benchmarks"] == r1["benchmarks"] and r2["protocol"] == r1["protocol"]
    assert r2["source"] == {"method": "grpo", "seed": 42, "job_key": job["job_key"]}
    with pytest.raises(ConfigError, match="not a resolved job"):
        evaluate_heldout_job({"model": {"kind": "smoke"}}, smoke_model, out=tmp_path / "c.json", **kw)


def test_eval_heldout_cli_job_and_card_paths_agree_with_pinned_protocol(smoke_model, tmp_path):
    from harness.face.cli import main

    out_card, out_job = tmp_path / "card.json", tmp_path / "job.json.out"
    assert main(["eval-heldout", "--paper", "bapo", "--tier", "smoke", "--model-dir", str(smoke_model),
                 "--out", str(out_card), "--seed", "0"]) == 0
    (tmp_path / "job.json").write_text(json.dumps(_bapo_job()))
    assert main(["eval-heldout", "--job", str(tmp_path / "job.json"), "--model-dir", str(smoke_model),
                 "--out", str(out_job), "--seed", "0", "--source", "method=base,tier=smoke"]) == 0
    a, b = json.loads(out_card.read_text()), json.loads(out_job.read_text())
    _assert_record_conventions(a)
    assert a["benchmarks"] == b["benchmarks"] and a["protocol_hash"] == b["protocol_hash"]
    assert a["source"] == {"paper": "bapo", "tier": "smoke", "method": "base"}
    assert b["source"] == {"method": "base", "tier": "smoke"}
    pinned = _pinned_base_heldout()  # the protocol does not depend on the weights: it must be the pinned one
    assert a["protocol"] == pinned["protocol"] and a["protocol_hash"] == pinned["protocol_hash"]
    assert a["settings"] == pinned["settings"]
    assert b["source"] == {k: v for k, v in pinned["source"].items() if k != "paper"}  # as the DAG wrote it
    for name, e in pinned["benchmarks"].items():
        assert set(a["benchmarks"][name]) == set(e) and a["benchmarks"][name]["protocol_hash"] == e["protocol_hash"]
        assert a["benchmarks"][name]["n_problems"] == e["n_problems"]
    # refused combinations: one-line errors, exit status 2, nothing written
    base = ["eval-heldout", "--model-dir", str(smoke_model), "--out", str(tmp_path / "x.json")]
    for extra in (["--job", str(tmp_path / "job.json"), "--paper", "bapo"],
                  ["--paper", "bapo", "--tier", "smoke", "--method", "grpo"],
                  ["--paper", "bapo", "--tier", "nope"],
                  ["--tier", "smoke"],
                  ["--paper", "bapo", "--tier", "smoke", "--source", "method=grpo"],
                  ["--job", str(tmp_path / "missing.json")],
                  ["--job", str(tmp_path / "job.json"), "--source", "method=grpo,sed=1"]):
        assert main(base + extra) == 2, extra
    assert not (tmp_path / "x.json").exists()
