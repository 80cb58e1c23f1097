"""Differential Information (arXiv 2505.23761): the DID entropy, the pair rules, the DPO job with its probe, the
collected curve file, the claim checks, the card and the DAG.

- hand-derived: the DID entropy of two candidates with log-ratios (0, 0) is log 2 (normalised 1) and with
  (log 3, 0) it is H(3/4, 1/4) = 0.5623 nats (normalised 0.8113); it ignores a common shift of the log-ratios;
- the pair rules on hand-made samples; on real base-model samples both rules keep the same questions and the same
  rejected responses and differ only in the chosen one (gold chain vs first correct sample);
- the probe: batched sequence log-probs equal one sequence at a time; at step 0 (policy = reference) the DID entropy
  is exactly uniform and the drifts are 0;
- one real DPO job (TRL DPOTrainer, the DAG's train entry point) on the pinned reasoning base: the metrics contract
  every step, the probe at its steps in result.json and in the metrics rows, the outputs; its curve file and claims;
- bad input: tool tasks, the gold rule without gold chains, broken result files; claim-check branches; the card; the
  DAG dry run.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError
from harness.methods import diff_info as DI
from conftest import snakemake_dry_run

ROOT = Path(__file__).resolve().parents[1]
PINNED_BASE = ROOT / "results" / "models" / "smoke-558476240a4d"  # the pinned smoke-reasoning base model


# ---------------------------------------------------------------------------------------- the DID entropy -----
def test_did_entropy_hand_values():
    h, hn = DI.did_entropy([0.0, 0.0])
    assert h == pytest.approx(math.log(2), abs=1e-15) and hn == pytest.approx(1.0, abs=1e-15)
    h, hn = DI.did_entropy([math.log(3), 0.0])  # q = (3/4, 1/4)
    assert h == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-15)
    assert h == pytest.approx(0.5623351446188083, abs=1e-15) and hn == pytest.approx(0.8112781244591328, abs=1e-15)
    assert DI.did_entropy([math.log(3) + 7.5, 7.5]) == pytest.approx((h, hn), abs=1e-12)  # shift invariant
    assert DI.did_entropy([0.0, 0.0, 0.0, 0.0])[1] == pytest.approx(1.0)
    assert DI.did_entropy([40.0, 0.0, 0.0])[1] < 1e-12  # all of the change on one candidate
    with pytest.raises(ValueError, match="at least 2 candidates"):
        DI.did_entropy([0.3])
    with pytest.raises(ValueError, match="finite"):
        DI.did_entropy([0.0, float("inf")])


def test_distinct_keeps_first_seen_order():
    assert DI.distinct([[1, 2], [3], [1, 2], [3], [4]]) == [[1, 2], [3], [4]]


def test_pair_rules_by_hand():
    s = [DI.Sample([1, 2], False), DI.Sample([3], True), DI.Sample([4, 5], False), DI.Sample([6], True)]
    assert DI.pick_pair(s, "sampled") == ([3], [1, 2])
    assert DI.pick_pair(s, "gold", [9, 9, 2]) == ([9, 9, 2], [1, 2])
    assert DI.pick_pair([DI.Sample([1], True)], "sampled") is None  # no wrong sample
    assert DI.pick_pair([DI.Sample([1], False)], "gold", [9]) is None  # no correct sample: the question is out
    with pytest.raises(ValueError, match="needs the question's gold chain"):
        DI.pick_pair(s, "gold")
    with pytest.raises(ValueError, match="valid: gold, sampled"):
        DI.pick_pair(s, "best")
    assert DI.rule_of("diff_info_gold") == "gold" and DI.rule_of("diff_info_sampled") == "sampled"
    with pytest.raises(ValueError, match="valid: diff_info_gold, diff_info_sampled"):
        DI.rule_of("grpo")


def test_bad_hyperparameters_name_the_limit():
    from harness.methods.registry import get_method

    hp = get_method("diff_info_gold").hook_hparams({})
    DI.check(hp)
    for bad, needle in (({"samples_per_question": 1}, "a pair needs a correct and a wrong sample"),
                        ({"probe_every": 0}, "probe_every must be >= 1"), ({"beta": 0.0}, "beta")):
        with pytest.raises(ValueError, match=needle):
            DI.check({**hp, **bad})


# --------------------------------------------------------------------------------- samples, pairs, probe -----
@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(PINNED_BASE).eval(), AutoTokenizer.from_pretrained(PINNED_BASE)


def test_both_rules_share_questions_and_rejected_and_differ_only_in_chosen(base):
    from transformers import set_seed

    from harness.data.reasoning import boxed_reward
    from harness.data.smoke_tasks import smoke_task
    from harness.methods.registry import get_method
    from harness.train.dpo import Sampler
    from harness.train.dpo_pairs import _pairs, _sample
    from harness.train.sft import gold_completion

    from harness.config.tiers import DataSpec, parse as parse_setting

    model, tok = base
    task = smoke_task("reasoning")
    train_rows, _ = task.splits(parse_setting(DataSpec, {"task": "reasoning", "split_seed": 1234, "n_val": 64,
                                                         "n_train": 200}, "test"))
    rows = train_rows[:12]
    hp = get_method("diff_info_gold").hook_hparams({"samples_per_question": 4})
    set_seed(0)
    sampled = _sample(model, tok, rows, hp, method="diff_info_gold", temperature=1.0, max_len=80, score=task.score,
                      sampler=Sampler)
    assert [len(s) for s in sampled] == [4] * 12
    gold, gsum = _pairs(rows, sampled, "gold", tok=tok, task="reasoning", max_len=80)
    samp, ssum = _pairs(rows, sampled, "sampled", tok=tok, task="reasoning", max_len=80)
    assert gsum["pairs"] == ssum["pairs"] >= 1 and ssum["chosen_is_first_correct_sample"] == 1.0
    for g, s in zip(gold, samp):
        assert g["prompt_ids"] == s["prompt_ids"] and g["rejected_ids"] == s["rejected_ids"]
        text = tok.decode(g["chosen_ids"], skip_special_tokens=True)
        row = next(r for r in rows if tok(r["prompt"], add_special_tokens=False)["input_ids"] == g["prompt_ids"])
        assert g["chosen_ids"][-1] == tok.eos_token_id and text == gold_completion("reasoning", row, random.Random(0))
        assert boxed_reward([text, tok.decode(s["chosen_ids"], skip_special_tokens=True)],
                            [row["answer"]] * 2) == [1.0, 1.0]
        assert not task.score(tok.decode(g["rejected_ids"], skip_special_tokens=True), row["answer"])


def test_batched_sequence_logps_and_the_probe_at_step_zero(base):
    from harness.train.dpo_pairs import DIDProbe, seq_logps

    model, tok = base
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in ("3+4+5=", "1+2+3+4+5+6=", "9+9+9=")]
    comps = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
             for c in (" then 3+4=7 then 7+5=12 so \\boxed{12}", " so \\boxed{21}", " then 9+9=18")]
    batched, lens = seq_logps(model, prompts, comps)
    assert lens == [len(c) for c in comps]
    for p, c, b in zip(prompts, comps, batched):
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        assert float(b) == pytest.approx(sum(float(lp[len(p) - 1 + t, c[t]]) for t in range(len(c))), abs=1e-4)
    probe = DIDProbe(model, cand_prompts=prompts, cand_sets=[comps[:2], comps[:1], comps], pair_prompts=prompts[:2],
                     chosen=comps[:2], rejected=comps[1:])
    assert probe.protocol["probe_prompts_used"] == 2 and probe.protocol["probe_prompts_single_candidate"] == 1
    p0 = probe(model, 0)
    assert p0["did_entropy_norm"] == pytest.approx(1.0, abs=1e-12)
    assert p0["chosen_drift"] == 0.0 and p0["rejected_drift"] == 0.0  # the same model: log-ratios exactly 0
    assert p0["did_entropy"] == pytest.approx((math.log(2) + math.log(3)) / 2)


# ----------------------------------------------------------------------------------------- the DPO job -----
def _job(method: str, **hp):
    from harness.plan import resolve_job

    job = resolve_job("diff_info", "smoke-reasoning", method, 3, trl_overrides={"max_steps": 2})
    job["eval"] = {"every_steps": 2, "n_val": 8, "temperature": 1.0, "max_new_tokens": 80}
    job["hparams"].update(questions=16, samples_per_question=4, probe_prompts=6, probe_samples=4, probe_pairs=6,
                          probe_every=5, pairs_per_step=4, **hp)
    return job


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory):
    from harness.train import job as train

    out = tmp_path_factory.mktemp("did") / "gold"
    r = train.run_job(_job("diff_info_gold"), model_dir=PINNED_BASE, out_dir=out, data_dir=Path("."), mlflow_uri=None)
    return r, out


@pytest.mark.slow
def test_a_dpo_job_killed_after_a_checkpoint_resumes_identical(tmp_path, monkeypatch):
    """The DPO pair path checkpoints like GRPO jobs (issue 16): a job dying right after its step-2 checkpoint, run
    again, ends where an uninterrupted run ends (metrics, held-out curve, the probe's steps, weights)."""
    from conftest import assert_resumed_identical, killed_and_resumed

    job = _job("diff_info_gold")
    job["trl"].update(max_steps=4, save_steps=2)
    job["hparams"]["probe_every"] = 2
    out = tmp_path / "run"
    ref, _ = killed_and_resumed(job, out, monkeypatch, model_dir=PINNED_BASE, checkpoint="checkpoint-2")
    a = json.loads((ref / "result.json").read_text())
    assert [m["step"] for m in a["metrics"]] == [1, 2, 3, 4]
    assert [p["step"] for p in a["diff_info"]["probe"]["steps"]] == [0, 2, 4]
    assert_resumed_identical(ref, out)


def test_dpo_job_logs_the_contract_and_the_probe(gold_run):
    from harness.train.trainer import REQUIRED_METRICS

    r, out = gold_run
    assert r["trainer"] == "dpo" and [m["step"] for m in r["metrics"]] == [1, 2]
    for row in r["metrics"]:
        assert not set(REQUIRED_METRICS) - set(row), sorted(set(REQUIRED_METRICS) - set(row))
        assert "rewards/accuracies" in row and "logps/chosen" in row
    rec = r["diff_info"]
    assert rec["rule"] == "gold" and rec["pairs"]["pairs"] >= 1 and rec["pairs"]["questions"] == 16
    steps = rec["probe"]["steps"]
    assert [p["step"] for p in steps] == [0, 2]  # step 0, then the last step (probe_every 5 > max_steps)
    assert steps[0]["did_entropy_norm"] == pytest.approx(1.0, abs=1e-12) and steps[0]["chosen_drift"] == 0.0
    assert 0 <= steps[-1]["did_entropy_norm"] <= 1 and steps[-1]["chosen_drift"] != 0.0
    assert r["metrics"][-1]["diff_info/chosen_drift"] == steps[-1]["chosen_drift"]
    assert "diff_info/chosen_drift" not in r["metrics"][0]
    assert [e["step"] for e in r["heldout"]] == [0, 2]
    assert (out / "model" / "config.json").exists() and (out / "metrics.jsonl").exists()
    saved = json.loads((out / "result.json").read_text())
    assert saved["diff_info"]["probe"]["settings"] == {"probe_prompts": 6, "probe_samples": 4, "probe_pairs": 6,
                                                       "probe_every": 5}


def test_curve_file_and_claims_from_the_run(gold_run, tmp_path):
    from harness.analyze import did_drift
    from harness.claims.registry import all_checks

    r, out = gold_run
    path = tmp_path / "did_drift.json"
    a = did_drift.run({"methods": ["diff_info_gold", "diff_info_sampled"]}, [out / "result.json"], path,
                      source={"paper": "diff_info", "tier": "smoke-reasoning"})
    saved = json.loads((out / "result.json").read_text())
    assert a["inputs"] == [saved["content_hash"]] and a["result"]["methods_without_runs"] == ["diff_info_sampled"]
    run = a["result"]["runs"]["diff_info_gold/seed3"]
    assert run["final"]["chosen_drift"] == r["diff_info"]["probe"]["steps"][-1]["chosen_drift"]
    checks = all_checks()
    v, n = checks["diff_info_final"]([], analysis="did_drift", metric="chosen_drift", method="diff_info_gold",
                                     direction="higher", analyses=[a])
    assert v == "inconclusive" and "1 seed" in n["reason"]
    v, _ = checks["diff_info_paired"]([], analysis="did_drift", metric="chosen_drift", method="diff_info_gold",
                                      baseline="diff_info_sampled", direction="higher", analyses=[a])
    assert v == "not_run"
    from harness.report.analysis_plots import plots_for

    (tmp_path / "analysis" / "diff_info" / "smoke-reasoning").mkdir(parents=True)
    path.rename(tmp_path / "analysis" / "diff_info" / "smoke-reasoning" / "did_drift.json")
    plots = plots_for(tmp_path, "diff_info", "smoke-reasoning")
    assert [p["name"] for p in plots] == ["did_drift"] and plots[0]["src"].startswith("data:image/png;base64,")
    assert plots_for(tmp_path, "diff_info", "smoke-reasoning")[0]["src"] == plots[0]["src"]  # deterministic bytes


def test_bad_jobs_and_files_are_refused(tmp_path):
    from harness.analyze import did_drift
    from harness.train.dpo import Sampler, _dpo_classes, dpo_args
    from harness.train.dpo_pairs import DPOParts, run_pair_job

    parts = DPOParts(Sampler, _dpo_classes, dpo_args)

    job = _job("diff_info_sampled")
    job["data"] = {**job["data"], "task": "reasoning_calc"}
    with pytest.raises(ConfigError, match="only tasks without a tool are supported: addition, reasoning"):
        run_pair_job(job, model_dir=PINNED_BASE, out_dir=tmp_path, data_dir=Path("."), mlflow_uri=None, parts=parts)
    job = _job("diff_info_gold")
    job["data"] = {**job["data"], "task": "instruct"}
    with pytest.raises(ConfigError, match="tasks that have them: addition, reasoning"):
        run_pair_job(job, model_dir=PINNED_BASE, out_dir=tmp_path, data_dir=Path("."), mlflow_uri=None, parts=parts)
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"kind": "eval_result"}))
    with pytest.raises(ValueError, match="not a train result"):
        did_drift.run({"methods": ["diff_info_gold"]}, [bad], tmp_path / "o.json")
    with pytest.raises(ValueError, match="unknown key 'method'"):
        did_drift.parse_settings({"method": "x"})
    probe = {"settings": {"probe_prompts": 1}, "steps": [{"step": 0, "did_entropy_norm": 1.0, "chosen_drift": 0.0}]}
    r1 = {"job": {"method": "diff_info_gold", "seed": 1}, "diff_info": {"probe": probe, "dpo": {}, "pairs": {}}}
    r2 = {"job": {"method": "diff_info_gold", "seed": 2},
          "diff_info": {"probe": {**probe, "settings": {"probe_prompts": 2}}, "dpo": {}, "pairs": {}}}
    with pytest.raises(ValueError, match="different probe protocols"):
        did_drift.collect([r1, r2], {"methods": ["diff_info_gold"]})
    with pytest.raises(ValueError, match="no DID probe record"):
        did_drift.collect([{"job": {"method": "diff_info_gold", "seed": 1}}], {"methods": ["diff_info_gold"]})


