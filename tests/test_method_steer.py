"""STEER against numbers computed with the authors' reference implementation.

Fixture: tests/fixtures/steer_golden.json, generated outside this repo from zz-haooo/STEER@b31df716
``verl/trainer/ppo/core_algos.py`` (``compute_token_weights``, ``compute_policy_loss_with_entropy``, ``agg_loss``),
torch CPU float32 (the authors allocate the weights in float32). Tolerances are float32's.
"""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import TokenContext, ppo_clipped_loss
from harness.methods.steer import dual_clip_ppo_loss
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "steer_golden.json").read_text())
CASES = FIX["cases"]


def _hparams(case):
    hp = case["hparams"]
    return {"lambda_min": hp["token_weight_min"], "lambda_max": hp["token_weight_max"],
            "mode": "linear" if hp["linear"] else "exp", "clip_ratio_low": hp["cliprange_low"],
            "clip_ratio_high": hp["cliprange_high"], "clip_ratio_c": hp["clip_ratio_c"]}


def _ctx(case, dtype=torch.float32):
    t = {k: torch.tensor(v, dtype=dtype) for k, v in case["inputs"].items()}
    logps = t["log_prob"].clone().requires_grad_(True)
    return TokenContext.build(logps, t["old_log_prob"], t["advantages"], t["response_mask"],
                              entropies=t["entropys"]), logps


def _run(case, **over):
    ctx, logps = _ctx(case)
    method = get_method("steer")
    per_token, metrics = method.fn(ctx, **method.resolve({**_hparams(case), **over}))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()          # verl token-mean (bnpo)
    loss.backward()
    return ctx, per_token, loss, logps.grad, metrics


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_weights_and_gradient_match_authors_code(case):
    ctx, per_token, loss, grad, metrics = _run(case)
    exp = case["expected"]
    assert loss.item() == pytest.approx(exp["loss"], rel=2e-6, abs=1e-7)
    torch.testing.assert_close(grad, torch.tensor(exp["grad_log_prob"]), rtol=2e-6, atol=1e-7)
    assert metrics["steer/mean_weight"] == pytest.approx(exp["token_weights_mean"], rel=1e-6)
    assert metrics["steer/min_weight"] == pytest.approx(exp["token_weights_min"], rel=1e-6)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_weights_match_and_stay_in_bounds(case):
    from harness.methods.steer import steer_omega, steer_weights
    ctx, _ = _ctx(case)
    hp = _hparams(case)
    w = steer_weights(steer_omega(ctx), ctx.mask, lambda_min=hp["lambda_min"], lambda_max=hp["lambda_max"],
                      omega_floor=0.02, mode=hp["mode"])
    torch.testing.assert_close(w, torch.tensor(case["expected"]["token_weights"]), rtol=1e-6, atol=1e-7)
    v = w[ctx.mask > 0]
    hi = hp["lambda_max"] if hp["mode"] == "linear" else 1.0
    assert float(v.min()) >= hp["lambda_min"] - 1e-6 and float(v.max()) <= hi + 1e-6
    assert torch.all(w[ctx.mask == 0] == 0)


def test_omega_floor_sets_k_when_omega_is_small():
    """max|Omega| < 0.02: k = -ln(0.8)/0.02, so no token reaches the floor 0.8 (authors' 0.02 floor copied)."""
    case = next(c for c in CASES if c["name"] == "exp_small_omega_floor")
    assert case["expected"]["max_abs_omega_valid"] < 0.02
    _, _, _, _, metrics = _run(case)
    assert metrics["steer/min_weight"] > 0.8


def test_lambda_min_one_with_no_dual_clip_is_the_baseline_exactly():
    """Invariant: lambda_min = 1 (every weight 1) and c = inf give TRL/verl's PPO clipped loss, bit for bit."""
    for case in CASES:
        ctx, per_token, _, _, metrics = _run(case, lambda_min=1.0, lambda_max=1.0, clip_ratio_c=float("inf"))
        base, _ = ppo_clipped_loss(ctx, case["hparams"]["cliprange_low"], case["hparams"]["cliprange_high"])
        assert torch.equal(per_token * ctx.mask, base * ctx.mask)
        assert metrics["method/frac_tokens_touched"] == 0.0 and metrics["steer/mean_weight"] == 1.0


def test_dual_clip_binds_in_the_fixture():
    case = next(c for c in CASES if c["name"] == "exp_dual_clip_active")
    ctx, _ = _ctx(case)
    _, _, dual = dual_clip_ppo_loss(ctx, 0.2, 0.28, 10.0)
    assert int(dual.sum()) > 0


def test_down_weights_large_omega_tokens():
    """Monotone in |Omega|: the token with the largest |Omega| gets the smallest weight (lambda_min in exp mode)."""
    from harness.methods.steer import steer_omega, steer_weights
    ctx, _ = _ctx(CASES[0])
    om = steer_omega(ctx)
    w = steer_weights(om, ctx.mask, lambda_min=0.8, lambda_max=1.0, omega_floor=0.02, mode="exp")
    valid = ctx.mask > 0
    i = torch.argmax(om.abs() * valid)
    assert w.flatten()[i] == pytest.approx(0.8)
    order = torch.argsort(om.abs()[valid])
    assert torch.all(torch.diff(w[valid][order]) <= 1e-7)


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("b31df716")
    assert FIX["source"]["file"] == "verl/trainer/ppo/core_algos.py"
