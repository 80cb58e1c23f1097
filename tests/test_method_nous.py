"""Nous (arXiv 2510.27410): the information-gain reward over a belief state of independent categorical attributes
(harness/methods/nous.py) and its toy specification-dialogue task (harness/data/spec_dialogue.py).

No code was released, so the golden values are hand-worked belief states (tests/fixtures/nous_golden.json, no
generator). Plus the invariants (a redundant question gains 0, an attribute with n uniform values gains log2 n, gains
of independent attributes add), the mechanism (informative questions out-rank redundant ones through the reward and
GRPO's advantages), one real training step on a tiny model pre-trained on the task, the claim checks and bad input.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from harness.data import spec_dialogue as S
from harness.methods import nous as N
from harness.methods.context import AdvantageContext, RewardContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "nous_golden.json").read_text())
METHOD = get_method("nous")
DEFAULTS = METHOD.resolve()


def _reward(completions, beliefs, specs, group_size=None, logged=None, **over):
    """The registered reward hook on one batch (columns as the trainer hands them: JSON strings)."""
    rctx = RewardContext(prompts=[""] * len(completions), completions=list(completions),
                         completion_ids=[[0]] * len(completions), group_size=group_size or len(completions),
                         columns={"belief": [json.dumps(b) if isinstance(b, dict) else b for b in beliefs],
                                  "spec": [json.dumps(s) if isinstance(s, dict) else s for s in specs]},
                         log_metric=(lambda k, v: logged.setdefault(k, []).append(v)) if logged is not None else None)
    return METHOD.hook("reward")(rctx, **METHOD.resolve(over))


def _rows(n=64, seed=5):
    return S.split(n, 1, seed)[1]


# ------------------------------------------------------------------------------------------------ golden -----
def test_fixture_names_its_source():
    src = GOLDEN["source"]
    assert src["kind"] == "hand-derived" and "none released" in src["code"]
    assert "no code released" in METHOD.source


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_hand_worked_belief_states(case):
    n = len(case["completions"])
    got = _reward(case["completions"], [case["belief"]] * n, [case["spec"]] * n, **case["hparams"])
    assert got == pytest.approx(case["expected"], rel=1e-12, abs=1e-12)


def test_set_valued_answer_is_bayes_with_an_indicator_likelihood():
    c = GOLDEN["set_answer"]
    belief = N.normalise_belief(c["belief"])
    assert N.observe(belief, c["attr"], c["answer"])[c["attr"]] == pytest.approx(c["posterior"])
    assert N.information_gain(belief, c["attr"], c["answer"]) == pytest.approx(c["gain_bits"], rel=1e-12)


def test_defaults_are_the_papers_form():
    assert DEFAULTS == {"log_base": 2.0, "normalize": "none", "question_format": "{attr}?"}
    assert METHOD.point == "reward" and METHOD.task_reward_weight == 0.0 and not METHOD.label_free
    for hp in METHOD.hparams.values():
        assert hp.unit and hp.source


# -------------------------------------------------------------------------------------------- invariants -----
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 16])
def test_uniform_attribute_gains_log2_n(n):
    belief = {"a": {str(i): 1.0 for i in range(n)}, "b": {"x": 0.3, "y": 0.7}}
    for true in ("0", str(n - 1)):
        assert _reward(["a?"], [belief], [{"a": true, "b": "x"}]) == pytest.approx([math.log2(n)], rel=1e-12)


def test_redundant_question_gains_exactly_zero_whatever_the_rest_of_the_belief():
    rng = random.Random(0)
    for _ in range(50):
        belief = {f"a{i}": {str(v): rng.random() for v in range(rng.randint(2, 6))} for i in range(3)}
        known = rng.choice(list(belief))
        value = rng.choice(list(belief[known]))
        belief[known] = {v: (1.0 if v == value else 0.0) for v in belief[known]}
        spec = {a: (value if a == known else rng.choice(list(d))) for a, d in belief.items()}
        assert _reward([f"{known}?"], [belief], [spec]) == [0.0]


def test_gains_of_independent_attributes_add_in_any_order():
    rng = random.Random(1)
    for _ in range(30):
        b = N.normalise_belief({f"a{i}": {str(v): rng.random() + 0.01 for v in range(rng.randint(2, 5))}
                                for i in range(4)})
        spec = {a: rng.choice(list(d)) for a, d in b.items()}
        order = list(b)
        rng.shuffle(order)
        total, cur = 0.0, b
        for a in order[:3]:
            total += N.information_gain(cur, a, [spec[a]])
            cur = N.observe(cur, a, [spec[a]])
        assert total == pytest.approx(N.belief_entropy(b) - N.belief_entropy(cur), abs=1e-12)
        assert total == pytest.approx(sum(N.entropy(b[a]) for a in order[:3]), abs=1e-12)  # exact user: H(b(a))


def test_method_reward_equals_the_tasks_own_bookkeeping_on_task_rows():
    """Two implementations agree: the method's Bayes update over the belief column and the task's log2(candidates)
    from its answer column (the binary task reward is 1 exactly when the method's gain is positive)."""
    rows = _rows(128)
    moves = [f"{a}?" for a in S.ATTRIBUTES] + ["=small,solid,circle,red", "colour"]
    for r in rows:
        got = _reward(moves, [r["belief"]] * len(moves), [r["spec"]] * len(moves))
        want = [S.judge(m, r["answer"])["gain"] for m in moves]
        assert got == pytest.approx(want, abs=1e-12)
        assert S.informative_reward(moves, [r["answer"]] * len(moves)) == [float(g > 0) for g in got]
        assert N.belief_entropy(N.normalise_belief(r["belief"])) == pytest.approx(r["bits"], abs=1e-6)


# ----------------------------------------------------------------------------------------- the mechanism -----
def test_informative_questions_out_rank_redundant_ones_through_the_reward_and_advantages():
    rows = [r for r in _rows(256) if len(S.uncertain({a: tuple(c) for a, c in
                                                       json.loads(r["answer"])["candidates"].items()})) < 4]
    assert rows
    for r in rows:
        cands = json.loads(r["answer"])["candidates"]
        informative = [a for a, c in cands.items() if len(c) > 1]
        redundant = [a for a, c in cands.items() if len(c) == 1]
        moves = [f"{a}?" for a in informative + redundant]
        rew = _reward(moves, [r["belief"]] * len(moves), [r["spec"]] * len(moves))
        assert min(rew[:len(informative)]) > max(rew[len(informative):]) == 0.0
        best = max(informative, key=lambda a: len(cands[a]))
        assert rew[informative.index(best)] == max(rew)  # the most uncertain attribute ranks first
        adv = AdvantageContext(rewards=torch.tensor(rew, dtype=torch.float64), group_size=len(moves),
                               mask=torch.ones(len(moves), 3), completion_ids=torch.zeros(len(moves), 3)
                               ).grpo_advantages()
        assert (adv[:len(informative)] > 0).any() and (adv[len(informative):] < 0).all()
        assert adv[:len(informative)].min() > adv[len(informative):].max()


def test_the_binary_reward_cannot_rank_informative_questions_but_the_information_gain_can():
    belief = {"size": {"small": .5, "large": .5}, "colour": {c: 1 for c in "abcdefgh"}}
    spec = {"size": "small", "colour": "c"}
    assert _reward(["size?", "colour?"], [belief] * 2, [spec] * 2) == [1.0, 3.0]


def test_logged_metrics():
    logged: dict = {}
    case = GOLDEN["cases"][3]
    _reward(case["completions"], [case["belief"]] * 8, [case["spec"]] * 8, logged=logged)
    assert logged["nous/question_frac"] == [5 / 8]         # size?, fill?, shape?, colour?, " colour? "
    assert logged["nous/redundant_frac"] == [1 / 8]        # size?
    assert logged["nous/info_gain_bits"][0] == pytest.approx((0 + math.log2(3) + 1 + 3 + 3) / 5)
    assert logged["nous/prior_bits"][0] == pytest.approx(3 + 1 + math.log2(3))


# ---------------------------------------------------------------------------------------------- the task -----
def test_task_rows_tokens_and_splits():
    from harness.config import ConfigError
    from harness.config.tiers import DataSpec
    from harness.data.smoke_tasks import SMOKE_TASKS, smoke_task

    assert "spec_dialogue" in SMOKE_TASKS
    task = smoke_task("spec_dialogue")
    train, val = task.splits(DataSpec(task="spec_dialogue", n_val=64, n_train=256, split_seed=3))
    assert len(val) == 64 and len(train) == 256
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    tok = task.build_tokenizer()
    assert len(tok) == len(task.vocab) == len(S.VOCAB)
    for r in val + train[:64]:
        ids = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == r["prompt"]
        assert len(ids) + 9 <= task.max_positions  # a final answer (8 tokens) + EOS fits
        assert r["level"] >= 1 and json.loads(r["spec"]) == json.loads(r["answer"])["spec"]
    for move in ("colour?", "=small,solid,circle,red"):
        assert tok.decode(tok(move, add_special_tokens=False)["input_ids"]) == move
    with pytest.raises(ConfigError, match="n_train"):
        task.splits(DataSpec(task="spec_dialogue", n_val=8))
    with pytest.raises(ConfigError, match="spec_dialogue"):
        smoke_task("spec_dialog")


def test_simulated_user_continues_the_dialogue_and_removes_uncertainty():
    rng = random.Random(2)
    state, spec = S.sample_state(rng)
    while S.uncertain(state):
        a = max(S.uncertain(state), key=lambda x: S.bits(state, x))
        before = S.bits(state)
        gain = S.judge(f"{a}?", S.row(state, spec)["answer"])["gain"]
        state = S.after_answer(state, spec, a)
        assert state[a] == (spec[a],) and S.bits(state) == pytest.approx(before - gain)
        assert f"{a}:{spec[a]}" in S.render(state)
    with pytest.raises(ValueError, match="valid: size, fill, shape, colour"):
        S.simulate_user(spec, "texture")


def test_pretraining_traces_have_redundant_questions_at_the_noise_rate():
    from harness.config.tiers import DataSpec, PretrainSpec
    from harness.data.smoke_tasks import smoke_task

    task = smoke_task("spec_dialogue")
    train, val = task.splits(DataSpec(task="spec_dialogue", n_val=256, n_train=16, split_seed=1234))
    pre = PretrainSpec(seed=0, steps=1, batch_size=1, lr=1e-3, noise=0.2)
    batch = task.pretrain_batch(random.Random(0), train, pre, 2000)
    assert not {p for p, _ in batch} & {r["prompt"] for r in val}
    kinds = {"informative": 0, "redundant": 0, "answer": 0}
    for prompt, [(move, by_env)] in batch:
        assert not by_env
        state = {part.split(":")[0]: part.split(":")[1] for part in prompt[:-1].split(";")}
        m = S.parse_move(move)
        assert m is not None
        if m[0] == "answer":
            kinds["answer"] += 1
        else:
            known = state[m[1]] != "?" and "|" not in state[m[1]]
            kinds["redundant" if known else "informative"] += 1
    assert 0.75 < kinds["informative"] / 2000 < 0.85          # 1 - noise
    assert kinds["redundant"] > 0.05 * 2000 and kinds["answer"] > 0.03 * 2000


def test_task_reward_logs_the_claims_metrics():
    r = _rows(1)[0]
    cands = json.loads(r["answer"])["candidates"]
    unc = [a for a, c in cands.items() if len(c) > 1]
    known = [a for a, c in cands.items() if len(c) == 1]
    moves = [f"{unc[0]}?", "=small,solid,circle,red", "what"] + [f"{a}?" for a in known[:1]]
    logged = {}
    out = S.informative_reward(moves, [r["answer"]] * len(moves), log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out[:3] == [1.0, 0.0, 0.0] and all(x == 0.0 for x in out[3:])
    n = len(moves)
    assert logged["task/answer_frac"] == 1 / n and logged["task/invalid_frac"] == 1 / n
    assert logged["task/redundant_frac"] == len(known[:1]) / n
    assert logged["task/info_gain"] == pytest.approx(math.log2(len(cands[unc[0]])) / (1 + len(known[:1])))
    assert S.move_of(" colour? ") == "colour?" and S.move_of("colour") is None
    assert S.parse_move("=small,solid,circle") is None and S.parse_move("=large,solid,circle,blue")[0] == "answer"


# -------------------------------------------------------------------------------------- one training step -----
@pytest.fixture(scope="module")
def tiny_spec_base(tmp_path_factory):
    from conftest import TINY_SMOKE
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "spec_base"
    # the tiny model of the other tests, pre-trained long enough (~10 s) to ask questions in the task's format
    pretrain(out, TINY_SMOKE["model"], {"seed": 0, "steps": 200, "batch_size": 64, "lr": 3.0e-3, "noise": 0.3},
             {"task": "spec_dialogue", "split_seed": 1234, "n_val": 64, "n_train": 64}, log=lambda *a: None)
    return out


def test_one_training_step_on_the_task(tiny_spec_base, tmp_path):
    """The reward inside HarnessGRPOTrainer on a tiny model pre-trained on spec_dialogue: the nous column of the
    rewards is the information gain of the sampled completions (recomputed here from what the task's reward was
    handed), the binary task reward is 1 exactly where it is positive, metrics are logged and the policy moves."""
    from harness.data.smoke_tasks import smoke_task

    task = smoke_task("spec_dialogue")
    handed: list = []

    def informative_reward(completions, answer, **kw):  # the task's reward, recording what it is handed
        handed.extend(zip(completions, kw["belief"], kw["spec"]))
        return task.reward(completions, answer, **kw)

    trainer, _, records = tiny_grpo_trainer(tiny_spec_base, tmp_path / "out", METHOD,
                                            reward_funcs=[informative_reward], hparams={}, rows=_rows(64, seed=11),
                                            max_steps=1, per_device_train_batch_size=32, num_generations=8,
                                            max_completion_length=10, learning_rate=1e-3, temperature=1.0,
                                            loss_type="bnpo", beta=0.0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    rpf = trainer._last_rewards_per_func
    assert rpf.shape == (32, 2) and len(handed) == 32
    want = [N.question_reward(N.normalise_belief(b), json.loads(s), c)[0] for c, b, s in handed]
    assert len(set(want)) > 2 and any(c.strip().endswith("?") for c, _, _ in handed)  # questions of several gains
    assert rpf[:, 1].tolist() == pytest.approx(want, abs=1e-6)
    assert rpf[:, 0].tolist() == [float(w > 0) for w in want]
    assert trainer.reward_weights.tolist() == [0.0, 1.0]  # the information gain replaces the binary reward
    logs = {k: v for r in records for k, v in r.items()}
    for key in ("nous/info_gain_bits", "nous/redundant_frac", "task/redundant_frac", "task/info_gain",
                "rewards/nous_reward/mean", "rewards/informative_reward/mean", "loss"):
        assert key in logs, key
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


# ------------------------------------------------------------------------------------------- bad input ------
@pytest.mark.parametrize("over, needle", [
    ({"normalize": "entropy"}, "unknown normalize 'entropy'; valid: none, prior, max"),
    ({"log_base": 1.0}, "log_base must be a number > 0 and != 1"),
    ({"log_base": -2.0}, "log_base must be a number > 0 and != 1"),
    ({"question_format": "ask {what}"}, "question_format must contain '{attr}'"),
])
def test_bad_settings_are_clear_errors(over, needle):
    case = GOLDEN["cases"][0]
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace("'", "'")):
        _reward(case["completions"], [case["belief"]], [case["spec"]], **over)


def test_bad_types_and_unknown_hparams_fail_before_anything_runs():
    with pytest.raises(RegistryError, match="normalize must be str"):
        METHOD.resolve({"normalize": 1})
    with pytest.raises(RegistryError, match="valid: log_base, normalize, question_format"):
        METHOD.resolve({"normalise": "none"})


@pytest.mark.parametrize("belief, needle", [
    ({"a": {"x": -1.0, "y": 2.0}}, "finite weights >= 0 with a positive sum"),
    ({"a": {"x": 0.0, "y": 0.0}}, "finite weights >= 0 with a positive sum"),
    ({"a": {}}, "non-empty"),
    ({}, "non-empty"),
    ("[1, 2]", "non-empty"),
])
def test_bad_beliefs_are_clear_errors(belief, needle):
    with pytest.raises(ValueError, match=needle):
        _reward(["a?"], [belief], [{"a": "x"}])


def test_missing_columns_and_inconsistent_specs_are_clear_errors():
    rctx = RewardContext(prompts=["p"], completions=["a?"], completion_ids=[[0]], group_size=1,
                         columns={"level": [1]})
    with pytest.raises(ValueError, match="needs the dataset columns 'belief'.*got columns: level"):
        METHOD.hook("reward")(rctx, **DEFAULTS)
    with pytest.raises(ValueError, match="zero probability"):
        _reward(["a?"], [{"a": {"x": 1.0, "y": 0.0}}], [{"a": "y"}])
    with pytest.raises(ValueError, match="hidden spec has no value for 'a'"):
        _reward(["a?"], [{"a": {"x": 0.5, "y": 0.5}}], [{"b": "y"}])
    with pytest.raises(ValueError, match="unknown attribute 'b'; valid: a"):
        N.observe(N.normalise_belief({"a": {"x": 1}}), "b", ["x"])


# ------------------------------------------------------------------------------------------- claim checks -----
def _run(method, seed, metric, values):
    return {"job": {"method": method, "seed": seed},
            "metrics": [{"step": i + 1, metric: v} for i, v in enumerate(values)]}


def _check(name):
    from harness.claims.registry import all_checks

    return all_checks()[name]


def test_metric_shift_check():
    f = _check("nous_train_metric_shift")
    down = [_run("nous", s, "task/redundant_frac", [0.2] * 10 + [0.1] * 80 + [0.01 + 0.001 * s] * 10)
            for s in (1, 7, 42)]
    verdict, numbers = f(down, method="nous", metric="task/redundant_frac", direction="lower", margin=0.03)
    assert verdict == "reproduced" and numbers["diff_95ci"][1] < -0.03
    flat = [_run("nous", s, "task/redundant_frac", [0.2] * 100) for s in (1, 7, 42)]
    assert f(flat, method="nous", metric="task/redundant_frac", direction="lower", margin=0.03)[0] == "not_reproduced"
    assert f(down[:1], method="nous", metric="task/redundant_frac", direction="lower")[0] == "inconclusive"
    assert f(down, method="nous", metric="other", direction="lower")[0] == "inconclusive"
    with pytest.raises(ValueError, match="valid: lower, higher"):
        f(down, method="nous", metric="task/redundant_frac", direction="down")


def test_late_metric_vs_baseline_check():
    f = _check("nous_late_metric_vs_baseline")
    runs = [_run("nous", s, "task/info_gain", [1.3] * 50 + [2.3 + 0.01 * s] * 50) for s in (1, 7, 42)]
    runs += [_run("grpo", s, "task/info_gain", [1.3] * 50 + [1.6] * 50) for s in (1, 7, 42)]
    kw = dict(method="nous", baseline="grpo", metric="task/info_gain", direction="higher", margin=0.1)
    verdict, numbers = f(runs, **kw)
    assert verdict == "reproduced" and numbers["diff_95ci"][0] > 0.1
    runs[1] = _run("nous", 7, "task/info_gain", [1.6] * 100)
    assert f(runs, **kw)[0] == "not_reproduced"
    assert f(runs, **{**kw, "baseline": "missing"})[0] == "inconclusive"


def test_eval_above_base_check():
    f = _check("nous_eval_above_base")

    from harness.results.protocol import protocol_fields, protocol_hash

    def ev(method, seed, n_correct, k=8):
        fields = protocol_fields(benchmark="spec_dialogue_heldout", data_sha256="ab" * 32, prompt_template="rows",
                                 chat_template=None, sampling={"do_sample": True, "temperature": 1.0},
                                 max_gen_toks=10, k=k, verifier={"name": "informative"}, seeds={"eval": 0})
        return {"source": {"method": method, "seed": seed}, "protocol": {"benchmarks": {"heldout": fields}},
                "benchmarks": {"heldout": {"k": k, "protocol_hash": protocol_hash(fields),
                                           "per_problem": [{"id": i, "n_correct": c}
                                                           for i, c in enumerate(n_correct)]}}}

    base = ev("base", 0, [5] * 40)
    better = [ev("nous", s, [8] * 40) for s in (1, 7, 42)]
    assert f([], method="nous", evals=[base] + better)[0] == "reproduced"
    assert f([], method="nous", evals=[base] + [ev("nous", s, [2] * 40) for s in (1, 7)])[0] == "not_reproduced"
    assert f([], method="nous", evals=[base] + better[:1])[0] == "inconclusive"
    assert f([], method="nous", evals=better)[0] == "inconclusive"


def test_card_claims_use_registered_checks_and_the_toy_task():
    from harness.claims.registry import all_checks
    from harness.config import load_card

    card = load_card("nous")
    assert set(card["methods"]) == {"grpo", "nous"} and card["baseline"] == "grpo"
    checks = all_checks()
    smoke = [c for c in card["claims"] if "smoke-reasoning" in c["tier"]]
    assert {c["id"] for c in smoke} >= {"nous_redundant_questions_fall_below_base", "nous_information_gain_above_grpo",
                                        "nous_information_gain_rises", "nous_final_accuracy_above_grpo"}
    for c in card["claims"]:
        assert c["check"] in checks, c["id"]
    sr = card["tiers"]["smoke-reasoning"]
    assert sr["data"]["task"] == "spec_dialogue" and sr["trl"]["max_completion_length"] == 10
    assert sr["seeds"] == [42, 7, 1] and sr["eval"]["max_new_tokens"] == 10
    assert card["tiers"]["smoke"]["data"]["task"] == "spec_dialogue"
    for name, hp in card["methods"]["nous"].items():
        assert METHOD.resolve({name: hp})
