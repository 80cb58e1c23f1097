"""CURE (arXiv 2508.11016): golden values from the authors' code (bytedance/CURE @ c904b389,
``recipe/CURE_First_Stage/dapo_ray_trainer.py``: ``get_critic_key_token_mask``, the stage-1 rollout block of ``fit``,
its dynamic-sampling filter, and verl's ``compute_grpo_outcome_advantage``; tests/fixtures/generators/cure.py),
invariants (skip rules, top-k, fallback, prefix cut, stage 2, evaluation), bad settings, and real training steps
through the trainer showing that prefix tokens get no loss and that a branched prompt's group holds every branch."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import cure
from harness.methods.context import AdvantageContext, BatchContext, RolloutContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "cure_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}
VOCAB_F = FIXTURE["cases"][0]["inputs"]["vocab"]


class Tok:
    """The fixture's vocabulary as a tokenizer (decode one id; special ids)."""

    def __init__(self, vocab, special):
        self.vocab, self.all_special_ids = vocab, special

    def decode(self, x, **kw):
        return self.vocab[int(x)]


def _ctx(case: dict, *, training=True, step=0, seed=None, group_size=None, flat=None):
    """A RolloutContext replaying the case: prompts "p<j>" tokenise to the case's prompts, the first generate call
    returns its responses, the second its continuations; token_stats returns its entropies."""
    i, hp = case["inputs"], case["hparams"]
    calls, logged = [], {}
    outputs = [i["responses"], i["continuations"]] if flat is None else [flat]

    def generate(ids, **kw):
        calls.append([list(x) for x in ids])
        out = outputs[len(calls) - 1]
        assert len(out) == len(ids)
        return [list(x) for x in out]

    def token_stats(p, c):
        ents = [torch.tensor(row[:len(x)]) for row, x in zip(i["entropies"], c)]
        return [torch.zeros(len(x)) for x in c], ents

    g = group_size or hp["n1"] * (1 + hp["n2"])
    rctx = RolloutContext(generator=torch.Generator().manual_seed(case["seed"] if seed is None else seed), step=step,
                          max_steps=10, group_size=g, processing_class=Tok(i["vocab"], i["special_ids"]),
                          training=training, max_completion_length=i["response_width"],
                          tokenize=lambda ps: [list(i["prompts"][int(p[1:])]) for p in ps], generate=generate,
                          token_stats=token_stats, log_metric=lambda k, v: logged.__setitem__(k, v))
    return rctx, calls, logged


def _hp(case: dict, name="cure", **over) -> dict:
    hp = get_method(name).resolve({**case["hparams"], "max_prompt_length": case["inputs"]["prompt_width"],
                                   "filter_groups": False})
    hp.update(over)
    return hp


def _prompts(case: dict) -> list[str]:
    g = case["hparams"]["n1"] * (1 + case["hparams"]["n2"])
    return [f"p{j}" for j in range(len(case["inputs"]["prompts"])) for _ in range(g)]


# ------------------------------------------------------------------------------------------------ golden
@pytest.mark.parametrize("name", sorted(CASES))
def test_critical_positions_match_authors_code(name):
    case = CASES[name]
    i, hp = case["inputs"], case["hparams"]
    ents = [torch.tensor(row[:len(c)]) for row, c in zip(i["entropies"], i["responses"])]
    pos, cands = cure.choose_critical(i["responses"], ents, cure.TokenFilter(Tok(i["vocab"], i["special_ids"])),
                                      hp["critical_top_k"], hp["critical_token_type"], i["response_width"],
                                      torch.Generator().manual_seed(case["seed"]))
    assert pos == case["expected"]["result_idx"]
    assert all(len(c) <= hp["critical_top_k"] for c in cands)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rollout_batch_matches_authors_code(name):
    """Every row of the group as the authors' stage-1 block assembles it: prompt (+ critical prefix, cut to the
    prompt buffer) and response, in the code's order (n1 originals, then n1 x n2 continuations, per prompt)."""
    case = CASES[name]
    rctx, calls, logged = _ctx(case)
    out = cure.cure_rollout(_prompts(case), rctx, **_hp(case, "cure"))
    rows = [[p, c] for p, c in zip(out["prompt_ids"], out["completion_ids"])]
    assert rows == case["expected"]["rows"]
    n1, n2 = case["hparams"]["n1"], case["hparams"]["n2"]
    assert out[cure.ROLE] == (["original"] * n1 + ["branch"] * n1 * n2) * len(case["inputs"]["prompts"])
    assert len(calls) == 2 and len(calls[1]) == len(case["inputs"]["responses"]) * n2  # n2 per prefix


