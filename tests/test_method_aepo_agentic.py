"""AEPO, agentic (harness/methods/aepo_agentic.py). ``aepo_agentic`` (the released code): the branch rule and the
per-prompt consecutive-round counter on synthetic traces, the entropy-balanced clip by hand (golden values against
the authors' code: tests/test_method_aepo_agentic_golden.py). ``aepo_agentic_interp`` (the earlier interpretation):
hand-derived values of the pre-monitoring split, the per-path consecutive-branch penalty, the gradient-preserving
clip of high-entropy tokens and the floored entropy-aware advantage. Both: one tiny household training step through
the trainer (rollout and loss hooks together)."""
from __future__ import annotations

import math

import pytest
import torch

from harness.evaluate.branching import Forest, Node
from harness.methods.aepo_agentic import (AepoScheduler, InterpScheduler, code_branch_probability, entropy_z,
                                          split_count)
from harness.methods.aepo_agentic_dynamic import DynamicAepoScheduler, MonitorScheduler, dynamic_initial_rollouts
from harness.methods.context import TokenContext
from harness.methods.registry import get_method

AEPO = get_method("aepo_agentic")
INTERP = get_method("aepo_agentic_interp")
DYNAMIC = get_method("aepo_agentic_dynamic")


def sched(**kw):
    hp = dict(global_beta=1.0, monitor_turns=3, branch_penalty=0.5, beam_size=2, branch_probability=0.5,
              entropy_weight=0.2, top_k=10, window=20, initial_rollouts=1, uniform=lambda: 0.55)
    hp.update(kw)
    return InterpScheduler(**hp)


def test_split_formula_by_hand():
    # m = round(k sigmoid(beta (H_root - H_tool))), within [1, k]
    assert split_count(8, 1.0, 1.0, 1.0) == 4  # 8 * 0.5
    assert split_count(8, 2.5, 0.5, 1.0) == 7  # 8 * sigmoid(2) = 7.05
    assert split_count(8, 0.5, 2.5, 1.0) == 1  # 8 * sigmoid(-2) = 0.95 -> 1
    assert split_count(8, 0.0, 30.0, 1.0) == 1 and split_count(8, 30.0, 0.0, 1.0) == 8
    assert split_count(16, 1.3, 1.0, 2.0) == math.floor(16 / (1 + math.exp(-0.6)) + 0.5) == 10
    gaps = [x / 4 for x in range(-40, 41)]
    ms = [split_count(8, g, 0.0, 1.0) for g in gaps]
    assert all(1 <= m <= 8 for m in ms) and ms == sorted(ms)  # small-scale claim 1: in [1, k], increasing


def _turn(node: Node, h: float) -> None:
    """Give the node one more played turn of step entropy h (the scheduler's cache)."""
    node.turn_logps.append([[0.0]])
    node.tag.setdefault("H", []).append(h)


def test_pre_monitoring_decides_the_split_then_branches():
    s = sched()
    forest = Forest(2, 8, s, 278)
    assert [len(g) for g in forest.groups] == [1, 1]  # one monitor per group
    mon0, mon1 = forest.live
    for hs in ([2.0, 1.0], [0.5, 1.0]):  # two turns (monitor of group 0, of group 1): not decided, no branch
        _turn(mon0, hs[0]), _turn(mon1, hs[1])
        assert forest.advance([mon0, mon1]) == []
    _turn(mon0, 0.5)  # group 0: H_root 2.0, mean H_tool 0.5 -> m = round(8 sigmoid(1.5)) = 7: six more roots
    _turn(mon1, 1.0)  # group 1: gap 0 -> m = 4: three more roots
    new = forest.advance([mon0, mon1])
    assert [(n.group, n.parent) for n in new] == [(0, -1)] * 6 + [(1, -1)] * 3
    assert s.m == [7, 4]
    for n in forest.live:  # next turn: the new roots' first turns (dH = 0: P = 0.5 < u = 0.55, no branch), the
        _turn(n, n.tag["H"][0] + 1.0 if n.own_turns else 0.0)  # monitors' dH = 1 (P = 0.7): one branch each
    new = forest.advance(list(forest.live))
    assert [(n.group, n.parent) for n in new] == [(0, 0), (1, 0)]
    assert [len(g) for g in forest.groups] == [8, 5]
    assert s.metrics()["aepo_agentic/global_frac"] == pytest.approx((7 / 8 + 4 / 8) / 2)


