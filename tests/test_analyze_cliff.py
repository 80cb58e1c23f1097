"""The policy cliff (harness/analyze/cliff.py) against its closed form, the analysis file it writes, and the path of
an analysis result to the verdict (claims read files only) and into the pinned results."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from harness.analyze.cliff import (compute, main, parse_settings, run, settings_arg, softmax_policy,
                                   argmax_policy)
from harness.results import content_hash

TWO_ARMS = {"rewards": [[1.0, 0.0], [0.0, 1.0]], "weights": [1.0, 1.0], "direction": [1.0, -1.0],
            "eps_max": 0.05, "n_eps": 11, "taus": [0.1]}


def _curve(settings, key):
    return compute(parse_settings(settings))["curves"][key]


# ------------------------------------------------------------------------------------------ closed form ------
def test_two_arm_bandit_hand_values():
    """r_eps = (1 + eps, 1 - eps): pi_tau(eps)[0] = sigmoid(2 eps / tau); at eps = 0.05, tau = 0.1 that is
    sigmoid(1) = 0.7310585786300049, KL to the uniform tie = log 2 - H = 0.11094407167172737, TV = 0.2310585786..."""
    r = compute(parse_settings(TWO_ARMS))
    assert r["eps"][0] == pytest.approx(-0.05) and r["eps"][5] == 0.0 and r["eps"][10] == pytest.approx(0.05)
    c = r["curves"]["tau=0.1"]
    assert c["policy"][10][0] == pytest.approx(0.7310585786300049, abs=1e-12)
    assert c["policy"][0][0] == pytest.approx(1 - 0.7310585786300049, abs=1e-12)
    assert c["policy"][5] == [0.5, 0.5]
    assert c["kl_to_eps0"][10] == pytest.approx(0.11094407167172737, abs=1e-12)
    assert c["tv_to_eps0"][10] == pytest.approx(0.2310585786300049, abs=1e-12)
    assert c["target_rate"][7] == pytest.approx(1 / (1 + math.exp(-2 * 0.02 / 0.1)), abs=1e-12)
    # without the bonus: 0 -> 1/2 -> 1, KL log 2 and TV 1/2 at every eps != 0, a jump of TV 1 across 0
    u = r["curves"]["unregularised"]
    assert u["target_rate"] == [0.0] * 5 + [0.5] + [1.0] * 5
    assert u["kl_to_eps0"][:5] == u["kl_to_eps0"][6:] == [pytest.approx(math.log(2))] * 5 and u["kl_to_eps0"][5] == 0
    assert u["tv_to_eps0"][4] == u["tv_to_eps0"][6] == 0.5
    assert u["jump_tv"] == 1.0 and u["jump_target_rate"] == 1.0


def test_grid_matches_the_closed_form_limits():
    """Default 3-arm bandit: arms 0 and 1 tied at 1, arm 2 at 0.6; the grid's unregularised policies next to 0 are
    the closed form's left/right limits, whatever the grid step."""
    for n_eps in (3, 11, 1001):
        s = parse_settings({"n_eps": n_eps, "eps_max": 0.1})
        r = compute(s)
        cf, u, i0 = r["closed_form"], r["curves"]["unregularised"], n_eps // 2
        assert cf["tied_arms"] == [0, 1] and cf["v"] == [1.0, -1.0, 0.0]
        assert u["policy"][i0 + 1] == cf["unregularised"]["right_limit"] == [1.0, 0.0, 0.0]
        assert u["policy"][i0 - 1] == cf["unregularised"]["left_limit"] == [0.0, 1.0, 0.0]
        assert u["policy"][i0] == [0.5, 0.5, 0.0]
        assert u["kl_to_eps0"][i0 + 1] == pytest.approx(cf["unregularised"]["kl_right"]) == math.log(2)
        assert u["jump_tv"] == cf["unregularised"]["jump_tv"] == 1.0