@pytest.mark.parametrize("name", sorted(CASES))
def test_group_advantages_and_filter_match_authors_code(name):
    """Advantages over the whole n1 (1 + n2) group (TRL's group normalisation: eps 1e-4 against verl's 1e-6) and
    the dynamic-sampling filter's kept groups."""
    case = CASES[name]
    g = case["hparams"]["n1"] * (1 + case["hparams"]["n2"])
    r = torch.tensor(case["inputs"]["scores"])
    z = torch.zeros(len(r), 1)
    adv = AdvantageContext(rewards=r, group_size=g, mask=z, completion_ids=z.long()).grpo_advantages()
    assert adv.tolist() == pytest.approx(case["expected"]["advantages"], rel=2e-3, abs=1e-6)
    keep = cure.filter_groups(r, g)
    assert keep.view(-1, g)[:, 0].tolist() == case["expected"]["kept_groups"]


def test_fixture_covers_every_branch():
    exp = {n: c["expected"] for n, c in CASES.items()}
    assert {c["hparams"]["critical_token_type"] for c in CASES.values()} == set(cure.MODES)
    assert any(0 in e["result_idx"] for e in exp.values())  # a response without a candidate: empty prefix
    assert not all(exp["paper_layout"]["kept_groups"])  # a uniform group the filter drops
    trunc = CASES["prefix_truncated"]
    assert any(len(p) == trunc["inputs"]["prompt_width"] for p, _ in exp["prefix_truncated"]["rows"])
    valid = [sum(len(VOCAB_F[t].strip()) > 1 for t in r[1:]) for r in CASES["top_k_cut"]["inputs"]["responses"]]
    assert min(valid) > CASES["top_k_cut"]["hparams"]["critical_top_k"]  # the top-k cut decides the candidates
    assert FIXTURE["source"].startswith(f"{cure.REPO}@{cure.COMMIT}")


# ------------------------------------------------------------------------------------------------ invariants
VOCAB = ["<pad>", "<eos>", "a", "b", " then ", " so ", " ", "ab"]
SPECIAL = [0, 1]


def _valid():
    return cure.TokenFilter(Tok(VOCAB, SPECIAL))


def test_skip_rules_position_zero_special_and_one_character_tokens():
    valid = _valid()
    assert [valid(t) for t in range(len(VOCAB))] == [False, False, False, False, True, True, False, True]
    comp = [4, 2, 5, 6, 7, 1]  # position 0 (" then ") is never a candidate, nor "a", " ", <eos>
    ents = [torch.tensor([9.0, 8.0, 1.0, 7.0, 2.0, 6.0])]
    pos, cands = cure.choose_critical([comp], ents, valid, top_k=20, generator=torch.Generator())
    assert cands == [[4, 2]] and pos[0] in (4, 2)  # by entropy: " ab" (2.0) before " so " (1.0)
    pos, cands = cure.choose_critical([comp], ents, valid, top_k=1, generator=torch.Generator())
    assert cands == [[4]] and pos == [4]
    pos, cands = cure.choose_critical([[2, 3, 6, 1]], [torch.ones(4)], valid, top_k=5, generator=torch.Generator())
    assert pos == [0] and cands == [[]]  # no candidate: t* = 0, the branch starts from the prompt


def test_random_mode_ignores_entropy_and_keeps_the_skip_rules():
    comp = [2, 4, 5, 7, 3, 1]
    seen = set()
    for s in range(40):
        pos, cands = cure.choose_critical([comp], None, _valid(), top_k=20, mode="random", width=6,
                                          generator=torch.Generator().manual_seed(s))
        assert sorted(cands[0]) == [1, 2, 3]
        seen.add(pos[0])
    assert seen == {1, 2, 3}


def test_branch_prompt_is_prompt_plus_prefix_cut_to_the_buffer():
    assert cure.branch_prompt([9, 9], [1, 2, 3, 4], 3) == [9, 9, 1, 2, 3]
    assert cure.branch_prompt([9, 9], [1, 2, 3, 4], 3, max_prompt_length=4) == [9, 9, 1, 2]
    assert cure.branch_prompt([9, 9], [1, 2, 3, 4], 0, max_prompt_length=4) == [9, 9]


