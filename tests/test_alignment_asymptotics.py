"""Asymptotics of Language Model Alignment (arXiv 2404.01730): best-of-N and the KL-optimal policy in closed form,
the toy analysis, the reward-vs-KL measurement of checkpoints, the claim checks, the card and the DAG.

- hand-derived values: ``log N - (N-1)/N`` at N = 1, 2, 4; exact best-of-N KL of two and of many equiprobable
  distinct outcomes (below the formula, approaching it); a binary reward on one prompt, where best-of-N *is* a tilt;
- properties: the level probabilities equal a brute-force enumeration of N draws; the tilt is the optimum (random
  policies never beat it at their KL); the toy's sequence-reward levels equal an enumeration; two reward levels
  (L = 1, binary) put best-of-N on the frontier;
- measurement: the base model against itself has KL exactly 0; batched log-probs equal one sequence at a time;
  the collected gaps equal the closed forms; protocol and base checks refuse bad inputs;
- claims: every branch of the three checks; the card parses, its claims use registered checks with thresholds;
  the verdict reads the toy file; the DAG dry-runs with the analysis rules.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.analyze import bon, bon_toy, reward_kl
from conftest import snakemake_dry_run

ROOT = Path(__file__).resolve().parents[1]
PINNED_BASE = ROOT / "results" / "models" / "smoke-558476240a4d"  # the pinned smoke-reasoning base model


# ------------------------------------------------------------------------------------- closed forms, by hand -----
def test_bon_kl_formula_hand_values():
    assert bon.bon_kl_formula([1, 2, 4]) == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75], abs=1e-15)
    assert float(bon.bon_kl_formula(2)) == pytest.approx(0.19314718055994530, abs=1e-15)
    with pytest.raises(ValueError, match="N >= 1"):
        bon.bon_kl_formula(0.5)


def test_exact_bon_kl_two_outcomes_by_hand_and_many_outcomes_approach_the_formula():
    # two equiprobable outcomes with different rewards, N = 2: P_2 = (1/4, 3/4) against (1/2, 1/2)
    c = bon.bon_curve([0.5, 0.5], [0.0, 1.0], [2])
    hand = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # 0.130812...
    assert c["kl"][0] == pytest.approx(hand, abs=1e-14) and c["reward"][0] == pytest.approx(0.75, abs=1e-15)
    assert c["kl"][0] < c["kl_formula"][0]
    # M distinct equiprobable outcomes: the exact KL rises with M towards log N - (N-1)/N (no ties in the limit)
    ns = [2, 4, 16, 64]
    prev = np.zeros(len(ns))
    for m in (2, 10, 100, 10_000):
        kl = np.array(bon.bon_curve(np.full(m, 1 / m), np.arange(m, dtype=float), ns)["kl"])
        assert np.all(kl <= bon.bon_kl_formula(ns) + 1e-12) and np.all(kl >= prev - 1e-12)
        prev = kl
    assert prev == pytest.approx(bon.bon_kl_formula(ns), abs=5e-3)


def test_bon_levels_equal_a_brute_force_enumeration():
    p = np.array([0.2, 0.5, 0.3])
    for n in (1, 2, 3):
        brute = np.zeros(3)
        for draw in itertools.product(range(3), repeat=n):
            brute[max(draw)] += np.prod(p[list(draw)])
        assert bon.bon_levels(p, [n])[0] == pytest.approx(brute, abs=1e-15)
    huge = bon.bon_levels(p, [1e12])[0]  # no cancellation at huge N: all the mass on the top level
    assert huge == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)


def test_binary_reward_best_of_n_is_a_tilt_on_one_prompt():
    r, kl = bon.bon_binary([0.5], [2])
    assert r[0] == pytest.approx(0.75) and kl[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    tr, tkl = bon.tilt_binary([0.5], [math.log(3)])  # 0.5 * 3 / (0.5 * 3 + 0.5) = 0.75
    assert tr[0] == pytest.approx(0.75) and tkl[0] == pytest.approx(kl[0], abs=1e-14)
    assert bon.kl_bernoulli(0.75, 0.5) == pytest.approx(kl[0])
    assert bon.binary_endpoint([0.5, 0.25, 0.0]) == pytest.approx((2 / 3, (math.log(2) + math.log(4)) / 3))


def test_the_tilt_is_the_kl_optimum_and_best_of_n_lies_below_it_over_prompts():
    s = np.array([0.9, 0.5, 0.1, 0.02])
    lam = np.linspace(0, 12, 2000)
    tr, tkl = bon.tilt_binary(s, lam)
    rng = np.random.default_rng(0)
    for _ in range(300):  # any per-prompt success rates q: reward never above the frontier at their KL
        q = rng.uniform(0, 1, size=s.size)
        kl = float(bon.kl_bernoulli(q, s).mean())
        if kl <= tkl[-1]:
            assert q.mean() <= bon.interp_reward(tkl, tr, kl) + 1e-6
    br, bkl = bon.bon_binary(s, [2, 4, 8, 16])
    for r_, k in zip(br, bkl):
        assert r_ < bon.interp_reward(tkl, tr, k)  # heterogeneous prompts: one N is not the optimal allocation


# ----------------------------------------------------------------------------------------------- the toy -----
def test_toy_levels_equal_an_enumeration_and_the_tilt_is_its_per_token_optimum():
    p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])
    probs, values = bon_toy.levels(p, r, 3)
    brute = {}
    for seq in itertools.product(range(3), repeat=3):
        brute[sum(r[list(seq)])] = brute.get(sum(r[list(seq)]), 0.0) + np.prod(p[list(seq)])
    assert dict(zip(values.tolist(), probs.tolist())) == pytest.approx(brute)
    kl, rew = bon_toy.tilt(p, r, 0.0)
    assert kl == pytest.approx(0.0, abs=1e-15) and rew == pytest.approx(0.7)
    assert bon_toy.tilt_reward_at(p, r, bon_toy.tilt(p, r, 0.8)[0]) == pytest.approx(bon_toy.tilt(p, r, 0.8)[1])


def test_toy_with_two_reward_levels_puts_best_of_n_on_the_frontier():
    s = bon_toy.parse_settings({"token_probs": [0.6, 0.4], "token_rewards": [0, 1], "lengths": [1],
                                "kl_rate_min": 0.01, "kl_rate_max": 0.5, "grid_points": 50})
    out = bon_toy.compute(s)["lengths"]["1"]
    assert abs(out["max_gap"]) < 1e-9 and out["min_gap"] > -1e-9


def test_toy_gap_is_never_negative_and_the_kl_stays_below_the_formula():
    s = bon_toy.parse_settings({"lengths": [2, 8], "grid_points": 60})
    r = bon_toy.compute(s)
    assert r["never_above_optimum"] and r["length_order"] == [2, 8]
    for L in ("2", "8"):
        c = r["lengths"][L]
        assert min(c["gap"]) > -1e-9
        assert all(k <= f + 1e-12 for k, f in zip(c["kl_rate"], c["kl_formula_rate"]))


@pytest.mark.parametrize("bad,needle", [
    ({"nope": 1}, "unknown key 'nope'"), ({"token_probs": [0.5, 0.4]}, "summing to 1"),
    ({"token_rewards": [0, 1.5, 2]}, "non-negative integers"), ({"lengths": []}, "lengths must be"),
    ({"kl_rate_max": 5.0}, "kl_rate_max <"), ({"grid_points": 3}, "grid_points")])
def test_toy_bad_settings_name_what_is_valid(bad, needle):
    with pytest.raises(ValueError, match=needle):
        bon_toy.parse_settings(bad)


def test_toy_cli_writes_a_hashed_result_and_the_verdict_reads_it(tmp_path):
    from harness.claims.verdict import build_verdict
    from harness.results import content_hash

    out = tmp_path / "work" / "analysis" / "alignment_asymptotics" / "smoke" / "bon_toy.json"
    assert bon_toy.main(["--settings", "alignment_asymptotics:smoke", "--out", str(out)]) == 0
    a = json.loads(out.read_text())
    assert a["content_hash"] == content_hash(a) and a["source"] == {"paper": "alignment_asymptotics", "tier": "smoke"}
    v = build_verdict("alignment_asymptotics", "smoke", [], tmp_path / "v", tmp_path / "results", analyses=[str(out)])
    c = next(c for c in v["claims"] if c["id"] == "toy_bon_meets_kl_optimum_as_length_grows")
    r = a["result"]
    expected = r["gap_decreasing"] and r["shrink"] <= 0.5 and r["never_above_optimum"]
    assert c["verdict"] == ("reproduced" if expected else "not_reproduced")
    assert c["numbers"]["max_gap_by_length"] == r["max_gap_by_length"]
    others = [c for c in v["claims"] if c["id"] != "toy_bon_meets_kl_optimum_as_length_grows"]
    assert {c["verdict"] for c in others} == {"not_run"}
    assert bon_toy.main(["--settings", "alignment_asymptotics:paper", "--out", str(out)]) == 2


# ------------------------------------------------------------------------------ reward vs KL of checkpoints -----
def test_batched_logps_equal_one_sequence_at_a_time():
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(PINNED_BASE).eval()
    seqs = [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12, 13, 14, 2], [7, 8, 2]]
    starts = [2, 3, 1]
    batched = reward_kl._logps(model, seqs, starts, 1.3)
    for s, st, b in zip(seqs, starts, batched):
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([s])).logits[0, :-1].double() / 1.3, -1)
        one = sum(float(lp[t - 1, s[t]]) for t in range(st, len(s)))
        assert b == pytest.approx(one, abs=1e-4)


def test_base_against_itself_has_zero_kl_and_the_collected_gaps_are_the_closed_forms(tmp_path):
    from harness.analyze.record import analysis_record, write_analysis
    from harness.plan import resolve_job

    job = resolve_job("alignment_asymptotics", "smoke-reasoning", "grpo_kl2", 7)
    kw = dict(prompts=6, samples=4, seed=0, temperature=1.0, max_new_tokens=80)
    s_ck, ck = reward_kl.measure(job, PINNED_BASE, ref_dir=PINNED_BASE, **kw)
    s_b, base = reward_kl.measure(job, PINNED_BASE, **kw)
    assert s_ck == s_b and ck["kl"] == 0.0 and base["kl"] == 0.0 and ck["beta"] == 0.2
    assert ck["per_prompt"]["n_correct"] == base["per_prompt"]["n_correct"]  # same seed, same model: same samples
    assert ck["reward"] == pytest.approx(sum(base["per_prompt"]["n_correct"]) / 24)
    recs = []
    for src, res in (({"method": "base"}, base), ({"method": "grpo_kl2", "seed": 7}, ck)):
        recs.append(write_analysis(analysis_record("reward_kl", s_b, res, source=src), tmp_path / f"{len(recs)}.json"))
    # a made-up checkpoint at KL 0.3 and reward 0.6, on the same protocol
    fake = dict(ck, kl=0.3, reward=0.6, kl_ci=[0.2, 0.4], reward_ci=[0.5, 0.7], beta=1.0)
    recs.append(write_analysis(analysis_record("reward_kl", s_b, fake, source={"method": "grpo_kl3", "seed": 7}),
                               tmp_path / "2.json"))
    out = reward_kl.collect(recs, reward_kl.parse_settings({"methods": ["grpo_kl2", "grpo_kl3"], "ns": [1, 2, 4]}))
    s = np.asarray(base["per_prompt"]["n_correct"]) / 4
    assert out["bon"]["reward"] == pytest.approx(bon.bon_binary(s, [1, 2, 4])[0].tolist())
    assert out["bon"]["reward_unbiased"][0] == pytest.approx(s.mean()) and None not in out["bon"]["reward_unbiased"]
    r = out["runs"]["grpo_kl3/seed7"]
    assert r["bon_reward_at_kl"] == pytest.approx(bon.interp_reward(out["bon_dense"]["kl"], out["bon_dense"]["reward"],
                                                                    0.3, (out["endpoint"]["reward"],
                                                                          out["endpoint"]["kl"])))
    assert r["gap_bon"] == pytest.approx(r["bon_reward_at_kl"] - 0.6) and r["above_optimum"] == pytest.approx(
        0.6 - r["tilt_reward_at_kl"])
    assert r["tilt_reward_at_kl"] >= r["bon_reward_at_kl"] - 1e-9
    assert out["runs"]["grpo_kl2/seed7"]["gap_bon"] == pytest.approx(0.0, abs=1e-9)  # the base's own point
    with pytest.raises(ValueError, match="exactly one record of the base model"):
        reward_kl.collect(recs[1:], reward_kl.parse_settings({"methods": ["grpo_kl2"]}))
    other = write_analysis(analysis_record("reward_kl", {**s_b, "samples": 8}, ck, source={"method": "grpo"}),
                           tmp_path / "3.json")
    with pytest.raises(ValueError, match="2 protocols"):
        reward_kl.collect(recs + [other], reward_kl.parse_settings({"methods": ["grpo"]}))


def test_reward_kl_refuses_tool_tasks_and_bad_settings(tmp_path, capsys):
    from harness.plan import resolve_job

    job = resolve_job("tool_light", "smoke-reasoning", "grpo", 42)
    with pytest.raises(ValueError, match="runs a tool inside generation"):
        reward_kl.measure(job, PINNED_BASE, prompts=2, samples=2, seed=0, temperature=1.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="unknown key 'n'"):
        reward_kl.parse_settings({"methods": ["grpo"], "n": 3})
    with pytest.raises(ValueError, match="methods must be"):
        reward_kl.parse_settings({})
    assert reward_kl.main(["collect", str(tmp_path / "missing.json"), "--settings", "{}", "--out",
                           str(tmp_path / "o.json")]) == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- claims -----
def _rk(by: dict) -> dict:
    """A reward_kl analysis with runs {method: [(seed, beta, kl, reward, gap_bon, above_optimum)]}."""
    runs = {f"{m}/seed{s}": {"method": m, "seed": s, "beta": b, "kl": k, "reward": r, "gap_bon": g,
                             "above_optimum": o} for m, rows in by.items() for s, b, k, r, g, o in rows}
    return {"kind": "analysis_result", "analysis": "reward_kl", "content_hash": "h", "result": {"runs": runs}}


def test_claim_checks_every_branch():
    from harness.claims.papers.alignment_asymptotics import (bon_toy_convergence, reward_kl_frontier,
                                                             reward_kl_sweep)

    m = ["grpo", "grpo_kl1"]
    good = _rk({"grpo": [(1, 0.0, 4.0, 0.8, 0.010, -0.1), (2, 0.0, 4.4, 0.78, 0.012, -0.12),
                         (3, 0.0, 4.2, 0.79, 0.011, -0.11)],
                "grpo_kl1": [(1, 0.5, 1.0, 0.7, 0.000, -0.05), (2, 0.5, 1.2, 0.69, 0.002, -0.06),
                             (3, 0.5, 1.1, 0.7, 0.001, -0.05)]})
    assert reward_kl_sweep([], analysis="reward_kl", methods=m, min_ratio=2.0, analyses=[good])[0] == "reproduced"
    assert reward_kl_sweep([], analysis="reward_kl", methods=m, min_ratio=5.0, analyses=[good])[0] == "not_reproduced"
    assert reward_kl_sweep([], analysis="reward_kl", methods=m, min_ratio=2.0, analyses=[])[0] == "not_run"
    kw = dict(analysis="reward_kl", methods=m, tolerance=0.05)
    assert reward_kl_frontier([], curve="bon", mode="within", analyses=[good], **kw)[0] == "reproduced"
    far = _rk({"grpo": [(1, 0.0, 4.0, 0.6, 0.30, -0.3), (2, 0.0, 4.4, 0.6, 0.31, -0.3), (3, 0.0, 4.1, 0.6, 0.3, -0.3)],
               "grpo_kl1": [(1, 0.5, 1.0, 0.7, 0.0, -0.05), (2, 0.5, 1.2, 0.69, 0.01, -0.06)]})
    v, n = reward_kl_frontier([], curve="bon", mode="within", analyses=[far], **kw)
    assert v == "not_reproduced" and n["outside"] == ["grpo"]
    wide = _rk({"grpo": [(1, 0.0, 4.0, 0.6, 0.0, 0.0), (2, 0.0, 4.4, 0.6, 0.09, 0.0)],
                "grpo_kl1": [(1, 0.5, 1.0, 0.7, 0.0, 0.0), (2, 0.5, 1.2, 0.69, 0.01, 0.0)]})
    assert reward_kl_frontier([], curve="bon", mode="within", analyses=[wide], **kw)[0] == "inconclusive"
    assert reward_kl_frontier([], curve="tilt", mode="not_above", analyses=[good], **kw)[0] == "reproduced"
    above = _rk({"grpo": [(1, 0.0, 4.0, 0.9, 0.0, 0.06), (2, 0.0, 4.4, 0.6, 0.0, 0.0)],
                 "grpo_kl1": [(1, 0.5, 1.0, 0.7, 0.0, 0.0)]})
    v, n = reward_kl_frontier([], curve="tilt", mode="not_above", analyses=[above], **kw)
    assert v == "not_reproduced" and n["runs_above"] == ["grpo/seed1"]
    with pytest.raises(ValueError, match="curve must be one of bon, tilt"):
        reward_kl_frontier([], curve="nope", mode="within", analyses=[good], **kw)
    toy = {"kind": "analysis_result", "analysis": "bon_toy", "content_hash": "t", "result": {
        "length_order": [4, 16], "max_gap_by_length": [0.04, 0.03], "gap_decreasing": True, "shrink": 0.75,
        "never_above_optimum": True}}
    assert bon_toy_convergence([], max_shrink=0.5, analyses=[toy])[0] == "not_reproduced"
    assert bon_toy_convergence([], max_shrink=0.8, analyses=[toy])[0] == "reproduced"


def test_card_parses_with_registered_checks_and_the_sweep_methods():
    from harness.claims.registry import all_checks
    from harness.config import load_card
    from harness.methods.registry import get_method
    from harness.plan import resolve_job

    card = load_card("alignment_asymptotics")
    assert {c["check"] for c in card["claims"]} <= set(all_checks())
    for c in card["claims"]:
        assert c["params"] and c["statement"]
    betas = {m: resolve_job("alignment_asymptotics", "smoke-reasoning", m, 42)["trl"]["beta"] for m in card["methods"]}
    assert betas == {"grpo": 0.0, "grpo_kl1": 0.05, "grpo_kl2": 0.2, "grpo_kl3": 1.0}
    assert all(get_method(m).point == "config" for m in card["methods"])
    grpo = resolve_job("alignment_asymptotics", "smoke-reasoning", "grpo", 42)
    assert grpo["job_key"] == resolve_job("rep_geometry", "smoke-reasoning", "grpo", 42)["job_key"]  # shared job
    assert card["tiers"]["smoke-reasoning"]["analysis"]["bon_toy"] == card["tiers"]["smoke"]["analysis"]["bon_toy"]


def test_dag_dry_run_plans_the_sweep_and_the_analyses(tmp_path):
    stdout, counts = snakemake_dry_run(["paper=alignment_asymptotics", "tier=smoke-reasoning"], tmp_path)
    assert counts["train"] == 12 and counts["reward_kl_checkpoint"] == 12 and counts["reward_kl_base"] == 1
    assert counts["analyze_reward_kl"] == 1 and counts["analyze_bon_toy"] == 1
    assert "--temperature 1.0 --max-new-tokens 80" in stdout