# ------------------------------------------------------------------------------------------------ claims -----
def _did(values: dict) -> dict:
    """A did_drift analysis with runs {method: {seed: (did_entropy_norm, chosen_drift, reward_accuracy)}}."""
    runs = {f"{m}/seed{s}": {"method": m, "seed": s, "final": {"did_entropy_norm": h, "chosen_drift": d},
                             "dpo": {"reward_accuracy_last_half": acc}, "pairs": {"pairs": 10}}
            for m, per in values.items() for s, (h, d, acc) in per.items()}
    return {"kind": "analysis_result", "analysis": "did_drift", "content_hash": "h", "result": {"runs": runs}}


def test_claim_checks_every_branch():
    from harness.claims.papers.diff_info import diff_info_final, diff_info_fits_pairs, diff_info_paired

    a = _did({"diff_info_gold": {1: (0.60, 0.50, 0.9), 2: (0.62, 0.55, 0.8), 3: (0.61, 0.52, 0.95)},
              "diff_info_sampled": {1: (0.80, -0.40, 0.7), 2: (0.82, -0.30, 0.65), 3: (0.79, -0.35, 0.7)}})
    kw = dict(analysis="did_drift", analyses=[a])
    assert diff_info_final([], metric="chosen_drift", method="diff_info_gold", direction="higher", **kw)[0] == \
        "reproduced"
    assert diff_info_final([], metric="chosen_drift", method="diff_info_gold", direction="lower", **kw)[0] == \
        "not_reproduced"
    v, n = diff_info_paired([], metric="did_entropy_norm", method="diff_info_gold", baseline="diff_info_sampled",
                            direction="lower", **kw)
    assert v == "reproduced" and n["per_seed"][2]["diff"] == pytest.approx(-0.2) and n["ci"][1] < 0
    noisy = _did({"diff_info_gold": {1: (0.6, 0.5, 0.9), 2: (0.6, -0.4, 0.9)}})
    v, n = diff_info_final([], metric="chosen_drift", method="diff_info_gold", direction="higher",
                           analysis="did_drift", analyses=[noisy])
    assert v == "inconclusive" and "contains 0" in n["reason"]
    assert diff_info_fits_pairs([], methods=["diff_info_gold", "diff_info_sampled"], min_accuracy=0.6, **kw)[0] == \
        "reproduced"
    v, n = diff_info_fits_pairs([], methods=["diff_info_gold", "diff_info_sampled"], min_accuracy=0.75, **kw)
    assert v == "not_reproduced" and not n["runs"]["diff_info_sampled/seed1"]["ok"]
    assert diff_info_final([], metric="chosen_drift", method="diff_info_gold", direction="higher",
                           analysis="did_drift", analyses=[])[0] == "not_run"
    with pytest.raises(ValueError, match="direction must be one of higher, lower"):
        diff_info_final([], metric="chosen_drift", method="diff_info_gold", direction="up", **kw)