def test_three_tied_arms_closed_form():
    """Three arms tied, v = (1, 1, -1): right limit uniform on arms {0, 1} (KL log(3/2), TV 1/3), left limit arm 2
    (KL log 3, TV 2/3); across 0 the policy moves by TV 1."""
    s = {"rewards": [[1.0, 1.0], [1.0, 1.0], [1.0, -1.0]], "weights": [1.0, 0.0], "direction": [0.0, 1.0],
         "taus": [0.1], "n_eps": 5}
    r = compute(parse_settings(s))
    u, cf = r["curves"]["unregularised"], r["closed_form"]["unregularised"]
    assert u["policy"][3] == pytest.approx([0.5, 0.5, 0.0]) and u["policy"][1] == [0.0, 0.0, 1.0]
    assert u["kl_to_eps0"][3] == pytest.approx(math.log(1.5)) == cf["kl_right"]
    assert u["kl_to_eps0"][1] == pytest.approx(math.log(3)) == pytest.approx(cf["kl_left"])
    assert u["tv_to_eps0"][3] == pytest.approx(1 / 3) and u["tv_to_eps0"][1] == pytest.approx(2 / 3)
    assert u["jump_tv"] == pytest.approx(1.0)


def test_tau_to_zero_approaches_the_argmax_policy():
    s = parse_settings({"taus": [0.1, 0.01, 1e-3, 1e-4], "n_eps": 11})
    r = compute(s)
    u = np.asarray(r["curves"]["unregularised"]["policy"])
    gaps = [float(np.abs(np.asarray(r["curves"][f"tau={t:g}"]["policy"]) - u).max()) for t in s.taus]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-12
    # at the tie itself the tied arms share evenly for every tau (never a corner), the tie split as tau -> 0
    for t in s.taus:
        p0 = r["curves"][f"tau={t:g}"]["policy"][5]
        assert p0[0] == p0[1] and p0[2] == pytest.approx(1 / (2 * np.exp(min(0.4 / t, 700.0)) + 1), rel=1e-9, abs=1e-300)
    assert r["curves"]["tau=0.01"]["policy"][5] == pytest.approx([0.5, 0.5, 0.0], abs=1e-12)
    # and a small tau does not smooth the cliff at this grid step: the jump is back
    assert r["curves"]["tau=0.0001"]["jump_tv"] > 0.999 and r["curves"]["tau=0.1"]["jump_tv"] < 0.1


