"""Lp-Reg against numbers computed with the authors' code (tests/fixtures/lp_reg_golden.json:
CarlanLark/Lp-Reg-dev@33b27e2 ``compute_policy_loss_lp_reg`` + ``apply_min_p``; float64 CPU), plus invariants.
The authors' masked_mean divides by mask.sum() + 1e-8 (relative 1e-10 here), hence rtol 1e-8."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import TokenContext, ppo_clipped_loss
from harness.methods import lp_reg as lp_mod
from harness.methods.registry import get_method
from conftest import assert_matches_golden

FIX = json.loads((Path(__file__).parent / "fixtures" / "lp_reg_golden.json").read_text())
CASES = FIX["cases"]


def _ctx(case):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items() if k != "completion_ids"}
    logps = t["logps"].clone().requires_grad_(True)
    ctx = TokenContext.build(logps, t["old_logps"], t["advantages"], t["mask"])
    ctx.old_logits = t["old_logits"]
    return ctx, logps


def _run(case, **over):
    ctx, logps = _ctx(case)
    m = get_method("lp_reg")
    per_token, metrics = m.fn(ctx, **m.resolve({**case["hparams"], **over}))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()        # verl token-mean
    loss.backward()
    return loss, logps.grad, metrics, ctx


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_and_gradient_match_authors_code(case):
    loss, grad, metrics, _ = _run(case)
    exp = case["expected"]
    assert_matches_golden(loss, grad, exp)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_proxy_logprob_matches_apply_min_p(case):
    ctx, _ = _ctx(case)
    proxy, kept = lp_mod.minp_proxy_logprob(ctx.old_logits, ctx.old_logps, case["hparams"]["minp_p_threshold"])
    exp = torch.tensor(case["expected"]["proxy_logp"], dtype=torch.float64)
    torch.testing.assert_close(proxy[kept], exp[kept], rtol=1e-10, atol=1e-10)
    assert torch.all(exp[~kept] < -1e3) and torch.all(proxy[~kept] < -1e3)   # filtered: about -1e4
    assert kept.any()


def test_fixture_covers_filtered_sampled_tokens():
    ctx, _ = _ctx(CASES[2])
    _, kept = lp_mod.minp_proxy_logprob(ctx.old_logits, ctx.old_logps, CASES[2]["hparams"]["minp_p_threshold"])
    assert (~kept[ctx.mask > 0]).any()


def test_single_candidate_is_not_regularised_as_authors_code():
    """int(n_neg * rho) <= 1 -> no token regularised (authors' ``if neg_logp_k > 1``): the plain clipped loss."""
    case = next(c for c in CASES if c["name"] == "lp_reg_rho_gives_one_token_noop")
    _, _, metrics, _ = _run(case)
    assert metrics["method/frac_tokens_touched"] == 0.0


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rho_zero_equals_clipped_baseline_exactly(case):
    """Card unit test: with rho = 0 (both signs) the loss is the clipped PPO baseline, bit for bit."""
    ctx, logps = _ctx(case)
    m = get_method("lp_reg")
    hp = m.resolve({**case["hparams"], "logp_neg_k_percent": 0.0, "logp_pos_k_percent": 0.0})
    per_token, metrics = m.fn(ctx, **hp)
    base, _ = ppo_clipped_loss(ctx, hp["clip_ratio_low"], hp["clip_ratio_high"])
    assert torch.equal(per_token, base) and metrics["method/frac_tokens_touched"] == 0.0


def test_regularised_tokens_are_low_probability_negative_advantage_tokens():
    case = CASES[0]
    _, grad, metrics, ctx = _run(case)
    ctx2, lp2 = _ctx(case)
    hp = get_method("lp_reg").resolve(case["hparams"])
    base, _ = ppo_clipped_loss(ctx2, hp["clip_ratio_low"], hp["clip_ratio_high"])
    ((base * ctx2.mask).sum() / ctx2.mask.sum()).backward()
    touched = (grad - lp2.grad).abs() > 1e-12
    assert touched.sum() == metrics["lp_reg/n_selected"] > 0
    assert torch.all(ctx.advantages[touched] < 0)


def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "CarlanLark/Lp-Reg-dev" and FIX["source"]["commit"].startswith("33b27e2")
