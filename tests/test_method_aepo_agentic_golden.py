"""AEPO, agentic (harness/methods/aepo_agentic.py, method ``aepo_agentic``): golden against the authors' code
(multi-agent-deep-research/ARPO@ff66660, the ``AEPO/`` folder of RUC-NLPIR/ARPO; numbers in
tests/fixtures/aepo_agentic_golden.json, recomputed by tests/fixtures/generators/aepo_agentic.py from a checkout or
mirror of that repository): the rollout (``vLLMRolloutWithTools.generate_sequences`` with
``enable_dynamic_rollouts=False``) replayed through the harness's Forest and :class:`AepoScheduler`, the loss
(``compute_policy_loss_entropy_balanced_clipping``, token-mean) against the ``aepo_agentic`` loss hook, and the
entropy pre-monitoring split of ``aepo_agentic_dynamic`` (``_calculate_initial_rollouts_dynamical``: H_root, the
monitor's step entropies, m per prompt) recomputed with ``window_entropy``, the Forest and :class:`MonitorScheduler`,
and ``dynamic_initial_rollouts``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.evaluate.branching import Forest
from harness.methods.aepo_agentic import AepoScheduler
from harness.methods.aepo_agentic_dynamic import MonitorScheduler, dynamic_initial_rollouts
from harness.methods.arpo import window_entropy
from harness.methods.context import TokenContext
from harness.methods.registry import get_method
from tests.test_method_arpo import _kinds, replay as arpo_replay, token_rows

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "aepo_agentic_golden.json").read_text())
ROLLOUTS = {c["name"]: c for c in FIXTURE["cases"] if c["kind"] == "rollout"}
LOSSES = {c["name"]: c for c in FIXTURE["cases"] if c["kind"] == "loss"}
DYNAMIC = {c["name"]: c for c in FIXTURE["cases"] if c["kind"] == "dynamic"}
PENALTY = 0.05  # the code's penalty_factor = 1.0 - 0.05 * consecutive_branches


def aepo_scheduler(case: dict, uniform) -> AepoScheduler:
    return AepoScheduler(initial_rollouts=case["N"], beam_size=case["beam_size"], branch_probability=case["tau"],
                         entropy_weight=case["beta"], consecutive_penalty=PENALTY, top_k=10, window=20,
                         uniform=uniform)


def replay(case: dict):
    """ARPO's golden replay (tests/test_method_arpo.py) with the AEPO scheduler."""
    return arpo_replay(case, aepo_scheduler)


@pytest.mark.parametrize("name", sorted(ROLLOUTS))
def test_golden_trees_match_the_authors_rollout(name):
    case = ROLLOUTS[name]
    leaves, raw, used, sched = replay(case)
    want = case["expected"]
    assert leaves == want["leaves"]  # same M trajectories per prompt, same segments, same order
    assert len(used) == want["draws_used"]  # the same potential branches drew, in the same order
    assert sched.streak_seen == want["streaks"]  # the same consecutive-round count c at each of them
    assert raw == pytest.approx(want["entropies"], rel=1e-12, abs=1e-15)


def _loss_inputs(case: dict):
    i = case["inputs"]
    f64 = {"dtype": torch.float64}
    logps = torch.tensor(i["log_prob"], **f64, requires_grad=True)
    mask = torch.tensor(i["response_mask"], **f64)
    ent = torch.tensor(i["entropy"], **f64) if i["entropy"] is not None else None
    ctx = TokenContext.build(logps, torch.tensor(i["old_log_prob"], **f64), torch.tensor(i["advantages"], **f64),
                             mask, entropies=ent)
    return ctx, logps, mask