def test_tokens_generated_counts_branches_and_the_flat_equivalent():
    case = CASES["paper_layout"]
    rctx, calls, logged = _ctx(case)
    out = cure.cure_rollout(_prompts(case), rctx, **_hp(case))
    assert logged["cure/tokens_generated"] == sum(len(c) for c in out["completion_ids"])
    n_orig = sum(len(c) for c in case["inputs"]["responses"])
    assert logged["cure/tokens_generated_flat"] == pytest.approx(n_orig * 16 / 4)
    prefix = sum(len(p) for p, r in zip(out["prompt_ids"], out[cure.ROLE]) if r == "branch") - \
        3 * sum(len(p) for p in calls[0])
    assert logged["cure/prefix_tokens"] == prefix and logged["cure/stage"] == 1
    assert 0 <= logged["cure/fallback_frac"] < 1 and logged["cure/critical_entropy"] > 0


def test_stage_two_and_evaluation_sample_flat_groups():
    case = CASES["paper_layout"]
    flat = [[2, 1]] * 32
    rctx, calls, logged = _ctx(case, step=5, flat=flat)
    out = cure.cure_rollout(_prompts(case), rctx, **_hp(case, stage1_steps=5))
    assert len(calls) == 1 and len(calls[0]) == 32 and out["completion_ids"] == flat
    assert logged["cure/stage"] == 2 and cure.ROLE not in out
    rctx, calls, logged = _ctx(case, step=4, flat=None)
    cure.cure_rollout(_prompts(case), rctx, **_hp(case, stage1_steps=5))
    assert logged["cure/stage"] == 1 and len(calls) == 2  # before the switch: still branching
    rctx, calls, logged = _ctx(case, training=False, flat=flat)
    cure.cure_rollout(_prompts(case), rctx, **_hp(case))
    assert len(calls) == 1 and not logged


def test_data_hook_filters_uniform_groups_and_refills():
    hp = get_method("cure").resolve()
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    dec = cure.cure_data(BatchContext(stage="scored", group_size=4, rewards=r), **hp)
    assert dec.keep.tolist() == [True] * 4 + [False] * 4 and dec.resample and dec.resample_max_rounds == 9
    assert cure.cure_data(BatchContext(stage="prompts", group_size=4, rows=[{}]), **hp) is None
    assert cure.cure_data(BatchContext(stage="scored", group_size=4, rewards=r), **{**hp, "filter_groups": False}) \
        is None


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_settings_name_the_valid_choices():
    case = CASES["paper_layout"]
    rctx, _, _ = _ctx(case)
    with pytest.raises(ValueError, match="entropy, random"):
        cure.cure_rollout(_prompts(case), rctx, **_hp(case, critical_token_type="varentropy"))
    rctx, _, _ = _ctx(case, group_size=8)
    with pytest.raises(ValueError, match=r"num_generations \(8\) must equal n1 \* \(1 \+ n2\)"):
        cure.cure_rollout(["p0"] * 8, rctx, **_hp(case))
    rctx, _, _ = _ctx(case)
    with pytest.raises(ValueError, match="whole groups"):
        cure.cure_rollout(["p0"] * 15 + ["p1"], rctx, **_hp(case))
    with pytest.raises(ValueError, match="n2 must be >= 1"):
        cure.cure_rollout(_prompts(case), rctx, **_hp(case, n2=0))
    with pytest.raises(RegistryError, match="critical_top_k must be int"):
        get_method("cure").resolve({"critical_top_k": "20"})
    with pytest.raises(RegistryError, match="valid: critical_token_type"):
        get_method("cure").resolve({"top_k": 20})


def test_defaults_are_the_authors_release():
    hp = get_method("cure").resolve()
    assert (hp["n1"], hp["n2"], hp["critical_top_k"], hp["critical_token_type"], hp["filter_groups"],
            hp["max_num_gen_batches"]) == (4, 3, 20, "entropy", True, 10)
    assert get_method("cure_random").resolve()["critical_token_type"] == "random"
    assert all(cure.CODE in h.source for h in get_method("cure").hparams.values())
    assert get_method("cure").rollout_kind == "rollout_func"


