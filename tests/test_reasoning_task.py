"""The smoke tier's reasoning task (issue 11): tokenizer, traces, splits, rewards on bad model output, the
calculator environment, and the tool variant through TRL's ``rollout_func`` with ``env_mask``: environment tokens
get no gradient (no loss, no entropy weight) in every registered method."""
from __future__ import annotations

import math
import random

import pytest
import torch

from harness.config import ConfigError
from harness.config.tiers import DataSpec
from harness.data import reasoning as R
from harness.data.smoke_tasks import SMOKE_TASKS, smoke_task
from conftest import tiny_grpo_trainer

CALC_BASE = {"model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
             "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.3, "check_rate": 0.3,
                          "tool_rate": 1.0},
             "data": {"task": "reasoning_calc", "n_val": 64, "split_seed": 1234, "n_train": 256}}


@pytest.fixture(scope="module")
def calc_base(tmp_path_factory):
    """A tiny reasoning_calc model (seconds): every pre-training step is a calculator call, so it calls often."""
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("calc") / "base"
    pretrain(out, CALC_BASE["model"], CALC_BASE["pretrain"], CALC_BASE["data"], log=lambda *a: None)
    return out


def test_tokenizer_round_trip_and_single_token_words():
    tok = R.build_tokenizer()
    text = "7+5+9= then 7+5=12 check 7+5=12 then <calc>12+9</calc>21 so \\boxed{21}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and tok.unk_token_id not in ids
    for w in (*R.PLANNING_WORDS, "\\boxed{", R.CALL_OPEN, R.CALL_CLOSE):
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1, w
    comp = tok(" then 7+5=12 so \\boxed{12}", add_special_tokens=False)["input_ids"]
    ph = R.phases(tok, comp)
    assert ph == [0] * 8 + [1] * 4  # reasoning through " so ", answer from \boxed{ on


def test_traces_follow_the_chain_with_noise_checks_and_tools():
    rng = random.Random(0)
    p = R.Problem((7, 5, 9, 4))
    pieces, ans = R.trace(p, rng, noise=0.0, check_rate=0.0)
    assert "".join(t for t, _ in pieces) == " then 7+5=12 then 12+9=21 then 21+4=25 so \\boxed{25}" and ans == 25
    wrong = [R.trace(p, random.Random(s), noise=1.0, check_rate=0.0)[1] for s in range(20)]
    assert all(a != 25 for a in wrong)  # every step slips (the chain carries the slip on)
    pieces, ans = R.trace(p, rng, noise=1.0, check_rate=1.0, tool_rate=1.0)
    assert ans == 25 and sum(env for _, env in pieces) == 3  # the environment's results are exact
    assert [t for t, env in pieces if env] == ["12", "21", "25"]
    assert sum(" check " in t for t, _ in pieces) == 3


def test_split_is_disjoint_deterministic_and_covers_every_level():
    train, val = R.split(256, 2000, seed=1)
    assert {p.prompt for p in train}.isdisjoint(p.prompt for p in val)
    assert R.split(256, 2000, seed=1) == (train, val) and R.split(256, 2000, seed=2)[1] != val
    assert {p.level for p in val} == set(R.TERMS)
    rows = R.rows(val)
    assert rows[0]["answer"] == str(val[0].answer) and rows[0]["level"] == val[0].level


def test_bad_model_output_scores_zero_and_is_counted():
    """No \\boxed{}, a box never closed, garbage inside the box: reward 0, no exception, a counted metric."""
    logged = {}
    out = R.boxed_reward([" then 1+2=3 so \\boxed{3}", " then 1+2=3", " so \\boxed{3", " so \\boxed{+=?}",
                          " so \\boxed{3} so \\boxed{4}", ""], ["3"] * 6,
                         log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert logged["task/no_answer_frac"] == pytest.approx(3 / 6)  # no box, unclosed box, empty


def test_unknown_task_is_a_config_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown smoke task 'chess'; valid: addition, reasoning, reasoning_calc, "
                                          "spec_dialogue, instruct"):
        smoke_task("chess")
    with pytest.raises(ConfigError, match="n_train"):
        smoke_task("reasoning").splits(DataSpec(task="reasoning", n_val=8))
    assert set(SMOKE_TASKS) == {"addition", "reasoning", "reasoning_calc", "spec_dialogue", "instruct", "household"}
    from harness.plan import _check_smoke_task  # what resolve_job runs for every job before the DAG starts

    with pytest.raises(ConfigError, match=r"card.yaml tiers/smoke/data/task: unknown smoke task 'chess'; valid: "):
        _check_smoke_task({"model": {"kind": "smoke"}, "data": {"task": "chess"}}, "card.yaml tiers/smoke")
    _check_smoke_task({"model": {"kind": "hf"}, "data": {"task": "math"}}, "card.yaml tiers/paper")  # not smoke


