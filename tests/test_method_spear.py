"""SPEAR (harness/methods/spear.py): golden values from the authors' code (TencentYoutuResearch/SPEAR @ 7e843151:
``TrajectoryBufferBatch`` driven in ``fit``'s order, the tool-call bonus, the replay-loss ramp, verl-agent's Clip-Cov
on-policy and replay losses; tests/fixtures/generators/spear.py), the replay consumed inside the loss with gradients,
checkpointed state, and a real household run that replays."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.methods import spear as S
from harness.methods.context import AdvantageContext, RewardContext, TokenContext
from harness.methods.registry import get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "spear_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}
SPEAR = get_method("spear")


def _rollout(rewards: list[float], g: int, group: int, gen, norm: bool) -> AdvantageContext:
    """A rollout in the harness layout; row i's completion starts with its fixture id g * 1000 + i."""
    n = len(rewards)
    ids = torch.tensor([[g * 1000 + i, 5, 6] for i in range(n)])
    return AdvantageContext(rewards=torch.tensor(rewards, dtype=torch.float32), group_size=group,
                            mask=torch.ones(n, 3), completion_ids=ids, scale_rewards="group" if norm else "none",
                            logps=torch.full((n, 3), -0.5), generator=gen,
                            prompt_ids=torch.ones(n, 2, dtype=torch.long),
                            prompt_mask=torch.ones(n, 2, dtype=torch.long), completion_mask=torch.ones(n, 3))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "buffer"])
def test_buffer_matches_authors_code(name):
    case = CASES[name]
    hp = SPEAR.hook_hparams(case["hparams"])
    gen = torch.Generator()
    run = S._run(gen)
    for g, (roll, exp) in enumerate(zip(case["inputs"]["rollouts"], case["expected"]["rollouts"]), start=1):
        gen.manual_seed(roll["seed"])
        actx = _rollout(roll["rewards"], g, case["group_size"], gen, hp["replay_norm_by_std"])
        base = S.p50(run)[0]
        adv, m = SPEAR.hook("advantage")(actx, **hp)
        if not hp["replay_norm_by_std"]:  # Dr.BoT's GRPO advantage R - group mean, as the authors' trainer
            assert adv.tolist() == pytest.approx(exp["on_policy_adv"], rel=1e-6, abs=1e-6)
        else:
            assert [a > 0 for a in adv.tolist()] == [a > 0 for a in exp["on_policy_adv"]]
        replayed = run["pending"]
        assert [r["completion"][0] for r in replayed] == exp.get("replay_rows", []), f"rollout {g}"
        assert [r["replay_adv"] for r in replayed] == pytest.approx(exp.get("replay_adv", []), rel=1e-6, abs=1e-6)
        if "reward_mean_50p" in exp:
            assert base == pytest.approx(exp["reward_mean_50p"], rel=1e-12)
        assert m["spear/replay_rows"] == len(exp.get("replay_rows", []))
        assert m["spear/buffer_size"] == exp["buffer_size"]
        assert [r["completion"][0] for b in run["batches"] for r in b["rows"]] == exp["stored_rows"]
        # stored with what the replay loss needs: unpadded prompt, completion, loss mask, old log-probs
        assert all(r["prompt"] == [1, 1] and r["mask"] == [1, 1, 1] and r["old_logps"] == [-0.5] * 3
                   for b in run["batches"] for r in b["rows"])


def test_the_authors_p50_buffer_raises_where_the_port_continues():
    """As written, get_buffer filters the batch but not its reward tensor, then indexes the reward tensor with the
    batch-sized mask: IndexError as soon as a stored trajectory is below the P50 baseline. The port (and the fixture's
    numbers) keep the reward rows with their batch rows; the decay mode filters nothing and never raises."""
    assert CASES["p50_expiry_fifo"]["expected"]["as_written_raises"] == {"rollout": 6, "error": "IndexError"}
    assert CASES["weight_decay_mode"]["expected"]["as_written_raises"] is None


