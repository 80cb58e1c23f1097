"""Tool-Light (arXiv 2509.23285): golden values from the authors' sampler (asilverlight/Tool-Light @ a432dd0d,
``Inference.calculate_sequence_entropy`` and ``select_rollout_positions`` run as written on stub vLLM outputs:
tests/fixtures/generators/tool_light.py), the step split around tool results, the pair rules, the branched group
(every branch of a prompt's tree in its group; branch prefixes never trained: in the GRPO rollout's prompt part, in
the DPO pair's prompt part), bad settings, and the DPO path end to end (two TRL DPOTrainer stages through
``harness.train.job.run_job``, the path the DAG's train rule runs) on the reasoning_calc task with a tiny model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import tool_light as TL
from harness.methods.context import RolloutContext
from harness.methods.registry import RegistryError, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "tool_light_golden.json").read_text())
CLOSE, ENV, TOK = 99, 98, 5


def _case_ids(case):
    """The case as one completion: each step's tokens (the step's last token closes a call, except the last step),
    then its tool result (environment tokens)."""
    ids, env, ents = [], [], []
    steps = case["steps"]
    for i, st in enumerate(steps):
        n = len(st["logprobs"])
        ids += [TOK] * (n - 1) + [CLOSE if i < len(steps) - 1 else TOK]
        env += [1] * n
        ents += [TL.topk_entropy(r) for r in st["logprobs"]]
        ids += [ENV] * st["result_len"]
        env += [0] * st["result_len"]
        ents += [0.0] * st["result_len"]
    return ids, env, ents


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=[c["name"] for c in FIXTURE["cases"]])
def test_step_scores_and_branch_points_match_authors_code(case):
    ids, env, ents = _case_ids(case)
    steps = TL.split_steps(ids, env, CLOSE)
    assert len(steps) == len(case["steps"])
    for (a, b), exp in zip(steps, case["expected"]["step_scores"]):
        score, n = TL.step_score(ents[a:b], case["windows"])
        assert score == pytest.approx(exp[0], rel=1e-12) and n == exp[1]
    got = TL.branch_points(ents, ids, env, CLOSE, case["windows"], case["max_rollout_steps"])
    exp = case["expected"]["selected"]
    assert [(p, n, s) for p, _, n, s in got] == [(e[0], e[2], e[3]) for e in exp]
    assert [x[1] for x in got] == pytest.approx([e[1] for e in exp], rel=1e-12)


def test_topk_entropy_is_the_exact_entropy_when_k_covers_the_vocabulary():
    logits = torch.randn(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lp = torch.log_softmax(logits, -1)
    exact = float(-(lp.exp() * lp).sum())
    assert TL.topk_entropy(lp.tolist()) == pytest.approx(exact, rel=1e-9)
    assert TL.topk_entropy(lp.topk(5).values.tolist()) < exact  # the code's top-k truncation underestimates


def test_window_rules_and_stable_selection():
    assert TL.window_scores([], [10]) == [(0.0, 10)]
    assert TL.step_score([1.0, 3.0, 0.0], [1, 2, 0]) == (2.0, 2)  # n = 0: the whole step
    assert TL.step_score([0.5] * 4, [10, 20]) == (0.5, 10)        # ties: the first window
    assert TL.select_steps([0.2, 0.9, 0.9, 0.1], 3) == [1, 2, 0]
    assert TL.select_steps([0.3], 3) == [0]


def test_tool_results_are_between_steps_and_a_branch_after_a_call_keeps_the_call():
    ids = [TOK, TOK, CLOSE, ENV, ENV, TOK, TOK]
    env = [1, 1, 1, 0, 0, 1, 1]
    assert TL.split_steps(ids, env, CLOSE) == [(0, 3), (5, 7)]
    ents = [0.1, 0.2, 0.3, 9.0, 9.0, 0.0, 0.0]  # the environment's positions never score
    assert TL.branch_points(ents, ids, env, CLOSE, [10], 1) == [(3, pytest.approx(0.2), 10, 0)]


def _trace(correct, calls, n, truncated=False, src="vanilla"):
    return TL.Trace([TOK] * n, [1] * n, src, correct=correct, calls=calls, truncated=truncated)


def test_pair_rules():
    few, many, wrong_few, wrong_many = _trace(1, 0, 5), _trace(1, 3, 9), _trace(0, 0, 4), _trace(0, 2, 8)
    assert TL.build_pair([wrong_many, many, few, wrong_few], "economy") == (few, many)
    assert TL.build_pair([wrong_many, many, few, wrong_few], "correctness") == (few, wrong_few)
    assert TL.build_pair([few, wrong_many], "economy") == (few, wrong_many)       # no wasteful correct trace
    assert TL.build_pair([few, many], "correctness") == (few, many)               # no wrong trace
    assert TL.build_pair([few], "economy") is None
    assert TL.build_pair([wrong_few, wrong_many], "economy") is None
    done, cut = _trace(0, 0, 3), _trace(0, 0, 9, truncated=True)
    assert TL.build_pair([cut, done], "economy", format_pairs=True) == (done, cut)
    with pytest.raises(ValueError, match="unknown pair rule 'fewest'; valid: economy, correctness"):
        TL.build_pair([few], "fewest")


def test_bad_settings_name_the_valid_choices():
    m = get_method("tool_light")
    with pytest.raises(ValueError, match="pair_rule_stage2 must be one of economy, correctness, got 'x'"):
        TL._check(m.hook_hparams({"pair_rule_stage2": "x"}))
    with pytest.raises(ValueError, match="windows must be a non-empty list"):
        TL._check(m.hook_hparams({"windows": []}))
    with pytest.raises(RegistryError, match="has no hyperparameter 'branches'; valid: beta,"):
        m.resolve({"branches": 3})
    from harness.config import ConfigError
    from harness.train.dpo import stage_steps

    assert stage_steps(100, 0.5) == (50, 50) and stage_steps(2, 0.9) == (1, 1)
    with pytest.raises(ConfigError, match="max_steps must be >= 2"):
        stage_steps(1, 0.5)


class _FakePolicy:
    """Deterministic stand-in for the policy: completions of 6 tokens; entropies rising along the completion."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, **kw):
        self.calls.append((len(prompts), kw.get("max_new_tokens")))
        return [[TOK + (len(p) + j) % 3 for j in range(6 if kw.get("max_new_tokens") is None else
                                                      min(6, kw["max_new_tokens"]))] for p in prompts]

    def token_stats(self, prompts, comps):
        return ([torch.zeros(len(c)) for c in comps],
                [torch.tensor([0.1 * j for j in range(len(c))]) for c in comps])


