"""T1 (arXiv 2501.11651): oversampling with a stated selection rule, the entropy bonus and the dynamic anchor.

No RL code is released (THUDM/T1 @ 5dfb8fff: README, SFT data link, figures), so the golden values are
hand-derived: tests/fixtures/t1_golden.json, whose ``expected`` blocks an independent brute-force reference
recomputes (``python tests/fixtures/generators/t1.py``: every n-subset of each group, numpy advantages). Plus the
issue's invariants (no oversampling, c = 0, beta = 0 is GRPO; the anchor refreshes every N steps), the whole loss
by hand on the trainer (policy + beta KL - c H), real training steps on the tiny smoke model, and bad inputs.
"""
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import t1 as t1_mod
from harness.methods.context import AdvantageContext, BatchContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "t1_golden.json").read_text())
CASES = FIX["cases"]


def _actx(rewards, group_size, scale="group"):
    r = torch.as_tensor(rewards, dtype=torch.float64)
    return AdvantageContext(rewards=r, group_size=group_size, mask=torch.ones(r.numel(), 3),
                            completion_ids=torch.zeros(r.numel(), 3, dtype=torch.long), scale_rewards=scale)


def _hooks(rewards, group_size, scale="group", **over):
    m = get_method("t1")
    hp = m.hook_hparams(over)
    adv, metrics = m.hook("advantage")(_actx(rewards, group_size, scale), **hp)
    dec = m.hook("data")(BatchContext(stage="scored", group_size=group_size,
                                      rewards=torch.as_tensor(rewards, dtype=torch.float64)), **hp)
    return adv, metrics, dec


TRL_DEFAULTS = {"entropy_coef": 0.01, "beta": 0.04, "sync_ref_model": True, "ref_model_sync_steps": 20,
                "ref_model_mixup_alpha": 1.0}


def test_defaults_hooks_and_trl_settings():
    m = get_method("t1")
    assert m.hook_hparams() == {"n_keep": 4, "selection": "max_variance", "advantage_over": "kept"}
    assert set(m.hooks) == {"advantage", "data"} and "loss" not in m.hooks  # beta > 0 needs TRL's own loss
    assert m.trl_hparams(m.resolve()) == TRL_DEFAULTS
    from harness.plan import resolve_job  # a tier states them like any hyperparameter; they land in TRL's settings

    job = resolve_job("t1", "smoke-reasoning", "t1", 42)
    assert {k: job["trl"][k] for k in TRL_DEFAULTS} == TRL_DEFAULTS
    with pytest.raises(Exception, match="ref_model_sync_steps must be int"):
        m.resolve({"ref_model_sync_steps": "often"})
    assert all(hp.source for hp in m.hparams.values())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_kept_samples_and_advantages_match_the_hand_derived_rule(case):
    i, exp = case["inputs"], case["expected"]
    adv, metrics, dec = _hooks(i["rewards"], i["group_size"], i["scale_rewards"], **case["hparams"])
    torch.testing.assert_close(adv, torch.tensor(exp["advantages"], dtype=torch.float64), rtol=1e-9, atol=1e-9)
    kept = torch.tensor(exp["kept"])
    if kept.all():
        assert dec is None                       # no oversampling: nothing dropped, the batch is GRPO's
    else:
        assert torch.equal(dec.keep, kept) and not dec.resample and dec.weights is None
    assert metrics["t1/kept_reward_std"] == pytest.approx(exp["kept_reward_std"], abs=1e-12)
    assert metrics["t1/all_reward_std"] == pytest.approx(exp["all_reward_std"], abs=1e-12)
    assert metrics["t1/reward_std_gain"] == pytest.approx(exp["kept_reward_std"] - exp["all_reward_std"], abs=1e-12)
    assert metrics["t1/kept_frac"] == pytest.approx(float(kept.double().mean()))
    if case["hparams"]["selection"] == "max_variance":  # the kept subset reaches the brute-force maximum
        g = torch.nan_to_num(torch.tensor(i["rewards"], dtype=torch.float64)).view(-1, i["group_size"])
        k = kept.view(-1, i["group_size"])
        for row, kr, best in zip(g, k, exp["max_subset_var"]):
            assert float(row[kr].var(unbiased=False)) == pytest.approx(best, abs=1e-12)


def test_hand_example_written_out():
    """Group [1, 0, 0, 1, 1, 1], keep 4 of 6: positions 1, 2, 4, 5 (rewards 0, 0, 1, 1: variance 0.25, the most a
    4-subset can have); GRPO over them: mean 0.5, unbiased std sqrt(1/3), advantage -/+ 0.5 / (sqrt(1/3) + 1e-4);
    positions 0 and 3 are dropped, advantage 0. Over all 6 instead: mean 2/3, std sqrt(4/15)."""
    adv, _, dec = _hooks([1, 0, 0, 1, 1, 1], 6)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([0, -a, -a, 0, a, a], dtype=torch.float64))
    assert dec.keep.tolist() == [False, True, True, False, True, True]
    adv_all, _, _ = _hooks([1, 0, 0, 1, 1, 1], 6, advantage_over="all")
    s = math.sqrt(4 / 15) + 1e-4
    torch.testing.assert_close(adv_all, torch.tensor([0, -2 / 3 / s, -2 / 3 / s, 0, 1 / 3 / s, 1 / 3 / s],
                                                     dtype=torch.float64))