def test_toolcall_bonus_and_replay_ramp_match_authors_code():
    pts, want = CASES["toolcall_bonus"]["inputs"]["points"], CASES["toolcall_bonus"]["expected"]["bonus"]
    got = [S.toolcall_bonus(n, t, mode, big_t, 0.1, 1.0) for mode, n, t, big_t in pts]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    pts, want = CASES["replay_coef"]["inputs"]["points"], CASES["replay_coef"]["expected"]["coef"]
    assert [S.replay_coef(t, c, big_t) for t, c, big_t in pts] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_reward_hook_counts_turns_with_the_training_step():
    hp = SPEAR.hook_hparams({"max_toolcall_steps": 60})
    rctx = RewardContext(prompts=["g"] * 3, completions=["c"] * 3, completion_ids=[[1]] * 3, group_size=3,
                         columns={"turns": [2, 7, 15]}, step=29)
    assert SPEAR.hook("reward")(rctx, **hp) == pytest.approx([min(1, 0.1 * n) * 0.5 for n in (2, 7, 15)])
    rctx.columns = {}  # a rollout without the column makes no tool calls
    assert SPEAR.hook("reward")(rctx, **hp) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="valid: cosine, constant, none"):
        SPEAR.hook("reward")(rctx, **{**hp, "toolcall_schedule": "linear"})


def _tensors(case):
    i = case["inputs"]
    logp = torch.tensor(i["log_prob"], dtype=torch.float64, requires_grad=True)
    ent = torch.tensor(i["entropy"], dtype=torch.float64, requires_grad=True)
    return logp, ent, torch.tensor(i["response_mask"], dtype=torch.float64)


@pytest.mark.parametrize("name", ["on_policy_clip_cov", "replay_clip_cov", "replay_stale_ratio"])
def test_clip_cov_losses_match_authors_code(name):
    case = CASES[name]
    i, exp, hp = case["inputs"], case["expected"], SPEAR.hook_hparams(case["hparams"])
    logp, ent, mask = _tensors(case)
    old = torch.tensor(i["old_log_prob"], dtype=torch.float64)
    gen = torch.Generator().manual_seed(i["seed"])
    if not i["is_replay"]:  # the loss hook on the micro-batch, aggregated as the trainer's bnpo (verl token-mean)
        ctx = TokenContext.build(logp, old, torch.tensor(i["advantages"], dtype=torch.float64), mask, entropies=ent,
                                 generator=gen)
        per_token, m, scalar = S.spear_loss(ctx, **hp)
        assert scalar is None
        loss = (per_token * mask).sum() / mask.sum()
    else:  # replayed rows scored inside the loss (TokenContext.score returns the case's tensors)
        rows = [{"prompt": [1], "completion": [7] * int(mk.sum()), "mask": [1] * int(mk.sum()),
                 "old_logps": o[: int(mk.sum())].tolist(), "replay_adv": a[0]}
                for mk, o, a in zip(mask, old, i["advantages"])]
        ctx = TokenContext.build(logp, old, torch.zeros(len(rows)), mask, generator=gen)
        ctx.score = lambda prompts, completions: (logp, ent)
        loss, m = S.replay_loss(ctx, rows, ratio=hp["clip_cov_ratio_replay"], lb=hp["clip_cov_lb_replay"],
                                ub=hp["clip_cov_ub_replay"], low=hp["clip_ratio_low"], high=hp["clip_ratio_high"],
                                entropy_coeff=hp["entropy_coeff"])
        m = {"method/frac_tokens_touched": m["spear/replay_clipcov_frac"], "ppo_kl": m["spear/replay_ppo_kl"]}
    loss.backward()
    assert float(loss.detach()) == pytest.approx(exp["loss"], rel=1e-9, abs=1e-12)
    assert m["method/frac_tokens_touched"] == pytest.approx(exp["clip_frac"], rel=1e-6)
    assert m["ppo_kl"] == pytest.approx(exp["ppo_kl"], rel=1e-9, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64))
    got = ent.grad if ent.grad is not None else torch.zeros_like(ent)  # entropy_coeff 0: no entropy term
    torch.testing.assert_close(got, torch.tensor(exp["grad_entropy"], dtype=torch.float64))