def _rctx(policy, g, logged):
    return RolloutContext(generator=None, step=0, max_steps=1, group_size=g, processing_class=None,
                          max_completion_length=8, tokenize=lambda ps: [[1, 2, len(p)] for p in ps],
                          generate=policy.generate, token_stats=policy.token_stats, eos_token_ids=(2,),
                          log_metric=lambda k, v: logged.setdefault(k, []).append(v))


def test_the_tree_holds_every_branch_and_branches_share_the_main_prefix():
    hp = get_method("tool_light").hook_hparams({"windows": [1, 2], "max_rollout_counts": 2})
    pol, logged = _FakePolicy(), {}
    trees = TL.sample_tree([[1, 2, 3], [1, 2, 4, 4]], _rctx(pol, 1, logged), hp, close_id=TOK + 2)
    for tree in trees:
        main, branches = tree[0], tree[1:]
        assert main.source == "main" and all(b.source == "branch" for b in branches)
        n_steps = len(TL.split_steps(main.ids, main.env, TOK + 2))
        assert len(branches) == min(hp["max_rollout_steps"], n_steps) * hp["max_rollout_counts"]
        for b in branches:
            assert b.ids[:b.prefix_len] == main.ids[:b.prefix_len] and len(b.ids) <= 8 + b.prefix_len
    new = sum(len(t.ids) - t.prefix_len for tree in trees for t in tree)
    assert logged["tool_light/tokens_generated"] == [float(new)]
    assert all(mx is None or mx >= 1 for _, mx in pol.calls[1:])  # branch budgets: max_completion_length - prefix