def test_monitor_that_ends_early_splits_half_and_no_idle_fallback():
    s = sched()
    forest = Forest(1, 8, s, 278)
    _turn(forest.live[0], 1.7)
    new = forest.advance([])  # the monitor ended after one turn: no tool turn, so H_tool = H_root and m = 4
    assert s.m == [4] and [n.parent for n in new] == [-1, -1, -1]


def _decisions(dhs: list[float], penalty: float, u: float = 0.55) -> list[tuple[float, bool]]:
    """(P, branched) per turn of one node whose turn t has dH = dhs[t] (H_initial = 0)."""
    s = sched(branch_penalty=penalty, uniform=lambda: u)
    s.size, s.vocab = 100, 278
    node, out = Node(0, 0), []
    _turn(node, 0.0)
    for dh in dhs:
        _turn(node, dh)
        went = s.branch_now(node, [[node]])
        out.append((s.decisions[-1][1], went))
    return out


def test_consecutive_high_entropy_branching_is_penalised():
    """Small-scale claim 2: with dH = 0.5 at every turn (P = 0.6 > u = 0.55), ARPO branches every turn; AEPO's
    penalty halves P after a high-entropy branch (0.3 < u), so it branches every other turn. Isolated high-entropy
    turns (separated by turns with dH = -1: P = 0.3, halved to 0.15 after the branch; no branch, so the streak
    ends) keep the full P."""
    arpo = _decisions([0.5] * 6, penalty=0.0)
    aepo = _decisions([0.5] * 6, penalty=0.5)
    assert [b for _, b in arpo] == [True] * 6
    assert [p for p, _ in aepo] == pytest.approx([0.6, 0.3, 0.6, 0.3, 0.6, 0.3])
    assert [b for _, b in aepo] == [True, False] * 3
    isolated = _decisions([0.5, -1.0] * 3, penalty=0.5)
    assert [p for p, _ in isolated] == pytest.approx([0.6, 0.15] * 3) and [b for _, b in isolated] == [True, False] * 3
    # per high-entropy turn: consecutive ones branch half as often as isolated ones
    assert sum(b for _, b in aepo) / 6 < sum(b for (p, b), dh in zip(isolated, [0.5, -1.0] * 3) if dh > 0) / 3


def test_streak_is_inherited_by_branches_and_counts_only_high_entropy_branches():
    s = sched(uniform=lambda: 0.0)  # every potential branch goes
    s.size, s.vocab = 100, 278
    src = Node(0, 0)
    _turn(src, 0.0), _turn(src, 0.5)
    assert s.branch_now(src, [[src]])  # high-entropy branch after path turn 1
    child = Node(0, 1, parent=0, prefix_turns=src.path_turns)
    _turn(child, 0.0)
    assert s.streak(child, [[src, child]]) == 1  # the path branched right before: penalised
    low = Node(0, 2)
    _turn(low, 0.0), _turn(low, -0.5)
    s.branch_now(low, [[low]])  # branched, but dH < 0: not a high-entropy branch
    _turn(low, 0.5)
    assert s.streak(low, [[low]]) == 0


def _ctx(adv, logps, old, ent, mask):
    logps = torch.tensor(logps, requires_grad=True)
    return TokenContext.build(logps, torch.tensor(old), torch.tensor(adv), torch.tensor(mask),
                              entropies=torch.tensor(ent)), logps


