"""PEAR: hand-derived examples (the authors' entropy.py could not be fetched; the card says so), the invariants of
issue 12 (binary reward at alpha = 0, s = 1 and zero think entropy; penalty >= 0; r <= 1; wrong answers get r_fmt),
the phase split (task phases, delimiter tokens), bad input, and one real training step on a tiny reasoning model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from harness.data import reasoning as R
from harness.methods import pear as pear_mod
from harness.methods.context import RewardContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "pear_golden.json").read_text())
PEAR = get_method("pear")
HOOK = PEAR.hook("reward")


def _rctx(completions, answers, entropies, phases=None, ids=None, G=None):
    ents = [torch.tensor(e, dtype=torch.float32) for e in entropies]
    ids = ids if ids is not None else [list(range(4, 4 + len(e))) for e in entropies]
    logged: dict[str, list[float]] = {}
    rctx = RewardContext(prompts=["p"] * len(completions), completions=list(completions), completion_ids=ids,
                         group_size=G or len(completions), answers=list(answers), entropies=ents, phases=phases,
                         log_metric=lambda k, v: logged.setdefault(k, []).append(v))
    return rctx, logged


def _run(rctx, **hp):
    return HOOK(rctx, **PEAR.resolve(hp))


@pytest.mark.parametrize("case", FIX["cases"], ids=[c["name"] for c in FIX["cases"]])
def test_hand_derived_examples(case):
    i = FIX[case["inputs"]]
    rctx, logged = _rctx(i["completions"], i["answers"], i["entropies"], i.get("phases"), i.get("completion_ids"))
    out = _run(rctx, **case["hparams"])
    assert out == pytest.approx(case["expected"]["rewards"], abs=1e-6)
    assert {k: v[0] for k, v in logged.items()} == pytest.approx(case["expected"]["metrics"], abs=1e-6)


def test_registration_replaces_the_task_reward_with_the_paper_defaults():
    assert PEAR.point == "reward" and PEAR.needs == ("reward_token_stats",) and PEAR.task_reward_weight == 0.0
    hp = PEAR.resolve()
    assert (hp["alpha"], hp["s"], hp["r_fmt"], hp["answer_mode"], hp["delimiter_ids"]) == (1.0, 1.0, 0.0, "boxed", [])
    assert all(h.source for h in PEAR.hparams.values())


def _reasoning_batch(n=64, seed=0):
    """Completions of the reasoning task: right, wrong (noisy chains), unanswered and truncated ones, with their
    real token ids and phases."""
    rng = random.Random(seed)
    tok = R.build_tokenizer()
    texts, answers = [], []
    for k in range(n):
        p = R.sample_problem(rng)
        pieces, _ = R.trace(p, rng, noise=0.3, check_rate=0.3)
        text = "".join(t for t, _ in pieces)
        if k % 5 == 3:
            text = text[: text.index(" so ")]          # no answer
        elif k % 5 == 4:
            text = text[:-2]                            # truncated inside the box
        texts.append(text)
        answers.append(str(p.answer))
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return texts, answers, ids, [R.phases(tok, x) for x in ids]


def test_alpha_zero_s_one_zero_think_entropy_is_the_binary_reward():
    texts, answers, ids, phases = _reasoning_batch()
    g = torch.Generator().manual_seed(0)
    ents = [(torch.rand(len(x), generator=g) * 2) * torch.tensor(ph, dtype=torch.float32)  # zero where phase 0
            for x, ph in zip(ids, phases)]
    rctx, _ = _rctx(texts, answers, [e.tolist() for e in ents], phases, ids)
    out = _run(rctx, alpha=0.0, s=1.0)
    binary = R.boxed_reward(texts, answers)
    assert out == binary
    assert 0 < sum(binary) < len(binary)                 # both outcomes occur


def test_penalty_never_negative_reward_at_most_one_and_wrong_answers_get_r_fmt():
    texts, answers, ids, phases = _reasoning_batch(n=40, seed=1)
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        alpha = float(torch.empty(1).uniform_(-2.0, 2.0, generator=g))
        s = float(torch.empty(1).uniform_(0.0, 3.0, generator=g))
        r_fmt = float(torch.empty(1).uniform_(-0.5, 0.5, generator=g))
        scale = float(torch.empty(1).uniform_(0.0, 3.0, generator=g))
        for j in range(len(texts)):
            e = (torch.rand(len(ids[j]), generator=g) * scale).tolist()
            rctx, logged = _rctx([texts[j]], [answers[j]], [e], [phases[j]], [ids[j]])
            (r,) = _run(rctx, alpha=alpha, s=s, r_fmt=r_fmt)
            ph = torch.tensor(phases[j])
            t, a = torch.tensor(e)[ph == 0], torch.tensor(e)[ph == 1]
            expect_p = max(0.0, (t.double().mean().item() if t.numel() else 0.0)
                           - alpha * (a.double().mean().item() if a.numel() else 0.0))
            assert logged["pear/penalty_mean"][0] >= 0.0
            assert logged["pear/penalty_mean"][0] == pytest.approx(expect_p, abs=1e-6)
            assert r <= 1.0
            verdict = R.answer_of(texts[j])
            if verdict is None:
                assert r == 0.0
            elif R.is_correct(texts[j], answers[j]):
                assert r == pytest.approx(min(1.0, s - expect_p), abs=1e-6)
            else:
                assert r == r_fmt                        # whatever the entropies


def test_no_answer_phase_means_zero_answer_entropy():
    """A response that never reaches \\boxed{ is all thinking: H_answer = 0 and P = H_think (the paper's rule for a
    missing </think>), the largest penalty a response with that thinking can get."""
    rctx, logged = _rctx([" so \\boxed{5}"], ["5"], [[0.6, 0.2, 0.4]], phases=[[0, 0, 0]])
    assert _run(rctx) == pytest.approx([0.6])
    assert logged["pear/H_answer"] == [0.0] and logged["pear/penalty_mean"] == pytest.approx([0.4])
    assert "pear/phase_gap" not in logged


def test_multi_token_delimiter_and_first_occurrence():
    ids = [[5, 9, 10, 3, 9, 10, 4], [5, 9, 3, 10]]
    ents = [[0.8, 5.0, 5.0, 0.2, 5.0, 5.0, 0.2], [0.4, 0.4, 0.4, 0.4]]
    rctx, logged = _rctx(["\\boxed{1}", "\\boxed{1}"], ["1", "1"], ents, ids=ids)
    out = _run(rctx, delimiter_ids=[9, 10])
    # row 0: think [0.8], answer [0.2, 5, 5, 0.2] (after the first 9 10) -> P 0; row 1: no 9 10 -> all thinking
    assert out == pytest.approx([1.0, 0.6])
    assert logged["pear/H_answer"] == pytest.approx([2.6])


def test_delimiter_text_without_token_ids_is_refused():
    rctx, _ = _rctx(["think</think> \\boxed{1}"], ["1"], [[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"contains '</think>' but delimiter_ids is empty.*151668"):
        _run(rctx)
    rctx, _ = _rctx(["no delimiter \\boxed{1}"], ["1"], [[0.1, 0.3]])
    assert _run(rctx) == pytest.approx([0.8])           # no delimiter: all thinking, P = 0.2


def test_plain_mode_is_the_addition_task():
    rctx, _ = _rctx(["12", " 12 ", "13", ""], ["12"] * 4, [[0.1, 0.0]] * 4)
    assert _run(rctx, answer_mode="plain", r_fmt=0.5) == pytest.approx([0.95, 0.95, 0.5, 0.0])


def test_bad_input_is_a_clear_error():
    rctx, _ = _rctx(["\\boxed{1}"], ["1"], [[0.1]])
    with pytest.raises(ValueError, match="unknown answer_mode 'exact'; valid: boxed, plain"):
        HOOK(rctx, **{**PEAR.resolve(), "answer_mode": "exact"})
    with pytest.raises(RegistryError, match="alpha must be float"):
        PEAR.resolve({"alpha": "one"})
    with pytest.raises(RegistryError, match="has no hyperparameter 'beta'; valid: alpha, answer_mode, delimiter"):
        PEAR.resolve({"beta": 1.0})
    with pytest.raises(ValueError, match="delimiter_ids must be a list of token ids"):
        _run(rctx, delimiter_ids=["</think>"])
    with pytest.raises(ValueError, match="2 phase ids for 1 token entropies"):
        _run(_rctx(["\\boxed{1}"], ["1"], [[0.1]], phases=[[0, 1]])[0])
    no_answers = RewardContext(prompts=["p"], completions=["\\boxed{1}"], completion_ids=[[4]], group_size=1,
                               entropies=[torch.zeros(1)])
    with pytest.raises(ValueError, match="needs the dataset's 'answer' column"):
        _run(no_answers)


def test_fixture_says_hand_derived():
    assert FIX["source"]["kind"] == "hand-derived" and "iNLP-Lab/PEAR" in FIX["source"]["code"]


def test_card_tiers_resolve_to_the_task_answer_modes_and_the_declared_claims():
    from harness.config import load_card
    from harness.plan import resolve_job

    hp = {t: resolve_job("pear", t, "pear", 42)["hparams"] for t in ("smoke", "smoke-reasoning", "paper")}
    assert hp["smoke"]["answer_mode"] == "plain" and hp["smoke-reasoning"]["answer_mode"] == "boxed"
    assert hp["paper"]["delimiter_ids"] == [151668] and hp["paper"]["alpha"] == 1.0
    claims = {c["id"]: c for c in load_card("pear")["claims"]}
    smoke = {k for k, c in claims.items() if c["tier"] == ["smoke-reasoning"]}
    assert {"pear_shorter_than_grpo", "pear_accuracy_not_lower_than_grpo", "pear_lower_entropy_than_grpo",
            "pear_final_accuracy_above_grpo"} <= smoke
    length = claims["pear_shorter_than_grpo"]["params"]
    assert (length["key"], length["direction"]) == ("mean_length", "lower")


# ------------------------------------------------------------------------------------ one real training step
TINY_REASONING = {"model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                            "intermediate_size": 64},
                  "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.1, "check_rate": 0.3},
                  "data": {"task": "reasoning", "n_val": 64, "split_seed": 1234, "n_train": 256}}


@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("pear") / "base"
    pretrain(out, TINY_REASONING["model"], TINY_REASONING["pretrain"], TINY_REASONING["data"], log=lambda *a: None)
    return out


def test_one_training_step_on_the_reasoning_task(reasoning_base, tmp_path, monkeypatch):
    """Through HarnessGRPOTrainer: the task reward is kept for logging at weight 0, the hook gets the task's phases
    and the policy's token entropies, its values are PEAR's formula, and they are the reward GRPO trains on. The tiny
    model answers nothing correctly, so a stand-in verifier (even-length completions count as correct) makes both
    branches, and a non-zero advantage, occur; the real verifier is tested above."""
    from harness.config.tiers import DataSpec
    from harness.data.smoke_tasks import smoke_task
    from harness.train.job import task_hooks

    seen: list[tuple[RewardContext, list]] = []

    def recording(rctx, **hp):
        out = HOOK(rctx, **hp)
        seen.append((rctx, out))
        return out

    monkeypatch.setitem(PEAR.hooks, "reward", recording)
    stand_in = lambda text, answer, mode: len(text) % 2 == 0  # noqa: E731
    monkeypatch.setattr(pear_mod, "correctness", stand_in)
    task = smoke_task("reasoning")
    train, _ = task.splits(DataSpec(**TINY_REASONING["data"]))
    job = {"model": TINY_REASONING["model"], "data": TINY_REASONING["data"]}
    trainer, tok, rows = tiny_grpo_trainer(reasoning_base, tmp_path / "t", PEAR, reward_funcs=[task.reward],
                                           hparams={"answer_mode": "boxed"}, rows=train,
                                           trainer_kwargs=lambda tok: task_hooks(job, tok), max_steps=1,
                                           per_device_train_batch_size=8, num_generations=4,
                                           max_completion_length=24, learning_rate=1e-4, beta=0.0, loss_type="bnpo")
    assert trainer.reward_func_names == ["boxed_reward", "pear_reward"]
    assert trainer.reward_weights.tolist() == [0.0, 1.0]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()

    assert len(seen) == 1
    rctx, out = seen[0]
    assert len(out) == 8 and rctx.group_size == 4
    assert rctx.phases == [R.phases(tok, list(x)) for x in rctx.completion_ids]
    for text, ans, ids, ent, ph, r in zip(rctx.completions, rctx.answers, rctx.completion_ids, rctx.entropies,
                                          rctx.phases, out):
        assert ent.shape == (len(ids),) and torch.all(ent >= 0)
        p = torch.tensor(ph)
        t, a = ent[p == 0].double(), ent[p == 1].double()
        pen = max(0.0, (t.mean().item() if t.numel() else 0.0) - (a.mean().item() if a.numel() else 0.0))
        expect = min(1.0, 1.0 - pen) if stand_in(text, ans, "boxed") else 0.0
        assert r == pytest.approx(expect, abs=1e-6)
    row = next(m for m in rows if "rewards/pear_reward/mean" in m)
    assert row["reward"] == pytest.approx(sum(out) / len(out), abs=1e-5)   # the task reward only logged
    assert "rewards/boxed_reward/mean" in row
    assert {"pear/H_think", "pear/H_answer", "pear/penalty_mean", "pear/frac_penalised"} <= set(row)
    assert len(set(out)) > 1 and 0.0 in out                                  # both branches, a signal
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
