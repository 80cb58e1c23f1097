"""COPO against numbers computed with the authors' code (hijih/copo-code@dfe989d, core_algos.py
``compute_grpo_outcome_advantage_with_global`` + ``compute_policy_loss_with_global``), fixture
tests/fixtures/copo_golden.json (generated outside the repo, float64). Our one mixed advantage
``w * A_local + (1 - w) * A_global`` with the standard PPO loss must give the authors' two-term loss and gradient
wherever no token is clipped (every fixture case; asserted when the fixture was generated)."""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import AdvantageContext, TokenContext, ppo_clipped_loss
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "copo_golden.json").read_text())
CASES = FIX["cases"]


def _actx(case):
    i = case["inputs"]
    return AdvantageContext(rewards=torch.tensor(i["rewards"], dtype=torch.float64), group_size=case["group_size"],
                            mask=torch.tensor(i["mask"], dtype=torch.float64),
                            completion_ids=torch.tensor(i["completion_ids"]))


def _adv(case, **over):
    m = get_method("copo")
    return m.hook("advantage")(_actx(case), **m.resolve({**case["hparams"], **over}))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_and_gradient_match_authors_code(case):
    adv, metrics = _adv(case)
    i = case["inputs"]
    logp = torch.tensor(i["log_prob"], dtype=torch.float64).requires_grad_(True)
    ctx = TokenContext.build(logp, torch.tensor(i["old_log_prob"], dtype=torch.float64), adv,
                             torch.tensor(i["mask"], dtype=torch.float64))
    per_tok, clipped = ppo_clipped_loss(ctx, 0.2, 0.2)
    assert not clipped.any()
    loss = (per_tok * ctx.mask).sum() / ctx.mask.sum()
    loss.backward()
    exp = case["expected"]
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-8, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64),
                               rtol=1e-7, atol=1e-12)
    assert 0.0 <= metrics["method/frac_tokens_touched"] <= 1.0


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_local_global_and_answer_entropy_match(case):
    exp = case["expected"]
    local, _ = _adv(case, global_flg="no-global")
    glob, _ = _adv(case, global_flg="only-global")
    torch.testing.assert_close(local, torch.tensor(exp["local_adv"], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(glob, torch.tensor(exp["global_adv"], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    from harness.methods.copo import answer_entropy_bits
    H = answer_entropy_bits(_actx(case)).repeat_interleave(case["group_size"])
    torch.testing.assert_close(H, torch.tensor(exp["answer_entropy_bits"], dtype=torch.float64), rtol=1e-6, atol=1e-7)


def test_no_global_with_std_is_grpo_advantage():
    """Invariant: with the global term off, COPO's advantage is the group z-score (TRL's up to its eps: 1e-4 vs 1e-6)."""
    case = CASES[0]
    adv, _ = _adv(case, global_flg="no-global")
    actx = _actx(case)
    r = actx.grouped(actx.rewards)
    ref = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)
    torch.testing.assert_close(adv, ref)
    trl = actx.grpo_advantages()
    torch.testing.assert_close(adv, trl, rtol=1e-3, atol=1e-3)


def test_uniform_groups_get_global_signal():
    """Mechanism: a group whose responses all agree (local advantage 0) still gets the global advantage."""
    case = CASES[0]
    adv, m = _adv(case)
    G = case["group_size"]
    r = torch.tensor(case["inputs"]["rewards"]).view(-1, G)
    uniform = r.std(1) == 0
    assert uniform.any()
    assert (adv.view(-1, G)[uniform] != 0).all()
    assert m["copo/frac_prompts_with_signal"] == 1.0


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("dfe989d")
    assert FIX["source"]["file"] == "dapo-code/verl/trainer/ppo/core_algos.py"