def test_max_variance_subset_is_optimal_on_random_groups():
    g = torch.Generator().manual_seed(0)
    for k, n in [(5, 2), (6, 3), (7, 4), (8, 5)]:
        for _ in range(30):
            r = torch.randint(0, 4, (k,), generator=g).double() / 3  # ties, as with graded rewards
            idx = t1_mod.max_variance_subset(r, n)
            assert len(set(idx.tolist())) == n
            best = max(float(r[list(s)].var(unbiased=False)) for s in itertools.combinations(range(k), n))
            assert float(r[idx].var(unbiased=False)) == pytest.approx(best, abs=1e-12)


def test_no_oversampling_is_grpo_advantage_for_every_scaling():
    r = torch.tensor([1, 0, 0.5, 1, 0, 0, 0, 0, 1, 1, 0.25, 0.5], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        adv, _, dec = _hooks(r, 6, scale, n_keep=6)
        torch.testing.assert_close(adv, _actx(r, 6, scale).grpo_advantages())
        assert dec is None


def test_random_keeps_the_first_n_of_each_group():
    adv, _, dec = _hooks([0, 0, 1, 1, 1, 1, 0.5, 0, 1, 0.5], 5, n_keep=3, selection="random")
    assert dec.keep.tolist() == [True, True, True, False, False, True, True, True, False, False]


def test_prompts_stage_is_left_alone():
    m = get_method("t1")
    assert m.hook("data")(BatchContext(stage="prompts", group_size=4, rows=[{"prompt": "1"}]), **m.hook_hparams()) is None


def test_bad_inputs_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown selection 'best'; valid: max_variance, random"):
        _hooks([1, 0, 0, 1], 4, n_keep=2, selection="best")
    with pytest.raises(ValueError, match=r"unknown advantage_over 'group'; valid: kept, all"):
        _hooks([1, 0, 0, 1], 4, n_keep=2, advantage_over="group")
    for n in (1, 5):
        with pytest.raises(ValueError, match=rf"n_keep must be between 2 and num_generations \(4\), got {n}"):
            _hooks([1, 0, 0, 1], 4, n_keep=n)
    with pytest.raises(RegistryError, match="n_keep must be int"):
        get_method("t1").resolve({"n_keep": "4"})
    with pytest.raises(RegistryError, match="has no hyperparameter 'epsilon'"):
        get_method("t1").resolve({"epsilon": 0.1})   # TRL settings a tier states are only the method's own


def test_fixture_says_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived" and FIX["source"]["code"].startswith("THUDM/T1@5dfb8fff")


# ------------------------------------------------------------------------------------------------ trainer
G = 4


def graded_reward(completions, **kw):
    """Three levels from the completion text, so groups vary and selection has a choice."""
    return [float(sum(map(ord, c)) % 3) / 2 for c in completions]


def _trainer(tiny_base, tmp_path, method="t1", hparams=None, **cfg):
    m = get_method(method)
    settings = dict(per_device_train_batch_size=16, num_generations=G, max_completion_length=4, learning_rate=1e-3,
                    max_steps=1, loss_type="bnpo", **m.trl_hparams(m.resolve()))
    settings.update(cfg)
    return tiny_grpo_trainer(tiny_base, tmp_path / "trainer", m, reward_funcs=[graded_reward], hparams=hparams,
                             **settings)


def test_one_step_keeps_the_selected_subset_with_its_advantages(tiny_base, tmp_path):
    """A real step with t1's defaults (beta 0.04, entropy bonus, anchor): dropped completions leave the loss mask and
    the token normaliser; the kept ones carry the GRPO advantage over the kept subset of their group."""
    trainer, tok, logs = _trainer(tiny_base, tmp_path, hparams={"n_keep": 2})
    outs, rewards = [], []
    gen = trainer._generate_and_score_completions

    def spy(inputs):
        outs.append(gen(inputs))
        rewards.append(trainer._weighted_rewards().clone())
        return outs[-1]

    trainer._generate_and_score_completions = spy
    assert trainer.ref_model is not None and trainer.beta == 0.04 and trainer.entropy_coef == 0.01
    trainer.train()
    (out,), (r,) = outs, rewards
    comps = [tok.decode(ids[m.bool()], skip_special_tokens=True)
             for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    torch.testing.assert_close(r.double(), torch.tensor(graded_reward(comps), dtype=torch.float64))
    keep = t1_mod.kept_rows(r, G, n_keep=2, selection="max_variance")
    assert int(keep.sum()) == out["completion_ids"].size(0) // 2
    assert torch.equal(out["tool_mask"].amax(1).bool().cpu(), keep)
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"][keep].sum())
    exp, _ = get_method("t1").hook("advantage")(_actx(r, G), n_keep=2, selection="max_variance",
                                                advantage_over="kept")
    torch.testing.assert_close(out["advantages"].double().cpu(), exp.double(), rtol=1e-5, atol=1e-6)
    assert torch.all(out["advantages"][~keep] == 0)
    row = next(x for x in logs if "t1/reward_std_gain" in x)
    assert row["t1/reward_std_gain"] >= 0 and "kl" in row and "entropy" in row
    assert row["data/kept_frac"] == 0.5


def test_loss_is_policy_plus_kl_minus_entropy_bonus(tiny_base, tmp_path):
    """TRL's loss with t1's settings, on a fixed batch, by hand: bnpo mean over tokens of (-A ratio + beta k3-KL to
    the anchor) minus c times the mean token entropy, the entropy computed here from the full softmax."""
    trainer, tok, _ = _trainer(tiny_base, tmp_path)
    trainer.model.eval()
    p = tok(["12+34="] * 4, add_special_tokens=False, return_tensors="pt")["input_ids"]
    c = torch.tensor([[5, 6, 7], [8, 9, 5], [6, 7, 8], [9, 5, 6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    ids = torch.cat([p, c], 1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids).logits[:, p.size(1) - 1:-1].double()
    logp_all = torch.log_softmax(logits, -1)
    logps = logp_all.gather(-1, c.unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    ref = logps - torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, 0.0], [-0.4, 0.2, 0.1], [0.3, 0.0, 0.0]]).double()
    adv = torch.tensor([1.0, -0.5, 0.25, -1.0])
    inputs = {"prompt_ids": p, "prompt_mask": torch.ones_like(p), "completion_ids": c, "completion_mask": mask,
              "advantages": adv, "ref_per_token_logps": ref.float(), "num_items_in_batch": mask.sum()}
    loss = trainer._compute_loss(trainer.model, inputs)
    kl = torch.exp(ref - logps) - (ref - logps) - 1
    m = mask.double()
    per_tok = -adv.double().unsqueeze(1) + 0.04 * kl           # on-policy: ratio 1
    expected = (per_tok * m).sum() / m.sum() - 0.01 * (ent * m).sum() / m.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    no_bonus = (per_tok * m).sum() / m.sum()
    assert abs(loss.item() - no_bonus.item()) > 1e-3       # the bonus term is there


def test_no_oversampling_no_bonus_no_kl_trains_exactly_like_grpo(tiny_base, tmp_path):
    """Invariant: n_keep = K, c = 0 and beta = 0 (anchor off) is GRPO: same loss, same weights after a step."""
    off = dict(entropy_coef=0.0, beta=0.0, sync_ref_model=False)
    a, _, logs_a = _trainer(tiny_base, tmp_path / "a", hparams={"n_keep": G}, **off)
    a.train()                               # each run seeded at its construction: train before building the next
    b, _, logs_b = _trainer(tiny_base, tmp_path / "b", method="grpo", **off)
    b.train()
    la = next(x for x in logs_a if "loss" in x)
    lb = next(x for x in logs_b if "loss" in x)
    assert la["loss"] == pytest.approx(lb["loss"], rel=1e-6, abs=1e-9)
    for (n, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=n)


def test_anchor_refreshes_every_n_steps(tiny_base, tmp_path):
    """ref_model_sync_steps N = 2: the anchor equals the policy right after steps 2 and 4 (hard copy), lags it after
    steps 1 and 3, and has left the initial weights after the first refresh."""
    from transformers import TrainerCallback

    trainer, _, _ = _trainer(tiny_base, tmp_path, hparams={"n_keep": 2}, max_steps=4, ref_model_sync_steps=2)
    init = [q.detach().clone() for q in trainer.ref_model.parameters()]
    seen = {}

    def same(xs, ys):
        return all(torch.equal(x, y) for x, y in zip(xs, ys))

    class Probe(TrainerCallback):  # on_step_begin of step s + 1 runs after TRL's sync at the end of step s
        def _look(self, state):
            ref = list(trainer.ref_model.parameters())
            seen[state.global_step] = (same(ref, list(trainer.model.parameters())), same(ref, init))

        def on_step_begin(self, args, state, control, **kw):
            self._look(state)

        def on_train_end(self, args, state, control, **kw):
            self._look(state)

    trainer.add_callback(Probe())
    trainer.train()
    assert {s: v[0] for s, v in seen.items()} == {0: True, 1: False, 2: True, 3: False, 4: True}
    assert seen[1][1] and not seen[2][1] and not seen[4][1]
