"""1-shot RLVR (harness/methods/one_shot_rlvr.py, harness/data/selection.py): the selection rules against the authors'
code (ypwang61/One-Shot-RLVR@21ed529e data/data_selection.py, numbers in tests/fixtures/one_shot_rlvr_golden.json,
generator tests/fixtures/generators/one_shot_rlvr.py), the history recorder, the data hook, the entropy-only
ablation, the claim check, and one real training step on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.data import selection as S
from harness.methods import one_shot_rlvr as M
from harness.methods.context import BatchContext, RewardContext
from harness.methods.registry import get_method

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "one_shot_rlvr_golden.json").read_text())
SHARED = ROOT.parent / "shared" / "data" / "train_one_shot_rlvr"


def _history(case) -> dict:
    h = case["input"]["history"]
    return {k: [int(c) / 8 for c in v] for k, v in h.items()} if case["input"]["encoding"] == "eighths" else h


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["name"])
@pytest.mark.parametrize("rule", ["std", "lim"])
def test_ranking_matches_authors_code(case, rule):
    ranked = S.ranking(_history(case), rule)
    exp = case["expected"]
    assert [int(k) for k, _ in ranked] == exp[f"{rule}_order"]
    top = [s for _, s in ranked[: len(exp[f"{rule}_top_scores"])]]
    assert top == pytest.approx(exp[f"{rule}_top_scores"], rel=1e-12, abs=1e-14)


def test_authors_history_gives_pi1_and_pi13():
    """The authors' own history ranks example 124 first and 682 thirteenth by std: pi_1 and pi_13 of the paper."""
    order = FIXTURE["cases"][0]["expected"]["std_order"]
    assert order[0] == 124 and order[12] == 682
    if SHARED.is_dir():  # the shipped pi_1 / pi_13 sets are those examples (index = extra_info.index)
        for name, idx, gt in (("pi1_r128.jsonl", 124, "12.8"), ("pi13_r128.jsonl", 682, "\\frac{4}{3}")):
            rows = [json.loads(x) for x in (SHARED / name).read_text().splitlines()]
            assert {r["extra_info"]["index"] for r in rows} == {idx}
            assert rows[0]["reward_model"]["ground_truth"] == gt


def test_fixture_names_its_source():
    assert "21ed529ec90002597c92aee957af1dd8166bb66c" in FIXTURE["source"]
    synth = FIXTURE["cases"][1]["input"]["history"]
    assert len({len(v) for v in synth.values()}) > 1  # lim truncates to the shortest history: exercised


def test_recorder_uses_the_authors_aggregation():
    rec = S.HistoryRecorder(group_size=4)
    rows = [{"prompt": "a", "answer": "1", "row_index": 3}] * 4 + [{"prompt": "b", "answer": "2", "row_index": 9}] * 8
    # row 3 once: 3 of 4 correct; row 9 twice in the batch (8 responses, 5 correct): int(5) // (8 / 4) / 4 = 0.5
    rec.record(rows, [1, 1, 0, 1] + [1, 1, 1, 0, 1, 1, 0, 0])
    rec.record(rows[:4], [0, 0, float("nan"), 1])
    assert rec.history == {"3": [0.75, 0.25], "9": [0.5]}
    assert rec.rows["9"] == {"prompt": "b", "answer": "2"}
    with pytest.raises(ValueError, match="row_index"):
        rec.record([{"prompt": "a"}], [1.0])


def test_random_rule_is_seeded_and_a_permutation():
    hist = {str(i): [0.5, 0.25] for i in range(30)}
    a, b, c = S.ranking(hist, "random", 1), S.ranking(hist, "random", 1), S.ranking(hist, "random", 2)
    assert a == b and a != c and sorted(k for k, _ in a) == sorted(hist)


def test_bad_rules_and_degenerate_histories():
    with pytest.raises(ValueError, match="valid: std, lim, random"):
        S.ranking({"1": [0.5]}, "variance")
    with pytest.raises(ValueError, match="always solved"):
        S.lim_scores({"1": [1.0, 1.0], "2": [1.0]})
    with pytest.raises(ValueError, match="non-empty"):
        S.lim_scores({"1": []})


def _ranking_file(tmp_path, entries) -> str:
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps({"kind": "ranking", "rule": "std", "ranking": entries}))
    M._ranking.cache_clear()
    return str(path)


ENTRIES = [{"index": 7, "score": 0.45, "visits": 10, "row": {"prompt": "3+4=", "answer": "7"}},
           {"index": 2, "score": 0.30, "visits": 10, "row": {"prompt": "1+1=", "answer": "2"}}]


