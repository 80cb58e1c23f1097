"""CANON: hand-derived examples (no released code could be read; the card says so) and the Dr.GRPO invariant."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext
from harness.methods.canon import canon_mu
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "canon_golden.json").read_text())
CANON = get_method("canon")


def _actx(rewards, mask, entropies=None, G=4, step=0, max_steps=1):
    mask = torch.as_tensor(mask, dtype=torch.float64)
    return AdvantageContext(rewards=torch.as_tensor(rewards, dtype=torch.float64), group_size=G, mask=mask,
                            completion_ids=torch.zeros(mask.shape, dtype=torch.long), scale_rewards="none",
                            entropies=None if entropies is None else torch.as_tensor(entropies, dtype=torch.float64),
                            step=step, max_steps=max_steps)


@pytest.mark.parametrize("case", FIX["cases"], ids=[c["name"] for c in FIX["cases"]])
def test_hand_derived_examples(case):
    for mu, exp in case["expected"].items():
        adv, m = CANON.hook("advantage")(_actx(case["rewards"], case["mask"], case.get("entropies")),
                                         **CANON.resolve({"mu": float(mu), "metric": case["metric"]}))
        torch.testing.assert_close(adv, torch.tensor(exp, dtype=torch.float64))
        assert 0.0 <= m["method/frac_tokens_touched"] <= 1.0


def test_mu_half_is_dr_grpo_exactly():
    """Card small-scale check 1: mu = 0.5 gives R - group mean, i.e. TRL's advantages with scale_rewards='none'."""
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(64, generator=g) < 0.4).double()
    mask = (torch.rand(64, 5, generator=g) < 0.8).double()
    mask[:, 0] = 1
    ent = torch.rand(64, 5, generator=g, dtype=torch.float64)
    for metric in ("entropy", "length"):
        actx = _actx(r, mask, ent, G=8)
        adv, m = CANON.hook("advantage")(actx, **CANON.resolve({"mu": 0.5, "metric": metric}))
        torch.testing.assert_close(adv, actx.grpo_advantages(), rtol=0, atol=1e-15)
        assert m["method/frac_tokens_touched"] == 0.0


def test_inter_favours_the_more_accurate_half():
    """Correct answers in the more accurate half get more credit under CANON-Inter than under Dr.GRPO."""
    case = FIX["cases"][0]
    adv, _ = CANON.hook("advantage")(_actx(case["rewards"], case["mask"]), **CANON.resolve({"metric": "length"}))
    assert adv[3] > adv[2]       # both correct; 3 is in the better (long) half, 2 in the worse one


def test_dynamic_schedule_goes_from_inter_to_intra():
    assert canon_mu(0.3, "cosine", 0, 100) == 1.0
    assert canon_mu(0.3, "cosine", 50, 100) == pytest.approx(0.5)
    assert canon_mu(0.3, "cosine", 100, 100) == pytest.approx(0.0)
    assert canon_mu(0.3, "constant", 50, 100) == 0.3


def test_odd_group_is_rejected():
    with pytest.raises(ValueError, match="even group size"):
        CANON.hook("advantage")(_actx([1, 0, 1], [[1], [1], [1]], G=3), **CANON.resolve({"metric": "length"}))


def test_fixture_says_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived"