def test_entropy_z_by_hand():
    z = entropy_z(torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    # valid entropies 1, 2, 3: mean 2, unbiased std 1
    assert z.tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert entropy_z(torch.ones(1, 3), torch.ones(1, 3)).tolist() == [[0.0, 0.0, 0.0]]  # std 0 -> 1


def test_gradient_preserving_clip_and_entropy_aware_advantage_by_hand():
    """Token 0: high entropy, A > 0, ratio 1.5 > 1.2 (clipped); token 1: low entropy, same ratio (clipped);
    token 2: high entropy, ratio 1 (inside); token 3: low entropy, A < 0, ratio 0.5 < 0.8 (clipped)."""
    lr = math.log(1.5)
    ent = [[3.0, 1.0, 3.0, 1.0]]  # z: +1, -1, +1, -1 (mean 2, unbiased std 2/sqrt(3) -> z = +-sqrt(3)/2)
    ctx, logps = _ctx([[1.0, 1.0, 1.0, -1.0]], [[lr, lr, 0.0, math.log(0.5)]], [[0.0] * 4], ent, [[1.0] * 4])
    loss, m = INTERP.hook("loss")(ctx, **INTERP.hook_hparams())
    z = math.sqrt(3) / 2
    f_hi, f_lo = 1 + 0.2 * z, 1 - 0.2 * z
    want = [-f_hi * 1.2, -f_lo * 1.2, -f_hi * 1.0, f_lo * 0.8]  # -min(r A', clip(r) A'): PPO's forward values
    assert loss.detach()[0].tolist() == pytest.approx(want)
    loss.sum().backward()
    # d loss / d logp: high-entropy clipped token keeps -A' * clip(r); low-entropy clipped tokens get 0 (PPO)
    assert logps.grad[0].tolist() == pytest.approx([-f_hi * 1.2, 0.0, -f_hi * 1.0, 0.0])
    assert m["clip_ratio/region_mean"] == 0.75 and m["aepo_agentic/high_entropy_clipped_frac"] == 0.25
    assert m["aepo_agentic/high_entropy_frac"] == 0.5 and m["aepo_agentic/adv_factor_mean"] == pytest.approx(1.0)


def test_advantage_factor_never_flips_the_sign():
    ctx, _ = _ctx([[1.0, 1.0, 1.0]], [[0.0] * 3], [[0.0] * 3], [[0.0, 0.0, 30.0]], [[1.0] * 3])
    loss, m = INTERP.hook("loss")(ctx, **{**INTERP.hook_hparams(), "adv_entropy_weight": 2.0})
    # z = -0.577, -0.577, 1.155 -> factors 1 - 1.155 < 0 -> 0 on the low-entropy tokens
    assert loss.detach()[0, :2].tolist() == [0.0, 0.0]
    assert m["aepo_agentic/adv_factor_zero_frac"] == pytest.approx(2 / 3)


def test_registration():
    for m in (AEPO, INTERP):
        assert m.point == "rollout+loss" and m.rollout_kind == "rollout_func" and m.paper == "aepo_agentic"
    assert "initial_rollouts" not in INTERP.hparams  # one monitor starts every group
    hp = INTERP.hook_hparams()
    assert (hp["global_beta"], hp["monitor_turns"], hp["branch_penalty"], hp["adv_entropy_weight"]) == (
        1.0, 4, 0.5, 0.2)
    hp = AEPO.hook_hparams()  # the released scripts' values (sources in the module)
    assert (hp["initial_rollouts"], hp["beam_size"], hp["branch_probability"], hp["entropy_weight"],
            hp["consecutive_penalty"], hp["clip_low"], hp["clip_high"], hp["clip_ratio_c"]) == (
        6, 2, 0.5, 0.2, 0.05, 0.2, 0.2, 3.0)
    assert hp["entropy_balanced_advantage"] is False  # inert as released (entropy_coeff 0)


def _code_sched(u, **kw):
    hp = dict(initial_rollouts=2, beam_size=2, branch_probability=0.5, entropy_weight=0.2, consecutive_penalty=0.05,
              top_k=10, window=20, uniform=lambda: u)
    hp.update(kw)
    return AepoScheduler(**hp)


@pytest.mark.parametrize("c", [0, 1, 4, 10, 20, 25])
@pytest.mark.parametrize("dh", [-2.0, -0.3, 0.0, 0.4, 3.0])
def test_code_branch_rule_is_u_plus_w_dh_times_penalty_at_least_tau(dh, c):
    """A potential branch goes exactly when clip((u + 0.2 dH)(1 - 0.05 c), 0, 1) >= 0.5; the logged P(branch) is
    the share of u in (0, 1) for which it goes."""
    f = max(0.0, 1 - 0.05 * c)
    node = Node(0, 0)
    _turn(node, 1.0), _turn(node, 1.0 + dh)
    went = []
    for u in [i / 400 for i in range(1, 400)]:
        s = _code_sched(u)
        s.start(1, 8, 278)
        s.streaks = [c]
        got = s.branch_now(node, [[node]])
        assert got == (max(0.0, min(1.0, (u + 0.2 * dh) * f)) >= 0.5)
        went.append(got)
    p = code_branch_probability(dh, 0.5, 0.2, 0.05, c)
    assert sum(went) / len(went) == pytest.approx(p, abs=0.01)
    assert (p == 0.0) if f == 0 else p == pytest.approx(min(1.0, max(0.0, 1 - 0.5 / f + 0.2 * dh)))


def test_code_counter_counts_rounds_per_prompt_and_resets():
    """c (per prompt) rises by one in each round in which the prompt got a new trajectory, drops to 0 in a round
    that adds trajectories elsewhere only, and stays put in a round that adds none anywhere."""
    s = _code_sched(0.9)  # u = 0.9: every potential branch at dH = 0 goes while c < 9 (0.9 f >= 0.5)
    forest = Forest(2, 6, s, 278)
    assert [len(g) for g in forest.groups] == [2, 2]
    a0, a1, b0, b1 = forest.live
    for n in (a0, a1, b0, b1):
        _turn(n, 0.5)
    forest.advance([a0, a1, b0, b1])  # both prompts branch (one per active trajectory, beam 2): 4 each
    assert s.streaks == [1, 1] and [len(g) for g in forest.groups] == [4, 4]
    live = list(forest.live)
    for n in live:
        _turn(n, 0.5)
    forest.advance([n for n in live if n.group == 0])  # prompt 1 finished all its episodes: no new trajectory
    assert [len(g) for g in forest.groups] == [6, 5]  # prompt 1 got a fresh global one: that counts too
    assert s.streaks == [2, 2]
    live = list(forest.live)
    for n in live:
        _turn(n, 0.5)
    forest.advance([n for n in live if n.group == 0])  # prompt 0 is full; prompt 1 gets its last fresh global one
    assert [len(g) for g in forest.groups] == [6, 6] and s.streaks == [0, 3]
    live = list(forest.live)
    for n in live:
        _turn(n, 0.5)
    forest.advance(live)  # both full: nothing added anywhere, the counters stay
    assert s.streaks == [0, 3]


def test_code_clip_keeps_the_gradient_above_and_dual_clips_below():
    """Token 0: A > 0, r = 1.5 > 1.2: value 1.2, gradient (1 + eps_high) = 1.2 (PPO: 0); token 1: A < 0, r = 1.5:
    unclipped (-A r); token 2: A > 0, r = 1 inside; token 3: A < 0, r = 0.5 < 0.8: value 0.8, no gradient (the
    lower bound is a constant); token 4: A < 0, r = 4: dual clip at c = 3, no gradient; token 5: padding."""
    lr = math.log(1.5)
    ctx, logps = _ctx([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]], [[lr, lr, 0.0, math.log(0.5), math.log(4.0), lr]],
                      [[0.0] * 6], [[3.0, 1.0, 3.0, 1.0, 2.0, 9.0]], [[1.0] * 5 + [0.0]])
    loss, m = AEPO.hook("loss")(ctx, **AEPO.hook_hparams())
    assert loss.detach()[0, :5].tolist() == pytest.approx([-1.2, 1.5, -1.0, 0.8, 3.0])
    (loss * ctx.mask).sum().backward()
    assert logps.grad[0].tolist() == pytest.approx([-1.2, 1.5, -1.0, 0.0, 0.0, 0.0])
    assert m["clip_ratio/region_mean"] == pytest.approx(2 / 5) and m["clip_ratio/dual"] == pytest.approx(1 / 5)
    assert m["aepo_agentic/clipped_kept_gradient_frac"] == pytest.approx(1 / 5)
    assert m["aepo_agentic/high_entropy_clipped_frac"] == pytest.approx(1 / 5)  # token 0 is above the mean
    assert "aepo_agentic/adv_factor_mean" not in m  # the advantage term is off as released