def test_calculator_forces_results_masks_them_and_counts_bad_calls():
    tok = R.build_tokenizer()
    vocab = len(R.VOCAB)
    prompt = tok(["1+2=", "1+2="], add_special_tokens=False, return_tensors="pt")["input_ids"]
    env = R.CalcEnvironment(tok)
    wants = [tok(" then <calc>12+7</calc>", add_special_tokens=False)["input_ids"],
             tok(" then <calc>12+</calc>", add_special_tokens=False)["input_ids"]]
    ids = prompt
    for step in range(len(wants[0]) + 2):
        scores = env(ids, torch.zeros(2, vocab))
        nxt = [w[step] if step < len(w) else int(scores[i].argmax()) for i, w in enumerate(wants)]
        ids = torch.cat([ids, torch.tensor(nxt).unsqueeze(1)], 1)
    gen = ids[:, prompt.size(1):]
    assert tok.decode(gen[0]).endswith("</calc>19")
    assert tok.decode(gen[1], skip_special_tokens=True).endswith("</calc>?")  # then unforced (argmax: pad)
    n = gen.size(1)
    assert env.env_mask(0, n) == [1] * (n - 2) + [0, 0] and env.env_mask(1, n) == [1] * (n - 3) + [0, 1, 1]
    assert env.calls == 2 and env.errors == 1
    unclosed = tok(" then <calc>3+4", add_special_tokens=False)["input_ids"]
    assert env.unclosed([unclosed, gen[0].tolist()]) == 1
    assert R.calc("3+4+5") == "12" and R.calc("3+") == "?" and R.calc("9" * 9) == "?"


def test_calculator_never_edits_the_scores_it_is_given():
    """HF keeps the tensor a processor receives as the step's raw logits (``output_logits``): forcing a result
    in place made them -inf and the held-out entropy NaN."""
    tok = R.build_tokenizer()
    env = R.CalcEnvironment(tok, prompt_len=0)
    ids = torch.tensor([tok(" then <calc>1+2</calc>", add_special_tokens=False)["input_ids"]])
    given = torch.zeros(1, len(R.VOCAB))
    forced = env(ids, given)
    assert torch.equal(given, torch.zeros(1, len(R.VOCAB)))
    assert torch.isinf(forced).sum() == len(R.VOCAB) - 1 and int(forced.argmax()) == tok.convert_tokens_to_ids("3")


