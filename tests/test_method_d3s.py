"""D3S (arXiv 2509.22115) against a hand-derived example (no public code).

Fixture: tests/fixtures/d3s_golden.json, derived outside this repo from the paper's definitions (brute force over
all k-subsets for max Var(A), explicit |A|*H ranking, plain Python floats, no harness code). Plus invariants: the
max-variance rule equals brute force, the fully relaxed schedule is GRPO exactly.
"""
import itertools
import json
import statistics
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext, TokenContext, ppo_clipped_loss
from harness.methods.d3s import keep_count, max_variance_subset, progress
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "d3s_golden.json").read_text())
CONV, INP, EXP = FIX["conventions"], FIX["inputs"], FIX["expected"]


def _mask():
    T = len(INP["entropies"][0])
    return torch.tensor([[1.0 if t < L else 0.0 for t in range(T)] for L in INP["lens"]], dtype=torch.float64)


def _actx(step=CONV["step"]):
    mask = _mask()
    return AdvantageContext(rewards=torch.tensor(INP["rewards"], dtype=torch.float64), group_size=CONV["group_size"],
                            mask=mask, completion_ids=torch.zeros_like(mask, dtype=torch.long), step=step,
                            max_steps=CONV["max_steps"])


def _hp(**over):
    m = get_method("d3s")
    return m.resolve({"k_start": CONV["k_start"], "rho_start": CONV["rho_start"], "relax_until": CONV["relax_until"],
                      **over})


def _loss(adv, step=CONV["step"], **over):
    lp = torch.tensor(INP["logps"], dtype=torch.float64).requires_grad_(True)
    ctx = TokenContext.build(lp, lp.detach().clone(), adv, _mask(),
                             entropies=torch.tensor(INP["entropies"], dtype=torch.float64), step=step,
                             max_steps=CONV["max_steps"])
    per_token, metrics = get_method("d3s").hook("loss")(ctx, **_hp(**over))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()       # bnpo
    loss.backward()
    return ctx, per_token, loss, lp.grad, metrics


def test_sample_level_matches_hand_derivation():
    adv, metrics = get_method("d3s").hook("advantage")(_actx(), **_hp())
    torch.testing.assert_close(adv, torch.tensor(EXP["advantages"], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert metrics["d3s/k"] == CONV["k"]
    assert metrics["d3s/adv_var_gain"] >= 1.0


def test_token_level_loss_and_gradient_match_hand_derivation():
    adv = torch.tensor(EXP["advantages"], dtype=torch.float64)
    _, per_token, loss, grad, metrics = _loss(adv)
    assert loss.item() == pytest.approx(EXP["loss_normalize_all"], rel=1e-12)
    torch.testing.assert_close(grad, torch.tensor(EXP["grad_logps_normalize_all"], dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)
    sel = (grad != 0)
    assert torch.equal(sel, torch.tensor(EXP["selected"]) > 0)
    assert metrics["d3s/frac_tokens_trained"] == pytest.approx(EXP["n_selected"] / EXP["n_valid"])
    _, _, loss_kept, _, _ = _loss(adv, normalize="kept")
    assert loss_kept.item() == pytest.approx(EXP["loss_normalize_kept"], rel=1e-12)


@pytest.mark.parametrize("n,k", [(4, 2), (6, 3), (8, 4), (8, 2), (8, 5), (5, 3)])
def test_max_variance_rule_equals_brute_force(n, k):
    """Card check 1: the "i largest + (k-i) smallest" search finds the brute-force optimum (binary and continuous
    rewards); with binary rewards it is the top-k/2 plus bottom-k/2 rule whenever both classes have k/2 members."""
    g = torch.Generator().manual_seed(n * 10 + k)
    for trial in range(30):
        a = torch.randint(0, 2, (n,), generator=g).double() if trial % 2 else torch.rand(n, generator=g).double()
        keep = max_variance_subset(a, k)
        v = statistics.variance(a[keep].tolist())
        brute = max(statistics.variance([float(a[i]) for i in S]) for S in itertools.combinations(range(n), k))
        assert v == pytest.approx(brute, rel=1e-12, abs=1e-15)
        if trial % 2 and int(a.sum()) >= k // 2 and n - int(a.sum()) >= k - k // 2:
            assert int(a[keep].sum()) in (k // 2, k - k // 2)


def test_schedule_relaxes_to_full_data():
    assert progress(0, 100, 1.0) == 0 and progress(50, 100, 1.0) == 0.5 and progress(100, 100, 0.5) == 1.0
    assert keep_count(8, 0.5) == 4 and keep_count(4, 0.5) == 2 and keep_count(8, 1.0) == 8 and keep_count(4, 0.1) == 2
    adv_late, m = get_method("d3s").hook("advantage")(_actx(step=CONV["max_steps"]), **_hp())
    torch.testing.assert_close(adv_late, _actx().grpo_advantages())
    assert m["method/frac_tokens_touched"] == 0.0


def test_fully_relaxed_is_grpo_exactly():
    """Invariant: at the end of the schedule (k = G, rho = 1) advantages are TRL's and the loss is the PPO clipped
    loss on every token, bit for bit (also off-policy)."""
    actx = _actx(step=CONV["max_steps"])
    adv, _ = get_method("d3s").hook("advantage")(actx, **_hp())
    lp = torch.tensor(INP["logps"], dtype=torch.float64)
    old = lp + 0.3 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ctx = TokenContext.build(lp.clone().requires_grad_(True), old, adv, _mask(),
                             entropies=torch.tensor(INP["entropies"], dtype=torch.float64), step=CONV["max_steps"],
                             max_steps=CONV["max_steps"])
    per_token, m = get_method("d3s").hook("loss")(ctx, **_hp())
    base, _ = ppo_clipped_loss(ctx, 0.2, 0.2)
    assert torch.equal(per_token * ctx.mask, base * ctx.mask)
    assert m["method/frac_tokens_touched"] == 0.0


def test_fixture_is_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived" and "2509.22115" in FIX["source"]["paper"]