def test_code_entropy_balanced_advantage_when_switched_on_has_no_floor():
    ctx, _ = _ctx([[1.0, 1.0, 1.0]], [[0.0] * 3], [[0.0] * 3], [[0.0, 0.0, 30.0]], [[1.0] * 3])
    loss, m = AEPO.hook("loss")(ctx, **{**AEPO.hook_hparams(), "entropy_balanced_advantage": True,
                                        "adv_entropy_weight": 2.0})
    z = entropy_z(ctx.entropies, ctx.mask)[0]
    assert loss.detach()[0].tolist() == pytest.approx((-(1 + 2.0 * z)).tolist())  # factor 1 - 1.155 < 0: flips
    assert m["aepo_agentic/adv_factor_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize("method,hparams,key", [("aepo_agentic_interp", {"monitor_turns": 2}, "aepo_agentic/global_frac"),
                                                ("aepo_agentic", {"initial_rollouts": 2}, "aepo_agentic/streak_mean"),
                                                ("aepo_agentic_dynamic", {"initial_entropy_tokens": 8},
                                                 "aepo_agentic/h_root")])
def test_tiny_household_step_with_both_hooks(tmp_path, method, hparams, key):
    import yaml

    from harness.config import REPO_ROOT
    from harness.train.job import run_job
    from harness.train.pretrain import pretrain

    t = yaml.safe_load((REPO_ROOT / "config" / "tiers" / "smoke-agent.yaml").read_text())
    model = {**t["model"], "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
    pre = {**t["pretrain"], "steps": 3, "batch_size": 2}
    data = {**t["data"], "n_train": 20, "n_val": 6}
    pretrain(tmp_path / "base", model, pre, data, log=lambda *_: None)
    job = {"tier": "smoke-agent", "method": method, "seed": 1, "hparams": hparams,
           "model": model, "data": data, "pretrain": pre, "eval": {**t["eval"], "n_val": 6, "every_steps": 1},
           "job_key": "test", "trl": {**t["trl"], "max_steps": 1, "per_device_train_batch_size": 8,
                                      "num_generations": 4, "steps_per_generation": 1}}
    r = run_job(job, model_dir=tmp_path / "base", out_dir=tmp_path / "job", data_dir=tmp_path, mlflow_uri=None,
                save_model=False)
    m = r["metrics"][0]
    assert {key, "aepo_agentic/high_entropy_frac", "tree/token_ratio"} <= set(m) and math.isfinite(m["loss"])
    if method != "aepo_agentic":  # a split: m of k = 4 global rollouts per group, 1 <= m <= 4
        assert 0.25 <= m["aepo_agentic/global_frac"] <= 1.0
    if method == "aepo_agentic_dynamic":  # the probe and the monitor ran; their episodes are not in the batch
        assert m["aepo_agentic/h_root"] > 0 and m["aepo_agentic/h_step_monitor"] > 0


# ---- aepo_agentic_dynamic: the released split (_calculate_initial_rollouts_dynamical), checked by hand ----

@pytest.mark.parametrize("k,h_root,h_steps,expected", [
    (12, 0.10, [0.10], 7),              # diff 0: int(12 * 0.5) + 1 = 7 (the code's "round up" is int() + 1)
    (12, 0.30, [0.10, 0.14], 7),        # x = 0.5 * 0.18 = 0.09, sigmoid 0.5225, 12 * 0.5225 = 6.27 -> 7
    (12, 4.0, [0.0], 11),               # x = 2, sigmoid 0.8808, 10.57 -> 11
    (12, 40.0, [0.0], 12),              # sigmoid -> 1: int(12) + 1 = 13, capped at k
    (12, 0.0, [40.0], 1),               # sigmoid -> 0: 0 + 1
    (8, 0.2, [], 5),                    # no step entropies: mean H_step = H_root, int(4) + 1
    (1, 0.5, [0.1], 1),
])
def test_dynamic_split_count_is_the_codes(k, h_root, h_steps, expected):
    assert dynamic_initial_rollouts(k, h_root, h_steps) == expected


def test_dynamic_split_scale_and_the_code_by_hand():
    # the code: sigmoid_input = 0.5 * (H_root - mean), initial = int(n * sigmoid) + 1, then max(1, min(., n))
    for k, hr, hs in ((16, 0.9, [0.2, 0.4, 0.3]), (6, 0.05, [0.5]), (12, 1.3, [1.3, 1.1])):
        mean = sum(hs) / len(hs)
        want = max(1, min(int(k / (1 + math.exp(-0.5 * (hr - mean)))) + 1, k))
        assert dynamic_initial_rollouts(k, hr, hs) == want
    assert dynamic_initial_rollouts(12, 1.0, [0.0], scale=2.0) == int(12 / (1 + math.exp(-2.0))) + 1


def test_dynamic_scheduler_starts_each_group_with_its_m_and_reports_the_split():
    s = DynamicAepoScheduler(initial_counts=[3, 8, 1], beam_size=2, branch_probability=0.5, entropy_weight=0.2,
                             consecutive_penalty=0.05, top_k=10, window=20, uniform=lambda: 0.0)
    forest = Forest(3, 4, s, 100)
    assert [len(g) for g in forest.groups] == [3, 4, 1]  # m capped at the group size k = 4
    out = s.metrics()
    fr = [0.75, 1.0, 0.25]
    assert out["aepo_agentic/global_frac"] == pytest.approx(sum(fr) / 3)
    assert out["aepo_agentic/global_frac_std"] == pytest.approx(math.sqrt(sum((x - 2 / 3) ** 2 for x in fr) / 3))
    with pytest.raises(ValueError, match="2 split counts for 3 groups"):
        Forest(3, 4, DynamicAepoScheduler(initial_counts=[1, 2], beam_size=2, branch_probability=0.5,
                                          entropy_weight=0.2, consecutive_penalty=0.05, top_k=10, window=20,
                                          uniform=lambda: 0.0), 100)


def test_monitor_plays_one_episode_per_prompt_and_never_grows():
    mon = MonitorScheduler(top_k=2, window=3)
    forest = Forest(2, 1, mon, 100)
    assert [len(g) for g in forest.groups] == [1, 1]
    a, b = forest.live
    a.turn_logps += [[[math.log(0.5), math.log(0.5)]], [[math.log(0.25)] * 2]]
    b.turn_logps += [[[math.log(1.0)]]]
    assert forest.advance([a]) == [] and forest.live == [a]
    hs = mon.step_entropies()
    assert hs[0] == pytest.approx([math.log(2) / math.log(100), 2 * 0.25 * math.log(4) / math.log(100)])
    assert hs[1] == pytest.approx([0.0])
    forest.check_full()


def test_dynamic_registration():
    assert DYNAMIC.point == "rollout+loss" and DYNAMIC.paper == "aepo_agentic"
    hp = DYNAMIC.hook_hparams()
    assert "initial_rollouts" not in hp and (hp["initial_entropy_tokens"], hp["split_scale"]) == (50, 0.5)
    assert {k: v for k, v in hp.items() if k not in ("initial_entropy_tokens", "split_scale")} == {
        k: v for k, v in AEPO.hook_hparams().items() if k != "initial_rollouts"}