def test_heldout_entropy_on_the_calculator_task_is_finite(calc_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.heldout import evaluate_policy

    task = smoke_task("reasoning_calc")
    model, tok = AutoModelForCausalLM.from_pretrained(calc_base), AutoTokenizer.from_pretrained(calc_base)
    probs = [R.sample_problem(random.Random(i)) for i in range(16)]
    env_calls = []

    def environment(t):
        env_calls.append(task.environment(t))
        return env_calls[-1]

    r = evaluate_policy(model, tok, [p.prompt for p in probs], [str(p.answer) for p in probs], score=task.score,
                        max_new_tokens=60, environment=environment)
    assert sum(e.calls for e in env_calls) > 0  # the calculator answered, so forced tokens were in the batch
    assert math.isfinite(r["entropy"]) and r["entropy"] > 0


def test_pretraining_does_not_train_on_environment_tokens():
    from harness.train.pretrain import _encode

    tok = R.build_tokenizer()
    ids, labels = _encode(tok, "3+4=", [(" then <calc>3+4</calc>", False), ("7", True), (" so \\boxed{7}", False)])
    seven = ids.index(tok.convert_tokens_to_ids("7"), 5)
    assert labels[seven] == -100 and labels[:4] == [-100] * 4 and labels[-1] == tok.eos_token_id
    assert sum(x != -100 for x in labels) == len(ids) - 4 - 1


def _calc_trainer(base, tmp_path, method_name: str):
    from harness.methods.registry import get_method
    from harness.train.job import task_hooks

    m = get_method(method_name)
    hp = m.resolve({})
    trl = dict(per_device_train_batch_size=8, num_generations=4, max_completion_length=16, learning_rate=1e-4,
               steps_per_generation=2, beta=0.0, loss_type="bnpo")
    trl.update(m.trl_overrides)
    if m.point == "config":
        trl.update(hp)
    task = smoke_task("reasoning_calc")
    train, _ = task.splits(DataSpec(**CALC_BASE["data"]))
    job = {"model": CALC_BASE["model"], "data": CALC_BASE["data"]}
    trainer, tok, _ = tiny_grpo_trainer(base, tmp_path / method_name, m, reward_funcs=[task.reward], hparams=hp,
                                        rows=train, trainer_kwargs=lambda tok: task_hooks(job, tok), max_steps=1,
                                        **trl)
    return trainer, tok


#: rewards that read their own smoke task's rows (constraint specs, dialogue beliefs), not a reasoning answer
TASK_BOUND = {"light_if": "instruct", "light_if_no_tea": "instruct", "nous": "spec_dialogue"}


def test_tool_tokens_get_no_loss_and_no_entropy_weight_in_every_method(calc_base, tmp_path):
    """For every registered method: one rollout through the calculator (TRL's rollout_func), then the training loss.
    The gradient reaching the final hidden state that predicts an environment-written token is exactly zero (no
    loss and no entropy term touches it), while model-written tokens do get gradient."""
    from harness.methods.registry import all_methods

    checked = []
    for name, m in all_methods().items():
        if name.startswith("toy_"):
            continue
        if name in TASK_BOUND:
            continue
        if any(h.unit == "path" and h.default is None for h in m.hparams.values()):
            continue  # fed by an upstream input (a ranking, a PRM): tests/test_upstream.py, its method's tests
        if m.hook("rollout") is not None and m.rollout_kind == "rollout_func":  # replaces TRL's generation:
            with pytest.raises(ValueError, match="cannot run the task's environment"):  # refuses tool tasks
                _calc_trainer(calc_base, tmp_path, name)
            continue
        trainer, tok = _calc_trainer(calc_base, tmp_path, name)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this test does not run
        inputs = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(16)])
        gen = torch.Generator().manual_seed(0)  # the tiny model's rewards are mostly 0: give every token a signal
        inputs["advantages"] = torch.randn(inputs["advantages"].shape, generator=gen)
        tm = inputs["tool_mask"]
        cm = inputs["completion_mask"]
        assert ((tm == 0) & (cm == 1)).any(), f"{name}: no environment token in the batch"
        forced = inputs["completion_ids"][(tm == 0) & (cm == 1)]
        digits_or_error = {tok.convert_tokens_to_ids(c) for c in "0123456789?"}
        assert set(forced.tolist()) <= digits_or_error, name
        captured = []

        def keep(mod, args, out):  # returns None: the output is unchanged
            if out.requires_grad:
                out.retain_grad()
                captured.append(out)

        handle = trainer.model.model.norm.register_forward_hook(keep)
        try:
            trainer.model.zero_grad()
            loss = trainer.compute_loss(trainer.model, inputs)
            loss.backward()
        finally:
            handle.remove()
        hidden = next(h for h in reversed(captured) if h.grad is not None)
        p = inputs["prompt_ids"].size(1)
        g = hidden.grad[:, p - 1:p - 1 + cm.size(1)].abs().sum(-1)  # position t-1 predicts completion token t
        assert torch.all(g[(tm == 0) & (cm == 1)] == 0), f"{name}: gradient on environment tokens"
        assert g[(tm == 1) & (cm == 1)].sum() > 0, f"{name}: no gradient at all"
        checked.append(name)
    assert len(checked) >= 20


def test_env_rollout_refuses_a_method_with_its_own_rollout_func(calc_base, tmp_path):
    from harness.methods.registry import register_rollout, unregister

    @register_rollout("toy_own_rollout", paper="toy", source="test", kind="rollout_func")
    def toy(prompts, rctx, **_):
        raise AssertionError("never called")

    try:
        with pytest.raises(ValueError, match="cannot run the task's environment"):
            _calc_trainer(calc_base, tmp_path, "toy_own_rollout")
    finally:
        unregister("toy_own_rollout")


def test_cards_adapt_answer_and_planning_settings_to_the_reasoning_task():
    """COPO compares extracted answers; HICRA's strategic grams are the task's planning words (ids in the card)."""
    from harness.plan import resolve_job

    tok = R.build_tokenizer()
    hicra = resolve_job("hicra", "smoke-reasoning", "hicra", 42)["hparams"]
    assert hicra["planning"] == "grams"
    assert sorted(tok.decode(g) for g in hicra["strategic_grams"]) == sorted(R.PLANNING_WORDS)
    assert resolve_job("copo", "smoke-reasoning", "copo", 42)["hparams"]["answer_mode"] == "boxed"
    job = resolve_job("entropy_mechanism", "smoke-reasoning", "grpo", 42)
    assert job["data"]["task"] == "reasoning" and job["model"]["kind"] == "smoke"
    assert resolve_job("entropy_mechanism", "smoke", "grpo", 42)["data"]["task"] == "addition"
