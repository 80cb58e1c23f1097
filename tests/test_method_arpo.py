"""ARPO (harness/methods/arpo.py): golden against the authors' rollout (dongguanting/ARPO@e257337,
``vLLMRolloutWithTools.generate_sequences``; numbers in tests/fixtures/arpo_golden.json, recomputed by
tests/fixtures/generators/arpo.py from a checkout of their repository), the branching rule on synthetic entropy
traces, the step entropy by hand, and the hook's contract."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.evaluate.branching import Forest, window_entries
from harness.methods.arpo import ArpoScheduler, branch_probability, window_entropy
from harness.methods.context import RolloutContext
from harness.methods.registry import get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "arpo_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}


def token_rows(seg: dict) -> list[list[float]]:
    return [[float(x) for x in row.split()] for row in seg["logprobs"]]


def arpo_scheduler(case: dict, uniform) -> ArpoScheduler:
    return ArpoScheduler(initial_rollouts=case["N"], beam_size=case["beam_size"], branch_probability=case["tau"],
                         entropy_weight=case["beta"], top_k=10, window=20, uniform=uniform)


def replay(case: dict, make_scheduler=arpo_scheduler):
    """Drive the harness's Forest and a scheduler (``make_scheduler(case, uniform)``; ARPO's by default) with the
    case's script (segment (call, position) of the authors' run = the position-th episode in play order at turn
    `call`) and recorded draws; return the leaves as lists of segments, the raw step entropies in call order, the
    draws used and the scheduler."""
    draws = list(case["draws"])
    used = []
    sched = make_scheduler(case, lambda: used.append(draws[len(used)]) or used[-1])
    forest = Forest(case["prompts"], case["M"], sched, case["vocab_size"])
    chains = {id(n): [] for n in forest.live}
    raw = []
    for call, segs in enumerate(case["script"]):
        assert len(forest.live) == len(segs), f"call {call}: {len(forest.live)} episodes play, the authors' {len(segs)}"
        still = []
        for j, (node, seg) in enumerate(zip(forest.live, segs)):
            node.turn_logps.append(token_rows(seg))
            chains[id(node)].append([call, j])
            raw.append(window_entropy(node.turn_logps[-1], case["vocab_size"]) * math.log(case["vocab_size"]))
            if not seg["eos"]:
                still.append(node)
        for n in forest.advance(still):
            chains[id(n)] = list(chains[id(forest.groups[n.group][n.parent])]) if n.parent >= 0 else []
    assert not forest.live
    forest.check_full()
    return [[chains[id(n)] for n in g] for g in forest.groups], raw, used, sched


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_trees_match_the_authors_rollout(name):
    case = CASES[name]
    leaves, raw, used, _ = replay(case)
    want = case["expected"]
    assert leaves == want["leaves"]  # same M trajectories per prompt, same segments, same order
    assert len(used) == want["draws_used"]  # the same potential branches drew, in the same order
    assert raw == pytest.approx(want["entropies"], rel=1e-12, abs=1e-15)


def _kinds(group: list) -> list[str]:
    """Per leaf of an expected group: 'branch' (its first segment is an earlier leaf's), 'initial' (starts at call
    0) or 'fresh' (a global rollout started later)."""
    out = []
    for i, leaf in enumerate(group):
        shared = any(leaf[0] == other[0] for other in group[:i])
        out.append("branch" if shared else "initial" if leaf[0][0] == 0 else "fresh")
    return out


def test_golden_cases_cover_the_mechanisms():
    """The fixture exercises branching, fresh global rollouts, the 20-token window and the count cap."""
    kinds = {name: [k for g in c["expected"]["leaves"] for k in _kinds(g)] for name, c in CASES.items()}
    assert sum("branch" in k for k in kinds.values()) >= 3
    assert "fresh" in kinds["fresh_roots"]
    assert kinds["no_branch_room"] == ["initial"] * 4 and kinds["initial_above_n"] == ["initial"] * 3
    assert any(len(s["logprobs"]) == 20 for r in CASES["paper_G16_N8"]["script"] for s in r)
    assert all(len(g) == c["M"] for c in CASES.values() for g in c["expected"]["leaves"])


def test_step_entropy_by_hand():
    turn = [[math.log(0.5), math.log(0.25)], [0.0], [float("-inf"), math.log(0.1)]]
    want = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 0.1 * math.log(0.1)) / math.log(278)
    assert window_entropy(turn, 278) == pytest.approx(want, rel=1e-15)
    assert window_entropy([], 278) == 0.0


def test_recorded_logprobs_are_top_k_plus_the_sampled_token():
    lsm = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]]), -1)
    got = window_entries(lsm, torch.tensor([1, 0]), 2)
    assert got[0] == pytest.approx(lsm[0, [0, 1]].tolist())  # sampled token 1 is in the top 2
    assert got[1] == pytest.approx(lsm[1, [3, 2, 0]].tolist())  # sampled token 0 is not: appended


@pytest.mark.parametrize("dh", [-3.0, -0.5, 0.0, 0.7, 1.9, 4.0])
def test_branch_decision_is_u_below_clip_of_tau_plus_beta_dh(dh):
    """Small-scale claim 3: on a synthetic trace with H_t - H_initial = dh, a potential branch happens exactly when
    the draw u <= clip(0.5 + 0.2 dh, 0, 1)."""
    p = branch_probability(dh, 0.5, 0.2)
    assert p == min(1.0, max(0.0, 0.5 + 0.2 * dh))
    node = _Node(h0=1.0, ht=1.0 + dh)
    for u in [i / 200 for i in range(1, 200)]:
        if abs(u - p) < 1e-9:
            continue
        s = ArpoScheduler(initial_rollouts=1, beam_size=2, branch_probability=0.5, entropy_weight=0.2, top_k=10,
                          window=20, uniform=lambda u=u: u)
        s.vocab = 278
        node.tag.clear()
        node.tag["H"] = [1.0, 1.0 + dh]
        assert s.branch_now(node, []) == (u <= p)


class _Node:
    def __init__(self, h0, ht):
        self.tag, self.turn_logps = {"H": [h0, ht]}, [[], []]

    @property
    def own_turns(self):
        return 2


def test_scheduler_rejects_bad_settings():
    with pytest.raises(ValueError, match="beam_size"):
        ArpoScheduler(initial_rollouts=2, beam_size=0, branch_probability=0.5, entropy_weight=0.2, top_k=10,
                      window=20, uniform=lambda: 0.5)
    with pytest.raises(ValueError, match="branch_probability"):
        ArpoScheduler(initial_rollouts=2, beam_size=2, branch_probability=1.5, entropy_weight=0.2, top_k=10,
                      window=20, uniform=lambda: 0.5)


class _Player:
    def __init__(self):
        self.calls = []

    def play(self, prompts, scheduler=None):
        self.calls.append(scheduler)
        return {"prompt_ids": [[1]] * len(prompts), "completion_ids": [[2]] * len(prompts), "logprobs": None}


def _rctx(training: bool) -> RolloutContext:
    logged = {}
    return RolloutContext(generator=torch.Generator().manual_seed(0), step=0, max_steps=1, group_size=2,
                          processing_class=None, training=training,
                          log_metric=lambda k, v: logged.__setitem__(k, v))


def test_hook_needs_episodes_and_evaluates_flat():
    m = get_method("arpo")
    assert m.rollout_kind == "rollout_func" and m.point == "rollout"
    hp = m.hook_hparams()
    assert (hp["initial_rollouts"], hp["beam_size"], hp["branch_probability"], hp["entropy_weight"],
            hp["top_k"], hp["window"]) == (8, 2, 0.5, 0.2, 10, 20)  # ARPO_7B_Reasoning_1node.sh / the rollout
    with pytest.raises(ValueError, match="task that plays episodes"):
        m.hook("rollout")(["a", "a"], _rctx(True), **hp)
    player = _Player()
    m.hook("rollout")(["g", "g"], _rctx(False), episodes=player, **hp)
    m.hook("rollout")(["g", "g"], _rctx(True), episodes=player, **hp)
    assert player.calls[0] is None and isinstance(player.calls[1], ArpoScheduler)
