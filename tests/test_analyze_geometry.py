"""rep_geometry (arXiv 2509.23024): RankMe and alpha-ReQ (harness/analyze/geometry.py) against hand-computed and
synthetic cases, their invariances, the one-checkpoint command line on a tiny smoke model (a rerun reproduces the
file except its timestamps), bad inputs, and the card's claim check (harness/claims/papers/rep_geometry.py)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from harness.analyze import geometry as G
from harness.config import ConfigError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _orthonormal(n: int, k: int, seed: int, *, centred: bool = False) -> np.ndarray:
    """(n, k) with orthonormal columns; ``centred``: also orthogonal to the ones vector (column means 0)."""
    a = np.random.default_rng(seed).standard_normal((n, k))
    if centred:
        a = np.concatenate([np.ones((n, 1)), a], axis=1)
        q = np.linalg.qr(a)[0]
        return q[:, 1:k + 1]
    return np.linalg.qr(a)[0]


def _with_singular_values(s, n: int, d: int, seed: int, *, centred: bool = False) -> np.ndarray:
    """An (n, d) matrix U diag(s) V^T with the given singular values (random orthonormal U, V)."""
    k = len(s)
    return _orthonormal(n, k, seed, centred=centred) @ np.diag(s) @ _orthonormal(d, k, seed + 1).T


# ------------------------------------------------------------------------------------------------- RankMe ------
def test_rankme_of_diag_3_2_1_by_hand():
    # singular values 3, 2, 1: p = 1/2, 1/3, 1/6; exp(H) = 2^(1/2) 3^(1/3) 6^(1/6) = 2.7494...
    x = np.diag([3.0, 2.0, 1.0])
    closed = 2 ** 0.5 * 3 ** (1 / 3) * 6 ** (1 / 6)
    assert closed == pytest.approx(2.749459, abs=1e-6)
    assert G.rankme(x, centring="none", eps=0.0) == pytest.approx(closed, rel=1e-13)
    # with the paper's eps = 1e-7 added to every p_k (Garrido et al. 2023, eq. 1)
    p = np.array([1 / 2, 1 / 3, 1 / 6]) + 1e-7
    assert G.rankme(x, centring="none") == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-13)
    assert G.rankme(x, centring="none") != G.rankme(x, centring="none", eps=0.0)  # eps is applied
    # the same singular values in a rotated 50 x 20 matrix
    y = _with_singular_values([3.0, 2.0, 1.0], 50, 20, seed=0)
    np.testing.assert_allclose(G.singular_values(y, centring="none")[:3], [3, 2, 1], rtol=1e-12)
    assert G.rankme(y, centring="none", eps=0.0) == pytest.approx(closed, rel=1e-10)


def test_rankme_rank_one_is_one_and_isotropic_is_d():
    u, v = np.arange(1.0, 41.0), np.linspace(-1, 2, 16)
    rank1 = np.outer(u, v)
    assert G.rankme(rank1, centring="none", eps=0.0) == pytest.approx(1.0, abs=1e-9)
    # with eps: 1 + O(k eps log(1/eps)): here 16 singular values, the 15 zeros each add ~eps*16
    assert 1.0 < G.rankme(rank1, centring="none") < 1.0 + 16 * 1e-7 * 17
    d = 12
    iso = 3.0 * _orthonormal(64, d, seed=1, centred=True)   # centred, all singular values 3
    assert G.rankme(iso, centring="none", eps=0.0) == pytest.approx(d, rel=1e-12)
    assert G.rankme(iso, centring="mean", eps=0.0) == pytest.approx(d, rel=1e-12)
    assert G.rankme(iso) == pytest.approx(d, rel=1e-5)
    # a rank-2 matrix padded to 30 x 10: RankMe of two equal singular values is 2
    two = _with_singular_values([5.0, 5.0], 30, 10, seed=3)
    assert G.rankme(two, centring="none", eps=0.0) == pytest.approx(2.0, rel=1e-10)


def test_rankme_matches_hidden_state_verl_effective_rank():
    """The shared card asks for one effective rank: RankMe with eps 0 on the centred X is VERL's ER (their 1e-8
    guards aside)."""
    import torch

    from harness.methods.hidden_state_verl import effective_rank

    x = np.random.default_rng(5).standard_normal((40, 16)) @ np.diag(np.linspace(3, 0.1, 16))
    assert G.rankme(x, centring="mean", eps=0.0) == pytest.approx(effective_rank(torch.tensor(x)), rel=1e-6)


# ---------------------------------------------------------------------------------------------- alpha-ReQ ------
def test_alpha_req_recovers_a_known_power_law():
    n, d, alpha = 300, 64, 1.3
    lam = 5.0 * np.arange(1, d + 1, dtype=float) ** -alpha
    x = _with_singular_values(np.sqrt((n - 1) * lam), n, d, seed=7, centred=True)
    np.testing.assert_allclose(G.cov_eigenvalues(x), lam, rtol=1e-9)       # cov(X) has exactly these eigenvalues
    fit = G.alpha_req(x)
    assert fit["ranks"] == [1, 32]                                           # floor(0.5 * min(299, 64))
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["log_c"] == pytest.approx(math.log(5.0), rel=1e-9)


def test_alpha_req_fit_range_is_applied():
    # k^-2 on the top half, then a collapsing tail: the stated fit range (top half) still reads 2
    k = np.arange(1, 101, dtype=float)
    lam = np.where(k <= 50, k ** -2.0, 50 ** -2.0 * np.exp(-(k - 50)))
    assert G.alpha_req_from_eigenvalues(lam, 1, 50)["alpha"] == pytest.approx(2.0, rel=1e-12)
    assert G.alpha_req_from_eigenvalues(lam, 1, 70)["alpha"] > 2.5           # the tail would bias a longer fit
    with pytest.raises(ValueError, match="rank 75 .*numerically 0"):          # 4e-4 exp(-25) < 1e-14 x lambda_1 = 1e-14
        G.alpha_req_from_eigenvalues(lam, 1, 100)
    # unsorted input is sorted descending first
    assert G.alpha_req_from_eigenvalues(lam[::-1], 1, 50)["alpha"] == pytest.approx(2.0, rel=1e-12)
    assert G.fit_ranks(256, 128) == (1, 64)
    assert G.fit_ranks(100, 128) == (1, 49)                                  # N - 1 caps the rank
    assert G.fit_ranks(256, 128, first_rank=3, last_fraction=1.0) == (3, 128)


@pytest.mark.parametrize("transform", ["rotate", "scale", "translate", "permute_rows"])
def test_invariances(transform):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((120, 24)) @ np.diag(np.arange(1, 25, dtype=float) ** -0.8) + 0.5
    if transform == "rotate":
        y = x @ _orthonormal(24, 24, seed=12)
    elif transform == "scale":
        y = 7.5 * x
    elif transform == "translate":
        y = x + rng.standard_normal(24) * 10
    else:
        y = x[rng.permutation(120)]
    assert G.rankme(y) == pytest.approx(G.rankme(x), rel=1e-9)
    assert G.alpha_req(y)["alpha"] == pytest.approx(G.alpha_req(x)["alpha"], rel=1e-9)
    if transform == "translate":  # without centring a shared offset changes RankMe: centring is in the protocol
        assert abs(G.rankme(y, centring="none") - G.rankme(x, centring="none")) > 0.1
    elif transform != "permute_rows":
        assert G.rankme(y, centring="none") == pytest.approx(G.rankme(x, centring="none"), rel=1e-9)


def test_bad_matrices_and_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="valid: mean, none"):
        G.rankme(np.eye(3), centring="zscore")
    with pytest.raises(ValueError, match="zero matrix"):
        G.rankme(np.zeros((4, 3)), centring="none")
    with pytest.raises(ValueError, match="finite"):
        G.rankme(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        G.rankme(np.ones(5))
    with pytest.raises(ValueError, match="fewer than 3 ranks"):
        G.fit_ranks(5, 128)
    with pytest.raises(ValueError, match=r"last_fraction must be in \(0, 1\]"):
        G.fit_ranks(256, 128, last_fraction=1.5)
    rank2 = _with_singular_values([2.0, 1.0], 40, 10, seed=2, centred=True)
    with pytest.raises(ValueError, match="eigenvalue of rank 3"):
        G.alpha_req(rank2, last_fraction=1.0)


# -------------------------------------------------------------------------------- a checkpoint, end to end ------
TINY_JOB = {"tier": "smoke", "job_key": "tinyjob", "config_hash": "0123456789abcdef",
            "model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
            "data": {"task": "addition", "split_seed": 1234, "n_val": 512},
            "eval": {"n_val": 64, "temperature": 1.0, "max_new_tokens": 4}}
VOLATILE = ("created", "wall_seconds", "content_hash")


def test_last_token_states_do_not_depend_on_the_batch(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data import smoke

    tok, model = AutoTokenizer.from_pretrained(tiny_base), AutoModelForCausalLM.from_pretrained(tiny_base)
    # prompts of different lengths (a tail of each held-out prompt), so that batches are padded
    prompts = [r["prompt"][i % 4:] for i, r in enumerate(smoke.rows(smoke.split_pairs(512, 1234)[1][:13]))]
    assert len({len(p) for p in prompts}) == 4
    one = G.last_token_states(model, tok, prompts, batch_size=1)
    many = G.last_token_states(model, tok, prompts, batch_size=5)
    assert one.shape == (13, 32)
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5)
    # the row is the LM head's input: the head applied to it gives the model's next-token logits
    import torch

    enc = tok(prompts[:1], return_tensors="pt", add_special_tokens=False)
    logits = model(**enc).logits[0, -1].double()
    head = model.get_output_embeddings().weight.double()
    torch.testing.assert_close(head @ torch.tensor(one[0]), logits, rtol=1e-4, atol=1e-4)


def test_cli_writes_a_result_a_rerun_reproduces(tiny_base, tmp_path):
    from harness.results import config_hash, content_hash

    (tmp_path / "job.json").write_text(json.dumps(TINY_JOB))
    args = ["--job", str(tmp_path / "job.json"), "--model-dir", str(tiny_base), "--probe-size", "96",
            "--source", "method=grpo,seed=42,tier=smoke,job_key=tinyjob"]
    assert G.main([*args, "--out", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    m = a["result"]
    assert a["kind"] == "analysis_result" and a["analysis"] == "geometry"
    assert a["content_hash"] == content_hash(a)
    assert a["protocol_hash"] == config_hash({"analysis": "geometry", "schema_version": 1, "settings": a["settings"]})
    assert a["source"] == {"method": "grpo", "seed": 42, "tier": "smoke", "job_key": "tinyjob"}
    assert m["job"]["config_hash"] == TINY_JOB["config_hash"] and "model.safetensors" in m["model_files"]
    assert m["model_sha256"] == content_hash(m["model_files"])
    assert m["representations"] == {"n_probes": 96, "hidden_size": 32, "max_rank": 32}
    assert a["settings"]["probe"]["probe_size"] == 96 and a["settings"]["rankme"]["centring"] == "mean"
    assert m["spectrum"]["alpha_fit"]["ranks"] == [1, 16]
    s = np.array(m["spectrum"]["singular_values"])
    assert m["rankme"] == pytest.approx(G.rankme_from_singular_values(s), rel=1e-12)
    assert 1.0 < m["rankme"] <= 32
    assert m["alpha_req"] == pytest.approx(
        G.alpha_req_from_eigenvalues(m["spectrum"]["cov_eigenvalues"], 1, 16)["alpha"], rel=1e-12)
    np.testing.assert_allclose(np.array(m["spectrum"]["cov_eigenvalues"]), s ** 2 / 95, rtol=1e-9)
    # a rerun (as a module, the DAG's way) writes the same file except its timestamps and hash
    proc = subprocess.run([sys.executable, "-m", "harness.analyze.geometry", *args, "--out", str(tmp_path / "b.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rankme=" in proc.stdout and "alpha_req=" in proc.stdout
    b = json.loads((tmp_path / "b.json").read_text())

    def strip(r):
        return json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, indent=1, sort_keys=True)

    assert strip(a) == strip(b)
    assert a["created"] and a["wall_seconds"] >= 0
    # another probe size or centring is another protocol (and other numbers)
    c = G.analyze_geometry_job(TINY_JOB, tiny_base, out=tmp_path / "c.json", probe_size=64, data_dir=tmp_path)
    d = G.analyze_geometry_job(TINY_JOB, tiny_base, out=None, probe_size=96, centring="none", data_dir=tmp_path)
    assert len({a["protocol_hash"], c["protocol_hash"], d["protocol_hash"]}) == 3
    assert c["source"] == {"method": "base", "tier": "smoke"}  # no source: the tier's base model
    assert d["result"]["alpha_req"] == m["alpha_req"]  # alpha-ReQ's cov(X) is centred either way
    assert d["result"]["rankme"] != m["rankme"]
    # one card's file from per-checkpoint files: one protocol, inputs = their content hashes
    base = G.analyze_geometry_job(TINY_JOB, tiny_base, out=tmp_path / "base.json", probe_size=96, data_dir=tmp_path)
    assert G.main(["collect", str(tmp_path / "a.json"), str(tmp_path / "base.json"), "--out",
                   str(tmp_path / "card.json"), "--source", "paper=rep_geometry,tier=smoke"]) == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["inputs"] == sorted([a["content_hash"], base["content_hash"]])
    assert [r["source"]["method"] for r in card["result"]["checkpoints"]] == ["base", "grpo"]
    assert card["protocol_hash"] == a["protocol_hash"] and card["source"] == {"paper": "rep_geometry", "tier": "smoke"}
    with pytest.raises(ConfigError, match="another protocol .*probe.probe_size"):
        G.collect([tmp_path / "a.json", tmp_path / "c.json"], tmp_path / "bad.json")
    (tmp_path / "edited.json").write_text(json.dumps({**a, "result": {**m, "rankme": 1.0}}))
    with pytest.raises(ValueError, match="edited.json: content_hash does not match its content"):
        G.collect([tmp_path / "edited.json"], tmp_path / "bad.json")
    # the claim check reads the collected file like the per-checkpoint ones
    from harness.claims.papers.rep_geometry import geometry_records

    assert [r["content_hash"] for r in geometry_records([card])] == [base["content_hash"], a["content_hash"]]


def test_cli_bad_inputs(tiny_base, tmp_path, capsys):
    (tmp_path / "job.json").write_text(json.dumps(TINY_JOB))
    common = ["--job", str(tmp_path / "job.json"), "--out", str(tmp_path / "x.json")]
    assert G.main([*common, "--model-dir", str(tiny_base), "--probe-size", "5000"]) == 2
    assert "probe size 5000 exceeds the job's 512 held-out prompts; valid: 2..512" in capsys.readouterr().err
    assert G.main([*common, "--model-dir", str(tiny_base), "--centring", "zscore"]) == 2
    assert "valid: mean, none" in capsys.readouterr().err
    assert G.main([*common, "--model-dir", str(tiny_base), "--probe-size", "4"]) == 2  # 3 ranks cannot be fitted
    assert "fewer than 3 ranks" in capsys.readouterr().err
    assert G.main([*common, "--model-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert G.main([*common, "--model-dir", str(tiny_base), "--source", "seed=1"]) == 2
    assert "method required" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"kind": "smoke"}}))
    assert G.main(["--job", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.json"),
                   "--model-dir", str(tiny_base)]) == 2
    assert "not a resolved job" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------------------ the claim check ------
def _analysis(method, value, seed=None, *, metric="rankme", phash="p1", model="base-sha"):
    src = {"method": method, "tier": "smoke-reasoning", **({"seed": seed} if seed is not None else {})}
    return {"kind": "analysis_result", "analysis": "geometry", "source": src, "protocol_hash": phash,
            "settings": {"probe": {"probe_size": 256 if phash == "p1" else 128}},
            "result": {metric: value, "model_sha256": model}}


def test_claim_check_verdicts():
    from harness.claims.papers.rep_geometry import geometry_vs_base
    from harness.claims.registry import all_checks

    assert all_checks()["geometry_vs_base"] is geometry_vs_base
    base = _analysis("base", 20.0)
    lower = [base, _analysis("grpo", 15.0, 42), _analysis("grpo", 16.0, 7), _analysis("grpo", 14.5, 1)]
    v, n = geometry_vs_base([], "grpo", "rankme", "lower", analyses=lower)
    assert v == "reproduced" and n["per_seed"] == {1: 14.5, 7: 16.0, 42: 15.0} and n["ci"][1] < 0
    diffs = [-5.0, -4.0, -5.5]
    half = 4.302652729911275 * np.std(diffs, ddof=1) / math.sqrt(3)          # t_{0.975, 2}
    assert n["ci"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], rel=1e-9)
    assert geometry_vs_base([], "grpo", "rankme", "higher", analyses=lower)[0] == "not_reproduced"
    mixed = [base, _analysis("grpo", 15.0, 42), _analysis("grpo", 25.0, 7), _analysis("grpo", 19.0, 1)]
    v, n = geometry_vs_base([], "grpo", "rankme", "lower", analyses=mixed)
    assert v == "inconclusive" and "contains 0" in n["reason"]
    assert geometry_vs_base([], "grpo", "rankme", "lower", analyses=lower[:2])[0] == "inconclusive"  # one seed
    collected = {"kind": "analysis_result", "analysis": "geometry", "result": {"checkpoints": lower}}
    assert geometry_vs_base([], "grpo", "rankme", "lower", analyses=[collected])[0] == "reproduced"
    # analyses passed among the evals are read too (other records ignored)
    evals = [{"kind": "eval_result", "source": {"method": "grpo"}}, *lower]
    assert geometry_vs_base([], "grpo", "rankme", "lower", evals=evals)[0] == "reproduced"
    # no SFT stage: not run; no base analysis: inconclusive; protocols differ: inconclusive naming the field
    v, n = geometry_vs_base([], "sft", "rankme", "higher", analyses=lower)
    assert v == "not_run" and "sft" in n["reason"]
    assert geometry_vs_base([], "grpo", "rankme", "lower", analyses=lower[1:])[0] == "inconclusive"
    v, n = geometry_vs_base([], "grpo", "rankme", "lower", analyses=[*lower, _analysis("grpo", 1.0, 3, phash="p2")])
    assert v == "inconclusive" and "probe.probe_size" in n["reason"]
    v, n = geometry_vs_base([], "grpo", "rankme", "lower", analyses=[*lower, _analysis("base", 3.0, model="other")])
    assert v == "inconclusive" and "base models" in n["reason"]
    with pytest.raises(ValueError, match="valid: rankme, alpha_req"):
        geometry_vs_base([], "grpo", "effective_rank", "lower", analyses=lower)
    with pytest.raises(ValueError, match="valid: lower, higher"):
        geometry_vs_base([], "grpo", "rankme", "down", analyses=lower)


def test_card_claims_use_the_check():
    from harness.claims.registry import all_checks, evaluate_claims
    from harness.config import load_card

    card = load_card("rep_geometry")
    geo = [c for c in card["claims"] if c["check"] == "geometry_vs_base"]
    assert {(c["params"]["method"], c["params"]["metric"], c["params"]["direction"]) for c in geo} == {
        ("grpo", "rankme", "lower"), ("grpo", "alpha_req", "higher"),
        ("sft", "rankme", "higher"), ("sft", "alpha_req", "lower")}
    assert all(c["tier"] == ["smoke-reasoning"] for c in geo) and "geometry_vs_base" in all_checks()
    # with GRPO trained but no SFT stage, the SFT claims read not_run
    runs = [{"job": {"method": "grpo", "seed": s}, "metrics": []} for s in (42, 7, 1)]
    out = {c["id"]: c["verdict"] for c in evaluate_claims(card, "smoke-reasoning", runs, evals=[])}
    assert out["rep_geometry_sft_raises_rankme"] == out["rep_geometry_sft_lowers_alpha_req"] == "not_run"
    assert out["rlvr_compression_seeking"] == "not_run"
