"""negative_only (rlvr_boundary, arXiv 2510.04028: train only on relative negative gradients): hand-derived
advantages (no authors' code; the rule is the card's), the two loss normalisers, the logged shares, the registry
entry and bad settings. One real training step of the method runs in tests/test_metrics_contract.py."""
from __future__ import annotations

import pytest
import torch

from harness.methods.context import AdvantageContext, BatchContext
from harness.methods.registry import RegistryError, get_method
from harness.methods.rlvr_boundary import negative_advantages

M = get_method("negative_only")

# three groups of G = 4 (group order), lengths 3, 2, 4, 1 | 2, 2, 2, 2 | 1, 1, 1, 1
REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
LENGTHS = [3, 2, 4, 1, 2, 2, 2, 2, 1, 1, 1, 1]
# By hand, TRL 1.16's group normalisation (unbiased std, eps 1e-4):
#   group 1 [1, 0, 0, 1]: mean 0.5, std sqrt(4 * 0.25 / 3) = 0.5773503; A = +-0.5 / 0.5774503 = +-0.8658754
#   group 2 [1, 1, 1, 0]: mean 0.75, std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5; A = 0.25 / 0.5001 = 0.4999000,
#                         -0.75 / 0.5001 = -1.4997001
#   group 3 [0, 0, 0, 0]: A = 0 (no spread)
A1, A2P, A2N = 0.5 / (0.5773502691896258 + 1e-4), 0.25 / 0.5001, -0.75 / 0.5001
GRPO = [A1, -A1, -A1, A1, A2P, A2P, A2P, A2N, 0.0, 0.0, 0.0, 0.0]
NEG_ONLY = [0.0, -A1, -A1, 0.0, 0.0, 0.0, 0.0, A2N, 0.0, 0.0, 0.0, 0.0]


def _actx(rewards=REWARDS, lengths=LENGTHS, scale_rewards="group"):
    T = max(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths], dtype=torch.float64)
    return AdvantageContext(rewards=torch.tensor(rewards, dtype=torch.float64), group_size=4, mask=mask,
                            completion_ids=torch.zeros_like(mask, dtype=torch.long), scale_rewards=scale_rewards)


def _adv(actx, **over):
    return M.hook("advantage")(actx, **M.hook_hparams(over))


def test_hand_derived_advantages_keep_only_the_negative_ones():
    assert A1 == pytest.approx(0.8658754, abs=1e-7) and A2N == pytest.approx(-1.4997001, abs=1e-7)
    torch.testing.assert_close(_actx().grpo_advantages(), torch.tensor(GRPO, dtype=torch.float64))  # TRL's, by hand
    adv, m = _adv(_actx())
    torch.testing.assert_close(adv, torch.tensor(NEG_ONLY, dtype=torch.float64), atol=1e-12, rtol=0)
    # shares: 3 of 12 samples negative; 5 positives zeroed, holding 3 + 1 + 2 + 2 + 2 = 10 of the 22 tokens
    assert m["negative_only/neg_frac"] == pytest.approx(3 / 12)
    assert m["negative_only/pos_frac"] == pytest.approx(5 / 12)
    assert m["method/frac_tokens_touched"] == pytest.approx(10 / 22)


def test_dr_grpo_scaling_and_per_token_advantages():
    # scale_rewards "none" (Dr. GRPO): A = r - mean; group 2 -> 0.25, 0.25, 0.25, -0.75
    adv, _ = _adv(_actx(scale_rewards="none"))
    torch.testing.assert_close(adv, torch.tensor([0, -0.5, -0.5, 0, 0, 0, 0, -0.75, 0, 0, 0, 0],
                                                 dtype=torch.float64))
    a = torch.tensor([[0.5, -0.5, 0.0], [-2.0, 1.0, -0.125]])  # token by token, dtype kept, nothing positive left
    out = negative_advantages(a)
    assert out.dtype == a.dtype and out.tolist() == [[0.0, -0.5, 0.0], [-2.0, 0.0, -0.125]]