def test_card_parses_and_both_rules_train_alike():
    from harness.claims.registry import all_checks
    from harness.config import load_card
    from harness.methods.registry import get_method
    from harness.plan import resolve_job

    card = load_card("diff_info")
    assert {c["check"] for c in card["claims"]} <= set(all_checks())
    sr = [c for c in card["claims"] if "smoke-reasoning" in ([c["tier"]] if isinstance(c["tier"], str) else c["tier"])]
    assert len(sr) == 5 and all(c["params"].get("analysis") == "did_drift" for c in sr)
    g, s = (resolve_job("diff_info", "smoke-reasoning", m, 42) for m in ("diff_info_gold", "diff_info_sampled"))
    assert g["hparams"] == s["hparams"] and g["trl"] == s["trl"] and g["job_key"] != s["job_key"]
    assert get_method("diff_info_gold").trainer == get_method("diff_info_sampled").trainer == "dpo"
    assert card["tiers"]["smoke-reasoning"]["analysis"] == {"did_drift": {"methods": ["diff_info_gold",
                                                                                        "diff_info_sampled"]}}


def test_dag_dry_run_plans_the_dpo_jobs_and_the_curve_file(tmp_path):
    stdout, counts = snakemake_dry_run(["paper=diff_info", "tier=smoke-reasoning"], tmp_path)
    assert counts["train"] == 9 and counts["analyze_did_drift"] == 1 and counts["verdict"] == 1
    assert "python -m harness.analyze.did_drift" in stdout and "/diff_info_gold/" in stdout
