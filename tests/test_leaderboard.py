"""Leaderboard statistics and verdict logic on synthetic seed x problem matrices; tables from result files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.config import ConfigError
from harness.report import leaderboard as L
from harness.claims import stats
from harness.results.protocol import ProtocolMismatch, protocol_fields, protocol_hash
from harness.results import atomic_write_json

# rliable 1.2.0 (google-research/rliable), computed outside the repo on these matrices (runs x tasks):
#   metrics.aggregate_iqm(X) = 0.6122222222222222, aggregate_iqm(Y) = 0.5433333333333333,
#   metrics.probability_of_improvement(X, Y) = 0.6583333333333333
X = np.array([[0.61, 0.30, 0.92], [0.55, 0.41, 0.88], [0.70, 0.28, 0.95], [0.48, 0.33, 0.90], [0.66, 0.37, 0.85]])
Y = np.array([[0.50, 0.31, 0.90], [0.52, 0.29, 0.86], [0.58, 0.35, 0.91], [0.45, 0.27, 0.93]])


def test_iqm_and_probability_of_improvement_match_rliable():
    assert stats.iqm(X) == pytest.approx(0.6122222222222222, abs=1e-12)
    assert stats.iqm(Y) == pytest.approx(0.5433333333333333, abs=1e-12)
    assert stats.probability_of_improvement(X, Y) == pytest.approx(0.6583333333333333, abs=1e-12)
    # P(X > Y) + P(Y > X) = 1 (ties count 1/2 on both sides)
    assert stats.probability_of_improvement(X, Y) + stats.probability_of_improvement(Y, X) == pytest.approx(1.0)
    ci = stats.iqm_ci(X, iters=300)
    assert ci["ci"][0] <= ci["value"] <= ci["ci"][1]


def _matrix(rng, p_problem, n_seeds, seed_sd=0.0, k=8):
    """(seeds, problems) avg@k scores: problem difficulty p_problem, a per-seed shift, k samples."""
    out = []
    for _ in range(n_seeds):
        p = np.clip(p_problem + rng.normal(0, seed_sd), 0, 1)
        out.append(rng.binomial(k, p) / k)
    return np.array(out)


@pytest.fixture
def problems():
    return np.random.default_rng(0).uniform(0.1, 0.9, 200)


def test_direction_verdict_reproduced(problems):
    rng = np.random.default_rng(1)
    base = _matrix(rng, problems, 4, 0.01)
    better = _matrix(rng, np.clip(problems + 0.08, 0, 1), 4, 0.01)
    v = stats.direction_verdict(better, base, iters=500)
    assert v["verdict"] == "reproduced" and v["ci"][0] > 0
    # the same data against a claim of the opposite direction refutes it
    assert stats.direction_verdict(better, base, sign=-1, iters=500)["verdict"] == "not_reproduced"


def test_direction_verdict_not_reproduced(problems):
    rng = np.random.default_rng(2)
    base = _matrix(rng, problems, 4, 0.01)
    worse = _matrix(rng, np.clip(problems - 0.08, 0, 1), 4, 0.01)
    v = stats.direction_verdict(worse, base, iters=500)
    assert v["verdict"] == "not_reproduced" and v["ci"][1] < 0


def test_direction_verdict_inconclusive_says_how_many_seeds(problems):
    # seed-to-seed spread (+-0.05) much larger than the effect (+0.01)
    base = np.stack([problems - 0.05, problems + 0.05])
    slightly = np.stack([problems + 0.01 - 0.05, problems + 0.01 + 0.05])
    v = stats.direction_verdict(slightly, base, iters=500)
    assert v["verdict"] == "inconclusive"
    assert v["ci"][0] < 0 < v["ci"][1]
    assert v["seeds_needed"] > 2 and v["more_seeds"] == v["seeds_needed"] - 2
    assert "more seeds" in v["reason"]
    # the estimate is what the 1/sqrt(seeds) rule gives
    half = (v["ci"][1] - v["ci"][0]) / 2
    assert v["seeds_needed"] == max(int(np.ceil(2 * (half / abs(v["diff"])) ** 2)), 3)


def test_direction_verdict_one_seed_is_never_decisive(problems):
    rng = np.random.default_rng(4)
    base = _matrix(rng, problems, 1)
    better = _matrix(rng, np.clip(problems + 0.2, 0, 1), 1)
    v = stats.direction_verdict(better, base, iters=300)
    assert v["ci"][0] > 0  # the problems alone would say yes ...
    assert v["verdict"] == "inconclusive" and v["seeds_needed"] >= 2  # ... but seed variance is unknown


def test_direction_verdict_not_run():
    assert stats.direction_verdict(None, np.ones((2, 3)))["verdict"] == "not_run"
    assert stats.direction_verdict(np.ones((2, 3)), np.empty((0, 0)))["verdict"] == "not_run"


def test_value_verdict_all_four_outcomes(problems):
    rng = np.random.default_rng(5)
    m = _matrix(rng, problems, 5, 0.005)
    mean = m.mean()
    assert stats.value_verdict(m, mean + 0.002, iters=500)["verdict"] == "reproduced"
    assert stats.value_verdict(m, mean + 0.2, iters=500)["verdict"] == "not_reproduced"
    wide = _matrix(rng, problems[:6], 2, 0.2)  # 6 problems, noisy seeds: a CI wider than the tolerance
    v = stats.value_verdict(wide, float(wide.mean()), tolerance=0.02, iters=500)
    assert v["verdict"] == "inconclusive" and v["more_seeds"] > 0
    assert stats.value_verdict(None, 0.5)["verdict"] == "not_run"


def test_cell_ci_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(6)
    hits = 0
    for _ in range(120):
        p = rng.uniform(0.2, 0.8, 60)
        m = _matrix(rng, p, 3, 0.0, k=4)
        c = stats.cell(m, iters=300, seed=int(rng.integers(1 << 30)))
        hits += c["ci"][0] <= p.mean() <= c["ci"][1]
    assert 0.88 <= hits / 120 <= 1.0


def test_paired_difference_pairs_problems():
    # identical per-problem scores shifted by a constant: the CI is exactly that constant when seeds agree
    base = np.tile(np.linspace(0, 0.9, 50), (3, 1))
    d = stats.paired_difference(base + 0.1, base, iters=200)
    assert d["diff"] == pytest.approx(0.1) and d["ci"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="same problems"):
        stats.paired_difference(base[:, :10], base)


# ---------------------------------------------------------------------------
# tables from result files
# ---------------------------------------------------------------------------

def _eval_result(method, seed, n_correct, *, k=4, temperature=1.0, paper="entropy_mechanism", tier="smoke"):
    fields = protocol_fields(benchmark="addition_heldout", data_sha256="ab" * 32, prompt_template="rows",
                             chat_template=None, sampling={"do_sample": True, "temperature": temperature},
                             max_gen_toks=4, k=k, verifier={"name": "exact_match"}, seeds={"eval": 0})
    return {"kind": "eval_result", "schema_version": 1,
            "source": {"paper": paper, "tier": tier, "method": method, "seed": seed},
            "benchmarks": {"heldout": {"k": k, "metrics": {}, "protocol_hash": protocol_hash(fields),
                                       "per_problem": [{"id": i, "n_correct": int(c)} for i, c in enumerate(n_correct)]}},
            "protocol": {"benchmarks": {"heldout": fields}}, "protocol_hash": protocol_hash({"benchmarks": {"heldout": fields}})}


def _write_results(root, evals):
    """The results layout (harness.results.store): evaluations stored once under jobs/ and base-evals/, each
    replication's verdict listing the ones it read by content hash."""
    verdicts = {}
    for e in evals:
        s = dict(e["source"])
        paper = s.pop("paper")
        e = {**e, "source": s}
        where = (f"base-evals/{s['tier']}/{paper}" if s["method"] == "base"
                 else f"jobs/{s['tier']}/{s['method']}/{paper}k{e['benchmarks']['heldout']['k']}/seed{s['seed']}/evals")
        atomic_write_json(root / where / "heldout.json", e, hashed=True)
        h = __import__("json").loads((root / where / "heldout.json").read_text())["content_hash"]
        verdicts.setdefault((paper, s["tier"]), []).append(h)
    for (paper, tier), hashes in verdicts.items():
        atomic_write_json(root / paper / tier / "verdict.json",
                          {"kind": "verdict", "paper": paper, "tier": tier, "inputs": [], "eval_inputs": hashes,
                           "claims": [], "counts": {}}, hashed=True)