def test_pending_replay_is_spread_over_micro_batches_with_the_ramp():
    gen = torch.Generator().manual_seed(0)
    run = S._run(gen)
    run["pending"] = [{"prompt": [1], "completion": [3, 4], "mask": [1, 1], "old_logps": [-1.0, -1.0],
                       "replay_adv": 1.0 + k} for k in range(5)]
    calls = []

    def score(prompts, completions):
        calls.append(len(completions))
        lp = torch.full((len(completions), 2), -1.0, requires_grad=True)
        return lp, torch.ones(len(completions), 2)

    hp = SPEAR.hook_hparams({"max_replay_loss_steps": 10, "replay_loss_coef": 2.0, "entropy_coeff": 0.0})
    ctx = TokenContext.build(torch.zeros(3, 2, requires_grad=True), torch.zeros(3, 2), torch.zeros(3),
                             torch.ones(3, 2), entropies=torch.ones(3, 2), generator=gen, step=4)
    ctx.score = score
    _, m1, s1 = S.spear_loss(ctx, **hp)
    _, m2, s2 = S.spear_loss(ctx, **hp)
    _, m3, s3 = S.spear_loss(ctx, **hp)
    assert calls == [3, 2] and s3 is None and run["pending"] == []
    gamma = 2.0 * (1 - torch.cos(torch.tensor(5 / 10 * torch.pi))) / 2
    # ratio 1 (old = new log-probs): the replay loss is -mean(A) over the rows' tokens, times gamma(t = step + 1)
    assert float(s1.detach()) == pytest.approx(-float(gamma) * (1 + 2 + 3) / 3, rel=1e-6)
    assert float(s2.detach()) == pytest.approx(-float(gamma) * (4 + 5) / 2, rel=1e-6)
    assert m1["spear/replay_rows_trained"] == 3 and m1["spear/replay_coef"] == pytest.approx(float(gamma))
    run["pending"] = [dict(r, replay_adv=1.0) for r in run["pending"] or [{"prompt": [1], "completion": [3],
                                                                            "mask": [1], "old_logps": [0.0]}]]
    ctx.score = None  # outside training (evaluation losses): nothing replayed, the rows wait
    assert S.spear_loss(ctx, **hp)[2] is None and len(run["pending"]) == 1


def test_state_round_trip():
    gen = torch.Generator().manual_seed(3)
    case = CASES["p50_expiry_fifo"]
    hp = SPEAR.hook_hparams(case["hparams"])
    for g, roll in enumerate(case["inputs"]["rollouts"][:3], start=1):
        SPEAR.hook("advantage")(_rollout(roll["rewards"], g, 4, gen, False), **hp)
    snap = SPEAR.state_dict(gen)
    assert set(snap) == set(S.KEYS) and snap["generation"] == 3
    other = torch.Generator()
    SPEAR.load_state_dict(other, snap)
    assert S._run(other) == S._run(gen) and S._run(other) is not S._run(gen)
    snap["batches"].clear()  # a snapshot is a copy
    assert S._run(gen)["batches"]


def test_household_run_replays_with_gradients(tmp_path):
    """Rollouts of the smoke household game through the trainer with a tiny buffer: stored trajectories re-score to
    their old log-probs; a later rollout draws a replay set, the loss scores it with gradients (TokenContext.score)
    and logs the replay term."""
    from test_method_epo import _household_trainer, assert_metrics_contract

    def longer_is_better(completions, completion_ids, **_):  # a 3-step pre-trained policy never wins: give the
        return [0.01 * len(c) for c in completion_ids]          # groups reward variance, so advantages are > 0

    trainer, logs = _household_trainer(tmp_path, "spear", {"trajectory_buffer_size": 1, "max_replay_loss_steps": 2},
                                       reward=longer_is_better, max_steps=4)
    # stored trajectories re-scored by the loss's scorer under the same policy give back their old log-probs: the
    # unpadded prompt, the completion with the environment's tokens and the loss mask line up
    trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(8)])
    stored = [r for b in S._run(trainer._generator)["batches"] for r in b["rows"]]
    assert stored
    with torch.no_grad():
        logps, _ = trainer._sequence_scorer(trainer.model)([r["prompt"] for r in stored],
                                                           [r["completion"] for r in stored])
    for r, lp in zip(stored, logps):
        m = torch.tensor(r["mask"], dtype=torch.bool)
        assert 0 < int(m.sum()) < len(r["completion"])  # model tokens and environment tokens
        torch.testing.assert_close(lp[: len(r["completion"])][m], torch.tensor(r["old_logps"])[m], atol=1e-4,
                                   rtol=1e-4)
    seen = []
    fn = trainer.method.fn

    def spy(ctx, **hp):
        out = fn(ctx, **hp)
        if out[2] is not None:
            assert out[2].requires_grad
            seen.append(out[1])
        return out

    trainer.method.hooks["loss"] = spy
    try:
        trainer.train()
    finally:
        trainer.method.hooks["loss"] = fn
    assert seen and all(m["spear/replay_rows_trained"] >= 1 for m in seen)
    assert all(abs(m["spear/replay_ratio_mean"] - 1) < 0.5 for m in seen)  # a fresh replay: ratio near 1
    run = S._run(trainer._generator)
    assert run["generation"] == 3 and run["mean_history"]
    assert_metrics_contract(logs)
    assert any(r.get("spear/replay_rows", 0) > 0 for r in logs) and all("spear/toolcall_bonus" in r for r in logs
                                                                        if "reward" in r)
