"""Packed per-step metrics of pinned train results and per-problem lists of pinned eval results (harness/results/packing.py): lossless, hash-preserving,
deterministic, read by every reader of pinned results, repacked by `harness pin`'s rebuild, checked by
`harness verify-results`."""
import base64
import gzip
import json
import shutil
from pathlib import Path

import pytest

from harness.config import REPO_ROOT
from harness.results import atomic_write_json, content_hash, file_sha256
from harness.results.packing import ENCODING, is_packed, needs_packing, pack, read_result, unpack, write_packed
from harness.results.store import result_files

ROWS = [{"step": 1, "loss": 0.25, "entropy": 1.0000000000000002, "eval/acc": None},
        {"step": 2, "loss": -3e-9, "laser/bucket": 3},
        {"step": 3, "loss": 1.5, "entropy": 0.5, "eval/acc": 0.75, "nested": [1, 2.0, "x"]},
        {}]


def _result(rows=ROWS) -> dict:
    r = {"kind": "train_result", "job": {"method": "grpo", "seed": 1}, "metrics": rows, "heldout": [{"step": 0}]}
    return {**r, "content_hash": content_hash(r)}


def test_round_trip_is_exact_and_keeps_the_content_hash():
    r = _result()
    p = pack(r)
    assert is_packed(p) and p["metrics"]["packed"] == ENCODING and p["metrics"]["n_rows"] == 4
    assert p["content_hash"] == r["content_hash"] and content_hash(p) != r["content_hash"]
    u = unpack(p)
    assert u == r and content_hash(u) == r["content_hash"]
    # types survive: ints stay ints, None stays None, a key missing from a row stays missing
    assert type(u["metrics"][1]["laser/bucket"]) is int and u["metrics"][0]["eval/acc"] is None
    assert "entropy" not in u["metrics"][1] and u["metrics"][3] == {}
    assert u["metrics"][0]["entropy"] == 1.0000000000000002  # no float is rounded


def test_packing_is_deterministic_and_idempotent():
    r = _result()
    assert json.dumps(pack(r)) == json.dumps(pack(json.loads(json.dumps(r))))
    assert pack(pack(r)) == pack(r) and unpack(r) is r
    assert pack({"kind": "eval_result", "benchmarks": {}}) == {"kind": "eval_result", "benchmarks": {}}
    assert not needs_packing(pack(r)) and needs_packing(r) and not needs_packing({"kind": "verdict", "metrics": []})
    assert unpack(pack(_result([]))) == _result([])


def _eval(per_problem) -> dict:
    r = {"kind": "eval_result", "benchmarks": {
        "household_heldout": {"k": 2, "avg@2": 0.5, "per_problem": per_problem},
        "reasoning_heldout_greedy": {"k": 1, "per_problem": [{"id": "p1", "n_correct": 1}]},
        "summary_only": {"k": 1, "avg@1": 0.25}}}
    return {**r, "content_hash": content_hash(r)}


def test_an_eval_results_per_problem_lists_pack_losslessly():
    """Every benchmark's per_problem (an agent game's episodes nested in it) packs; the rest of the result stays
    readable as it was, and the content hash is that of the plain result."""
    episodes = [{"won": True, "steps": 7, "actions": ["go to desk 1", "take pen 1"], "invalid": 0},
                {"won": False, "steps": 50, "actions": [], "invalid": 3, "error": None}]
    r = _eval([{"id": "g1", "n_correct": 1, "episodes": episodes}, {"id": "g2", "n_correct": 0, "note": "x"}])
    p = pack(r)
    assert is_packed(p) and needs_packing(r) and not needs_packing(p)
    assert p["benchmarks"]["household_heldout"]["per_problem"]["n_rows"] == 2
    assert p["benchmarks"]["reasoning_heldout_greedy"]["per_problem"]["packed"] == ENCODING
    assert p["benchmarks"]["household_heldout"]["avg@2"] == 0.5 and p["benchmarks"]["summary_only"] == {
        "k": 1, "avg@1": 0.25}
    assert unpack(p) == r and content_hash(unpack(p)) == r["content_hash"]
    assert "note" not in unpack(p)["benchmarks"]["household_heldout"]["per_problem"][0]
    bad = json.loads(json.dumps(p))
    bad["benchmarks"]["household_heldout"]["per_problem"]["packed"] = "zstd/v9"
    with pytest.raises(ValueError, match="benchmarks.household_heldout.per_problem packed as 'zstd/v9'"):
        unpack(bad)


def test_unknown_encoding_and_a_corrupt_file_are_named(tmp_path):
    p = pack(_result())
    with pytest.raises(ValueError, match="columns\\+gzip\\+base64/v1"):
        unpack({**p, "metrics": {**p["metrics"], "packed": "zstd/v9"}})
    f = tmp_path / "result.json"
    f.write_text(json.dumps({**p, "metrics": {**p["metrics"], "data": p["metrics"]["data"][:-8]}}))
    with pytest.raises(ValueError, match="cannot unpack the packed lists of .*result.json"):
        read_result(f)


