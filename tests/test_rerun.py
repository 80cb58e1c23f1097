"""`harness pin --rerun`: a fresh rerun of a pinned replication is judged against the pinned files and recorded next to
the pinned verdict (results/<paper>/<tier>/rerun.json), without replacing anything pinned.

The rerun is simulated from a pinned card (rep_geometry, smoke-reasoning: runs, evaluations and an analysis of
checkpoints): every record is written again with new volatile fields (creation and wall time), so every content hash
and every hash reference between records changes, as in a real rerun."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.report.rerun import judge_rerun, record_rerun
from harness.report.status import rerun_status
from harness.results import atomic_write_json, content_hash
from harness.results.packing import read_result
from harness.results.store import replications

ROOT = Path(__file__).resolve().parent.parent
PAPER, TIER = "rep_geometry", "smoke-reasoning"


def _rehash(r: dict, **changes) -> dict:
    r = {k: v for k, v in r.items() if k not in ("content_hash", "_file")}
    r.update(created="2030-01-01T00:00:00Z", **changes)
    return {**r, "content_hash": content_hash(r)}


@pytest.fixture
def pinned_and_rerun(tmp_path):
    """(results dir with the card's pinned files, a work dir holding its simulated rerun, the rerun's records)."""
    results, work = tmp_path / "results", tmp_path / "work"
    rep = replications(ROOT / "results")[(PAPER, TIER)]
    shutil.copytree(ROOT / "results" / PAPER / TIER, results / PAPER / TIER)
    shutil.copy2(ROOT / "results" / "manifest.json", results / "manifest.json")
    new_hash, records = {}, {}
    for r in [*rep["train"], *rep["evals"]]:
        rel = r["_file"]
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "results" / rel, results / rel)
        fresh = _rehash(read_result(ROOT / "results" / rel), wall_seconds=1.0)
        new_hash[r["content_hash"]] = fresh["content_hash"]
        records[rel] = fresh
        atomic_write_json(work / rel, fresh)
    pinned_v = json.loads((results / PAPER / TIER / "verdict.json").read_text())
    analyses = {}
    for p in sorted((results / PAPER / TIER / "analysis").rglob("*.json")):
        a = json.loads(p.read_text())
        fresh = _rehash(a, inputs=sorted("f" * 63 + str(i % 10) for i in range(len(a["inputs"]))))
        new_hash[a["content_hash"]] = fresh["content_hash"]
        analyses[p.name] = fresh
        atomic_write_json(work / "analysis" / PAPER / TIER / p.name, fresh)
    fresh_v = _rehash(pinned_v, inputs=sorted(new_hash[h] for h in pinned_v["inputs"]),
                      eval_inputs=sorted(new_hash[h] for h in pinned_v["eval_inputs"]),
                      analysis_inputs=sorted(new_hash[h] for h in pinned_v["analysis_inputs"]))
    atomic_write_json(work / "verdicts" / PAPER / TIER / "verdict.json", fresh_v)
    return results, work, records, analyses


def test_an_identical_rerun_is_recorded_next_to_the_pinned_verdict(pinned_and_rerun):
    results, work, _, _ = pinned_and_rerun
    before = {p: p.read_bytes() for p in results.rglob("*")
              if p.is_file() and p.name not in ("MANIFEST.json", "rerun.json")}  # the card's rerun record is replaced
    path, r = record_rerun(PAPER, TIER, work, results)
    assert path == results / PAPER / TIER / "rerun.json"
    assert r["status"] == "identical" and r["claims_identical"], json.dumps(r["reproducibility"])[:2000]
    rep = r["reproducibility"]
    assert len(rep["runs"]) == 6 and len(rep["evals"]) == 7 and len(rep["analyses"]) == 1
    assert {v["status"] for v in [*rep["runs"].values(), *rep["evals"].values(), *rep["analyses"].values()]} \
        == {"identical"}
    assert content_hash(json.loads(path.read_text())) == r["content_hash"]
    # nothing pinned was replaced; the card's manifest lists the record
    assert all(p.read_bytes() == b for p, b in before.items())
    man = json.loads((results / PAPER / TIER / "MANIFEST.json").read_text())
    assert "rerun.json" in man["files"]
    pinned_v = json.loads((results / PAPER / TIER / "verdict.json").read_text())
    assert rerun_status(results / PAPER / TIER, pinned_v) == "identical"
    # a re-pinned card has another verdict: the record no longer speaks of it
    assert rerun_status(results / PAPER / TIER, {**pinned_v, "content_hash": "0" * 64}) is None


def test_a_rerun_with_other_numbers_is_a_failure_naming_the_fields(pinned_and_rerun):
    results, work, records, _ = pinned_and_rerun
    rel = next(k for k, r in records.items() if r["kind"] == "train_result" and r["job"]["method"] == "sft")
    r = records[rel]
    r["heldout"][-1]["entropy"] += 1e-9
    fresh = _rehash(r)
    atomic_write_json(work / rel, fresh)
    v = json.loads((work / "verdicts" / PAPER / TIER / "verdict.json").read_text())
    v["inputs"] = sorted([h for h in v["inputs"] if h != r["content_hash"]] + [fresh["content_hash"]])
    atomic_write_json(work / "verdicts" / PAPER / TIER / "verdict.json", _rehash(v))
    rec = judge_rerun(PAPER, TIER, work, results)
    key = f"sft/seed{r['job']['seed']}"
    assert rec["status"] == "failure"
    assert rec["reproducibility"]["runs"][key]["fields_differing"] == [
        f"heldout[{len(r['heldout']) - 1}].entropy"]


def test_an_analysis_differs_on_numbers_not_on_references_and_a_changed_input_set_is_a_change(pinned_and_rerun):
    from harness.claims.verdict import reproducibility

    results, _, records, analyses = pinned_and_rerun
    runs = [r for r in records.values() if r["kind"] == "train_result"]
    (a,) = analyses.values()
    assert reproducibility(PAPER, TIER, runs, results, None, [a])["analyses"] \
        == {"geometry:tier=smoke-reasoning": {"status": "identical", "n_fields_differing": 0, "fields_differing": []}}
    b = json.loads(json.dumps(a))
    b["result"]["checkpoints"][0]["result"]["rankme"] += 1e-6
    out = reproducibility(PAPER, TIER, runs, results, None, [b])
    assert out["status"] == "failure"
    assert out["analyses"]["geometry:tier=smoke-reasoning"]["fields_differing"] == ["result.checkpoints[0].result.rankme"]
    c = {**a, "inputs": a["inputs"][:4], "result": {**a["result"], "checkpoints": a["result"]["checkpoints"][:4]}}
    out = reproducibility(PAPER, TIER, runs, results, None, [c])
    assert out["analyses"]["geometry:tier=smoke-reasoning"] == {"status": "inputs_changed", "n_pinned_inputs": 7,
                                                                 "n_fresh_inputs": 4}
    assert out["status"] == "partial"


def test_the_evaluation_of_a_run_trained_with_another_config_is_a_change(pinned_and_rerun):
    """Older eval records do not name the job they evaluated: the run's config change still says it is another
    checkpoint."""
    from harness.claims.verdict import reproducibility

    results, _, records, _ = pinned_and_rerun
    runs = [json.loads(json.dumps(r)) for r in records.values() if r["kind"] == "train_result"]
    evals = [json.loads(json.dumps(r)) for r in records.values() if r["kind"] == "eval_result"]
    run = next(r for r in runs if r["job"]["method"] == "sft")
    run["job"]["config_hash"] = "0" * 16
    ev = next(e for e in evals if (e.get("source") or {}).get("method") == "sft"
              and e["source"]["seed"] == run["job"]["seed"])
    ev["source"].pop("job_key")
    ev["benchmarks"]["heldout"]["metrics"]["pass@1"]["value"] += 0.5
    out = reproducibility(PAPER, TIER, runs, results, evals)
    key = f"sft/seed{run['job']['seed']}"
    assert out["runs"][key]["status"] == "config_changed"
    assert out["evals"][f"{key}:heldout,heldout_greedy"]["status"] == "model_changed"
    assert out["status"] == "partial"


def test_a_work_dir_holding_the_pinned_runs_is_no_rerun(pinned_and_rerun, tmp_path):
    results, work, _, _ = pinned_and_rerun
    shutil.copy2(results / PAPER / TIER / "verdict.json", work / "verdicts" / PAPER / TIER / "verdict.json")
    with pytest.raises(ConfigError, match="judged 6 pinned run") as e:
        judge_rerun(PAPER, TIER, work, results)
    assert "use-pinned" not in str(e.value)
    # a work dir where `pin --use-pinned` put pinned records in place keeps the retrained ones beside them: say so
    (work / "jobs" / "x.json.retrained").parent.mkdir(parents=True, exist_ok=True)
    (work / "jobs" / "x.json.retrained").write_text("{}")
    with pytest.raises(ConfigError, match=r"1 retrained file\(s\) there were set aside by `harness pin --use-pinned`"):
        judge_rerun(PAPER, TIER, work, results)
    with pytest.raises(ConfigError, match="no pinned verdict of rep_geometry"):
        judge_rerun(PAPER, TIER, work, tmp_path / "elsewhere")


def test_the_cli_records_the_rerun_and_rebuilds_the_manifest(pinned_and_rerun):
    import subprocess
    import sys

    results, work, _, _ = pinned_and_rerun
    p = subprocess.run([sys.executable, "-m", "harness.face.cli", "pin", "--rerun", "--paper", PAPER, "--tier", TIER,
                        "--work-dir", str(work), "--results-dir", str(results)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"rerun of {PAPER} [{TIER}]: identical, claims identical" in p.stdout
    listed = json.loads((results / "manifest.json").read_text())["files"]
    assert f"{PAPER}/{TIER}/rerun.json" in listed
    p = subprocess.run([sys.executable, "-m", "harness.face.cli", "pin", "--rerun", "--paper", PAPER, "--tier", TIER,
                        "--work-dir", str(work / "missing"), "--results-dir", str(results)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def test_claims_compare_without_the_hashes_of_the_analyses_they_read():
    """A claim that reads an analysis lists its content hash, which changes in every rerun; its numbers do not."""
    from harness.claims.verdict import without_references
    from harness.results import compare_results

    pinned = [{"id": "c", "verdict": "reproduced", "numbers": {"analysis_hash": "a" * 64, "jump_tv": 0.75,
                                                               "protocol_hash": "p" * 16}}]
    fresh = json.loads(json.dumps(pinned))
    fresh[0]["numbers"]["analysis_hash"] = "b" * 64
    assert compare_results(pinned, fresh) == ["[0].numbers.analysis_hash"]
    assert compare_results(without_references(pinned), without_references(fresh)) == []
    fresh[0]["numbers"]["jump_tv"] = 0.5
    fresh[0]["numbers"]["protocol_hash"] = "q" * 16  # not a content hash reference: compared
    assert compare_results(without_references(pinned), without_references(fresh)) == [
        "[0].numbers.jump_tv", "[0].numbers.protocol_hash"]


def test_every_reference_an_analysis_writes_is_a_reference_key():
    """An analysis that names another record by its content hash (``"<key>": r.get("content_hash")`` or
    ``r["content_hash"]``) must use a key of REFERENCE_KEYS: otherwise every rerun differs there (the hash covers
    creation times). alignment_asymptotics' reward-KL and policy_cliff's sweep wrote ``record_hash``, which was not
    one, so their reruns read as failures with identical numbers (session 18)."""
    import re

    from harness.claims.verdict import REFERENCE_KEYS

    pat = re.compile(r'"(\w+)":\s*(?:\[[^\]]*)?[\w\[\]0-9]+(?:\.get\("content_hash"\)|\["content_hash"\])')
    found = {m.group(1) for f in (ROOT / "harness" / "analyze").glob("*.py") for m in pat.finditer(f.read_text())}
    assert {"record_hash", "result_hash", "evals"} <= found  # the pattern sees what the modules write
    assert found <= REFERENCE_KEYS, f"not reference keys: {sorted(found - REFERENCE_KEYS)}"


def test_an_analysis_that_differs_only_in_record_hashes_is_identical():
    from harness.claims.verdict import without_references
    from harness.results import compare_results

    a = {"result": {"runs": {"grpo/seed1": {"record_hash": "a" * 64, "kl": 0.25}}, "base": {"record_hash": "c" * 64}}}
    b = json.loads(json.dumps(a))
    b["result"]["runs"]["grpo/seed1"]["record_hash"], b["result"]["base"]["record_hash"] = "b" * 64, "d" * 64
    assert compare_results(without_references(a), without_references(b)) == []
    b["result"]["runs"]["grpo/seed1"]["kl"] = 0.5
    assert compare_results(without_references(a), without_references(b)) == ["result.runs.grpo/seed1.kl"]


def test_a_reworded_claim_is_an_edit_not_a_difference():
    """policy_cliff's card reworded a not_run claim's statement (its DAG got built) between the pin and the rerun."""
    from harness.report.rerun import compare_claims

    pinned = [{"id": "a", "verdict": "reproduced", "statement": "old words", "numbers": {"x": 1.0,
                                                                                         "analysis_hash": "a" * 64}},
              {"id": "b", "verdict": "not_run", "statement": "same", "params": {"min_tv": 0.5}}]
    fresh = json.loads(json.dumps(pinned))
    fresh[0]["statement"], fresh[0]["numbers"]["analysis_hash"] = "new words", "b" * 64
    assert compare_claims(pinned, fresh) == ([], ["a"])
    fresh[1]["params"]["min_tv"] = 0.4  # a changed threshold is a difference, whatever the prose says
    fresh[0]["numbers"]["x"] = 2.0
    assert compare_claims(pinned, fresh) == (["[0].numbers.x", "[1].params.min_tv"], ["a"])


def test_a_verdict_compared_with_its_own_runs_is_no_rerun():
    """A verdict re-made from the pinned runs (the agent cards' second verdict, after a claim fix) found them
    'identical' to themselves: the status table must not call that a rerun."""
    from harness.report.status import own_rerun_identical

    fresh = {"reproducibility": {"status": "identical", "runs": {"grpo/seed1": {"pinned_hash": "a" * 64}}},
             "inputs": ["b" * 64]}
    assert own_rerun_identical(fresh)
    assert not own_rerun_identical({**fresh, "inputs": ["a" * 64]})
    assert not own_rerun_identical({**fresh, "reproducibility": {"status": "partial", "runs": {}}})