def _harness_loss(case: dict):
    m = get_method("aepo_agentic")
    hp = case["hparams"]
    ctx, logps, mask = _loss_inputs(case)
    kw = {**m.hook_hparams(), "entropy_balanced_advantage": hp["entropy_balanced_advantage"],
          "clip_low": hp["clip_low"], "clip_high": hp["clip_high"], "clip_ratio_c": hp["clip_ratio_c"]}
    per_token, metrics = m.hook("loss")(ctx, **kw)
    loss = (per_token * mask).sum() / mask.sum()  # verl token-mean
    loss.backward()
    return per_token, loss, logps.grad, metrics, mask


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_golden_loss_matches_the_authors_entropy_balanced_clipping(name):
    case = LOSSES[name]
    per_token, loss, grad, metrics, mask = _harness_loss(case)
    want = case["expected"]
    assert float(loss.detach()) == pytest.approx(want["loss"], rel=1e-6, abs=1e-12)
    assert grad.tolist() == [pytest.approx(row, rel=1e-6, abs=1e-12) for row in want["grad_log_prob"]]
    valid = mask > 0  # off the mask the authors' matrix keeps z(H) != 0, the harness 0; neither is trained
    got_mat = per_token.detach()[valid].tolist()
    want_mat = torch.tensor(want["loss_mat"], dtype=torch.float64)[valid].tolist()
    assert got_mat == pytest.approx(want_mat, rel=1e-6, abs=1e-12)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(want["pg_clipfrac"], rel=1e-6)
    assert metrics["clip_ratio/dual"] == pytest.approx(want["pg_clipfrac_lower"], rel=1e-6)


def test_loss_cases_use_the_released_settings():
    hp = get_method("aepo_agentic").hook_hparams()
    as_run = LOSSES["loss_as_run"]["hparams"]
    assert (hp["clip_low"], hp["clip_high"], hp["clip_ratio_c"], hp["entropy_balanced_advantage"]) == (
        as_run["clip_low"], as_run["clip_high"], as_run["clip_ratio_c"], as_run["entropy_balanced_advantage"])
    assert hp["consecutive_penalty"] == PENALTY and hp["adv_entropy_weight"] == 0.2
    assert all(c["hparams"]["enable_entropy_balanced_clipping"] and c["hparams"]["loss_agg_mode"] == "token-mean"
               for c in LOSSES.values())
    # no micro-batch with a single valid token (the authors' z-score std is NaN there; the harness uses z = 0)
    assert all(sum(map(sum, c["inputs"]["response_mask"])) > 1 for c in LOSSES.values())


def test_golden_cases_cover_the_mechanisms():
    """Branches under the consecutive-round penalty (c >= 1, and c >= 3), a draw the penalty turned down, a
    counter reset, fresh global rollouts; in the loss cases dual clip, the upper clip with its kept gradient, both
    advantage signs and padding."""
    kinds = {name: [k for g in c["expected"]["leaves"] for k in _kinds(g)] for name, c in ROLLOUTS.items()}
    assert "fresh" in kinds["fresh_roots"] and sum("fresh" in k for k in kinds.values()) >= 2
    assert sum("branch" in k for k in kinds.values()) >= 4
    assert max(max(c["expected"]["streaks"], default=0) for c in ROLLOUTS.values()) >= 3
    assert max(ROLLOUTS["long_streak"]["expected"]["streaks"]) >= 3
    branched_at, turned_down, resets = [], 0, 0
    for case in ROLLOUTS.values():
        _, _, used, sched = replay(case)
        s = case["expected"]["streaks"]
        resets += any(a > 0 and b == 0 for a, b in zip(s, s[1:]))
        for u, c, (dh, _, go) in zip(used, sched.streak_seen, sched.decisions):
            if go:
                branched_at.append(c)
            unpenalised = max(0.0, min(1.0, u + case["beta"] * dh))
            turned_down += (not go) and c > 0 and not unpenalised < case["tau"]
    assert sum(c >= 1 for c in branched_at) >= 5 and max(branched_at) >= 3
    assert turned_down >= 1  # the penalty changed a decision
    assert resets >= 1  # a round that added trajectories elsewhere reset a prompt's counter

    dual = upper_kept = 0
    for case in LOSSES.values():
        i, hp, want = case["inputs"], case["hparams"], case["expected"]
        for r, row in enumerate(i["response_mask"]):
            for t, m in enumerate(row):
                if not m:
                    continue
                ratio = math.exp(i["log_prob"][r][t] - i["old_log_prob"][r][t])
                a = i["advantages"][r][t]
                dual += a < 0 and ratio > hp["clip_ratio_c"]
                upper_kept += a > 0 and ratio > 1 + hp["clip_high"] and want["grad_log_prob"][r][t] != 0.0
        assert 0 < want["pg_clipfrac"] < 1
        assert any(0 in row for row in i["response_mask"])  # padding
        assert any(a > 0 for row in i["advantages"] for a in row) and any(a < 0 for row in i["advantages"] for a in row)
    assert dual >= 3 and all(c["expected"]["pg_clipfrac_lower"] > 0 for c in LOSSES.values())
    assert upper_kept >= 3
    assert sum(c["hparams"]["entropy_balanced_advantage"] for c in LOSSES.values()) >= 2
    assert any(not c["hparams"]["entropy_balanced_advantage"] for c in LOSSES.values())