def test_write_packed_refuses_a_result_whose_hash_does_not_match(tmp_path):
    r = _result()
    assert read_result(write_packed(tmp_path / "ok.json", r)) == r
    with pytest.raises(ValueError, match="does not match"):
        write_packed(tmp_path / "bad.json", {**r, "heldout": []})
    assert not (tmp_path / "bad.json").exists()


def test_pinned_results_are_packed_and_read_back_plain():
    """What keeps results/ small as papers multiply: no pinned train result stores its metrics plain, no pinned
    evaluation its per-problem lists."""
    root = REPO_ROOT / "results"
    files = sorted((root / "jobs").rglob("result.json"))
    evals = sorted([*(root / "jobs").rglob("evals/*.json"), *(root / "base-evals").rglob("*.json")])
    assert files and evals
    plain = [str(f.relative_to(root)) for f in [*files, *evals] if needs_packing(json.loads(f.read_text()))]
    assert plain == []
    r = read_result(files[0])
    assert isinstance(r["metrics"], list) and content_hash(r) == r["content_hash"]
    e = next(read_result(f) for f in evals if f.name == "heldout.json")
    assert e["kind"] == "eval_result" and content_hash(e) == e["content_hash"]
    assert all(isinstance(b["per_problem"], list) for b in e["benchmarks"].values() if "per_problem" in b)


def _small_results(tmp_path: Path, paper: str = "cure", tier: str = "smoke-reasoning") -> Path:
    """A results dir with one card's pinned verdict and every shared file it rests on, the train and eval results
    stored plain (as pinned before packing covered them)."""
    src, d = REPO_ROOT / "results", tmp_path / "results"
    shutil.copytree(src / paper / tier, d / paper / tier)
    man = json.loads((d / paper / tier / "MANIFEST.json").read_text())
    for rel in man["shared_files"]:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        r = read_result(src / rel)
        if r.get("kind") in ("train_result", "eval_result"):
            atomic_write_json(d / rel, r)
        else:
            shutil.copy2(src / rel, d / rel)
        man["shared_files"][rel] = file_sha256(d / rel)
    atomic_write_json(d / paper / tier / "MANIFEST.json", man)
    return d


def test_rebuild_repacks_plain_pinned_results_and_verifies(tmp_path):
    from harness.report.artifacts import build_manifest, verify_results
    from harness.report.pin import repack

    d = _small_results(tmp_path)
    before = {p: r for p, r in result_files(d)}
    trains = [p for p, r in before.items() if r["kind"] == "train_result"]
    evals = [p for p, r in before.items() if r["kind"] == "eval_result"]
    assert trains and evals and not any(is_packed(json.loads(p.read_text())) for p in trains + evals)
    size, esize = sum(p.stat().st_size for p in trains), sum(p.stat().st_size for p in evals)
    assert sorted(repack(d)) == sorted(trains + evals) and repack(d) == []
    assert all(is_packed(json.loads(p.read_text())) for p in trains + evals)
    assert sum(p.stat().st_size for p in trains) < size / 3 and sum(p.stat().st_size for p in evals) < esize / 2
    assert {p: r for p, r in result_files(d)} == before  # every reader sees the same results
    mpath = d / "cure" / "smoke-reasoning" / "MANIFEST.json"
    assert all(file_sha256(d / rel) == sha for rel, sha in json.loads(mpath.read_text())["shared_files"].items())
    assert json.loads(mpath.read_text()) == json.loads((REPO_ROOT / "results" / mpath.relative_to(d)).read_text())
    build_manifest(d)
    assert verify_results(d) == []
    # one changed character in a packed column is caught through the content hash
    p = trains[0]
    r = json.loads(p.read_text())
    cols = json.loads(gzip.decompress(base64.b64decode(r["metrics"]["data"])))
    cols["step"]["v"][0] += 1
    r["metrics"]["data"] = base64.b64encode(gzip.compress(json.dumps(cols).encode(), mtime=0)).decode()
    p.write_text(json.dumps(r))
    assert any("does not match its content" in x for x in verify_results(d))


def test_the_verdict_rule_reads_packed_results(tmp_path):
    """A pinned (packed) run copied into a work dir (what `harness pin`'s refusal tells the user to do) is read
    by the verdict rule as the plain run."""
    from harness.claims.verdict import _load

    files = sorted((REPO_ROOT / "results" / "jobs").rglob("result.json"))[:2]
    loaded = _load(files)
    assert [content_hash(r) for r in loaded] == [r["content_hash"] for r in loaded]
    bad = tmp_path / "result.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match="cannot read .*result.json.*a result file"):
        _load([bad])