def test_grpo_rollout_groups_are_consecutive_and_prefixes_are_prompt_tokens():
    g = 10
    hp = get_method("tool_light").hook_hparams({"windows": [1, 2]})
    out = TL.tool_light_rollout(["ab"] * g + ["abc"] * g, _rctx(_FakePolicy(), g, {}), **hp)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == 2 * g
    for q, base in enumerate(([1, 2, 2], [1, 2, 3])):
        grp = out["prompt_ids"][q * g:(q + 1) * g]
        assert all(p[:3] == base for p in grp)  # all members of the prompt's group, consecutively
        # a branch's prefix is part of its prompt (TRL computes no loss there); its completion is the new tokens
        assert any(len(p) > 3 for p in grp) and all(len(c) >= 1 for c in out["completion_ids"][q * g:(q + 1) * g])


def test_dpo_pairs_put_the_shared_prefix_in_the_prompt():
    from harness.train.dpo import _dpo_classes, build_pairs

    main = TL.Trace([7, 8, 9, 10, 2], [1] * 5, "main", correct=True, calls=0)
    branch = TL.Trace([7, 8, 11, 2], [1] * 4, "branch", prefix_len=2, correct=False, calls=0)
    rows, summary = build_pairs([([main, branch], [])], "correctness", [[1, 3]])
    assert summary["pairs"] == 1 and summary["shared_prefix_tokens"] == 2
    r = rows[0]
    assert r["prompt_ids"] == [1, 3, 7, 8] and r["chosen_ids"] == [9, 10, 2] and r["rejected_ids"] == [11, 2]
    _, Collator = _dpo_classes()
    batch = Collator(pad_token_id=0)([r])
    cm = batch["completion_mask"]
    assert cm[:, :4].sum() == 0 and cm[0].tolist() == [0, 0, 0, 0, 1, 1, 1] and cm[1].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert batch["tl_stats"].tolist() == [[1.0, 5.0, 0.0], [0.0, 4.0, 0.0]]


@pytest.fixture(scope="module")
def calc_base(tmp_path_factory):
    from conftest import TINY_SMOKE
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("tl") / "calc_base"
    pre = {**TINY_SMOKE["pretrain"], "steps": 60, "noise": 0.1, "check_rate": 0.0, "tool_rate": 0.5}
    pretrain(out, TINY_SMOKE["model"], pre, {"task": "reasoning_calc", "split_seed": 1234, "n_val": 64,
                                             "n_train": 200}, log=lambda *a: None)
    return out


