"""Citable artifacts: verify-results on the committed results, a one-byte change fails, cite, CITATION.cff."""
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.report.artifacts import citation, release, verify_results

ROOT = Path(__file__).resolve().parents[1]


def test_committed_results_verify():
    assert verify_results(ROOT / "results") == []


def test_one_byte_change_fails(tmp_path):
    d = tmp_path / "results"
    shutil.copytree(ROOT / "results", d)
    victim = next(d.glob("jobs/**/result.json"))
    data = bytearray(victim.read_bytes())
    i = data.index(b'"seed": ') + len(b'"seed": ')
    data[i] = ord("9") if data[i] != ord("9") else ord("8")
    victim.write_bytes(bytes(data))
    problems = verify_results(d)
    assert any(victim.name in p and "sha256" in p for p in problems)
    assert any("content_hash" in p for p in problems)
    p = subprocess.run(["harness", "verify-results", "--results-dir", str(d)], capture_output=True, text=True)
    assert p.returncode == 1 and "FAIL" in p.stderr


def test_unlisted_file_fails(tmp_path):
    d = tmp_path / "results"
    shutil.copytree(ROOT / "results", d)
    (d / "stray.json").write_text("{}")
    assert any("stray.json: not listed" in p for p in verify_results(d))


def test_cite_every_committed_result():
    manifest = json.loads((ROOT / "results" / "manifest.json").read_text())
    assert manifest["results"]
    for e in manifest["results"]:
        text = citation(e["content_hash"][:12], ROOT / "results")
        assert e["content_hash"] in text and "@misc{" in text and (e["paper"] or "all papers") in text


def test_release_copies_and_is_immutable(tmp_path):
    d = tmp_path / "results"
    shutil.copytree(ROOT / "results", d)
    out = release("v-test", d)
    assert (out / "manifest.json").exists()
    assert verify_results(d) == []
    with pytest.raises(Exception, match="immutable"):
        release("v-test", d)


def test_citation_cff_validates():
    """Against the CFF 1.2.0 JSON schema (tests/fixtures/cff-1.2.0.schema.json, from citation-file-format,
    CC-BY-4.0, as shipped in the cffconvert 2.0.0 wheel; cffconvert itself pins jsonschema<4)."""
    schema = json.loads((ROOT / "tests" / "fixtures" / "cff-1.2.0.schema.json").read_text())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    cff["date-released"] = str(cff["date-released"])
    jsonschema.validate(cff, schema)


def test_repinning_prunes_shared_runs_no_verdict_lists(tmp_path):
    """Shared run files are kept while some pinned verdict lists them; a re-pinned card's old runs go."""
    from harness.report.pin import prune_unreferenced
    from harness.results import atomic_write_json

    d = tmp_path / "results"
    shutil.copytree(ROOT / "results", d)
    stray = d / "jobs" / "smoke" / "grpo" / "0123456789ab" / "seed1" / "result.json"
    atomic_write_json(stray, {"kind": "train_result", "job": {"method": "grpo", "seed": 1}}, hashed=True)
    kept = sorted(p for p in (d / "jobs").rglob("*.json") if p != stray)
    assert prune_unreferenced(d) == [stray]
    assert not stray.parent.exists() and kept and all(p.exists() for p in kept)
