import json
import os

import numpy as np
import pytest

from harness.claims import all_checks

CHECKS = all_checks()
from harness.claims.law import early_late_prediction, fit_law, law
from harness.results import atomic_dir, atomic_write_json, compare_results, content_hash


def test_law_fit_recovers_known_parameters():
    h = np.linspace(0.2, 1.2, 40)
    r = law(h, 0.4, 1.1) + np.random.default_rng(0).normal(0, 0.002, h.size)
    f = fit_law(h, r)
    assert f.a == pytest.approx(0.4, abs=0.01) and f.b == pytest.approx(1.1, abs=0.01)
    assert f.r2 > 0.99 and f.ceiling == pytest.approx(f.b - f.a)
    pred = early_late_prediction(h[::-1], r[::-1], np.arange(40), 0.4)  # entropy falls over steps
    assert pred["rmse"] < 0.01


def _run(method, seed, entropies, accs, covs=None):
    steps = list(range(0, 10 * len(entropies), 10))
    metrics = [{"step": s, "entropy": e, "cov_logp_adv/mean": c}
               for s, e, c in zip(range(1, 10 * len(entropies)), np.repeat(entropies, 10), np.repeat(covs or [0] * len(entropies), 10))]
    return {"job": {"method": method, "seed": seed}, "metrics": metrics,
            "heldout": [{"step": s, "entropy": e, "sampled_acc": a} for s, e, a in zip(steps, entropies, accs)]}


H_GRPO = [0.6, 0.5, 0.44, 0.40, 0.37, 0.35]
ACC = [0.4, 0.47, 0.51, 0.53, 0.545, 0.555]


def test_entropy_drop_verdicts():
    fast = [_run("grpo", s, H_GRPO, ACC) for s in (1, 2)]
    assert CHECKS["entropy_drop"](fast, "grpo", 0.2, 0.4, 0.33)[0] == "reproduced"
    slow_start = [_run("grpo", s, [0.6, 0.59, 0.58, 0.5, 0.4, 0.3], ACC) for s in (1, 2)]
    assert CHECKS["entropy_drop"](slow_start, "grpo", 0.2, 0.4, 0.33)[0] == "not_reproduced"
    assert CHECKS["entropy_drop"](fast[:1], "grpo", 0.2, 0.4, 0.33)[0] == "inconclusive"


def test_claims_on_methods_that_were_not_trained_are_not_run():
    """A run restricted with methods= (here only grpo and clip_cov of entropy_mechanism): the claims that name kl_cov
    are not_run with the reason, not inconclusive; the others are judged; paper-tier claims stay tier-skipped."""
    from harness.claims.registry import evaluate_claims
    from harness.config import load_card

    card = load_card("entropy_mechanism")
    runs = [_run(m, s, H_GRPO if m == "grpo" else [h + 0.03 for h in H_GRPO], ACC) for m in ("grpo", "clip_cov")
            for s in (1, 2)]
    out = {c["id"]: c for c in evaluate_claims(card, "smoke", runs)}
    assert out["kl_cov_keeps_entropy_higher"]["verdict"] == "not_run"
    assert "no run of kl_cov" in out["kl_cov_keeps_entropy_higher"]["numbers"]["reason"]
    assert out["clip_cov_keeps_entropy_higher"]["verdict"] == "reproduced"
    assert out["qwen7b_cov_methods_beat_grpo"]["verdict"] == "not_run"          # paper tier
    assert "no run of" not in out["qwen7b_cov_methods_beat_grpo"]["numbers"]["reason"]


def test_entropy_above_baseline_verdicts():
    base = [_run("grpo", s, H_GRPO, ACC) for s in (1, 2)]
    higher = [_run("clip_cov", s, [h + 0.03 for h in H_GRPO], ACC) for s in (1, 2)]
    assert CHECKS["entropy_above_baseline"](base + higher, "clip_cov", "grpo", 0.8, 0.15)[0] == "reproduced"
    one_fails = [higher[0], _run("clip_cov", 2, [h - 0.01 for h in H_GRPO], ACC)]
    v, nums = CHECKS["entropy_above_baseline"](base + one_fails, "clip_cov", "grpo", 0.8, 0.15)
    assert v == "not_reproduced" and nums["per_seed"][2]["ok"] is False


def test_law_fit_verdicts():
    good = [_run("grpo", s, H_GRPO, [law(h, 0.5, 1.3) for h in H_GRPO]) for s in (1, 2)]
    assert CHECKS["law_fit"](good, ["grpo"], 0.7, 0.4)[0] == "reproduced"
    rng = np.random.default_rng(1)
    noise = [_run("grpo", s, H_GRPO, list(rng.uniform(0.3, 0.6, 6))) for s in (1, 2)]
    assert CHECKS["law_fit"](noise, ["grpo"], 0.7, 0.4)[0] == "not_reproduced"


def test_cov_correlation_verdicts():
    rng = np.random.default_rng(0)

    def runs(sign):
        out = []
        for s in range(4):
            cov = list(rng.uniform(0, 1, 12))
            h = np.cumsum([0.6] + [sign * 0.05 * c for c in cov[:-1]])   # dH over window w = sign*0.05*cov_w
            out.append(_run("grpo", s, list(h), [0.5] * 12, cov))
        return out

    assert CHECKS["cov_entropy_window_corr"](runs(-1))[0] == "reproduced"
    assert CHECKS["cov_entropy_window_corr"](runs(+1))[0] == "not_reproduced"
    flat = [_run("grpo", s, list(rng.uniform(0.3, 0.6, 3)), [0.5] * 3, [0.1] * 3) for s in range(2)]
    assert CHECKS["cov_entropy_window_corr"](flat)[0] == "inconclusive"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class Boom:
        pass
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"x": Boom()})
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("half")
            raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_content_hash_is_canonical_and_excludes_itself(tmp_path):
    a = {"b": 1, "a": [1.5, "x"]}
    assert content_hash(a) == content_hash({"a": [1.5, "x"], "b": 1})
    p = atomic_write_json(tmp_path / "r.json", a, hashed=True)
    stored = json.loads(p.read_text())
    assert stored["content_hash"] == content_hash(stored) == content_hash(a)


def test_compare_results_names_differing_fields():
    a = {"job": {"seed": 1}, "metrics": [{"step": 1, "entropy": 0.5}], "wall_seconds": 3}
    b = {"job": {"seed": 1}, "metrics": [{"step": 1, "entropy": 0.51}], "wall_seconds": 4}
    assert compare_results(a, b) == ["metrics[0].entropy"]
    assert compare_results(a, a) == []
    # every timing is volatile, at any depth (diff_info's DPO pair sampling time differed in its rerun)
    c = {"pairs": {"sampling_seconds": 1.5, "tokens_per_second": 9.0, "n": 4}}
    assert compare_results(c, {"pairs": {"sampling_seconds": 2.5, "tokens_per_second": 8.0, "n": 4}}) == []
    assert compare_results(c, {"pairs": {"sampling_seconds": 1.5, "tokens_per_second": 9.0, "n": 5}}) == ["pairs.n"]


def test_hash_of_written_file_matches_after_reload(tmp_path):
    """Int keys and NaN are stored as JSON strings/null: the stored hash must match the reloaded content."""
    p = atomic_write_json(tmp_path / "r.json", {"per_seed": {7: 1.0, 42: float("nan")}, "x": (1, 2)}, hashed=True)
    r = json.loads(p.read_text())
    assert content_hash(r) == r["content_hash"]
