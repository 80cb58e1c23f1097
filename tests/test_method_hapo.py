"""HAPO against numbers computed with the authors' code (tests/fixtures/hapo_golden.json: starriver030515/HAPO@7671dde
``compute_policy_loss`` / ``compute_entropy_h`` / ``ada_clip`` / ``ada_advantage`` / ``compute_hapo_outcome_advantage``;
float64 CPU). "code" cases use the unmodified file, "paper" cases the one-line sign change of hhat for h <= 0
(see harness/methods/hapo.py). Plus invariants and the rollout logits processor."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext, TokenContext
from harness.methods import hapo as hapo_mod
from harness.methods.registry import get_method
from conftest import assert_matches_golden

FIX = json.loads((Path(__file__).parent / "fixtures" / "hapo_golden.json").read_text())
LOSS = [c for c in FIX["cases"] if c["kind"] == "loss"]
ADV = [c for c in FIX["cases"] if c["kind"] == "advantage"]


def _ctx(case):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    logps = t["logps"].clone().requires_grad_(True)
    ctx = TokenContext.build(logps, t["old_logps"], t["advantages"], t["mask"], entropies=t["entropies"])
    return ctx, logps


def _loss(case, **over):
    ctx, logps = _ctx(case)
    m = get_method("hapo")
    per_token, metrics = m.hook("loss")(ctx, **m.resolve({**case["hparams"], **over}))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()
    loss.backward()
    return loss, logps.grad, metrics, ctx


@pytest.mark.parametrize("case", LOSS, ids=[c["name"] for c in LOSS])
def test_loss_and_gradient_match_authors_code(case):
    loss, grad, metrics, _ = _loss(case)
    exp = case["expected"]
    assert_matches_golden(loss, grad, exp)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-6)


@pytest.mark.parametrize("case", LOSS, ids=[c["name"] for c in LOSS])
def test_hhat_matches_compute_entropy_h(case):
    ctx, _ = _ctx(case)
    hhat, stats = hapo_mod.entropy_h(ctx.entropies, ctx.mask, case["hparams"]["entropy_pivot"], case["hparams"]["hhat_sign"])
    torch.testing.assert_close(hhat, torch.tensor(case["expected"]["hhat"], dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert [float(s) for s in stats] == pytest.approx(case["expected"]["stats"], rel=1e-10)


@pytest.mark.parametrize("case", [c for c in LOSS if c["hparams"]["hhat_sign"] == "paper"], ids=lambda c: c["name"])
def test_paper_hhat_range_and_share_above_pivot(case):
    """Card mechanism check 1: hhat in [-1, 1], ~20 % of valid tokens above the 0.8 pivot (nearest quantile)."""
    ctx, _ = _ctx(case)
    hhat, _ = hapo_mod.entropy_h(ctx.entropies, ctx.mask, 0.8, "paper")
    v = hhat[ctx.mask > 0]
    assert v.min() == pytest.approx(-1.0) and v.max() == pytest.approx(1.0)
    n = v.numel()
    assert (v > 0).sum().item() == n - 1 - round(0.8 * (n - 1))


def test_code_sign_makes_low_entropy_tokens_positive():
    ctx, _ = _ctx(LOSS[0])
    hhat, _ = hapo_mod.entropy_h(ctx.entropies, ctx.mask, 0.8, "code")
    assert hhat[ctx.mask > 0].min() >= 0


@pytest.mark.parametrize("case", LOSS, ids=[c["name"] for c in LOSS])
def test_components_off_equal_dual_clip_ppo(case):
    """Invariant: adaptive clip and advantage off -> the plain dual-clip PPO loss (no dual clip: ppo_clipped_loss)."""
    from harness.methods.context import ppo_clipped_loss
    ctx, _ = _ctx(case)
    m = get_method("hapo")
    hp = m.resolve({**case["hparams"], "adaptive_clip": False, "adaptive_advantage": False, "clip_ratio_c": None})
    per_token, metrics = m.hook("loss")(ctx, **hp)
    base, _ = ppo_clipped_loss(ctx, hp["clip_ratio_low"], hp["clip_ratio_high"])
    assert torch.equal(per_token, base) and metrics["method/frac_tokens_touched"] == 0.0


@pytest.mark.parametrize("case", ADV, ids=[c["name"] for c in ADV])
def test_token_level_advantage_matches_authors_code(case):
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    actx = AdvantageContext(rewards=torch.tensor(case["inputs"]["rewards"]), group_size=case["group_size"], mask=mask,
                            completion_ids=torch.zeros_like(mask, dtype=torch.long))
    m = get_method("hapo")
    adv, metrics = m.hook("advantage")(actx, **m.resolve({}))
    exp = torch.tensor(case["expected"]["advantages"], dtype=torch.float64)
    torch.testing.assert_close(adv.double() * mask, exp * mask, rtol=1e-6, atol=1e-6)   # float32 output
    assert 0.0 <= metrics["hapo/fallback_group_frac"] <= 1.0


def test_fixture_has_a_fallback_group():
    case = next(c for c in ADV if c["name"] == "adv_fallback_group")
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    actx = AdvantageContext(rewards=torch.tensor(case["inputs"]["rewards"]), group_size=8, mask=mask,
                            completion_ids=torch.zeros_like(mask, dtype=torch.long))
    m = get_method("hapo")
    _, metrics = m.hook("advantage")(actx, **m.resolve({}))
    assert metrics["hapo/fallback_group_frac"] > 0


def test_advantage_off_equals_verl_grpo_and_trl_for_nonconstant_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    mask = torch.ones(8, 3)
    actx = AdvantageContext(rewards=rewards, group_size=4, mask=mask, completion_ids=torch.zeros(8, 3, dtype=torch.long))
    m = get_method("hapo")
    adv, _ = m.hook("advantage")(actx, **m.resolve({"token_level_adv": False}))
    torch.testing.assert_close(adv[:, 0], actx.grpo_advantages(), rtol=1e-3, atol=1e-3)   # eps 1e-6 vs TRL 1e-4


def test_advantage_hook_stores_rollout_stats_and_processor_uses_them():
    g = torch.Generator().manual_seed(0)
    ents = torch.exp(torch.randn(8, 5, generator=g))
    actx = AdvantageContext(rewards=torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 0]), group_size=4, mask=torch.ones(8, 5),
                            completion_ids=torch.zeros(8, 5, dtype=torch.long), entropies=ents, generator=g)
    m = get_method("hapo")
    m.hook("advantage")(actx, **m.resolve({}))
    stats = hapo_mod.rollout_stats_for(g)
    assert stats is not None
    proc = hapo_mod.HapoTemperatureProcessor(lambda: stats, tau=0.05)
    scores = torch.randn(6, 11, generator=g) * torch.tensor([0.2, 0.5, 1, 2, 4, 8]).unsqueeze(1)
    out = proc(torch.zeros(6, 1, dtype=torch.long), scores.clone())
    f = proc.last_temperature_factor
    assert torch.all((f >= 0.95) & (f <= 1.05))
    torch.testing.assert_close(out, scores / f.unsqueeze(1))
    ent = -(torch.softmax(scores, -1) * torch.log_softmax(scores, -1)).sum(-1)
    order = torch.argsort(ent)
    assert torch.all(f[order][1:] >= f[order][:-1])          # higher entropy -> higher temperature (paper sign)
    assert hapo_mod.HapoTemperatureProcessor(lambda: None)(None, scores) is scores   # first rollout: T unchanged


def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "starriver030515/HAPO" and FIX["source"]["commit"].startswith("7671dde")
