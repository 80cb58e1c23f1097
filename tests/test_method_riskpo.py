"""RiskPO against numbers computed with the authors' code: RTkenny/RiskPO@65ec40c
``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`` (fixture tests/fixtures/riskpo_golden.json,
generated outside the repo in float64 with the MVaR script's configuration), plus the quantile tracker."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext
from harness.methods import riskpo as rp
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "riskpo_golden.json").read_text())
CASES = FIX["cases"]


def _run(case, gen=None, **over):
    i = case["inputs"]
    gen = gen or torch.Generator().manual_seed(123)
    if case["q_track"] is not None:
        rp._STATE[id(gen)] = {"gen": gen, "q": torch.tensor(case["q_track"], dtype=torch.float64)}
    actx = AdvantageContext(rewards=torch.tensor(i["rewards"], dtype=torch.float64), group_size=case["group_size"],
                            mask=torch.tensor(i["mask"], dtype=torch.float64),
                            completion_ids=torch.zeros(len(i["rewards"]), len(i["mask"][0]), dtype=torch.long),
                            generator=gen)
    m = get_method("riskpo")
    try:
        return m.hook("advantage")(actx, **m.resolve({**case["hparams"], **over}))
    finally:
        rp._STATE.pop(id(gen), None)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_advantages_match_authors_code(case):
    adv, metrics = _run(case)
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    torch.testing.assert_close(adv.unsqueeze(1) * mask, torch.tensor(case["expected"]["advantages"],
                                                                     dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert 0.0 <= metrics["method/frac_tokens_touched"] <= 1.0


def test_paper_scores_match_authors_bundles():
    case = CASES[1]
    G, B = case["group_size"], case["hparams"]["bundle_size"]
    rg = torch.tensor(case["inputs"]["rewards"], dtype=torch.float64).view(-1, G)
    ours = [S.tolist() for _, S in rp.bundle_paper_scores(rg, B)]
    assert ours == list(case["expected"]["bundle_paper_scores"].values())


def test_defaults_are_the_mvar_script():
    hp = get_method("riskpo").resolve()
    assert (hp["quantile_down"], hp["quantile_up"], hp["bundle_size"], hp["lr_q"], hp["w_mix"]) == (0.2, 0.8, 5, 0.1, 1.5)
    assert hp["credit_assign_mode"] == "sum-mean" and hp["use_mixing_risk_measure"] and not hp["natural_baseline_adv"]


def test_quantile_tracking_is_the_authors_sgd_step_and_converges():
    """ray_trainer.py: warm-up sets q to the first batch's quantiles, then q <- q - lr * (-(level - mean 1[S < q]))
    (torch.optim.SGD); on a stationary score distribution mean 1[S < q_alpha] approaches alpha."""
    levels = torch.tensor([0.2, 0.8], dtype=torch.float64)
    st = {}
    g = torch.Generator().manual_seed(0)
    first = torch.randint(0, 6, (56,), generator=g).double()
    rp.track_quantiles(st, first, levels, 0.1)
    torch.testing.assert_close(st["q"], torch.quantile(first, levels))
    q = torch.nn.Parameter(st["q"].clone())
    opt = torch.optim.SGD([q], lr=0.1)
    fr = []
    for _ in range(3000):
        s = torch.randint(0, 6, (56,), generator=g).double()
        q.grad = -(levels - (s.repeat(2, 1) < q.unsqueeze(1)).double().mean(1))
        opt.step(); opt.zero_grad()
        fr.append(rp.track_quantiles(st, s, levels, 0.1))
        torch.testing.assert_close(st["q"], q.detach())
    assert abs(sum(fr[1000:]) / 2000 - 0.2) < 0.02


def test_sum_mean_gives_uniform_groups_no_share_when_paper_mixes():
    """Observation the card records: under sum-mean credit a response from an all-agreeing group gets share 0
    whenever other questions of its paper have non-zero deviation (only 'uniform' credit hands it the bundle signal)."""
    case = CASES[0]
    adv, m = _run(case)
    G = case["group_size"]
    a = adv.view(-1, G)
    assert (a[1] == 0).all() and (a[2] == 0).all()          # the all-0 and all-1 groups
    adv_u, m_u = _run(case, credit_assign_mode="uniform")
    assert (adv_u.view(-1, G)[1] != 0).any()
    assert m_u["riskpo/frac_uniform_groups_with_signal"] > m["riskpo/frac_uniform_groups_with_signal"]


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("65ec40c")
    assert FIX["source"]["file"] == "verl/trainer/ppo/core_algos.py"
