"""ARES / AEPO (arXiv 2510.08457), text part: golden values from the authors' code (shawn0728/ARES @ 146620e3:
``get_window_average_entropy_percentile_threshold_list``, ``compute_reasoning_token_window_entropy``, the tau block
of ``RayPPOTrainer.fit``, ``update_difficulty_and_skip_gid_set`` and ``compute_score`` of
examples/reward_function/aepo.py, run by tests/fixtures/generators/ares.py), a hand-derived example of the paper
variant (HWE branching, closed-form lambda), the window trigger's invariants, the branched group layout (prefix tokens
without loss, every branch in its group), bad settings, and one real training step of each method."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import smoke
from harness.methods import ares
from harness.methods.context import AdvantageContext, RewardContext, RolloutContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ares_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}


def _entropy(row) -> float:
    return -sum(p * math.log(p) for p in row)


# ------------------------------------------------------------------------------------------------ golden
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "window"])
def test_window_statistics_match_authors_code(name):
    i, exp = CASES[name]["inputs"], CASES[name]["expected"]
    for k, seq in enumerate(i["probs"]):
        ent = [_entropy(r) for r in seq]
        assert ares.window_p95(ent, i["window"], 95.0) == pytest.approx(exp["p95"][k], rel=1e-5)
        # the code tests the most likely token of each position (its logprob dict's argmax)
        trig = [ares.normalize_token(i["vocab"][int(np.argmax(r))]) in set(i["triggers"]) for r in seq]
        valid, invalid, soft = ares.count_triggered(ent, trig, i["window"], i["tau"])
        assert (valid, invalid) == (exp["valid"][k], exp["invalid"][k])
        assert soft == pytest.approx(exp["soft_cost"][k], rel=1e-5, abs=1e-6)


def _reward_ctx(accs, g, columns, gen, training=True):
    comps = [f"\\boxed{{{1 if a else 2}}}" for a in accs]
    logged = {}
    return RewardContext(prompts=["p"] * len(accs), completions=comps, completion_ids=[[1]] * len(accs),
                         group_size=g, answers=["1"] * len(accs), columns=columns, generator=gen,
                         training=training, log_metric=lambda k, v: logged.__setitem__(k, v)), logged


def test_threshold_bins_targets_and_alpha_match_authors_code_over_steps():
    case = CASES["steps"]
    hp = get_method("ares").resolve()
    gen = torch.Generator()
    for k, step in enumerate(case["inputs"]["steps"]):
        rctx, logged = _reward_ctx(step["acc"], step["group_size"], {"ares_nhe": step["nhe"], "ares_p95": step["p95"]},
                                   gen)
        out = ares.ares_reward(rctx, **hp)
        st = ares._state(gen)
        assert st["tau"] == pytest.approx(case["expected"]["tau"][k], rel=1e-9)
        assert st["target"] == case["expected"]["target"][k]
        assert st["alpha"] == pytest.approx(case["expected"]["alpha"][k], rel=1e-9)
        diffs = case["expected"]["difficulty"][k]
        assert logged["ares/frac_easy"] == pytest.approx(diffs.count("easy") / len(diffs))
        want = [ares.code_entropy_score(a, d, n, st["target"][d], st["alpha"][d])
                for a, d, n in zip(step["acc"], diffs, step["nhe"])]
        assert out == pytest.approx(want)


def test_entropy_reward_matches_authors_compute_score():
    case = CASES["reward_grid"]
    got = [ares.code_entropy_score(*row) for row in case["inputs"]["grid"]]
    assert got == pytest.approx(case["expected"]["entropy_score"], rel=1e-9, abs=1e-12)
    overall = [row[0] + s for row, s in zip(case["inputs"]["grid"], got)]
    assert overall == pytest.approx(case["expected"]["overall"], rel=1e-9, abs=1e-12)


def test_fixture_covers_every_branch_of_the_code():
    assert FIXTURE["source"].startswith(f"{ares.REPO}@{ares.COMMIT}")
    s = CASES["reward_grid"]["expected"]["entropy_score"]
    assert min(s) < 0 < max(s) and 0.0 in s  # penalties, bonuses and untouched responses
    w = [CASES[n]["expected"] for n in CASES if CASES[n]["kind"] == "window"]
    assert sum(sum(e["valid"]) for e in w) > 0 and sum(sum(e["invalid"]) for e in w) > 0
    diffs = {d for step in CASES["steps"]["expected"]["difficulty"] for d in step}
    assert diffs == set(ares.BINS)


# ------------------------------------------------------------------------------------------------ paper variant
def test_paper_shaping_hand_derived_example():
    """Two groups of 4: group 1 all wrong but one (acc 1/4: hard), group 2 three right (3/4: easy), its wrong row first.
    N_HE = [1, 2, 3, 6 | 4, 8, 8, 8]: batch min 1, max 8. Hard: E = 3, Var = 3.5, target = 1 + 0.65 * 7 = 5.55,
    lambda = (5.55 - 3) / 3.5 = 0.728571...; wrong rows with Delta < 0 are penalised lambda * (3 - N).
    Easy: E = 7, Var = 3, target = 1 + 0.35 * 7 = 3.45, lambda = (7 - 3.45) / 3 = 1.18333...; the wrong row (N = 4,
    Delta = -3) has g_easy = 0."""
    accs = [0, 0, 0, 1, 0, 1, 1, 1]
    nhe = [1, 2, 3, 6, 4, 8, 8, 8]
    diffs = ["hard"] * 4 + ["easy"] * 4
    out, lam = ares.paper_shaping(accs, nhe, diffs, eps=0.0, lam_max=10.0)
    lh, le = 2.55 / 3.5, 3.55 / 3.0
    assert lam == pytest.approx({"hard": lh, "easy": le})
    assert out == pytest.approx([-lh * 2, -lh * 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    nhe[4] = 9  # easy, wrong, above the bin mean: penalised by lambda * Delta (Var = 0.1875: lambda = 23.7)
    assert ares.paper_shaping(accs, nhe, diffs, eps=0.0, lam_max=10.0)[1]["easy"] == 10.0  # clipped
    out, lam = ares.paper_shaping(accs, nhe, diffs, eps=0.0, lam_max=100.0)
    e = np.mean(nhe[4:])
    assert out[4] == pytest.approx(-lam["easy"] * (9 - e)) and out[5:] == [0.0] * 3 and lam["easy"] == pytest.approx(
        (e - (1 + 0.35 * 8)) / np.var(nhe[4:]))


def test_paper_shaping_keeps_correct_responses_and_lambda_is_clipped():
    rng = np.random.default_rng(0)
    for _ in range(50):
        accs = rng.integers(0, 2, 16).tolist()
        nhe = rng.integers(0, 12, 16).tolist()
        diffs = [ares.difficulty(np.mean(accs[s:s + 4])) for s in range(0, 16, 4) for _ in range(4)]
        out, lam = ares.paper_shaping(accs, nhe, diffs, eps=1e-6, lam_max=2.0)
        assert all(o == 0.0 for o, a in zip(out, accs) if a)          # R = R_acc for correct responses
        assert all(o <= 0.0 for o in out) and all(0.0 <= v <= 2.0 for v in lam.values())
    # medium bin whose target equals its mean: lambda 0 (the card's pitfall), nothing shaped
    out, lam = ares.paper_shaping([0, 1, 0, 1], [0, 2, 4, 6], ["medium"] * 4, eps=1e-6, lam_max=2.0)
    assert lam["medium"] == 0.0 and out == [0.0] * 4


def test_window_trigger_forks_are_bounded_and_at_high_entropy_windows():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n, w, cap = int(rng.integers(2, 60)), int(rng.integers(1, 6)), int(rng.integers(0, 4))
        ent = rng.exponential(0.3, n)
        ent[rng.integers(0, n, 3)] += 2.0  # a few spikes
        tau = float(rng.uniform(0.2, 1.0))
        forks = ares.fork_points(ent, w, tau, cap)
        hw = ares.hw(ent, w)
        assert len(forks) <= cap and len(forks) <= max(n - w, 0)
        ts = sorted(t for _, t in forks)
        assert all(b - a >= w for a, b in zip(ts, ts[1:]))           # one per window
        assert all(v > tau and v == pytest.approx(hw[t]) and t >= 1 for v, t in forks)
        eligible = [t for t in range(1, len(hw)) if hw[t] > tau]
        if eligible and cap:  # concentrated: the highest window is always a fork
            assert ts and max(v for v, _ in forks) == pytest.approx(max(hw[t] for t in eligible))
        for t in set(eligible) - set(ts):  # a skipped window is blocked by a higher fork, or the cap is reached
            assert any(abs(t - u) < w and hw[u] >= hw[t] for u in ts) or (
                len(forks) == cap and hw[t] <= min([v for v, _ in forks] or [math.inf]))


# ------------------------------------------------------------------------------------------------ rollout hooks
def _rctx(g, ents_fn, training=True, limit=20):
    calls, logged = [], {}
    counter = iter(range(10_000))

    def generate(ids, **kw):
        calls.append(([list(x) for x in ids], kw))
        return [[100 + next(counter) % 7 for _ in range(6)] for _ in ids]

    def token_stats(p, c):
        ents = [torch.tensor(ents_fn(len(x)), dtype=torch.float32) for x in c]
        return [torch.zeros(len(x)) for x in c], ents

    class Tok:
        def decode(self, ids):
            return {100: " then ", 101: " so "}.get(ids[0], "x")

    rctx = RolloutContext(generator=torch.Generator(), step=0, max_steps=1, group_size=g, processing_class=Tok(),
                          training=training, max_completion_length=limit, tokenize=lambda ps: [[ord(p)] for p in ps],
                          generate=generate, token_stats=token_stats, log_metric=lambda k, v: logged.__setitem__(k, v))
    return rctx, calls, logged


def test_branch_rollout_layout_prefix_mask_and_token_count():
    hp = get_method("ares_paper").resolve({"window_size": 1, "roots_per_group": 2, "max_forks_per_root": 2,
                                                "percentile": 50.0})
    # entropies 0.1 except positions 2 and 4 (1.0): the following-window means of a root are 0.1, 1, 0.1, 1, 0.1 and
    # their running mean 0.46 at the last position, so tau = median = 0.28 -> forks at t = 2 and 4
    rctx, calls, logged = _rctx(4, lambda n: [1.0 if t in (2, 4) else 0.1 for t in range(n)])
    prompts = ["a"] * 4 + ["b"] * 4
    out = ares.ares_rollout(prompts, rctx, **hp)
    assert len(out["completion_ids"]) == 8 and out["prompt_ids"] == [[ord(p)] for p in prompts]
    assert out["ares_role"] == ["root", "root", "branch", "branch"] * 2    # every member of a group is consecutive
    roots_call, *branch_calls = calls
    assert roots_call[0] == [[97], [97], [98], [98]]
    for k in (0, 4):
        root = out["completion_ids"][k]
        for j in (k + 2, k + 3):
            t = out["ares_fork_at"][j]
            assert t in (2, 4) and out["completion_ids"][j][:t] == root[:t]    # the branch carries its root's prefix
            assert out["env_mask"][j] == [0] * t + [1] * (len(out["completion_ids"][j]) - t)
        assert out["env_mask"][k] == [1] * len(root)
    branch_inputs = [x for c in branch_calls for x in c[0]]
    assert sorted(map(len, branch_inputs)) == [3, 3, 5, 5]                    # prompt + root[:t], t = 2 and 4
    assert all(c[1]["max_new_tokens"] == 20 - (len(c[0][0]) - 1) for c in branch_calls)
    gen = sum(len(c) for c in out["completion_ids"][:2] + out["completion_ids"][4:6]) + 4 * 6
    assert logged["ares/tokens_generated"] == gen
    assert logged["ares/tokens_flat_equivalent"] == sum(map(len, out["completion_ids"])) > gen
    assert logged["ares/branches"] == 4 and logged["ares/fill_rows"] == 0


def test_branch_rollout_fills_with_fresh_samples_when_no_window_is_high():
    hp = get_method("ares_paper").resolve({"roots_per_group": 1})
    rctx, calls, logged = _rctx(3, lambda n: [0.5] * n)  # flat entropy: no Hw_t > tau
    out = ares.ares_rollout(["a"] * 3, rctx, **hp)
    assert out["ares_role"] == ["root", "fill", "fill"] and all(m == [1] * 6 for m in out["env_mask"])
    assert logged["ares/branches"] == 0 and logged["ares/fill_rows"] == 2


def test_code_rollout_counts_planning_words_and_evaluation_is_plain():
    hp = get_method("ares").resolve()
    rctx, calls, logged = _rctx(2, lambda n: [0.1, 2.0, 2.0, 2.0, 2.0, 0.1][:n])
    out = ares.ares_rollout(["a", "a"], rctx, **hp)
    assert "env_mask" not in out and len(out["ares_nhe"]) == 2 and len(calls) == 1
    assert logged["ares/tokens_generated"] == logged["ares/tokens_flat_equivalent"] == 12
    rctx, calls, logged = _rctx(2, lambda n: [0.1] * n, training=False)
    out = ares.ares_rollout(["a", "a"], rctx, **hp)
    assert set(out) == {"prompt_ids", "completion_ids", "logprobs"} and not logged
    r, _ = _reward_ctx([1, 0], 2, {}, torch.Generator(), training=False)
    assert ares.ares_reward(r, **hp) == [0.0, 0.0]


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_settings_name_the_valid_choices():
    hp = get_method("ares").resolve()
    rctx, _, _ = _rctx(2, lambda n: [0.1] * n)
    with pytest.raises(ValueError, match="planning, all"):
        ares.ares_rollout(["a", "a"], rctx, **{**hp, "trigger_words": "authors"})
    r, _ = _reward_ctx([1, 0], 2, {"ares_nhe": [0, 1], "ares_p95": [1, 1]}, torch.Generator())
    with pytest.raises(ValueError, match="boxed, plain"):
        ares.ares_reward(r, **{**hp, "answer_mode": "exact"})
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        ares.ares_rollout(["a", "a"], rctx, **{**hp, "window_size": 0})
    with pytest.raises(RegistryError, match="valid: alpha_init"):
        get_method("ares").resolve({"lambda": 1.0})
    with pytest.raises(RegistryError, match="roots_per_group must be int"):
        get_method("ares_paper").resolve({"roots_per_group": "half"})
    r.answers = None
    with pytest.raises(ValueError, match="answer column"):
        ares.ares_reward(r, **hp)


def test_defaults_are_the_authors_release():
    hp = get_method("ares").resolve()
    assert (hp["window_size"], hp["percentile"], hp["threshold_ema"], hp["alpha_init"], hp["alpha_lr"],
            hp["alpha_max"]) == (4, 95.0, 0.99, 0.5, 0.05, 2.0)
    assert all(ares.CODE in h.source for h in get_method("ares").hparams.values())


# ------------------------------------------------------------------------------------------------ trainer
def dense_reward(completions, answer, **kw):  # varies within groups (the tiny model is rarely right): A != 0
    return [float(len(c)) + (c.strip() == a) for c, a in zip(completions, answer)]


def _train(tiny_base, tmp_path, name, hparams, reward=smoke.exact_match_reward):
    trainer, _, logs = tiny_grpo_trainer(tiny_base, tmp_path / name, name, reward_funcs=[reward],
                                         hparams={"answer_mode": "plain", **hparams},
                                         per_device_train_batch_size=16, num_generations=4, max_completion_length=8,
                                         max_steps=1, learning_rate=1e-4, beta=0.0, loss_type="bnpo")
    model = trainer.model
    seen, outs = [], []
    inner, inner_rollout = trainer._compute_loss, trainer._method_rollout_func

    def spy(model, inputs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return inner(model, inputs)

    def spy_rollout(prompts, _trainer=None):
        out = inner_rollout(prompts, _trainer)
        outs.append(out)
        return out

    trainer._compute_loss, trainer._method_rollout_func = spy, spy_rollout
    trainer.rollout_func = spy_rollout
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert all(math.isfinite(m["loss"]) for m in logs if "loss" in m)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return trainer, logs, seen, outs


def test_one_real_training_step_code_variant(tiny_base, tmp_path):
    trainer, logs, seen, outs = _train(tiny_base, tmp_path, "ares", {"window_size": 1, "trigger_words": "all"})
    row = next(m for m in logs if "ares/threshold" in m)
    assert row["ares/tokens_generated"] == row["ares/tokens_flat_equivalent"] > 0
    assert {"ares/alpha_easy", "ares/frac_hard", "ares/shaping_mean"} <= set(row)
    assert row["rewards/ares_reward/mean"] == pytest.approx(row["ares/shaping_mean"], abs=1e-6)


def test_branched_group_prefix_has_no_loss_and_advantages_span_every_branch(tiny_base, tmp_path):
    """ares_paper through the trainer: prefix tokens leave the loss mask (TRL's tool_mask from env_mask), and the
    advantages the loss sees are GRPO's over each whole group of G = roots + branches."""
    hp = {"window_size": 1, "percentile": 0.0, "roots_per_group": 2, "max_forks_per_root": 1}
    trainer, logs, seen, outs = _train(tiny_base, tmp_path, "ares_paper", hp, reward=dense_reward)
    (out,) = outs
    (inputs,) = seen  # one micro-batch = the whole (shuffled) generation batch
    row = next(m for m in logs if "ares/branches" in m)
    assert row["ares/branches"] > 0 and row["ares/tokens_generated"] < row["ares/tokens_flat_equivalent"]
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    assert sorted(mask.sum(-1).long().tolist()) == sorted(sum(m) for m in out["env_mask"])
    assert int(inputs["num_items_in_batch"]) == sum(sum(m) for m in out["env_mask"])
    assert row["completions/mean_length"] == pytest.approx(np.mean([sum(m) for m in out["env_mask"]]))
    rewards = trainer._weighted_rewards()
    z = torch.zeros(len(rewards), 1)
    adv = AdvantageContext(rewards=rewards, group_size=4, mask=z, completion_ids=z.long()).grpo_advantages()
    assert sorted(inputs["advantages"].view(-1).tolist()) == pytest.approx(sorted(adv.tolist()), abs=1e-5)
    assert adv.abs().sum() > 0
    assert out["ares_role"][:4].count("root") == 2 and all(r in ("root", "branch", "fill") for r in out["ares_role"])