# ------------------------------------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    """A tiny model on the reasoning task's tokenizer, a few pre-training steps: its samples hold planning words."""
    from harness.train.pretrain import pretrain

    from conftest import TINY_SMOKE

    out = tmp_path_factory.mktemp("cure") / "base"
    pretrain(out, TINY_SMOKE["model"], {"seed": 0, "steps": 3, "batch_size": 16, "lr": 1.0e-3, "noise": 0.1},
             {"task": "reasoning", "split_seed": 1234, "n_val": 32, "n_train": 64}, log=lambda *a: None)
    return out


def parity_reward(completions, **kw):
    """Varies within groups (the 3-step model never answers): the continuation's length parity."""
    return [float(len(c) % 2) for c in completions]


def _trainer(base, tmp_path, method, hparams, max_steps=1):
    from harness.data import reasoning

    trainer, _, logs = tiny_grpo_trainer(base, tmp_path / "t", method, reward_funcs=[parity_reward], hparams=hparams,
                                         rows=reasoning.rows(reasoning.split(16, 64, 1234)[0][:32]),
                                         per_device_train_batch_size=16, num_generations=8, max_completion_length=16,
                                         max_steps=max_steps, learning_rate=1e-3, beta=0.0, loss_type="bnpo")
    return trainer.model, trainer, logs


def test_prefix_tokens_get_no_loss_and_the_group_holds_every_branch(reasoning_base, tmp_path):
    """Through the trainer: a branch's prefix is in its prompt (prompt_ids), never in its completion, so the loss
    mask (completion_mask, the only tokens TRL's loss and the diagnostics weigh) has exactly the continuation's
    tokens; every group is 8 consecutive rows (2 originals + 6 branches) of one problem with advantages over all
    8; and the loss gradient does not depend on the prefix positions' completion slots (there are none)."""
    model, trainer, _ = _trainer(reasoning_base, tmp_path, "cure", {"n1": 2, "n2": 3, "filter_groups": False})
    seen = {}
    orig = trainer._generate_and_score_completions

    def capture(inputs):
        out = orig(inputs)
        seen.setdefault("out", out)
        seen.setdefault("prompts", [x["prompt"] for x in inputs])
        return out

    trainer._generate_and_score_completions = capture
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    out = seen["out"]
    pm, cm = out["prompt_mask"].bool(), out["completion_mask"].bool()
    prompts = [out["prompt_ids"][r][pm[r]].tolist() for r in range(len(pm))]
    comps = [out["completion_ids"][r][cm[r]].tolist() for r in range(len(cm))]
    assert len(comps) == 16 and seen["prompts"][:8] == [seen["prompts"][0]] * 8
    branched = 0
    for g in range(2):
        rows = range(8 * g, 8 * g + 8)
        base = prompts[8 * g]
        assert prompts[8 * g + 1] == base  # the two originals: the problem's prompt
        for k in range(6):  # branch k continues original k // 3 from a prefix of it
            r, parent = 8 * g + 2 + k, comps[8 * g + k // 3]
            pre = prompts[r][len(base):]
            assert prompts[r][:len(base)] == base and parent[:len(pre)] == pre
            assert int(cm[r].sum()) == len(comps[r])  # loss mask = the continuation, nothing of the prefix
            branched += bool(pre)
        adv = out["advantages"][list(rows)]
        r = trainer._weighted_rewards()[list(rows)]
        z = torch.zeros(8, 1)
        exp = AdvantageContext(rewards=r, group_size=8, mask=z, completion_ids=z.long()).grpo_advantages()
        assert adv.tolist() == pytest.approx(exp.tolist(), abs=1e-5)
    assert branched > 0  # some branch has a non-empty prefix (a planning word was a candidate)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("method", ["cure", "cure_random"])
def test_one_real_training_step_logs_the_method_metrics(reasoning_base, tmp_path, method):
    _, trainer, logs = _trainer(reasoning_base, tmp_path, method, {"n1": 2, "n2": 3})
    trainer.train()
    step = [m for m in logs if "cure/tokens_generated" in m]
    assert step and all(m["cure/tokens_generated"] > 0 and m["cure/stage"] == 1 for m in step)
    assert any(f"{method}/resample_rounds" in m for m in logs)  # dynamic sampling on by default
    assert all(math.isfinite(m["loss"]) for m in logs if "loss" in m)
