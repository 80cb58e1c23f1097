"""Light-IF TEA-RL against numbers computed with the authors' code: tests/fixtures/light_if_golden.json, from
Qihoo360/Light-IF @ 01e90034 (``rl/verl/verl/trainer/ppo/core_algos.py`` ``compute_entropy_with_cov`` and
``compute_policy_loss``, combined as ``policy_loss = pg_loss - entropy_loss``); the instruct smoke task's checkers and
rewards (harness/data/instruct.py), hand-derived TEA weights, one real training step on the tiny model.

Regenerate / re-check the fixture from the authors' code (loaded at run time, none is committed):

    git clone https://github.com/Qihoo360/Light-IF /tmp/Light-IF && git -C /tmp/Light-IF checkout 01e90034
    python tests/fixtures/generators/light_if.py /tmp/Light-IF            # check; --write rewrites `expected`
"""
import json
import math
import random
from pathlib import Path

import pytest
import torch

from harness.data import instruct as I
from harness.methods import light_if as L
from harness.methods.context import RewardContext, TokenContext, dual_clip_ppo
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "light_if_golden.json").read_text())
CASES = FIX["cases"]


def _ctx(case, *, grad=True):
    i = case["inputs"]
    t = lambda k: torch.tensor(i[k], dtype=torch.float64)  # noqa: E731
    logp, ent = t("log_prob"), t("entropy")
    if grad:
        logp.requires_grad_(True), ent.requires_grad_(True)
    return TokenContext.build(logp, t("old_log_prob"), t("advantages"), t("mask"), entropies=ent), logp, ent


def _loss(ctx, **over):
    hp = get_method("light_if").resolve(over)
    per_tok, metrics = L.tea_loss(ctx, **hp)
    return (per_tok * ctx.mask).sum() / ctx.mask.sum(), metrics


# ------------------------------------------------------------------------------------------------ golden ---
def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "Qihoo360/Light-IF" and FIX["source"]["commit"] == L.COMMIT
    names = {c["name"] for c in CASES}
    assert {"on_policy_authors_defaults", "off_policy_clipped_and_clamped", "smoke_alpha", "long_peaked"} == names
    off = next(c for c in CASES if c["name"] == "off_policy_clipped_and_clamped")["expected"]
    assert off["pg_clipfrac"] > 0 and off["pg_clipfrac_lower"] > 0          # both clips exercised
    assert any(w == 5.0 for row in off["weights"] for w in row)              # the clamp binds


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_and_gradients_match_authors_code(case):
    ctx, logp, ent = _ctx(case)
    loss, metrics = _loss(ctx, **case["hparams"])
    loss.backward()
    exp = case["expected"]
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-8, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64),
                               rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(ent.grad, torch.tensor(exp["grad_entropy"], dtype=torch.float64),
                               rtol=1e-7, atol=1e-12)
    assert metrics["light_if/tea_weight_mean"] == pytest.approx(exp["coef_avg"], rel=1e-8)
    assert metrics["light_if/entropy_bonus"] == pytest.approx(exp["entropy_loss"], rel=1e-8)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_weights_and_pg_part_match_authors_code(case):
    ctx, _, _ = _ctx(case, grad=False)
    hp = case["hparams"]
    w = L.tea_weights(ctx.logps, ctx.advantages, ctx.mask, hp["cov_alpha"], hp["clip_cov_ub"])
    torch.testing.assert_close(w, torch.tensor(case["expected"]["weights"], dtype=torch.float64), rtol=1e-8,
                               atol=1e-12)
    pg, _ = _loss(ctx, entropy_mode="none", **hp)                   # the released actor: the PPO part alone
    assert pg.item() == pytest.approx(case["expected"]["pg_loss"], rel=1e-8, abs=1e-12)


def test_defaults_are_the_authors_code():
    """core_algos.py:890 defaults (cov_alpha 10, clip_cov_ub 5; ppo_trainer.yaml entropy_mode token-level-cov) and
    the Light-IF scripts' clip 1.0 / 1.0 / dual clip 10; the dense reward adds to the task's (weight 1)."""
    m = get_method("light_if")
    assert m.resolve() == {"entropy_mode": "token-level-cov", "cov_alpha": 10.0, "clip_cov_ub": 5.0,
                           "clip_ratio_low": 1.0, "clip_ratio_high": 1.0, "clip_ratio_c": 10.0}
    assert set(m.hooks) == {"loss", "reward"} and m.task_reward_weight == 1.0 and m.paper == "light_if"
    ablation = get_method("light_if_no_tea")
    assert ablation.resolve() == {**m.resolve(), "entropy_mode": "none"}
    assert ablation.hook("reward") is m.hook("reward") and ablation.task_reward_weight == 1.0