def test_leaderboard_from_result_files(tmp_path):
    rng = np.random.default_rng(7)
    p = rng.uniform(0.2, 0.8, 100)
    evals = [_eval_result("base", None, rng.binomial(4, p))]
    for s in (1, 2, 3):
        evals.append(_eval_result("grpo", s, rng.binomial(4, p)))
        evals.append(_eval_result("clip_cov", s, rng.binomial(4, np.clip(p + 0.15, 0, 1))))
        evals.append(_eval_result("kl_cov", s, rng.binomial(4, np.clip(p - 0.15, 0, 1))))
    _write_results(tmp_path, evals)
    lb = L.build(tmp_path, iters=300)
    (t,) = lb["tables"]
    rows = {r["method"]: r for r in t["rows"]}
    assert [r["method"] for r in t["rows"]] == ["base", "grpo", "clip_cov", "kl_cov"]
    assert rows["clip_cov"]["verdict"]["verdict"] == "reproduced"
    assert rows["kl_cov"]["verdict"]["verdict"] == "not_reproduced"
    assert rows["clip_cov"]["poi"]["value"] == 1.0 and rows["kl_cov"]["poi"]["value"] == 0.0
    assert rows["grpo"]["role"] == "baseline" and "verdict" not in rows["grpo"]
    c = rows["clip_cov"]["cells"]["heldout"]
    assert c["n_seeds"] == 3 and c["n_problems"] == 100 and c["ci"][0] < c["mean"] < c["ci"][1]
    assert rows["clip_cov"]["reported"]["values"]["MATH500"] == 80.4  # the card's reported numbers ride along
    md = L.to_markdown(lb)
    assert f"protocol `{t['columns']['heldout']['protocol_hash'][:12]}`" in md
    assert "| entropy_mechanism | clip_cov |" in md and "reproduced" in md and "not_run" in md
    # rebuilt from the same files: identical (no timestamps, seeded bootstrap)
    assert L.to_markdown(L.build(tmp_path, iters=300)) == md


