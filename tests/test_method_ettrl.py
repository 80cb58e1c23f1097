"""ETTRL (arXiv 2508.11356): no code released, so the golden values are hand-derived from the harness's stated design
(tests/fixtures/generators/ettrl.py, plain Python, independent of the module): the entropy-fork tree (fork
positions, prefixes, leaves, env_mask, token counts), the majority-vote pseudo-reward and EAR. Plus invariants (EAR
off = GRPO, uniform entropies = GRPO, leaf paths within the length limit, fallback forks, a second fork round), bad
settings, the label-free registration, and one real training step through the trainer showing that prefix tokens get
zero loss and that a branched prompt's group holds every branch."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import ettrl as E
from harness.methods.context import AdvantageContext, RewardContext, RolloutContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "ettrl_golden.json").read_text())
ETTRL, TTRL = get_method("ettrl"), get_method("ettrl_ttrl")


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(str(i) for i in ids)


def _rctx(g, *, outputs=None, ents=None, limit=6, training=True, step=0, gen=None):
    """A RolloutContext over a scripted sampler: ``outputs`` is a list of per-call completion lists (or a callable
    ``(inputs, kw) -> completions``); ``ents`` maps a completion tuple to its per-token entropies."""
    calls, logged = [], {}
    script = [] if callable(outputs) else list(outputs or [])

    def generate(ids, **kw):
        calls.append(([list(x) for x in ids], kw))
        if callable(outputs):
            return outputs(ids, kw)
        return script.pop(0)

    def token_stats(p, c):
        e = [torch.tensor(ents[tuple(x)]) if ents else torch.full((len(x),), 0.5) for x in c]
        return [torch.zeros(len(x)) for x in c], e

    rctx = RolloutContext(generator=gen or torch.Generator().manual_seed(0), step=step, max_steps=10, group_size=g,
                          processing_class=_Tok(), training=training, max_completion_length=limit,
                          tokenize=lambda ps: [[100 + ord(p[0])] for p in ps], generate=generate,
                          token_stats=token_stats, log_metric=lambda k, v: logged.__setitem__(k, v))
    return rctx, calls, logged


# ------------------------------------------------------------------------------------------------ golden
def test_fixture_is_hand_derived_and_regenerates():
    assert FIX["source"]["kind"] == "hand-derived"
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", Path(__file__).parent / "fixtures" / "generators" / "ettrl.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert json.loads(json.dumps(gen.build())) == FIX


def test_tree_matches_hand_derived_example():
    case, exp = FIX["tree"]["inputs"], FIX["tree"]["expected"]
    ents = {tuple(s): e for s, e in zip(case["trunks"], case["entropies"])}
    rctx, calls, logged = _rctx(case["group_size"], outputs=[case["trunks"], case["continuations"]], ents=ents,
                                limit=case["max_completion_length"])
    out = E.ettrl_rollout(["q"] * 8, rctx, **ETTRL.resolve({**case["hparams"], "answer_mode": "plain"}))
    p = [100 + ord("q")]
    assert calls[0] == ([p, p], {})  # M = 2 trunks from the prompt
    assert calls[1][0] == [p + x for x in exp["branch_prefixes"]]
    assert calls[1][1]["max_new_tokens"] == exp["max_new_tokens"]
    assert calls[1][1]["stopping_criteria"][0].budgets.tolist() == exp["row_budgets"]
    assert out["completion_ids"] == exp["leaves"]
    assert out["env_mask"] == exp["env_mask"]
    assert out["ettrl_parent"] == exp["parents"] and out["ettrl_fork_pos"] == exp["fork_pos"]
    assert out["prompt_ids"] == [p] * 8  # the prefix is in the completion (masked), never in the prompt
    for k in ("tokens_generated", "tokens_flat_equiv", "tokens_overflow", "token_ratio"):
        assert logged[f"ettrl/{k}"] == pytest.approx(exp[k])
    assert logged["ettrl/fallback_forks"] == 0


def test_fork_choice_matches_hand_derived_example():
    case = FIX["tree"]["inputs"]
    leaves = [E.Leaf(s, ent=e) for s, e in zip(case["trunks"], case["entropies"])]
    assert [list(f) for f in E.choose_forks(leaves, 3, "entropy")] == FIX["tree"]["expected"]["forks"]


def test_vote_reward_matches_hand_derived_example():
    v = FIX["vote"]
    assert [E.extract(c, "boxed") for c in v["completions"]] == v["answers"]
    logged = {}
    rctx = RewardContext(prompts=["q"] * 8, completions=v["completions"], completion_ids=[[1]] * 8, group_size=8,
                         log_metric=lambda k, x: logged.__setitem__(k, x))
    assert E.ettrl_reward(rctx, **ETTRL.resolve()) == v["rewards"]
    assert E.majority(v["answers"]) == v["majority"]
    assert logged["ettrl/majority_ratio"] == pytest.approx(3 / 8) and logged["ettrl/frac_no_answer"] == 1 / 8


def _actx(case, g=4):
    r = torch.tensor(case["rewards"], dtype=torch.float64)
    mask = torch.tensor(case["mask"], dtype=torch.float64)
    return AdvantageContext(rewards=r, group_size=g, mask=mask, completion_ids=torch.ones_like(mask).long(),
                            entropies=torch.tensor(case["entropies"], dtype=torch.float64))


@pytest.mark.parametrize("alpha", ["1.0", "0.5"])
def test_ear_matches_hand_derived_example(alpha):
    case = FIX["ear"]
    actx = _actx(case)
    torch.testing.assert_close(actx.grpo_advantages(), torch.tensor(case["grpo_advantages"], dtype=torch.float64))
    adv, m = E.ettrl_advantage(actx, **ETTRL.resolve({"ear_alpha": float(alpha)}))
    torch.testing.assert_close(adv, torch.tensor(case["by_alpha"][alpha]["advantages"], dtype=torch.float64))
    assert m["ettrl/response_entropy"] == pytest.approx(0.4)
    assert m["ettrl/ear_weight_neg"] == pytest.approx(case["by_alpha"][alpha]["weights"][2])
    assert 0 < m["method/frac_tokens_touched"] <= 1


# ------------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("over", [{"ear_alpha": 0.0}, {"ear": "none"}])
def test_ear_off_is_grpo(over):
    actx = _actx(FIX["ear"])
    adv, m = E.ettrl_advantage(actx, **ETTRL.resolve(over))
    assert torch.equal(adv, actx.grpo_advantages()) and m["method/frac_tokens_touched"] == 0.0


def test_equal_entropies_leave_grpo_unchanged_and_clip_bounds_hold():
    case = dict(FIX["ear"], entropies=[[0.3, 0.3, 0.3]] * 8)
    actx = _actx(case)
    adv, _ = E.ettrl_advantage(actx, **ETTRL.resolve({"ear_alpha": 3.0}))
    torch.testing.assert_close(adv, actx.grpo_advantages())
    g = torch.Generator().manual_seed(1)
    h, a = torch.rand(64, generator=g) + 0.01, torch.randn(64, generator=g)
    w = E.ear_weights(h, a, torch.ones(64), 8, 2.0, 0.5, 1.5)
    assert bool(((w >= 0.5) & (w <= 1.5)).all())
    # a lower-entropy leaf never gets more positive credit than a higher-entropy one of its group
    hg, wg, ag = h.view(-1, 8), w.view(-1, 8), a.view(-1, 8)
    for hh, ww, aa in zip(hg, wg, ag):
        pos = aa > 0
        order = torch.argsort(hh[pos])
        assert bool((ww[pos][order].diff() >= -1e-12).all())


def test_ear_without_entropies_is_a_clear_error():
    actx = dataclasses.replace(_actx(FIX["ear"]), entropies=None)
    with pytest.raises(ValueError, match="adv_token_stats"):
        E.ettrl_advantage(actx, **TTRL.resolve({"ear": "ratio"}))


def _random_sampler(seed=0, vocab=(5, 6, 7, 8, 9)):
    g = torch.Generator().manual_seed(seed)

    def gen(ids, kw):
        n = kw.get("max_new_tokens", 6)
        out = []
        for _ in ids:
            k = int(torch.randint(1, n + 1, (1,), generator=g))  # the call's budget; past a leaf's own: cut
            out.append([vocab[int(torch.randint(len(vocab), (1,), generator=g))] for _ in range(k)])
        return out
    return gen


class _Ents(dict):
    def __missing__(self, key):
        return [((7 * sum(key[:i + 1])) % 10) / 10 for i in range(len(key))]


@pytest.mark.parametrize("over", [{}, {"iterations": 3, "n_trunks": 2, "branches_per_fork": 1},
                                  {"fork_select": "random"}, {"n_trunks": 8}])
def test_every_group_has_g_leaves_within_the_limit_and_each_branch_extends_its_parent(over):
    g, limit = 8, 6
    rctx, calls, logged = _rctx(g, outputs=_random_sampler(), ents=_Ents(), limit=limit)
    hp = ETTRL.resolve({"answer_mode": "plain", **over})
    out = E.ettrl_rollout([q for q in "abc" for _ in range(g)], rctx, **hp)
    assert len(out["completion_ids"]) == 3 * g
    for k in range(3):
        rows = range(k * g, (k + 1) * g)
        for r in rows:
            seq, t, par = out["completion_ids"][r], out["ettrl_fork_pos"][r], out["ettrl_parent"][r]
            assert 1 <= len(seq) <= limit and out["env_mask"][r] == [0] * t + [1] * (len(seq) - t)
            if par >= 0:
                assert out["completion_ids"][k * g + par][:t] == seq[:t]  # parent in the same group
                assert out["ettrl_fork_pos"][k * g + par] < t
    trained = sum(sum(m) for m in out["env_mask"])
    assert logged["ettrl/tokens_generated"] == trained + logged["ettrl/tokens_overflow"]
    assert logged["ettrl/tokens_flat_equiv"] == sum(map(len, out["completion_ids"]))
    if over.get("n_trunks") == 8:  # no fork: the flat case
        assert logged["ettrl/token_ratio"] == pytest.approx(1.0 + logged["ettrl/tokens_overflow"] / trained)


def test_second_round_forks_branches_too():
    rctx, calls, logged = _rctx(8, outputs=_random_sampler(3), ents=_Ents(), limit=6)
    out = E.ettrl_rollout(["a"] * 8, rctx, **ETTRL.resolve({"iterations": 3, "branches_per_fork": 1}))
    assert len(calls) == 4  # trunks + one call per round
    assert any(p >= 2 for p in out["ettrl_parent"])  # a leaf forked from a branch


def test_too_few_positions_fall_back_to_fresh_chains():
    rctx, calls, logged = _rctx(8, outputs=[[[2], [2]], [[5, 2]] * 6], limit=6)  # both trunks end at once
    out = E.ettrl_rollout(["a"] * 8, rctx, **ETTRL.resolve())
    assert logged["ettrl/fallback_forks"] == 3
    assert calls[1][0] == [[100 + ord("a")]] * 6 and out["ettrl_fork_pos"] == [0] * 8
    assert out["env_mask"][2:] == [[1, 1]] * 6


def test_flat_rollout_and_evaluation_sample_plainly():
    rctx, calls, logged = _rctx(4, outputs=[[[5, 2]] * 8])
    out = E.ettrl_rollout(["a"] * 4 + ["b"] * 4, rctx, **TTRL.resolve())
    assert len(calls) == 1 and "env_mask" not in out and logged["ettrl/token_ratio"] == 1.0
    rctx, calls, logged = _rctx(4, outputs=[[[5, 2]] * 4], training=False)
    out = E.ettrl_rollout(["a"] * 4, rctx, **ETTRL.resolve())
    assert len(calls) == 1 and set(out) == {"prompt_ids", "completion_ids", "logprobs"} and not logged


def test_audit_compares_majorities_and_tokens_with_flat_votes():
    def sampler(ids, kw):  # trunks/branches answer 1; flat call 1 answers 1; flat call 2 answers 2
        sampler.n += 1
        return [[1 if sampler.n <= 3 else sampler.n - 2] for _ in ids]
    sampler.n = 0
    rctx, calls, logged = _rctx(4, outputs=sampler, limit=3, step=10)
    E.ettrl_rollout(["a"] * 4, rctx, **ETTRL.resolve({"answer_mode": "plain", "audit_every": 5}))
    assert len(calls) == 4  # trunks, one fork round, two flat groups
    assert logged["ettrl/audit_label_agreement"] == 1.0 and logged["ettrl/audit_flat_agreement"] == 0.0
    assert logged["ettrl/audit_agreement_gap"] == 1.0
    assert logged["ettrl/audit_token_ratio"] == pytest.approx(logged["ettrl/tokens_generated"] / 4)
    rctx, calls, logged = _rctx(4, outputs=_random_sampler(), ents=_Ents(), step=11)
    E.ettrl_rollout(["a"] * 4, rctx, **ETTRL.resolve({"audit_every": 5}))
    assert "ettrl/audit_label_agreement" not in logged


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("key,value,valid", [("rollout", "beam", "tree, flat"), ("fork_select", "max", "entropy, random"),
                                             ("answer_mode", "last", "boxed, plain"), ("ear", "exp", "ratio, none")])
def test_unknown_mode_names_the_valid_choices(key, value, valid):
    rctx, _, _ = _rctx(8, outputs=[])
    with pytest.raises(ValueError, match=f"valid: {valid}"):
        E.ettrl_rollout(["a"] * 8, rctx, **ETTRL.resolve({key: value}))


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="do not fit"):
        E.check(ETTRL.resolve({"n_trunks": 3}), 8)  # 5 branches are not forks x 2
    with pytest.raises(ValueError, match="do not fit"):
        E.check(ETTRL.resolve({"n_trunks": 9, "branches_per_fork": 1}), 8)
    with pytest.raises(ValueError, match="n_trunks must be >= 1"):
        E.check(ETTRL.resolve({"n_trunks": 0}))
    with pytest.raises(ValueError, match="ear_clip_low"):
        E.check(ETTRL.resolve({"ear_clip_low": 1.2}))
    with pytest.raises(RegistryError, match="n_trunks must be int"):
        ETTRL.resolve({"n_trunks": "two"})
    with pytest.raises(RegistryError, match="valid: answer_mode"):
        ETTRL.resolve({"votes": 64})


def test_registration_is_label_free_with_the_ttrl_variant():
    for m in (ETTRL, TTRL):
        assert m.label_free and m.task_reward_weight == 0.0 and m.rollout_kind == "rollout_func"
        assert set(m.hooks) == {"rollout", "reward", "advantage"}
    assert ETTRL.needs == ("adv_token_stats",) and TTRL.needs == ()
    assert (TTRL.resolve()["rollout"], TTRL.resolve()["ear"]) == ("flat", "none")
    assert all("design" in h.source or "abstract" in h.source for h in ETTRL.hparams.values())


def test_card_claims_use_registered_checks():
    from harness.claims.registry import all_checks
    from harness.config import load_card

    card = load_card("ettrl")
    assert {"grpo", "ettrl", "ettrl_ttrl"} <= set(card["methods"])
    assert all(c["check"] in all_checks() for c in card["claims"])
    smoke = [c for c in card["claims"] if "smoke-reasoning" in (c["tier"] if isinstance(c["tier"], list)
                                                               else [c["tier"]])]
    assert any(c["id"] == "ettrl_final_accuracy_above_grpo" for c in smoke)


# ------------------------------------------------------------------------------------------------ trainer
def test_one_real_training_step_prefix_has_no_loss_and_groups_hold_every_branch(tiny_base, tmp_path):
    seen = {"rollout": [], "adv": [], "scored": []}

    def rollout(prompts, rctx, **hp):
        out = E.ettrl_rollout(prompts, rctx, **hp)
        seen["rollout"].append(out)
        return out

    def advantage(actx, **hp):
        adv, m = E.ettrl_advantage(actx, **hp)
        seen["adv"].append((actx, adv))
        return adv, m

    method = dataclasses.replace(ETTRL, hooks={**ETTRL.hooks, "rollout": rollout, "advantage": advantage})
    trainer, _, logs = tiny_grpo_trainer(tiny_base, tmp_path / "t", method, reward_funcs=[],
                                         hparams={"answer_mode": "plain", "audit_every": 1},
                                         per_device_train_batch_size=16, num_generations=8, max_completion_length=4,
                                         max_steps=2, learning_rate=1e-3, beta=0.0, loss_type="bnpo")
    model = trainer.model
    orig = trainer._generate_and_score_completions

    def scored(inputs):
        out = orig(inputs)
        seen["scored"].append({k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)})
        return out
    trainer._generate_and_score_completions = scored
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()

    assert len(seen["rollout"]) == len(seen["scored"]) == 2
    for ro, sc, (actx, adv) in zip(seen["rollout"], seen["scored"], seen["adv"]):
        n = len(ro["completion_ids"])
        loss_mask = (sc["completion_mask"] * sc["tool_mask"]).long()  # what TRL's loss multiplies by
        for r in range(n):
            c, em = ro["completion_ids"][r], ro["env_mask"][r]
            assert sc["completion_ids"][r, :len(c)].tolist() == c
            assert loss_mask[r, :len(c)].tolist() == em  # prefix tokens: zero loss; own tokens: trained
            assert loss_mask[r, len(c):].sum() == 0
        assert any(0 in em for em in ro["env_mask"])  # at least one branch with a shared prefix
        assert actx.group_size == 8 and n == 16
        for k in range(2):  # each group: 8 consecutive rows, one prompt, every branch with its parent
            grp = range(8 * k, 8 * k + 8)
            assert len({tuple(ro["prompt_ids"][r]) for r in grp}) == 1
            for r in grp:
                par, t = ro["ettrl_parent"][r], ro["ettrl_fork_pos"][r]
                if par >= 0:
                    assert ro["completion_ids"][8 * k + par][:t] == ro["completion_ids"][r][:t]
        # advantages over all 8 leaves of the group (GRPO normalised within the tree, then EAR)
        assert torch.allclose(sc["advantages"].cpu().double(), adv.double().cpu(), atol=1e-6)
        grpo = actx.grpo_advantages().view(2, 8)
        assert torch.allclose(grpo.sum(1), torch.zeros(2, dtype=grpo.dtype), atol=1e-4)
    step = [m for m in logs if "ettrl/tokens_generated" in m]
    assert step and all(m["ettrl/tokens_generated"] > 0 and m["ettrl/token_ratio"] < 1 for m in step)
    assert all(m["ettrl/tokens_overflow"] == 0 for m in step)  # HF stops every branch at its own budget
    assert all("ettrl/audit_label_agreement" in m for m in step)
    assert all(math.isfinite(m["loss"]) for m in logs if "loss" in m)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_row_budget_stops_each_row_at_its_own_length():
    crit = E.RowBudget([1, 3])
    ids = torch.zeros(2, 5, dtype=torch.long)  # prompt of 4 + first generated token
    assert crit(ids, None).tolist() == [True, False]
    assert crit(torch.zeros(2, 7, dtype=torch.long), None).tolist() == [True, True]
