"""EMPG (harness/methods/empg.py): hand-derived golden values (no authors' code exists), the batch invariants, and
the single-turn fallback."""
from __future__ import annotations

import math

import pytest
import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import get_method

EMPG = get_method("empg")


def _ctx(columns=True):
    # two episodes of one group; row 0: turns 0, 0, [env], 1, 1; row 1: turn 0, [env], turn 1, padding
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 0, 0]], dtype=torch.float32)
    ent = torch.tensor([[1.0, 3.0, 9.0, 2.0, 2.0], [4.0, 9.0, 0.0, 0.0, 0.0]])
    cols = {"turn_ids": [[0, 0, 0, 1, 1], [0, 0, 1]], "won": [True, False]} if columns else None
    return AdvantageContext(rewards=torch.tensor([10.0, 0.0]), group_size=2, mask=mask,
                            completion_ids=torch.ones(2, 5, dtype=torch.long), scale_rewards="none", entropies=ent,
                            columns=cols)


def test_golden_hand_derived():
    adv, m = EMPG.hook("advantage")(_ctx(), k=1.0, k_prime=1.0, zeta=0.1)
    # step entropies: H00 = mean(1, 3) = 2, H01 = 2, H10 = 4, H11 = 0 -> min-max: 0.5, 0.5, 1, 0
    hn = {"00": 0.5, "01": 0.5, "10": 1.0, "11": 0.0}
    e = {s: math.exp(-v) for s, v in hn.items()}
    mean_e = sum(e.values()) / 4
    g = {s: v / mean_e for s, v in e.items()}
    f = {"00": math.exp(-hn["01"]), "01": 0.0, "10": math.exp(-hn["11"]), "11": 0.0}
    a = {"0": 5.0, "1": -5.0}  # scale_rewards none: r - group mean
    mod = {s: a[s[0]] * g[s] + 0.1 * f[s] for s in hn}
    c = sum(mod.values()) / 4
    want = torch.tensor([[mod["00"] - c, mod["00"] - c, 0.0, mod["01"] - c, mod["01"] - c],
                         [mod["10"] - c, 0.0, mod["11"] - c, 0.0, 0.0]])
    assert adv.shape == (2, 5)
    torch.testing.assert_close(adv, want.float(), rtol=1e-6, atol=1e-6)
    assert m["empg/steps_per_trajectory"] == 2.0
    assert m["empg/g_max"] == pytest.approx(g["11"]) and m["empg/g_min"] == pytest.approx(g["10"])


def test_zero_mean_over_steps_and_confident_steps_weigh_more():
    torch.manual_seed(0)
    n, t = 8, 12
    turns = [[j // 3 for j in range(t)] for _ in range(n)]
    actx = AdvantageContext(rewards=torch.tensor([10.0, 0.0] * 4), group_size=2, mask=torch.ones(n, t),
                            completion_ids=torch.ones(n, t, dtype=torch.long), scale_rewards="none",
                            entropies=torch.rand(n, t) * 3, columns={"turn_ids": turns})
    adv, m = EMPG.hook("advantage")(actx, k=2.0, k_prime=1.0, zeta=0.0)
    steps = adv[:, ::3]  # one value per step (3 tokens each)
    assert float(steps.mean()) == pytest.approx(0.0, abs=1e-6)
    assert m["empg/confident_to_uncertain_abs_adv"] > 1.0  # exp(-k Hn) favours low-entropy steps


def test_single_turn_fallback_is_one_step_per_completion():
    adv, m = EMPG.hook("advantage")(_ctx(columns=False), k=1.0, k_prime=1.0, zeta=0.1)
    assert m["empg/steps_per_trajectory"] == 1.0
    # one step per row: every valid token of a row shares its value, no future bonus
    assert torch.unique(adv[0][torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool)]).numel() == 1
    assert m["empg/future_bonus_mean"] == 0.0


def test_needs_entropies():
    actx = _ctx()
    actx.entropies = None
    with pytest.raises(ValueError, match="adv_token_stats"):
        EMPG.hook("advantage")(actx, k=1.0, k_prime=1.0, zeta=0.1)