def test_different_protocols_are_refused_in_one_table_naming_fields():
    a = _eval_result("grpo", 1, [1, 2, 3])
    b = _eval_result("clip_cov", 1, [1, 2, 3], temperature=0.6)
    rows = []
    for e in (a, b):
        rows.append({"cells": {"heldout": {"protocol_hash": e["benchmarks"]["heldout"]["protocol_hash"]}},
                     "protocols": {"heldout": e["protocol"]["benchmarks"]["heldout"]}})
    with pytest.raises(ProtocolMismatch, match="sampling.temperature") as ei:
        L.build_table(rows)
    assert "sampling.temperature" in ei.value.fields


def test_build_separates_protocols_into_tables(tmp_path):
    evals = [_eval_result("grpo", s, [1, 2, 3, 4]) for s in (1, 2)]
    evals += [_eval_result("grpo", s, [1, 2, 3, 4], k=8, paper="canon") for s in (1, 2)]
    _write_results(tmp_path, evals)
    lb = L.build(tmp_path, iters=100)
    assert len(lb["tables"]) == 2
    assert {t["columns"]["heldout"]["protocol"]["k"] for t in lb["tables"]} == {4, 8}


def test_seeds_of_one_method_with_different_protocols_are_refused():
    evals = [_eval_result("grpo", 1, [1, 2]), _eval_result("grpo", 2, [1, 2], k=8)]
    with pytest.raises(ProtocolMismatch, match="k"):
        stats.score_matrix(evals, "grpo", "heldout")


