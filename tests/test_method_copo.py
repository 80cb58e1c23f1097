"""COPO against numbers computed with the authors' code: tests/fixtures/copo_golden.json, from hijih/copo-code
``verl/trainer/ppo/core_algos.py`` @ c15c75f5 (the release; ``compute_grpo_outcome_advantage_with_global`` +
``compute_policy_loss_with_global``: soft-with-zero = "our COPO method", only-zero, only-soft, only-global,
no-global) and @ f66883fb (soft-with-forced, only-forced, removed in the release). Our one mixed advantage
``w * A_local + (1 - w) * A_global`` with the standard PPO loss must give the authors' two-term loss and gradient
wherever no token is clipped (every fixture case; the generator asserts it).

Regenerate / re-check the fixture from the authors' code (their code is loaded at run time, none is committed):

    git clone https://github.com/hijih/copo-code /tmp/copo-code        # history needed for f66883fb
    python tests/fixtures/generators/copo.py /tmp/copo-code             # check; --write rewrites `expected`
    # or: a checkout at c15c75f5 plus --earlier PATH (a checkout at f66883fb)
"""
import json
from pathlib import Path

import pytest
import torch

from harness.methods import copo as copo_mod
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
    """Fixture answers are compared as completion token sequences (one token per character + eos): answer_mode
    plain without texts, the smoke task's classes."""
    m = get_method("copo")
    return m.hook("advantage")(_actx(case), **m.resolve({**case["hparams"], "answer_mode": "plain", **over}))


def test_default_is_the_authors_copo():
    """README @ c15c75f5: soft-with-zero is "our COPO method", gamma = k = 5, rho = b = 1 (verl/run_copo.sh)."""
    hp = get_method("copo").hparams
    assert hp["global_flg"].default == "soft-with-zero"
    assert (hp["k"].default, hp["b"].default) == (5.0, 1.0)
    assert hp["answer_mode"].default == "boxed"
    assert set(copo_mod.MODES) == {"soft-with-zero", "only-zero", "only-soft", "only-global", "no-global",
                                   "soft-with-forced", "only-forced"}


def test_fixture_covers_soft_with_zero_at_the_authors_defaults():
    names = {c["name"] for c in CASES if c["hparams"]["global_flg"] == "soft-with-zero"
             and (c["hparams"]["k"], c["hparams"]["b"]) == (5.0, 1.0)}
    assert {"soft_with_zero_on_policy", "soft_with_zero_off_policy_unclipped"} <= names


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
def test_local_global_weight_and_answer_entropy_match(case):
    exp, hp, G = case["expected"], case["hparams"], case["group_size"]
    local, _ = _adv(case, global_flg="no-global")
    glob, _ = _adv(case, global_flg="only-global")
    torch.testing.assert_close(local, torch.tensor(exp["local_adv"], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(glob, torch.tensor(exp["global_adv"], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    actx = _actx(case)
    H = copo_mod.answer_entropy_bits(actx, "plain")
    torch.testing.assert_close(H.repeat_interleave(G), torch.tensor(exp["answer_entropy_bits"], dtype=torch.float64),
                               rtol=1e-6, atol=1e-7)
    rg = actx.grouped(actx.rewards)
    w = copo_mod.local_weight(hp["global_flg"], H, rg, local.view(-1, G), hp["k"], hp["b"],
                              hp["norm_adv_by_std_in_grpo"])
    torch.testing.assert_close(w.reshape(-1), torch.tensor(exp["loss_weight"], dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


def test_soft_with_zero_gives_wrong_responses_the_pure_global_advantage():
    """The difference from soft-with-forced: every reward-0 response gets w = 0, in mixed groups too."""
    case = next(c for c in CASES if c["name"] == "soft_with_zero_on_policy")
    adv, _ = _adv(case)
    glob, _ = _adv(case, global_flg="only-global")
    forced, _ = _adv(case, global_flg="soft-with-forced", k=5.0, b=1.0)
    r = torch.tensor(case["inputs"]["rewards"])
    G = case["group_size"]
    mixed = (r.view(-1, G).std(1) > 0).repeat_interleave(G)
    wrong = r == 0
    torch.testing.assert_close(adv[wrong], glob[wrong])
    assert not torch.allclose(forced[wrong & mixed], glob[wrong & mixed])


def _texts_actx(texts, rewards, G):
    actx = AdvantageContext(rewards=torch.tensor(rewards, dtype=torch.float64), group_size=G,
                            mask=torch.ones(len(texts), 3), completion_ids=torch.arange(len(texts) * 3).view(-1, 3))
    actx.completions = texts   # what the trainer must hand over (see the card)
    return actx


def test_answer_entropy_compares_extracted_final_answers():
    """Completions with different reasoning but the same final answer are one answer (the authors count extracted
    answers); whole-completion comparison would give log2(G)."""
    texts = ["First, 6 * 7 = 42. The final answer is \\boxed{42}.", "6 x 7 is 42, so \\boxed{ 42 }",
             "Thinking... \\boxed{42}", "I get \\boxed{41}"]
    H = copo_mod.answer_entropy_bits(_texts_actx(texts, [1, 1, 1, 0], 4), "boxed")
    ref = -(0.75 * torch.log2(torch.tensor(0.75)) + 0.25 * torch.log2(torch.tensor(0.25)))
    assert H.item() == pytest.approx(ref.item(), rel=1e-6)
    assert copo_mod.answer_entropy_bits(_texts_actx(texts, [1, 1, 1, 0], 4), "plain").item() == pytest.approx(2.0)


def test_unextractable_completions_fall_back_to_their_text():
    texts = ["no answer here", "no answer  here", "something else", "\\boxed{3}"]
    keys = copo_mod.answer_keys(_texts_actx(texts, [0, 0, 0, 1], 4), "boxed")
    assert keys[0] == keys[1] and len(set(keys)) == 3


def test_plain_mode_is_the_smoke_task_answer():
    keys = copo_mod.answer_keys(_texts_actx([" 57", "57", "58", "57 "], [1, 1, 0, 1], 4), "plain")
    assert keys == ["57", "57", "58", "57"]


def test_boxed_without_texts_is_an_error():
    case = CASES[0]
    m = get_method("copo")
    with pytest.raises(ValueError, match="completion texts"):
        m.hook("advantage")(_actx(case), **m.resolve({}))


def test_no_global_with_std_is_grpo_advantage():
    """Invariant: with the global term off, COPO's advantage is the group z-score (TRL's up to its eps: 1e-4 vs 1e-6)."""
    case = CASES[0]
    adv, _ = _adv(case, global_flg="no-global")
    actx = _actx(case)
    r = actx.grouped(actx.rewards)
    ref = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)
    torch.testing.assert_close(adv, ref)
    torch.testing.assert_close(adv, actx.grpo_advantages(), rtol=1e-3, atol=1e-3)


def test_uniform_groups_get_global_signal():
    """Mechanism: a group whose responses all agree (local advantage 0) still gets the global advantage."""
    case = next(c for c in CASES if c["name"] == "soft_with_zero_on_policy")
    adv, m = _adv(case)
    G = case["group_size"]
    r = torch.tensor(case["inputs"]["rewards"]).view(-1, G)
    uniform = r.std(1) == 0
    assert uniform.any()
    assert (adv.view(-1, G)[uniform] != 0).all()
    assert m["copo/frac_prompts_with_signal"] == 1.0


def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "hijih/copo-code"
    assert FIX["source"]["commit"].startswith("c15c75f5")
    assert FIX["source"]["file"] == "verl/trainer/ppo/core_algos.py"
    assert FIX["source"]["earlier_commit"]["commit"].startswith("f66883fb")
