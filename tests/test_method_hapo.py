"""HAPO against numbers computed with the authors' code (tests/fixtures/hapo_golden.json: starriver030515/HAPO@7671dde
``compute_policy_loss`` / ``compute_entropy_h`` / ``ada_clip`` / ``ada_advantage`` / ``compute_hapo_outcome_advantage``
and the vLLM sampler's ``compute_entropy_based_temperature``; float64 CPU). Two named methods: ``hapo`` = the
released code (hhat >= 0; "code" cases: the unmodified files) and ``hapo_paper`` = the paper's signed equations
("paper" cases: the one-line change ``scale_neg = -1/neg_min``; see harness/methods/hapo.py). Plus invariants and the
rollout logits processor.

Re-check / regenerate the fixture from the authors' code (loaded at run time; none of it is committed):

    git clone https://github.com/starriver030515/HAPO /tmp/HAPO && git -C /tmp/HAPO checkout 7671dde
    python tests/fixtures/generators/hapo.py /tmp/HAPO          # check; --write rewrites `expected`
"""
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
ROLLOUT = [c for c in FIX["cases"] if c["kind"] == "rollout"]
METHOD = {"code": "hapo", "paper": "hapo_paper"}


def _method(case):
    return get_method(METHOD[case["hparams"]["hhat_sign"]])


def _hp(case, **over):
    return {k: v for k, v in {**case["hparams"], **over}.items() if k != "hhat_sign"}


def _ctx(case):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    logps = t["logps"].clone().requires_grad_(True)
    ctx = TokenContext.build(logps, t["old_logps"], t["advantages"], t["mask"], entropies=t["entropies"])
    return ctx, logps


def _loss(case, **over):
    ctx, logps = _ctx(case)
    m = _method(case)
    per_token, metrics = m.hook("loss")(ctx, **m.resolve(_hp(case, **over)))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()
    loss.backward()
    return loss, logps.grad, metrics, ctx


def test_two_named_methods_differ_only_in_the_sign_of_hhat():
    code, paper = get_method("hapo"), get_method("hapo_paper")
    assert set(code.hooks) == set(paper.hooks) == {"rollout", "advantage", "loss"}
    assert code.paper == paper.paper == "hapo"
    assert {k: v.default for k, v in code.hparams.items()} == {k: v.default for k, v in paper.hparams.items()}
    assert "hhat_sign" not in code.hparams
    assert {METHOD[c["hparams"]["hhat_sign"]] for c in LOSS} == {"hapo", "hapo_paper"}


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
    m = _method(case)
    hp = m.resolve(_hp(case, adaptive_clip=False, adaptive_advantage=False, clip_ratio_c=None))
    per_token, metrics = m.hook("loss")(ctx, **hp)
    base, _ = ppo_clipped_loss(ctx, hp["clip_ratio_low"], hp["clip_ratio_high"])
    assert torch.equal(per_token, base) and metrics["method/frac_tokens_touched"] == 0.0


@pytest.mark.parametrize("name", ["hapo", "hapo_paper"])
@pytest.mark.parametrize("case", ADV, ids=[c["name"] for c in ADV])
def test_token_level_advantage_matches_authors_code(case, name):
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    actx = AdvantageContext(rewards=torch.tensor(case["inputs"]["rewards"]), group_size=case["group_size"], mask=mask,
                            completion_ids=torch.zeros_like(mask, dtype=torch.long))
    m = get_method(name)
    adv, metrics = m.hook("advantage")(actx, **m.resolve({}))
    exp = torch.tensor(case["expected"]["advantages"], dtype=torch.float64)
    torch.testing.assert_close(adv.double() * mask, exp * mask, rtol=1e-6, atol=1e-6)   # float32 output
    assert 0.0 <= metrics["hapo/fallback_group_frac"] <= 1.0


@pytest.mark.parametrize("case", ROLLOUT, ids=[c["name"] for c in ROLLOUT])
def test_rollout_statistics_and_temperature_match_authors_sampler(case):
    """The advantage hook's stored statistics (this variant's sign) and the logits processor's per-row temperature
    factor equal compute_entropy_h + the vLLM sampler's compute_entropy_based_temperature."""
    i, hp, exp = case["inputs"], case["hparams"], case["expected"]
    mask = torch.tensor(i["batch_mask"], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    actx = AdvantageContext(rewards=torch.ones(mask.shape[0]), group_size=1, mask=mask,
                            completion_ids=torch.zeros_like(mask, dtype=torch.long),
                            entropies=torch.tensor(i["batch_entropies"], dtype=torch.float64), generator=g)
    m = _method(case)
    m.hook("advantage")(actx, **m.resolve({}))
    stats = hapo_mod.rollout_stats_for(g)
    assert list(stats) == pytest.approx(exp["stats"], rel=1e-10)
    proc = hapo_mod.HapoTemperatureProcessor(lambda: stats, tau=hp["temperature_tau"])
    proc(None, torch.tensor(i["logits"], dtype=torch.float32))
    torch.testing.assert_close(proc.last_temperature_factor * hp["temperature"],
                               torch.tensor(exp["temperature"], dtype=torch.float32), rtol=1e-6, atol=1e-6)


def test_released_code_only_raises_the_rollout_temperature():
    code = next(c for c in ROLLOUT if c["hparams"]["hhat_sign"] == "code")["expected"]["temperature"]
    paper = next(c for c in ROLLOUT if c["hparams"]["hhat_sign"] == "paper")["expected"]["temperature"]
    assert min(code) >= 1.0 and min(paper) < 1.0


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
    m = get_method("hapo_paper")
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