# ---------------------------------------------------------------------------------- hand-derived TEA -------
def test_weights_by_hand():
    """Row 0 (A = +1, logp = [0, -1]) and row 1 (A = -1, logp = [-1, -2, -3 masked]): mean A over the 4 valid
    tokens is 0, mean logp is -1; cov row 0 = [1, 0], row 1 = [-0, 1]; w = alpha * softmax, clamped."""
    logp = torch.tensor([[0.0, -1.0, 0.0], [-1.0, -2.0, -3.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    s = 1 / (1 + math.e)                                            # softmax([1, 0]) = [1 - s, s]
    w = L.tea_weights(logp, adv, mask, cov_alpha=2.0, clip_cov_ub=5.0)
    torch.testing.assert_close(w, torch.tensor([[2 * (1 - s), 2 * s, 0.0], [2 * s, 2 * (1 - s), 0.0]],
                                               dtype=torch.float64))
    w = L.tea_weights(logp, adv, mask, cov_alpha=2.0, clip_cov_ub=1.0)   # 2 (1 - s) = 1.46 is clamped to 1
    assert w[0, 0].item() == 1.0 and w[1, 1].item() == 1.0 and w[0, 1].item() == pytest.approx(2 * s)


def test_equal_advantages_spread_the_weight_evenly_and_one_token_rows_hit_the_clamp():
    logp = torch.randn(3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    w = L.tea_weights(logp, torch.full((3, 4), 0.7, dtype=torch.float64), mask, 10.0, 5.0)
    torch.testing.assert_close(w, torch.tensor([[2.5] * 4, [5.0, 5.0, 0, 0], [5.0, 0, 0, 0]], dtype=torch.float64))


def test_a_row_without_valid_tokens_gets_zero_weight_not_nan():
    """Deviation: the authors' softmax over an all -inf row is NaN (a NaN loss); here such a row weighs 0."""
    logp = torch.randn(2, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.float64)
    w = L.tea_weights(logp, torch.randn(2, 3, dtype=torch.float64), mask, 10.0, 5.0)
    assert torch.isfinite(w).all() and w[1].abs().sum() == 0


def test_the_bonus_raises_entropy_and_its_weights_carry_a_gradient():
    """d loss / d H_t = -w_t / N (< 0: descent raises entropy); the weights are not detached (authors' code)."""
    case = CASES[0]
    ctx, logp, ent = _ctx(case)
    loss, _ = _loss(ctx)
    loss.backward()
    w = L.tea_weights(ctx.logps.detach(), ctx.advantages, ctx.mask, 10.0, 5.0)
    torch.testing.assert_close(ent.grad, -w * ctx.mask / ctx.mask.sum())
    ctx2, logp2, _ = _ctx(case)
    pg, _ = _loss(ctx2, entropy_mode="none")
    pg.backward()
    bonus_grad = logp.grad - logp2.grad                             # gradient through the weights only
    assert bonus_grad.abs().max() > 1e-6


def test_no_tea_mode_is_dual_clip_ppo():
    ctx, _, _ = _ctx(CASES[1], grad=False)
    per_tok, metrics = L.tea_loss(ctx, **get_method("light_if_no_tea").resolve())
    ref, _ = dual_clip_ppo(ctx, 1.0, 1.0, 10.0)
    assert torch.equal(per_tok, ref)
    assert metrics["method/frac_tokens_touched"] == 0.0 and metrics["light_if/tea_weight_mean"] == 0.0


def test_smoke_alpha_touches_tokens_but_weighs_little():
    ctx, _, _ = _ctx(CASES[2], grad=False)
    _, m = L.tea_loss(ctx, **get_method("light_if").resolve({"cov_alpha": 0.015}))
    assert 0.0 < m["method/frac_tokens_touched"] < 1.0 and m["light_if/tea_weight_mean"] < 0.005


# ------------------------------------------------------------------------------------------- bad input -----
def test_unknown_entropy_mode_names_the_valid_ones():
    ctx, _, _ = _ctx(CASES[0], grad=False)
    with pytest.raises(ValueError, match="token-level-cov, none"):
        L.tea_loss(ctx, **get_method("light_if").resolve({"entropy_mode": "cov"}))


@pytest.mark.parametrize("over, exc, needle", [
    ({"cov_alpha": "ten"}, RegistryError, "cov_alpha must be float"),
    ({"alpha": 1.0}, RegistryError, "valid: clip_cov_ub"),
    ({"cov_alpha": -1.0}, ValueError, "must be >= 0"),
])
def test_bad_settings_are_clear_errors(over, exc, needle):
    ctx, _, _ = _ctx(CASES[0], grad=False)
    with pytest.raises(exc, match=needle):
        L.tea_loss(ctx, **get_method("light_if").resolve(over))


def test_missing_entropies_is_an_error():
    ctx, _, _ = _ctx(CASES[0], grad=False)
    ctx.entropies = None
    with pytest.raises(ValueError, match="entropies"):
        L.tea_loss(ctx, **get_method("light_if").resolve())


def _rctx(completions, answers):
    return RewardContext(prompts=["p"] * len(completions), completions=completions,
                         completion_ids=[[5]] * len(completions), group_size=len(completions), answers=answers)


def test_reward_hook_is_the_fraction_satisfied():
    spec = "count=4;start=a;avoid=c"
    out = get_method("light_if").hook("reward")(_rctx(["abde", "abcd", "bbb", "a1bd"], [spec] * 4),
                                                **get_method("light_if").resolve())
    assert out == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


@pytest.mark.parametrize("answers, needle", [(None, "answer column"), (["42"], "valid kinds: count")])
def test_reward_hook_needs_instruct_specs(answers, needle):
    with pytest.raises(ValueError, match=needle):
        get_method("light_if").hook("reward")(_rctx(["ab"], answers))


# ------------------------------------------------------------------------------------ the instruct task ----
@pytest.mark.parametrize("kind, value, good, bad", [
    ("count", "3", "abc", "abcd"),
    ("count", "5", "aaaaa", "aa"),
    ("start", "b", "bca", "cba"),
    ("end", "e", "abe", "aeb"),
    ("avoid", "c", "abd", "abcd"),
    ("include", "h", "ahb", "abg"),
])
def test_each_checker_right_and_wrong(kind, value, good, bad):
    assert I.check(kind, value, I.items_of(good)) is True
    assert I.check(kind, value, I.items_of(bad)) is False


@pytest.mark.parametrize("text", ["", "   ", "ab1", "a b", "abz", "count 3"])
def test_malformed_responses_satisfy_nothing(text):
    assert I.items_of(text) is None
    assert I.satisfied(text, "count=3;avoid=c;include=a") == [False, False, False]
    assert I.dense_score(text, "avoid=c;include=a") == 0.0


def test_whitespace_around_the_items_is_ignored():
    assert I.satisfied(" abc\n", "count=3;start=a;end=c") == [True, True, True]


@pytest.mark.parametrize("spec, needle", [
    ("", "empty"), ("count 3", "bad constraint"), ("length=3", "valid kinds: count, start, end, avoid, include"),
    ("count=0", "positive integer"), ("start=z", "one of the letters"), ("end=ab", "one of the letters"),
])
def test_bad_specs_are_clear_errors(spec, needle):
    with pytest.raises(ValueError, match=needle):
        I.parse_spec(spec)
    with pytest.raises(ValueError, match="unknown constraint kind 'length'; valid: count"):
        I.check("length", "3", "abc")


def test_reward_invariants_on_random_traces():
    """All satisfied -> 1 and strict 1; none -> 0; strict = floor(dense) everywhere; dense in {k / m}."""
    rng = random.Random(0)
    seen = set()
    for _ in range(600):
        p = I.sample_instruction(rng)
        text = I.trace(p, rng, noise=0.5)
        d, s = I.dense_score(text, p.spec), I.all_satisfied(text, p.spec)
        assert math.floor(d) == int(s) and I.strict_reward([text], [p.spec]) == [float(s)]
        assert round(d * p.level) == pytest.approx(d * p.level)
        seen.add(d)
        perfect = I.trace(p, rng, noise=0.0)
        assert I.dense_score(perfect, p.spec) == 1.0 and I.all_satisfied(perfect, p.spec)
    assert {0.0, 1.0} < seen and any(0 < d < 1 for d in seen)
    assert I.dense_score("zz", "count=3;start=a") == 0.0 and I.strict_reward(["zz"], ["count=3"]) == [0.0]


def test_full_noise_breaks_every_count():
    rng = random.Random(1)
    for _ in range(50):
        p = I.sample_instruction(rng)
        assert not I.satisfied(I.trace(p, rng, noise=1.0), p.spec)[[k for k, _ in p.constraints].index("count")]
    with pytest.raises(ValueError, match="noise"):
        I.trace(p, rng, noise=1.5)


def test_instructions_are_satisfiable_and_split_is_disjoint():
    train, val = I.split(64, 300, 5)
    assert len(train) == 300 and len(val) == 64
    assert not {p.prompt for p in train} & {p.prompt for p in val}
    for p in train + val:
        kinds = [k for k, _ in p.constraints]
        assert kinds.count("count") == 1 and p.level in I.LEVELS and len(set(kinds)) == len(kinds)
        if p.get("avoid"):
            assert p.get("avoid") not in {p.get("start"), p.get("end"), p.get("include")}
        assert I.parse_spec(p.spec) == list(p.constraints)
    assert I.split(64, 300, 5) == (train, val)
    with pytest.raises(ValueError, match="level must be one of"):
        I.sample_instruction(random.Random(0), level=5)


def test_group_signal_metrics_are_logged_per_batch():
    """Group 1 varies under both rewards, group 2 under neither; then a group that varies in dense only."""
    spec = "count=3;start=a"
    comps = ["abc", "bbc", "bbbb", "zz", "zz", "zz"]
    logs = {}
    out = I.strict_reward(comps, [spec] * 6, prompts=["p1"] * 3 + ["p2"] * 3,
                          log_metric=lambda k, v: logs.setdefault(k, v))
    assert out == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert logs["task/nonzero_adv_groups_binary"] == 0.5 and logs["task/nonzero_adv_groups_dense"] == 0.5
    logs.clear()
    I.strict_reward(["bbc", "bbbb", "bac"], [spec] * 3, prompts=["p"] * 3, log_metric=lambda k, v: logs.setdefault(k, v))
    assert logs["task/nonzero_adv_groups_dense"] == 1.0 and logs["task/nonzero_adv_groups_binary"] == 0.0
    assert logs["task/dense_reward_mean"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert I.nonzero_group_share([], []) == 0.0


def test_smoke_task_is_registered_and_fits_its_context():
    from harness.config import ConfigError
    from harness.config.tiers import DataSpec, PretrainSpec
    from harness.data.smoke_tasks import SMOKE_TASKS, smoke_task

    assert "instruct" in SMOKE_TASKS
    t = smoke_task("instruct")
    tok = t.build_tokenizer()
    assert len(tok) == len(t.vocab) == 24
    train, val = t.splits(DataSpec(task="instruct", n_val=32, split_seed=1, n_train=200))
    assert {"prompt", "answer", "level"} <= set(train[0]) and len(val) == 32
    pre = PretrainSpec(seed=0, steps=1, batch_size=16, lr=1e-3, noise=0.4)
    batch = t.pretrain_batch(random.Random(0), train, pre, 16)
    assert len(batch) == 16 and not {p for p, _ in batch} & {r["prompt"] for r in val}
    for prompt, pieces in batch:
        ids = tok(prompt + pieces[0][0], add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) + 1 <= t.max_positions
        assert tok.decode(tok(prompt)["input_ids"]) == prompt
    assert t.score("abc", "count=3;end=c") and not t.score("abc", "count=3;end=b") and t.vote_key("a b") is None
    with pytest.raises(ConfigError, match="n_train is required"):
        t.splits(DataSpec(task="instruct", n_val=8))


# ---------------------------------------------------------------------------------------- real training ----
@pytest.fixture(scope="module")
def instruct_base(tmp_path_factory):
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "instruct"
    pretrain(out, {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
             {"seed": 0, "steps": 30, "batch_size": 64, "lr": 3e-3, "noise": 0.4},
             {"task": "instruct", "split_seed": 1234, "n_val": 64, "n_train": 256}, log=lambda *a: None)
    return out


@pytest.mark.parametrize("name", ["light_if", "light_if_no_tea"])
def test_one_training_step_on_the_instruct_task(instruct_base, tmp_path, name):
    """The loss and reward hooks inside HarnessGRPOTrainer on the tiny model, instruct task: total reward = dense +
    all-or-nothing, the task's group-signal metrics and the method's metrics are logged, entropies carry gradients."""
    grads: list[bool] = []
    m = get_method(name)
    loss_fn = m.hook("loss")
    train, _ = I.split(16, 64, 1234)
    trainer, _, rows = tiny_grpo_trainer(instruct_base, tmp_path / name, m, reward_funcs=[I.strict_reward],
                                         hparams={}, rows=I.rows(train), max_steps=1,
                                         per_device_train_batch_size=16, num_generations=8,
                                         max_completion_length=12, learning_rate=1e-3, beta=0.0, loss_type="bnpo")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    m.hooks["loss"] = lambda ctx, **kw: grads.append(bool(ctx.entropies.requires_grad)) or loss_fn(ctx, **kw)
    try:
        trainer.train()
    finally:
        m.hooks["loss"] = loss_fn
    assert trainer.reward_weights.tolist() == [1.0, 1.0]
    row = next(r for r in rows if f"rewards/{name}_reward/mean" in r)
    assert row["reward"] == pytest.approx(row[f"rewards/{name}_reward/mean"] + row["rewards/strict_reward/mean"])
    for key in ("task/nonzero_adv_groups_dense", "task/nonzero_adv_groups_binary", "task/dense_reward_mean",
                "light_if/tea_weight_mean", "light_if/entropy_bonus", "method/frac_tokens_touched", "entropy"):
        assert key in row, key
    assert row["task/nonzero_adv_groups_dense"] >= row["task/nonzero_adv_groups_binary"]
    assert row["task/dense_reward_mean"] == pytest.approx(row[f"rewards/{name}_reward/mean"])
    assert (row["light_if/tea_weight_mean"] > 0) == (name == "light_if")
    assert grads and all(grads)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_task_report_runs_on_the_instruct_base(instruct_base):
    """The DAG's base-model task report (harness task-report) works on the instruct task (no phases, no planning
    words): accuracy per level, lengths, entropy."""
    from transformers import AutoModelForCausalLM

    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.task_report import task_report

    t = smoke_task("instruct")
    tok = t.build_tokenizer()
    _, val = I.split(12, 10, 3)
    report, recs = task_report(AutoModelForCausalLM.from_pretrained(instruct_base), tok, t, I.rows(val), k=2,
                               temperature=1.0, max_new_tokens=12, seed=0, progress=lambda *a: None)
    assert len(recs) == 24 and {str(lv) for lv in {p.level for p in val}} == set(report["by_level"])
    assert all(1 <= r["length"] <= 12 for r in recs)


# ------------------------------------------------------------------------------------------ claim check ----
def _run(method, seed, dense, binary):
    return {"job": {"method": method, "seed": seed},
            "metrics": [{"step": s + 1, "task/nonzero_adv_groups_dense": d, "task/nonzero_adv_groups_binary": b}
                        for s, (d, b) in enumerate(zip(dense, binary))]}


def test_signal_gap_check():
    from harness.claims.registry import all_checks

    chk = all_checks()["light_if_signal_gap"]
    good = [_run("light_if", s, [0.9, 0.9, 0.5, 0.5], [0.8, 0.8, 0.5, 0.5]) for s in (42, 7)]
    verdict, nums = chk(good, method="light_if", margin=0.05, end_fraction=0.5)
    assert verdict == "reproduced" and nums["per_seed"][42]["gap"] == pytest.approx(0.1)
    assert chk(good, method="light_if", margin=0.06, end_fraction=1.0)[0] == "not_reproduced"   # whole run: 0.05
    assert chk(good[:1], method="light_if", margin=0.05, end_fraction=0.5)[0] == "inconclusive"
    assert chk(good, method="grpo", margin=0.05)[0] == "inconclusive"


def test_the_task_and_the_method_share_one_checker():
    """One home for the constraint checkers (harness.verify.constraints): the task's score and the method's reward
    read it, and bad specs are rejected naming the valid kinds."""
    from harness.verify import constraints as C

    assert I.dense_score is C.dense_score and I.all_satisfied is C.all_satisfied and L.dense_score is C.dense_score
    for spec in ("", "count 3", "length=3", "count=0", "start=z", "end=ab", "avoid=", "count=x"):
        with pytest.raises(ValueError):
            C.parse_spec(spec)
    with pytest.raises(ValueError, match="valid kinds: count, start, end, avoid, include"):
        C.dense_score("abc", "length=3")
