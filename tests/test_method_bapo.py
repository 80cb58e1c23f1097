"""BAPO against numbers computed with the authors' open-source implementation.

Fixture: tests/fixtures/bapo_golden.json, generated outside this repo from WooooDyy/BAPO@72870444
``recipe/bapo/policy_loss.py`` (``compute_policy_loss_bapo``; verl ``agg_loss`` token-mean, ``masked_mean`` with
+1e-8), torch CPU float64, one process (no all-reduce). Four cases use ``bapo_trainer.yaml``'s grid, one the values
of ``run_bapo_example.sh``.
"""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import TokenContext, ppo_clipped_loss
from harness.methods.bapo import search_bounds
from harness.methods.registry import get_method
from conftest import assert_matches_golden

FIX = json.loads((Path(__file__).parent / "fixtures" / "bapo_golden.json").read_text())
CASES = FIX["cases"]
KEYS = ("adv_ratio_target", "ratio_lower_start", "ratio_lower_max", "ratio_lower_step", "ratio_upper_start",
        "ratio_upper_max", "ratio_upper_step", "eps", "clip_ratio_c")


def _run(case, **over):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    logps = t["log_prob"].clone().requires_grad_(True)
    ctx = TokenContext.build(logps, t["old_log_prob"], t["advantages"], t["response_mask"])
    method = get_method("bapo")
    hp = {k: case["hparams"][k] for k in KEYS}
    per_token, metrics = method.fn(ctx, **method.resolve({**hp, **over}))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()      # verl token-mean (bnpo)
    loss.backward()
    return ctx, per_token, loss, logps.grad, metrics


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bounds_loss_and_gradient_match_authors_code(case):
    _, _, loss, grad, metrics = _run(case)
    exp = case["expected"]
    assert metrics["bapo/clip_low"] == exp["clip_low"]           # same float accumulation of the grid steps
    assert metrics["bapo/clip_high"] == exp["clip_high"]
    assert metrics["bapo/pos_neg_ratio"] == pytest.approx(min(exp["pos_neg_ratio"], 1e6), rel=1e-12)
    # authors' masked_mean divides by mask.sum() + 1e-8: relative difference ~1e-10
    assert_matches_golden(loss, grad, exp)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-8)


def test_the_fixture_covers_every_search_outcome():
    by = {c["name"]: c["expected"] for c in CASES}
    assert (by["yaml_defaults_pos_heavy_met_at_start"]["clip_low"], by["yaml_defaults_pos_heavy_met_at_start"]["clip_high"]) == (0.6, 1.2)
    assert 1.2 < by["yaml_defaults_reaches_target_midway"]["clip_high"] < 2.0
    assert by["yaml_defaults_reaches_target_midway"]["pos_neg_ratio"] >= 1.0
    assert (by["yaml_defaults_unreachable_grid_max"]["clip_low"], by["yaml_defaults_unreachable_grid_max"]["clip_high"]) == (0.8, 2.0)


def test_search_terminates_at_grid_max_when_target_unreachable():
    """Card check 3: all advantages negative -> pos/neg = 0 < target; the loop stops at (b^-, b^+)."""
    g = torch.Generator().manual_seed(0)
    r = torch.exp(0.5 * torch.randn(4, 7, generator=g, dtype=torch.float64))
    adv = -torch.rand(4, 7, generator=g, dtype=torch.float64) - 0.1
    mask = torch.ones(4, 7, dtype=torch.float64)
    for order in ("low_first", "high_first"):
        lo, hi, pnr, share, steps = search_bounds(
            r, adv, mask, adv_ratio_target=1.0, ratio_lower_start=0.6, ratio_lower_max=0.9, ratio_lower_step=0.02,
            ratio_upper_start=1.2, ratio_upper_max=3.0, ratio_upper_step=0.05, eps=1e-8, search_order=order)
        assert lo == pytest.approx(0.9) and hi == pytest.approx(3.0) and pnr == 0.0
        assert 15 + 36 <= steps <= 16 + 37          # float accumulation of the grid may add one step


def test_raising_c_low_never_raises_the_positive_share():
    """Recorded property of the code's measure: the negative contribution sum |A| max(r, c_low) grows with c_low."""
    from harness.methods.bapo import contributions
    g = torch.Generator().manual_seed(1)
    r = torch.exp(0.6 * torch.randn(6, 9, generator=g, dtype=torch.float64))
    adv = torch.randn(6, 9, generator=g, dtype=torch.float64)
    mask = torch.ones_like(r)
    negs = [contributions(r, adv, mask, c, 1.2)[1] for c in (0.6, 0.65, 0.7, 0.75, 0.8)]
    assert all(b >= a for a, b in zip(negs, negs[1:]))


def test_on_policy_fixed_bounds_is_the_baseline_exactly():
    """Invariant: with a zero-width grid (start = max) at 0.8 / 1.2 and no dual clip, BAPO is the PPO clipped loss
    with eps 0.2 (TRL's GRPO loss), bit for bit; fully on-policy (ratio 1) any bounds give the same loss."""
    case = CASES[0]
    ctx, per_token, _, _, m = _run(case, ratio_lower_start=0.8, ratio_lower_max=0.8, ratio_upper_start=1.2,
                                   ratio_upper_max=1.2, clip_ratio_c=float("inf"))
    base, _ = ppo_clipped_loss(ctx, 1 - 0.8, 1.2 - 1)
    assert torch.equal(per_token * ctx.mask, base * ctx.mask) and m["method/frac_tokens_touched"] == 0.0
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    on = TokenContext.build(t["log_prob"].clone(), t["log_prob"], t["advantages"], t["response_mask"])
    method = get_method("bapo")
    pt, m2 = method.fn(on, **method.resolve({}))
    torch.testing.assert_close(pt * on.mask, -on.advantages * on.mask, rtol=0, atol=0)
    assert m2["clip_ratio/region_mean"] == 0.0


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("72870444")
    assert FIX["source"]["file"] == "recipe/bapo/policy_loss.py"