def test_dpo_job_runs_both_stages_on_reasoning_calc(calc_base, tmp_path):
    """The DAG's train rule runs harness.train.job.run_job: for tool_light that is two TRL DPOTrainer stages with the
    metrics contract logged every step, per-stage records the claims read, and the final policy saved."""
    from harness.claims.registry import all_checks
    from harness.plan import resolve_job
    from harness.train import job as train
    from harness.train.trainer import REQUIRED_METRICS

    job = resolve_job("tool_light", "smoke-reasoning", "tool_light", 3, trl_overrides={"max_steps": 4})
    assert job["data"]["task"] == "reasoning_calc" and not job["hparams"]["format_pairs"]
    job["data"] = {"task": "reasoning_calc", "split_seed": 1234, "n_val": 64, "n_train": 200}
    job["eval"] = {"every_steps": 2, "n_val": 16, "temperature": 1.0, "max_new_tokens": 40}
    job["trl"]["max_completion_length"] = 40
    job["hparams"].update(questions_per_stage=12, vanilla_rollouts=3, pairs_per_step=4, format_pairs=True)
    r = train.run_job(job, model_dir=calc_base, out_dir=tmp_path, data_dir=Path("."), mlflow_uri=None)
    assert [m["step"] for m in r["metrics"]] == [1, 2, 3, 4]
    assert [m["tool_light/stage"] for m in r["metrics"]] == [1, 1, 2, 2]
    for row in r["metrics"]:
        assert not set(REQUIRED_METRICS) - set(row), sorted(set(REQUIRED_METRICS) - set(row))
        assert math.isfinite(row["cov_logp_adv/mean"]) and 0 <= row["rewards/accuracies"] <= 1
    assert [e["step"] for e in r["heldout"]] == [0, 2, 4]
    s1, s2 = r["stages"]
    assert (s1["sampled_by"], s2["sampled_by"]) == ("base", "stage1") and s1["steps"] == [1, 2] and s2["steps"] == [3, 4]
    for s in (s1, s2):
        smp = s["sampling"]
        assert smp["questions"] == 12 and smp["vanilla_traces"] == 36 and smp["tree_traces"] >= 12
        assert s["pairs"]["pairs"] >= 1 and s["probe"]["calls_per_response"] >= 0
        assert smp["tool_light/tokens_generated"] == smp["tree_tokens_generated"]
    assert s1["sampling"]["calls_per_trace"] > 0  # the base model calls the calculator
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["trainer"] == "dpo" and len(saved["stages"]) == 2
    # the card's per-stage claims read these records (one seed: inconclusive at best, never an error)
    for name, params in (("tool_light_stage_probe", dict(key="sampled_acc", a="stage2", b="base", direction="higher")),
                         ("tool_light_tree_efficiency", dict(stage=1)),
                         ("tool_light_stages_fit_pairs", dict(min_accuracy=0.6))):
        status, numbers = all_checks()[name]([saved], method="tool_light", **params)
        assert status in ("inconclusive", "not_reproduced") and ("per_seed" in numbers or "reason" in numbers)


def _tiny_tool_light_job():
    from harness.plan import resolve_job

    job = resolve_job("tool_light", "smoke-reasoning", "tool_light", 3, trl_overrides={"max_steps": 4})
    job["data"] = {"task": "reasoning_calc", "split_seed": 1234, "n_val": 64, "n_train": 200}
    job["eval"] = {"every_steps": 2, "n_val": 16, "temperature": 1.0, "max_new_tokens": 40}
    job["trl"].update(max_completion_length=40, save_steps=1)
    job["hparams"].update(questions_per_stage=12, vanilla_rollouts=3, pairs_per_step=4, format_pairs=True)
    return job


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["stage1 checkpoint", "stage1 record", "stage2 checkpoint"])
def test_a_killed_two_stage_job_resumes_identical(calc_base, tmp_path, monkeypatch, kill_after):
    """Tool-Light's two DPO stages resume after a kill (harness.train.stages): inside stage 1 (its trainer's
    checkpoint), right after the end of stage 1 is recorded (policy, records, RNG states: stage 2 samples the same
    pairs), and inside stage 2 (the record, then stage 2's checkpoint). The resumed job's metrics, held-out curve,
    per-stage records and weights equal an uninterrupted run's; no checkpoint is left."""
    from conftest import assert_resumed_identical, killed_and_resumed
    from harness.results import compare_results
    from harness.train.stages import StageRecords

    saver, n_saves, left = {"stage1 checkpoint": (None, 1, ["stage1"]),
                            "stage1 record": ((StageRecords, "save"), 1, ["stage1-done"]),
                            "stage2 checkpoint": (None, 2, ["stage1-done", "stage2"])}[kill_after]
    out = tmp_path / "run"
    ref, _ = killed_and_resumed(_tiny_tool_light_job(), out, monkeypatch, model_dir=calc_base, n_saves=n_saves,
                                saver=saver, left=left)
    assert_resumed_identical(ref, out)
    a, b = (json.loads((d / "result.json").read_text()) for d in (ref, out))
    assert [s["stage"] for s in b["stages"]] == [1, 2] and compare_results(a["stages"], b["stages"]) == []