def test_leaderboard_joins_replications_through_verdict_hashes(tmp_path):
    """A shared evaluation (one file) counts for every card whose verdict lists it; a file no verdict lists is not
    read; a verdict naming a missing hash is an error naming it."""
    e = _eval_result("grpo", 42, [1, 2, 3])
    _write_results(tmp_path, [e, {**e, "source": {**e["source"], "paper": "canon"}}])
    atomic_write_json(tmp_path / "jobs" / "smoke" / "grpo" / "stray" / "seed1" / "evals" / "heldout.json",
                      _eval_result("grpo", 1, [0, 0, 0]), hashed=True)
    lb = L.build(tmp_path, iters=50)
    (row,) = lb["tables"][0]["rows"]  # the two cards' identical baseline rows merge into one
    assert (row["papers"], row["method"], row["cells"]["heldout"]["seeds"]) == (["canon", "entropy_mechanism"],
                                                                                 "grpo", [42])
    v = json.loads((tmp_path / "canon" / "smoke" / "verdict.json").read_text())
    v["eval_inputs"].append("f" * 64)
    atomic_write_json(tmp_path / "canon" / "smoke" / "verdict.json", v, hashed=True)
    with pytest.raises(ConfigError, match="lists result hashes not found under .*: ffffffffffff"):
        L.build(tmp_path, iters=50)


def test_reported_direction_comes_from_the_card():
    from harness.config import load_card

    card = load_card("entropy_mechanism")
    assert L.reported_for(card, "clip_cov")["claimed_sign"] == 1
    assert L.reported_for(card, "grpo")["claimed_sign"] is None


def test_committed_leaderboard_is_up_to_date():
    """results/leaderboard.md is generated from the committed results (harness leaderboard), never by hand."""
    from harness.config import REPO_ROOT

    md = REPO_ROOT / "results" / "leaderboard.md"
    assert md.exists(), "run `harness leaderboard`"
    assert md.read_text() == L.to_markdown(L.build(REPO_ROOT / "results")) + "\n"
    json.loads((REPO_ROOT / "results" / "leaderboard.json").read_text())


def test_eval_claim_check_reads_checkpoint_evaluations():
    from harness.claims import evaluate_claims
    from harness.config import load_card

    rng = np.random.default_rng(8)
    p = rng.uniform(0.2, 0.8, 150)
    evals = [_eval_result("grpo", s, rng.binomial(4, p)) for s in (1, 2, 3)]
    evals += [_eval_result("clip_cov", s, rng.binomial(4, np.clip(p + 0.2, 0, 1))) for s in (1, 2, 3)]
    card = load_card("entropy_mechanism")
    out = {c["id"]: c for c in evaluate_claims(card, "smoke", [], evals) if c["check"] == "eval_above_baseline"}
    c = out["clip_cov_final_accuracy_above_grpo"]
    assert c["verdict"] == "reproduced" and c["numbers"]["ci"][0] > 0
    assert c["numbers"]["seeds"] == {"clip_cov": [1, 2, 3], "grpo": [1, 2, 3]}
    k = out["kl_cov_final_accuracy_above_grpo"]  # no KL-Cov checkpoints evaluated: the data cannot decide
    assert k["verdict"] == "inconclusive" and "eval jobs missing" in k["numbers"]["reason"]


def test_eval_source_option_is_validated():
    from harness.config import ConfigError
    from harness.evaluate.lmeval import _source

    assert _source("paper=p,tier=smoke,method=grpo,seed=7") == {"paper": "p", "tier": "smoke", "method": "grpo",
                                                                  "seed": 7}
    with pytest.raises(ConfigError, match="keys are paper, tier, method, seed"):
        _source("paper=p,methd=grpo")