def test_lipschitz_bound_holds_and_is_tight():
    """||pi(eps) - pi(eps')||_1 <= |eps - eps'| span(v) / (2 tau) on every grid step, for random bandits with a tie;
    the bound is attained at a two-arm tie (finite differences approach it) and matches the slope at 0."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        K, M = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        R, w, q = rng.normal(size=(K, M)), rng.normal(size=M), rng.normal(size=M)
        u = w / (w @ w)
        R[1] = R[0] + q - (q @ w) * u  # arm 1 ties arm 0 under w (a move orthogonal to w)
        shift = max(0.0, float((R[2:] @ w).max(initial=-np.inf) - R[0] @ w)) + 1.0
        R[:2] += shift * u  # both strictly above the other arms
        taus = [float(t) for t in rng.uniform(0.01, 1.0, size=3)]
        s = parse_settings({"rewards": R.tolist(), "weights": w.tolist(), "direction": rng.normal(size=M).tolist(),
                            "eps_max": float(rng.uniform(0.01, 1.0)), "n_eps": 41, "taus": taus})
        r = compute(s)
        v = np.asarray(r["closed_form"]["v"])
        for t in taus:
            c = r["curves"][f"tau={t:g}"]
            assert c["lipschitz_bound_l1"] == pytest.approx((v.max() - v.min()) / (2 * t))
            assert c["max_l1_slope"] <= c["lipschitz_bound_l1"] * (1 + 1e-9) and c["within_lipschitz_bound"]
            assert c["lipschitz_bound_l1"] <= np.abs(v).max() / t + 1e-12  # the 1/tau form of the bound
    two = compute(parse_settings({**TWO_ARMS, "n_eps": 2001, "taus": [0.05]}))
    c, cf = two["curves"]["tau=0.05"], two["closed_form"]["regularised"]["tau=0.05"]
    assert cf["slope_l1_at_0"] == pytest.approx(cf["lipschitz_bound_l1"]) == 20.0
    assert c["max_l1_slope"] == pytest.approx(20.0, rel=1e-3)


def test_slope_and_kl_curvature_at_zero_match_the_grid():
    s = parse_settings({"taus": [0.05, 0.2], "eps_max": 1e-3, "n_eps": 201})
    r = compute(s)
    h, i0 = r["eps_step"], 100
    for t in s.taus:
        c, cf = r["curves"][f"tau={t:g}"], r["closed_form"]["regularised"][f"tau={t:g}"]
        p = np.asarray(c["policy"])
        assert np.abs(p[i0 + 1] - p[i0 - 1]).sum() / (2 * h) == pytest.approx(cf["slope_l1_at_0"], rel=1e-4)
        assert c["kl_to_eps0"][i0 + 1] / (h * h / 2) == pytest.approx(cf["kl_curvature_at_0"], rel=1e-3)


def test_policies_are_the_optima_they_claim():
    """softmax(r / tau) maximises E[r] + tau H over the simplex (checked against random policies); the argmax policy
    is uniform on the optimal set."""
    rng = np.random.default_rng(1)
    r, tau = np.array([1.0, 1.0, 0.6, 0.2]), 0.07
    p = softmax_policy(r, tau)
    obj = lambda q: float(q @ r - tau * np.sum(q[q > 0] * np.log(q[q > 0])))  # noqa: E731
    for q in rng.dirichlet(np.ones(4), size=500):
        assert obj(q) <= obj(p) + 1e-12
    assert argmax_policy(r).tolist() == [0.5, 0.5, 0.0, 0.0]


# ----------------------------------------------------------------------------------------- the result file ------
def test_cli_writes_a_hashed_analysis_result(tmp_path):
    out = tmp_path / "a" / "cliff.json"
    p = subprocess.run([sys.executable, "-m", "harness.analyze.cliff", "--settings", json.dumps(TWO_ARMS),
                        "--out", str(out), "--source", "paper=policy_cliff,tier=smoke"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    a = json.loads(out.read_text())
    assert a["kind"] == "analysis_result" and a["analysis"] == "cliff" and a["content_hash"] == content_hash(a)
    assert a["settings"] == {**TWO_ARMS, "target_arm": 0, "tie_tol": 1e-9}  # defaults filled in
    assert a["source"] == {"paper": "policy_cliff", "tier": "smoke"} and a["inputs"] == []
    assert {"git_commit", "versions", "hardware", "protocol_hash", "settings_hash", "created"} <= set(a)
    assert a["result"]["curves"]["unregularised"]["jump_tv"] == 1.0
    assert sorted(x.name for x in out.parent.iterdir()) == ["cliff.json"]  # atomic: no temporary file left
    # same settings, same protocol and numbers; other settings, another protocol
    b = run(TWO_ARMS, tmp_path / "b.json")
    assert b["protocol_hash"] == a["protocol_hash"] and b["result"] == a["result"]
    assert run({**TWO_ARMS, "taus": [0.2]}, tmp_path / "c.json")["protocol_hash"] != a["protocol_hash"]


def test_settings_from_the_card():
    settings, source = settings_arg("policy_cliff:smoke")
    assert source == {"paper": "policy_cliff", "tier": "smoke"}
    s = parse_settings(settings)
    assert s.taus == [0.02, 0.05, 0.1] and s.n_eps == 101
    assert settings_arg("policy_cliff:smoke-reasoning")[0] == settings  # derived tier inherits the block


@pytest.mark.parametrize("bad, needle", [
    ({"tau": [0.1]}, "unknown key 'tau'; valid keys: rewards, weights"),
    ({"n_eps": 10}, "n_eps must be an odd integer >= 3"),
    ({"eps_max": 0}, "eps_max must be a positive number"),
    ({"taus": [0.1, 0.0]}, "taus must be a non-empty list of positive"),
    ({"taus": []}, "taus must be a non-empty list"),
    ({"weights": [1.0]}, "weights and direction need 2 entries"),
    ({"rewards": [[1.0, 0.0]]}, "K x M matrix with K >= 2 arms"),
    ({"rewards": [[1.0, 0.0], [0.0, 0.9]]}, "needs at least two tied optimal arms"),
    ({"target_arm": 3}, "target_arm must be an arm index in 0..2"),
    ({"rewards": "abc"}, "must be numbers"),
])
def test_bad_settings_name_what_is_valid(bad, needle):
    with pytest.raises(ValueError) as e:
        parse_settings(bad)
    assert needle in str(e.value)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    for arg, needle in (("policy_cliff:paper", "has no tier 'paper'; valid: smoke, smoke-reasoning"),
                        ("copo:smoke", "has no analysis.cliff block"),
                        ("nope", "give a JSON object, a JSON file, or <paper>:<tier>"),
                        ('{"n_eps": 4}', "n_eps must be an odd integer"),
                        ("{not json", "not valid JSON")):
        assert main(["--settings", arg, "--out", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.strip().count("\n") == 0, err
    assert main(["--out", str(tmp_path / "x.json"), "--source", "method=grpo"]) == 2
    assert "valid: paper=<id>,tier=<tier>" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------- verdict and pin, end to end ------
def _card_analysis(work, tier="smoke", **over):
    settings, _ = settings_arg(f"policy_cliff:{tier}")
    out = work / "analysis" / "policy_cliff" / tier / "cliff.json"
    return out, run({**settings, **over}, out, source={"paper": "policy_cliff", "tier": tier})


def test_verdict_reads_the_analysis_file(tmp_path):
    from harness.claims.verdict import build_verdict

    path, a = _card_analysis(tmp_path / "work")
    v = build_verdict("policy_cliff", "smoke", [], tmp_path / "v", tmp_path / "results", analyses=[str(path)])
    claims = {c["id"]: c for c in v["claims"]}
    c1 = claims["bandit_cliff_without_bonus_continuity_with_it"]
    assert c1["verdict"] == "reproduced", c1["numbers"]
    assert c1["numbers"]["analysis_hash"] == a["content_hash"]
    assert c1["numbers"]["jumps_without_bonus"] == {"unregularised": True}
    assert set(c1["numbers"]["continuous_with_bonus"]) == {"tau=0.02", "tau=0.05", "tau=0.1"}
    c2 = claims["lm_sweep_step_without_bonus_smooth_with_it"]
    assert c2["verdict"] == "not_run" and "smoke-reasoning" in c2["numbers"]["reason"]
    assert v["analysis_inputs"] == [a["content_hash"]] and v["law_fits"] == {} and v["runs"] == {}
    assert v["analyses"]["cliff:tier=smoke"]["content_hash"] == a["content_hash"]
    on_disk = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert on_disk["content_hash"] == content_hash(on_disk)
    # smoke-reasoning: claim 1 again, claim 2 judged and not run (no cliff_sweep analysis is produced yet)
    path_r, _ = _card_analysis(tmp_path / "work", "smoke-reasoning")
    v = build_verdict("policy_cliff", "smoke-reasoning", [], tmp_path / "vr", tmp_path / "results",
                      analyses=[str(path_r)])
    out = {c["id"]: c for c in v["claims"]}
    assert out["bandit_cliff_without_bonus_continuity_with_it"]["verdict"] == "reproduced"
    c2 = out["lm_sweep_step_without_bonus_smooth_with_it"]
    assert c2["verdict"] == "not_run" and "no analysis 'cliff_sweep'" in c2["numbers"]["reason"]


def test_verdict_claim_fails_when_the_bonus_is_too_small(tmp_path):
    """tau = 1e-4 at grid step 1e-3: the regularised policy still jumps across 0, so the continuity half fails."""
    from harness.claims.verdict import build_verdict

    path, _ = _card_analysis(tmp_path / "work", taus=[1e-4, 0.1])
    v = build_verdict("policy_cliff", "smoke", [], tmp_path / "v", tmp_path / "results", analyses=[str(path)])
    c1 = next(c for c in v["claims"] if c["id"] == "bandit_cliff_without_bonus_continuity_with_it")
    assert c1["verdict"] == "not_reproduced"
    assert c1["numbers"]["continuous_with_bonus"] == {"tau=0.0001": False, "tau=0.1": True}


def test_verdict_rejects_bad_analysis_files(tmp_path):
    from harness.claims.verdict import build_verdict

    path, a = _card_analysis(tmp_path / "work")
    with pytest.raises(SystemExit, match="an analysis of tier 'smoke', not of this verdict's policy_cliff"):
        build_verdict("policy_cliff", "smoke-reasoning", [], tmp_path / "v", tmp_path / "r", analyses=[str(path)])
    edited = {**a, "result": {**a["result"], "eps_step": 0.5}}
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(SystemExit, match="does not match its content"):
        build_verdict("policy_cliff", "smoke", [], tmp_path / "v", tmp_path / "r",
                      analyses=[str(tmp_path / "edited.json")])
    (tmp_path / "train.json").write_text(json.dumps({"kind": "train_result"}))
    with pytest.raises(SystemExit, match="not an analysis result .* valid: analysis_result"):
        build_verdict("policy_cliff", "smoke", [], tmp_path / "v", tmp_path / "r", analyses=[str(tmp_path / "train.json")])
    with pytest.raises(SystemExit, match="two analysis results of cliff"):
        build_verdict("policy_cliff", "smoke", [], tmp_path / "v", tmp_path / "r", analyses=[str(path), str(path)])


def test_sweep_curves_need_seeds_and_a_step():
    """The same check on measured curves (the tiny-LM sweep's form): fewer seeds than asked -> inconclusive; a step
    without the bonus and a smooth curve with it -> reproduced; no step -> not reproduced."""
    from harness.claims.papers.policy_cliff import policy_cliff_jump

    def sweep(jump0, jump_c, n):
        return {"kind": "analysis_result", "analysis": "cliff_sweep", "content_hash": "h", "result": {"curves": {
            "coef=0": {"tau": 0.0, "jump_tv": jump0, "jump_tv_sd": 0.05, "n_seeds": n},
            "coef=0.01": {"tau": 0.01, "jump_tv": jump_c, "jump_tv_sd": 0.02, "n_seeds": n}}}}

    kw = {"analysis": "cliff_sweep", "jump_min": 0.5, "smooth_max": 0.25, "min_seeds": 3}
    assert policy_cliff_jump([], analyses=[sweep(0.8, 0.1, 2)], **kw)[0] == "inconclusive"
    verdict, numbers = policy_cliff_jump([], analyses=[sweep(0.8, 0.1, 3)], **kw)
    assert verdict == "reproduced" and numbers["curves"]["coef=0"]["jump_tv_sd"] == 0.05
    assert policy_cliff_jump([], analyses=[sweep(0.3, 0.1, 3)], **kw)[0] == "not_reproduced"
    assert policy_cliff_jump([], analyses=[sweep(0.8, 0.4, 3)], **kw)[0] == "not_reproduced"
    assert policy_cliff_jump([], analyses=[], **kw)[0] == "not_run"
    only_flat = sweep(0.8, 0.1, 3)
    del only_flat["result"]["curves"]["coef=0.01"]
    assert policy_cliff_jump([], analyses=[only_flat], **kw)[0] == "inconclusive"


def test_pin_copies_the_analysis_and_a_rerun_compares_with_it(tmp_path):
    from harness.claims.verdict import build_verdict
    from harness.config import ConfigError
    from harness.report.pin import pin_files
    from harness.results import file_sha256

    work, results = tmp_path / "work", tmp_path / "results"
    path, a = _card_analysis(work)
    vdir = work / "verdicts" / "policy_cliff" / "smoke"
    v = build_verdict("policy_cliff", "smoke", [], vdir, results, analyses=[str(path)])
    assert v["reproducibility"]["status"] == "no_pinned_results"
    dest = pin_files("policy_cliff", "smoke", work, results)
    pinned = dest / "analysis" / "cliff.json"
    assert file_sha256(pinned) == file_sha256(path)
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["files"]["analysis/cliff.json"] == file_sha256(path) and "verdict.json" in manifest["files"]
    # a rerun (same settings): identical; other settings: protocol changed; an edited pinned number: failure
    path2, _ = _card_analysis(tmp_path / "rerun")
    rep = build_verdict("policy_cliff", "smoke", [], tmp_path / "v2", results, analyses=[str(path2)])["reproducibility"]
    assert rep["status"] == "identical" and rep["analyses"]["cliff:tier=smoke"]["status"] == "identical"
    path3, _ = _card_analysis(tmp_path / "other", taus=[0.3])
    rep = build_verdict("policy_cliff", "smoke", [], tmp_path / "v3", results, analyses=[str(path3)])["reproducibility"]
    assert rep["analyses"]["cliff:tier=smoke"]["status"] == "protocol_changed" and rep["status"] == "partial"
    from harness.results import atomic_write_json

    p = json.loads(pinned.read_text())
    p["result"]["curves"]["unregularised"]["jump_tv"] = 0.5
    atomic_write_json(pinned, {k: v for k, v in p.items() if k != "content_hash"}, hashed=True)
    rep = build_verdict("policy_cliff", "smoke", [], tmp_path / "v4", results, analyses=[str(path2)])["reproducibility"]
    assert rep["status"] == "failure"
    assert rep["analyses"]["cliff:tier=smoke"]["fields_differing"] == ["result.curves.unregularised.jump_tv"]
    # the verdict's analysis gone from the work dir: pinning stops and says so
    path.unlink()
    with pytest.raises(ConfigError, match="refers to analysis results not found"):
        pin_files("policy_cliff", "smoke", work, results)