def test_invariants_on_random_groups():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = torch.randint(0, 2, (32,), generator=g).double()
        actx = _actx(rewards=r.tolist(), lengths=[1 + int(x) for x in torch.randint(0, 5, (32,), generator=g)])
        a, (adv, _) = actx.grpo_advantages(), _adv(actx)
        assert (adv <= 0).all()                                  # no positive gradient
        assert torch.equal(adv[a < 0], a[a < 0])                 # the negative ones untouched
        assert (adv[a >= 0] == 0).all()


def _bctx(adv, stage="scored"):
    return BatchContext(stage=stage, group_size=4, advantages=torch.tensor(adv, dtype=torch.float64))


def test_normaliser_all_keeps_every_sample_and_negative_drops_the_rest():
    data = M.hook("data")
    assert data(_bctx(NEG_ONLY), normaliser="all") is None      # only the advantage changes
    assert data(_bctx(NEG_ONLY, stage="prompts"), normaliser="negative") is None
    d = data(_bctx(NEG_ONLY), normaliser="negative")             # zeroed samples leave the loss and its normaliser
    assert d.keep.tolist() == [a < 0 for a in NEG_ONLY] and d.metrics["negative_only/kept_frac"] == pytest.approx(0.25)
    per_token = torch.tensor([[0.0, -1.0], [0.0, 0.0]])
    assert data(BatchContext(stage="scored", group_size=2, advantages=per_token),
                normaliser="negative").keep.tolist() == [True, False]


def test_registry_entry_and_bad_settings():
    assert M.paper == "rlvr_boundary" and set(M.hooks) == {"advantage", "data"}
    hp = M.hparams["normaliser"]
    assert hp.default == "all" and hp.unit and "not found" in hp.source
    assert "2510.04028" in M.source
    with pytest.raises(ValueError, match="unknown normaliser 'tokens'; valid: all, negative"):
        _adv(_actx(), normaliser="tokens")
    with pytest.raises(ValueError, match="valid: all, negative"):
        M.hook("data")(_bctx(NEG_ONLY), normaliser="mean")
    with pytest.raises(RegistryError, match="normaliser must be str"):
        M.resolve({"normaliser": 1})
    with pytest.raises(RegistryError, match="no hyperparameter 'clip'"):
        M.resolve({"clip": 0.2})


def test_card_uses_the_method_at_the_smoke_reasoning_tier():
    from harness.plan import resolve_job

    job = resolve_job("rlvr_boundary", "smoke-reasoning", "negative_only", 42)
    assert job["hparams"] == {"normaliser": "all"} and job["data"]["task"] == "reasoning"
    assert job["trl"]["max_steps"] == resolve_job("rlvr_boundary", "smoke-reasoning", "grpo", 42)["trl"]["max_steps"]


def _parity_reward(completions, **kw):
    return [float(sum(map(ord, c)) % 2) for c in completions]


@pytest.mark.parametrize("normaliser", ["all", "negative"])
def test_one_real_training_step_with_each_normaliser(tiny_base, tmp_path, normaliser):
    from conftest import tiny_grpo_trainer

    trainer, _, logs = tiny_grpo_trainer(tiny_base, tmp_path / normaliser, "negative_only", reward_funcs=[_parity_reward],
                                         hparams={"normaliser": normaliser}, per_device_train_batch_size=32,
                                         num_generations=8, max_completion_length=4, max_steps=1, learning_rate=1e-3,
                                         beta=0.0, loss_type="bnpo")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    row = next(r for r in logs if "negative_only/neg_frac" in r)
    assert 0 < row["negative_only/neg_frac"] < 1 and row["negative_only/pos_frac"] > 0
    if normaliser == "negative":  # the data hook kept exactly the negative samples
        assert row["data/kept_frac"] == pytest.approx(row["negative_only/neg_frac"])
    else:
        assert "data/kept_frac" not in row
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # it trained