def test_data_hook_duplicates_the_selected_example(tmp_path):
    path = _ranking_file(tmp_path, ENTRIES)
    rows = [{"prompt": f"{i}+0=", "answer": str(i)} for i in range(5)]
    ctx = BatchContext(stage="prompts", group_size=8, rows=rows)
    dec = M.one_shot_data(ctx, ranking=path, rank=0)
    assert dec.rows == [ENTRIES[0]["row"]] * 5 and dec.metrics["one_shot/example_index"] == 7.0
    assert M.one_shot_data(ctx, ranking=path, rank=1).rows == [ENTRIES[1]["row"]] * 5
    scored = BatchContext(stage="scored", group_size=4, rewards=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert M.one_shot_data(scored, ranking=path, rank=0).metrics["one_shot/train_acc"] == 0.75
    assert M.one_shot_entropy_data(scored, ranking=path, rank=0) is None


def test_data_hook_errors_name_the_fix(tmp_path):
    ctx = BatchContext(stage="prompts", group_size=2, rows=[{"prompt": "x"}])
    with pytest.raises(ValueError, match="upstream input 'ranking'"):
        M.one_shot_data(ctx, ranking=None, rank=0)
    with pytest.raises(ValueError, match=r"valid: 0\.\.1"):
        M.one_shot_data(ctx, ranking=_ranking_file(tmp_path, ENTRIES), rank=2)
    (tmp_path / "other.json").write_text(json.dumps({"kind": "train_history"}))
    with pytest.raises(ValueError, match="not a ranking file"):
        M.one_shot_data(ctx, ranking=str(tmp_path / "other.json"), rank=0)


def test_entropy_only_ablation_has_no_outcome_reward():
    m = get_method("one_shot_entropy")
    assert m.point == "data+reward" and m.task_reward_weight == 0.0 and m.trl_overrides == {"entropy_coef": 0.001}
    rctx = RewardContext(prompts=["p"] * 3, completions=["a", "b", "c"], completion_ids=[[1], [2], [3]], group_size=3)
    assert m.hook("reward")(rctx) == [0.0, 0.0, 0.0]
    assert get_method("one_shot").hparams["rank"].default == 0  # pi_1 (data_selection.sh --top_index 0)
    assert get_method("one_shot_random").hook("data") is M.one_shot_data


def _result(seed, acc_steps, evals):
    return {"job": {"method": "one_shot", "seed": seed},
            "metrics": [{"step": s, "one_shot/train_acc": a} for s, a in acc_steps],
            "heldout": [{"step": s, "sampled_acc": a} for s, a in evals]}


def test_post_saturation_check():
    from harness.claims.registry import all_checks

    chk = all_checks()["one_shot_post_saturation"]
    acc = [(s, min(1.0, 0.5 + 0.1 * s)) for s in range(1, 21)]  # mean of 2 steps first >= 0.9 at step 5
    rising = [(s, 0.3 + 0.01 * s) for s in range(0, 21, 2)]
    flat = [(s, 0.5) for s in range(0, 21, 2)]
    kw = dict(method="one_shot", saturation=0.9, window=2, first_evals=2, last_evals=3, min_gain=0.02)
    v, n = chk([_result(1, acc, rising), _result(2, acc, rising)], **kw)
    assert v == "reproduced" and n["per_seed"][1]["saturation_step"] == 5
    assert chk([_result(1, acc, rising), _result(2, acc, flat)], **kw)[0] == "not_reproduced"
    never = [(s, 0.5) for s in range(1, 21)]
    assert chk([_result(1, never, rising), _result(2, acc, rising)], **kw)[0] == "inconclusive"


def test_one_real_training_step(tiny_base, tmp_path):
    """one_shot through HarnessGRPOTrainer on the tiny model: every generated prompt is the selected example."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig

    from harness.data import smoke
    from harness.train.trainer import HarnessGRPOTrainer

    set_seed(0)
    rows = smoke.rows(smoke.split_pairs(512, 1234)[0][:32])
    top = {"index": 5, "score": 0.4, "visits": 3, "row": rows[5]}
    path = _ranking_file(tmp_path, [top, {"index": 0, "score": 0.1, "visits": 3, "row": rows[0]}])
    tok = AutoTokenizer.from_pretrained(tiny_base)
    args = GRPOConfig(output_dir=str(tmp_path / "t"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                      per_device_train_batch_size=16, num_generations=4, max_completion_length=4, max_steps=1,
                      logging_steps=1, seed=0, disable_tqdm=True)
    tr = HarnessGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_base), reward_funcs=[smoke.exact_match_reward],
                            args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                            method=get_method("one_shot"), hparams={"ranking": path})
    seen = []
    score = tr._score_batch
    tr._score_batch = lambda inputs: (seen.extend(r["prompt"] for r in inputs), score(inputs))[1]
    tr.train()
    assert len(seen) == 16 and set(seen) == {rows[5]["prompt"]}
    logged = {k for h in tr.state.log_history for k in h}
    assert {"one_shot/example_index", "one_shot/train_acc"} <= logged
