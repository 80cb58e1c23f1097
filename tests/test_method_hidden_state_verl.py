"""hidden_state_verl (VERL, arXiv 2509.23808): golden values from the authors' code (hf618/VERL@3de68f1, replayed
over three training batches by tests/fixtures/generators/hidden_state_verl.py), hand-derived effective ranks, the
shaping's invariants, bad settings, and real training steps that deliver the hidden states (from TRL's
old-logprob pass, or from one extra forward when TRL makes none)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import hidden_state_verl as hs
from harness.methods.context import AdvantageContext
from harness.methods.registry import NEEDS, get_method
from conftest import tiny_grpo_trainer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "hidden_state_verl_golden.json").read_text())
CONTROLLER = {"PlanB": "plan_b", "FixTwo": "fix_two", "FixOne": "fix_one"}


def _hparams(hp: dict, **over) -> dict:
    out = get_method("hidden_state_verl").hook_hparams({
        "diff_stride": hp["diff_stride"], "max_seq_len": hp["max_seq_len"], "ema_alpha": hp["ema_alpha"],
        "modulation_gain": hp["modulation_gain"], "adv_shaping_kappa": hp["adv_shaping_kappa"],
        "aux_weight": hp["aux_weight"], "aux_fix": hp["aux_fix"], "weights_explore": hp["weights_explore"],
        "weights_exploit": hp["weights_exploit"], "controller": CONTROLLER[hp["hypothesis_type"]]})
    out.update(over)
    return out


def _actx(hidden, mask, rewards, G, gen):
    return AdvantageContext(rewards=torch.tensor(rewards, dtype=torch.float32), group_size=G,
                            mask=torch.tensor(mask, dtype=torch.float32), completion_ids=torch.zeros(len(mask), 1),
                            hidden_states=torch.tensor(hidden, dtype=torch.float64), generator=gen)


def test_fixture_names_its_source():
    assert "hf618/VERL@3de68f16e447647d3f80d11fdbe5816137b515aa" in FIXTURE["source"]
    assert hs.SOURCE in FIXTURE["source"]
    assert {c["name"] for c in FIXTURE["cases"]} == {"plan_b_train_sh", "fix_two_dynamic_scale_yaml_weights"}


def test_default_is_the_authors_train_sh():
    hp = get_method("hidden_state_verl").resolve({})
    assert hp["diff_stride"] == 40 and hp["ema_alpha"] == 0.3 and hp["modulation_gain"] == 2.0
    assert hp["adv_shaping_kappa"] == 2.0 and hp["aux_fix"] is True and hp["controller"] == "plan_b"
    assert hp["weights_explore"] == [0.0, 0.0, 1.0] and hp["weights_exploit"] == [0.0, 1.0, 0.0]
    assert hp["bonus_tokens"] == "last" and hp["max_seq_len"] == 512
    assert "adv_hidden_states" in NEEDS and get_method("hidden_state_verl").needs == ("adv_hidden_states",)


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["name"])
def test_indicators_and_advantages_match_authors_code_over_three_batches(case):
    gen = torch.Generator().manual_seed(0)   # one run: the EMA state is keyed by the run's generator
    hp = _hparams(case["hparams"])
    try:
        for step, exp in zip(case["steps"], case["expected"]["steps"]):
            mask = torch.tensor(step["mask"], dtype=torch.float64)
            ind = hs.response_indicators(torch.tensor(step["hidden"], dtype=torch.float64), mask,
                                         hp["diff_stride"], hp["max_seq_len"])
            torch.testing.assert_close(ind[:, 2], torch.tensor(exp["er"], dtype=torch.float64), rtol=1e-9, atol=1e-9)
            # windows: both take sqrt(eigvalsh(Gram)); the Gram's null eigenvalue (centring) is rounding noise of
            # ~1e-16 whose square root enters the entropy: float64 results agree to ~1e-7, not to the last bit
            torch.testing.assert_close(ind[:, 1], torch.tensor(exp["erv"], dtype=torch.float64), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(ind[:, 0], torch.tensor(exp["era"], dtype=torch.float64), rtol=1e-6, atol=1e-6)
            adv, metrics = get_method("hidden_state_verl").hook("advantage")(
                _actx(step["hidden"], step["mask"], step["rewards"], case["group_size"], gen), **hp)
            theirs = torch.tensor(exp["advantages"], dtype=torch.float64)
            # TRL's group std eps is 1e-4, verl's 1e-6: relative differences ~2e-4 on the advantage
            torch.testing.assert_close(adv.double() * mask, theirs, rtol=1e-3, atol=1e-6)
            if any(abs(a) > 0 for a in exp["aux"]):
                assert metrics["hidden_state_verl/aux_mean"] == pytest.approx(sum(exp["aux"]) / len(exp["aux"]),
                                                                              rel=1e-6, abs=1e-9)
            else:
                assert "hidden_state_verl/aux_mean" not in metrics   # first batch: no metrics_old, no aux reward
    finally:
        hs._STATE.pop(id(gen), None)


def test_effective_rank_hand_derived():
    # centred rows with orthogonal columns: singular values sqrt(2) a and sqrt(2) b, so p = (a, b) / (a + b)
    a, b = 3.0, 1.0
    z = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]]) + torch.tensor([5.0, -2.0])  # offset: centred away
    sv = torch.tensor([math.sqrt(2) * a, math.sqrt(2) * b], dtype=torch.float64)
    p = sv / (sv.sum() + 1e-8)                                             # ~(0.75, 0.25): the authors' 1e-8 kept
    want = math.exp(-float((p * torch.log(p + 1e-8)).sum()))
    assert hs.effective_rank(z) == pytest.approx(want, rel=1e-12)
    assert hs.effective_rank(z) == pytest.approx(1.7548, abs=1e-4)
    assert hs.effective_rank(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])) == pytest.approx(2.0)
    assert hs.effective_rank(torch.outer(torch.arange(5.0), torch.tensor([1.0, 2.0, -1.0]))) == pytest.approx(1.0)
    assert hs.effective_rank(torch.ones(1, 4)) == 0.0                    # below two rows


def test_rank_dynamics_hand_derived_windows():
    # stride 2 over 7 rows: windows Z[:3], Z[:5], Z[:7]; ERV = mean(ER_2 - ER_1, ER_3 - (ER_1 + ER_2) / 2),
    # ERA = (ER_3 - (ER_1 + ER_2) / 2) - (ER_2 - ER_1)
    z = torch.randn(7, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e1, e2, e3 = (hs.effective_rank(z[:k]) for k in (3, 5, 7))
    d1, d2 = e2 - e1, e3 - (e1 + e2) / 2
    erv, era = hs.rank_dynamics(z, 2, 512)
    # windows use sqrt(eigvalsh(Gram)) (the authors' route), effective_rank svdvals: ~1e-7 apart (centring's null
    # eigenvalue is rounding noise whose square root enters the entropy)
    assert erv == pytest.approx((d1 + d2) / 2, rel=1e-6) and era == pytest.approx(d2 - d1, rel=1e-6, abs=1e-6)
    assert abs(era) > 1e-3                                                # a non-trivial example
    assert hs.rank_dynamics(z[:3], 2, 512) == (0.0, 0.0)                 # fewer than 2 * stride rows
    assert hs.rank_dynamics(z, 2, 4) == hs.rank_dynamics(z[-4:], 2, 512)  # the last max_seq_len rows


def _random_batch(seed, n_groups=3, G=4, T=12, d=16):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (n_groups * G,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    rewards = torch.randint(0, 2, (n_groups * G,), generator=g).float()
    rewards[:G] = 1.0                                            # a uniform group: advantage 0, so no bonus
    return torch.randn(n_groups * G, T, d, generator=g), mask, rewards, G


@pytest.mark.parametrize("bonus_tokens", hs.BONUS_TOKENS)
def test_bonus_is_clipped_nonnegative_and_placed(bonus_tokens):
    gen = torch.Generator().manual_seed(1)
    fn, hp = get_method("hidden_state_verl").hook("advantage"), _hparams(FIXTURE["cases"][0]["hparams"])
    hp["bonus_tokens"] = bonus_tokens
    try:
        for seed in range(3):
            hidden, mask, rewards, G = _random_batch(seed)
            actx = AdvantageContext(rewards=rewards, group_size=G, mask=mask, completion_ids=mask.long(),
                                    hidden_states=hidden, generator=gen)
            adv, m = fn(actx, **hp)
            a0 = actx.grpo_advantages()
            bonus = adv - a0[:, None]
            if seed == 0:
                assert torch.equal(bonus, torch.zeros_like(bonus))   # the first batch is plain GRPO
                continue
            assert (bonus >= -1e-7).all() and (bonus <= a0.abs()[:, None] / hp["adv_shaping_kappa"] + 1e-6).all()
            assert bonus[:G].abs().max() == 0                        # zero-advantage group: cap 0
            last = mask.sum(1).long() - 1
            if bonus_tokens == "last":
                off = bonus.clone()
                off[torch.arange(len(last)), last] = 0
                assert off.abs().max() == 0 and (bonus[torch.arange(len(last)), last] > 0).any()
            else:
                assert torch.allclose(bonus, bonus[:, :1].expand_as(bonus)) and (bonus > 0).any()
            assert 0 < m["method/frac_tokens_touched"] <= 1 and "hidden_state_verl/corr_er_erv" in m
    finally:
        hs._STATE.pop(id(gen), None)


@pytest.mark.parametrize("over, needle", [
    ({"controller": "planb"}, "valid: plan_b, fix_two, fix_one"),
    ({"bonus_tokens": "first"}, "valid: last, all"),
    ({"weights_explore": [1.0, 0.0]}, "3 numbers over (ERA, ERV, ER)"),
    ({"adv_shaping_kappa": 0.0}, "adv_shaping_kappa > 0"),
])
def test_bad_settings_are_clear_errors(over, needle):
    hidden, mask, rewards, G = _random_batch(0)
    actx = AdvantageContext(rewards=rewards, group_size=G, mask=mask, completion_ids=mask.long(), hidden_states=hidden)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        get_method("hidden_state_verl").hook("advantage")(actx, **_hparams(FIXTURE["cases"][0]["hparams"], **over))


def test_missing_hidden_states_and_unknown_hparam_are_errors():
    hidden, mask, rewards, G = _random_batch(0)
    actx = AdvantageContext(rewards=rewards, group_size=G, mask=mask, completion_ids=mask.long())
    with pytest.raises(ValueError, match="adv_hidden_states"):
        get_method("hidden_state_verl").hook("advantage")(actx, **_hparams(FIXTURE["cases"][0]["hparams"]))
    with pytest.raises(KeyError, match="valid: adv_shaping_kappa"):
        get_method("hidden_state_verl").resolve({"layer": 3})


def _train(tiny_base, tmp_path, steps, **cfg):
    from harness.data import smoke

    trainer, _, logs = tiny_grpo_trainer(tiny_base, tmp_path / "trainer", "hidden_state_verl",
                                         reward_funcs=[smoke.exact_match_reward],
                                         hparams={"diff_stride": 1, "max_seq_len": 8}, max_steps=steps,
                                         per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
                                         learning_rate=1e-4, **cfg)
    seen = []
    orig = trainer._adv_hidden_states

    def spy(out):
        h = orig(out)
        seen.append(({k: out[k].clone() for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
                     h.clone()))
        return h

    trainer._adv_hidden_states = spy
    trainer.train()
    return trainer, logs, seen


@pytest.mark.parametrize("spg, extra", [(2, 0.0), (1, 1.0)])
def test_training_steps_get_the_policys_final_hidden_states(tiny_base, tmp_path, spg, extra):
    """steps_per_generation 2 with gradient accumulation 1: TRL makes its old-logprob pass and the states come from
    it (no extra forward); steps_per_generation 1: no such pass, one extra backbone forward. Either way they are the
    backbone's last hidden state at the positions that predict the completion tokens."""
    trainer, logs, seen = _train(tiny_base, tmp_path, steps=2 * spg, steps_per_generation=spg)
    train_logs = [r for r in logs if "completions/mean_length" in r]   # the steps that generated a batch
    assert len(train_logs) == 2 and all(r["adv_hidden_states/extra_forward"] == extra for r in train_logs)
    assert all(math.isfinite(r["hidden_state_verl/er_mean"]) for r in train_logs)
    assert any("hidden_state_verl/aux_mean" in r for r in train_logs)   # the second batch is shaped
    assert len(seen) >= 2
    out, h = seen[0]   # the first batch was generated (and its states taken) before any update: the base model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        want = base.model(input_ids=ids, attention_mask=att).last_hidden_state[:, -out["completion_ids"].size(1) - 1:-1]
    m = out["completion_mask"].bool()
    assert h.shape == want.shape
    torch.testing.assert_close(h[m].float(), want[m].float(), rtol=1e-4, atol=1e-5)
