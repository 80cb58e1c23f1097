"""EGPO: hand-derived examples (no released code; the card says so), sign preservation and the GRPO invariant."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "egpo_golden.json").read_text())
EGPO = get_method("egpo")


def _actx(rewards, ent_tok, mask, scale="group", G=4):
    return AdvantageContext(rewards=torch.as_tensor(rewards, dtype=torch.float64), group_size=G,
                            mask=torch.as_tensor(mask, dtype=torch.float64),
                            completion_ids=torch.zeros(torch.as_tensor(mask).shape, dtype=torch.long),
                            scale_rewards=scale, entropies=torch.as_tensor(ent_tok, dtype=torch.float64))


@pytest.mark.parametrize("case", FIX["cases"], ids=[c["name"] for c in FIX["cases"]])
def test_hand_derived_examples(case):
    h = torch.tensor(case["mean_entropy"], dtype=torch.float64)
    ent = torch.stack([h, h + 5.0, h], dim=1)            # the middle token is masked out: mean must ignore it
    mask = [[1, 0, 1]] * len(h)
    adv, m = EGPO.hook("advantage")(_actx(case["rewards"], ent, mask, case["scale_rewards"]), **EGPO.resolve())
    torch.testing.assert_close(adv, torch.tensor(case["expected"], dtype=torch.float64), rtol=0, atol=2e-7)
    assert m["egpo/sign_flips"] == 0.0


def test_zero_lambda_is_grpo_exactly():
    g = torch.Generator().manual_seed(1)
    r = (torch.rand(32, generator=g) < 0.5).double()
    ent = torch.rand(32, 4, generator=g, dtype=torch.float64) * 3
    actx = _actx(r, ent, torch.ones(32, 4), G=8)
    adv, m = EGPO.hook("advantage")(actx, **EGPO.resolve({"lambda": 0.0}))
    assert torch.equal(adv, actx.grpo_advantages())


@pytest.mark.parametrize("lam", [0.4, 1.0, 1.9])
def test_bonus_never_flips_sign_for_alpha_above_lambda(lam):
    """|bonus| <= lambda |A| / alpha < |A| when alpha > lambda (alpha = 2 covers lambda < 2)."""
    g = torch.Generator().manual_seed(2)
    r = torch.rand(64, generator=g, dtype=torch.float64)
    ent = torch.rand(64, 3, generator=g, dtype=torch.float64) * 10
    actx = _actx(r, ent, torch.ones(64, 3), G=8)
    adv, m = EGPO.hook("advantage")(actx, **EGPO.resolve({"lambda": lam, "alpha": 2.0}))
    a = actx.grpo_advantages()
    assert torch.all(torch.sign(adv) == torch.sign(a))
    assert m["egpo/sign_flips"] == 0.0


def test_fixture_says_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived"
