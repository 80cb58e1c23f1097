"""HICRA: hand-derived examples (no training code released; the card says so) and the Dr.GRPO / GRPO invariants."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "hicra_golden.json").read_text())
HICRA = get_method("hicra")


def _actx(rewards, ids, mask, G=4, gen=None, scale="group"):
    return AdvantageContext(rewards=torch.as_tensor(rewards, dtype=torch.float64), group_size=G,
                            mask=torch.as_tensor(mask, dtype=torch.float64), completion_ids=torch.as_tensor(ids),
                            generator=gen, scale_rewards=scale)


@pytest.mark.parametrize("case", FIX["cases"], ids=[c["name"] for c in FIX["cases"]])
def test_hand_derived_examples(case):
    i = FIX["inputs"]
    adv, m = HICRA.hook("advantage")(_actx(i["rewards"], i["completion_ids"], i["mask"]),
                                     **HICRA.resolve(case["hparams"]))
    mask = torch.tensor(i["mask"], dtype=torch.float64)
    torch.testing.assert_close(adv * mask, torch.tensor(case["expected"], dtype=torch.float64) * mask)
    assert 0.0 < m["method/frac_tokens_touched"] <= 1.0


def test_zero_alpha_is_dr_grpo_and_grpo():
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(32, generator=g) < 0.5).double()
    ids = torch.randint(4, 14, (32, 4), generator=g)
    mask = torch.ones(32, 4)
    actx = _actx(r, ids, mask, G=8, scale="none")
    adv, _ = HICRA.hook("advantage")(actx, **HICRA.resolve({"alpha": 0.0}))
    assert torch.equal(adv, actx.grpo_advantages().unsqueeze(1).expand(-1, 4))
    actx = _actx(r, ids, mask, G=8, scale="group")
    adv, _ = HICRA.hook("advantage")(actx, **HICRA.resolve({"alpha": 0.0, "std_normalise": True}))
    assert torch.equal(adv, actx.grpo_advantages().unsqueeze(1).expand(-1, 4))


def test_planning_credit_amplified_positive_damped_negative():
    i = FIX["inputs"]
    adv, m = HICRA.hook("advantage")(_actx(i["rewards"], i["completion_ids"], i["mask"]), **HICRA.resolve())
    assert m["hicra/planning_adv_mean"] > m["hicra/execution_adv_mean"]


def test_placebo_is_seeded_and_hits_the_fraction():
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(512, generator=g) < 0.5).double()
    ids = torch.randint(4, 14, (512, 8), generator=g)
    run = lambda s: HICRA.hook("advantage")(_actx(r, ids, torch.ones(512, 8), G=8, gen=torch.Generator().manual_seed(s)),  # noqa: E731
                                            **HICRA.resolve({"planning": "random", "placebo_fraction": 0.25}))
    a1, m1 = run(3)
    a2, _ = run(3)
    assert torch.equal(a1, a2)
    assert m1["hicra/frac_planning_tokens"] == pytest.approx(0.25, abs=0.02)


def test_fixture_says_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived"