# ---- aepo_agentic_dynamic: the pre-monitoring split (_calculate_initial_rollouts_dynamical) ----

def monitor_replay(case: dict) -> MonitorScheduler:
    """Drive the harness's Forest (groups of one) and :class:`MonitorScheduler` with the case's monitor script: at
    call c every prompt still playing (the authors' order: prompt order) plays its turn c; a turn ending in EOS ends
    its prompt's monitor, a tool call continues it."""
    mon = MonitorScheduler(top_k=10, window=20)
    forest = Forest(case["prompts"], 1, mon, case["vocab_size"])
    call = 0
    while forest.live:
        assert [n.group for n in forest.live] == [i for i, t in enumerate(case["monitor"]) if len(t) > call]
        still = []
        for node in forest.live:
            seg = case["monitor"][node.group][call]
            node.turn_logps.append(token_rows(seg))
            if not seg["eos"]:
                still.append(node)
        assert forest.advance(still) == []  # the monitor never branches nor starts episodes
        call += 1
    forest.check_full()
    return mon


@pytest.mark.parametrize("name", sorted(DYNAMIC))
def test_golden_dynamic_split_matches_the_authors(name):
    case = DYNAMIC[name]
    want, k, vocab = case["expected"], case["n"], case["vocab_size"]
    h_root = [window_entropy(token_rows(seg), vocab) for seg in case["probe"]]
    assert h_root == pytest.approx(want["h_root"], rel=1e-12, abs=1e-15)
    by_turn = [[window_entropy(token_rows(seg), vocab) for seg in turns] for turns in case["monitor"]]
    assert by_turn == [pytest.approx(h, rel=1e-12, abs=1e-15) for h in want["step_entropies"]]
    h_steps = monitor_replay(case).step_entropies()
    assert h_steps == [pytest.approx(h, rel=1e-12, abs=1e-15) for h in want["step_entropies"]]
    assert [dynamic_initial_rollouts(k, hr, hs) for hr, hs in zip(h_root, h_steps)] == want["initial_rollouts_list"]
    hp = get_method("aepo_agentic_dynamic").hook_hparams()
    assert [dynamic_initial_rollouts(k, hr, hs, hp["split_scale"]) for hr, hs in zip(h_root, h_steps)] == want[
        "initial_rollouts_list"]
    assert hp["initial_entropy_tokens"] == want["probe_max_tokens"]  # the probe's length cap
    assert (hp["top_k"], hp["window"]) == (10, 20)  # the code's logprobs=10 and min(20, len) window
    assert all(len(seg["logprobs"]) <= hp["window"] for seg in case["probe"])


def test_golden_dynamic_cases_cover_the_split():
    """m = 1, m = n and values between, for several n; a tie (H_root = mean H_step: int(n / 2) + 1); a monitor
    that ends at its first turn (one of them an EOS-only turn) and monitors of several turns."""
    ms = [(c["n"], m) for c in DYNAMIC.values() for m in c["expected"]["initial_rollouts_list"]]
    assert any(m == 1 for _, m in ms) and any(m == n for n, m in ms) and sum(1 < m < n for n, m in ms) >= 4
    assert len({c["n"] for c in DYNAMIC.values()}) >= 3 and all(c["prompts"] >= 2 for c in DYNAMIC.values())
    ties = [(c["n"], m) for c in DYNAMIC.values() for m, hr, hs in zip(
        c["expected"]["initial_rollouts_list"], c["expected"]["h_root"], c["expected"]["step_entropies"])
        if hs == [hr]]
    assert ties and all(m == n // 2 + 1 for n, m in ties)
    turns = [t for c in DYNAMIC.values() for t in c["monitor"]]
    assert any(len(t) == 1 for t in turns) and any(len(t) >= 3 for t in turns)
    assert any(seg["n"] == 0 and seg["eos"] for t in turns for seg in t)
    assert all(seg["eos"] == (i == len(t) - 1) for t in turns for i, seg in enumerate(t))
