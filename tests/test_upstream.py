"""Upstream inputs (harness/plan "Upstream inputs", rules/train.smk, harness/train/job.py): a job whose method takes
another job's or rule's output. Existing jobs keep their content keys; a one-shot job depends on its ranking,
which depends on a ranking run that records its training history; other kinds (e.g. a PRM model dir) plan the
same way; and a tiny end-to-end run goes history -> ranking -> one-shot data hook on the tiny model."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import harness.plan as plan
from harness.config import ConfigError, load_card
from harness.plan import job_dir, resolve_job, upstream_plan
from conftest import snakemake_dry_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("paper,tier", [("copo", "smoke-reasoning"), ("laser", "smoke-reasoning"),
                                        ("copo", "smoke"), ("empo", "smoke-reasoning")])
def test_existing_jobs_keep_their_keys(paper, tier):
    """The resolved jobs of landed cards equal the jobs their pinned verdicts judged (already-trained jobs are not
    retrained): same job key and config hash, and no upstream/history fields."""
    verdict = json.loads((ROOT / "results" / paper / tier / "verdict.json").read_text())
    assert verdict["runs"]
    for run in verdict["runs"].values():
        job = resolve_job(paper, tier, run["method"], int(run["seed"]), check_trl=True)
        assert (job["job_key"], job["config_hash"]) == (run["job_key"], run["config_hash"])
        assert "upstream" not in job and "history" not in job and job_dir(job).startswith("jobs/")


def test_one_shot_job_depends_on_a_ranking_of_a_recorded_run():
    tier = "smoke-reasoning"
    std = resolve_job("one_shot_rlvr", tier, "one_shot", 7)
    rnd = resolve_job("one_shot_rlvr", tier, "one_shot_random", 7)
    grpo = resolve_job("one_shot_rlvr", tier, "grpo", 7)
    u, r = std["upstream"]["ranking"], rnd["upstream"]["ranking"]
    assert (u["rule"], r["rule"], u["seed"]) == ("std", "random", 7)
    assert u["path"] == f"upstream/ranking/{u['key']}/ranking.json" and u["key"] != r["key"]
    assert u["run_dir"] == r["run_dir"]  # one ranking run per seed serves both rules
    assert std["hparams"]["ranking"] is None  # the path is filled at run time, not hashed
    inputs, runs = upstream_plan("one_shot_rlvr", tier, "one_shot", 7)
    (rdir, run), = runs.items()
    assert inputs == std["upstream"] and rdir == u["run_dir"] and rdir.startswith("recorded/")
    assert run["history"] == {"n_train": 128} and run["method"] == "grpo" and run["seed"] == 7
    assert run["job_key"] != grpo["job_key"] and "upstream" not in grpo  # the plain baseline is the shared job
    assert run["trl"] == grpo["trl"]
    other_seed = resolve_job("one_shot_rlvr", tier, "one_shot", 1)["upstream"]["ranking"]
    assert other_seed["key"] != u["key"] and other_seed["run_dir"] != u["run_dir"]


def _with_upstream(monkeypatch, block: dict, paper="one_shot_rlvr", tier="smoke-reasoning"):
    card = load_card(paper)
    card["tiers"][tier]["upstream"] = block
    monkeypatch.setattr(plan, "load_card", lambda p: copy.deepcopy(card) if p == paper else load_card(p))


def test_changing_the_producer_changes_the_job_key(monkeypatch):
    base = resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    _with_upstream(monkeypatch, {"one_shot": {"ranking": {"kind": "ranking", "rule": "lim", "n_train": 128}}})
    lim = resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    _with_upstream(monkeypatch, {"one_shot": {"ranking": {"kind": "ranking", "rule": "std", "n_train": 64}}})
    n64 = resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    assert len({base["job_key"], lim["job_key"], n64["job_key"]}) == 3
    assert lim["upstream"]["ranking"]["run"] == "grpo"  # default: the card's baseline


@pytest.mark.parametrize("block,match", [
    ({"nope": {"ranking": {"kind": "ranking"}}}, "unknown method 'nope'; valid: grpo, one_shot"),
    ({"one_shot": {"prm": {"kind": "ranking"}}}, "no path hyperparameter 'prm'.*valid: ranking"),
    ({"one_shot": {"ranking": {"kind": "ranking", "rule": "mean"}}}, "unknown rule 'mean'; valid: std, lim, random"),
    ({"one_shot": {"ranking": {"kind": "ranking", "rule": "std", "top": 3}}}, "unknown setting 'top'"),
    ({"one_shot": {"ranking": {"kind": "ranking", "n_train": 0}}}, "n_train must be a positive integer"),
    ({"one_shot": {"ranking": {"kind": "ranking", "run": "ppo"}}}, "run: unknown method 'ppo'"),
    ({"one_shot": {"ranking": {"kind": "prm"}}}, "kind 'prm' is not built in .*give 'output'"),
    ({"one_shot": {"ranking": {"kind": "ranking", "run": "one_shot"}}}, "cannot have upstream inputs itself"),
])
def test_bad_upstream_blocks_name_the_valid_choices(monkeypatch, block, match):
    _with_upstream(monkeypatch, block)
    with pytest.raises(ConfigError, match=match):
        resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)


def test_another_rules_artifact_is_an_upstream_input(monkeypatch):
    """A generic kind (e.g. implicit_prm's trained PRM): its path, spec and key; an optional producer run."""
    _with_upstream(monkeypatch, {"one_shot": {"ranking": {"kind": "prm", "output": "model", "beta": 0.05}}})
    job = resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    u = job["upstream"]["ranking"]
    assert u["path"] == f"upstream/prm/{u['key']}/model" and u["beta"] == 0.05 and u["tier"] == "smoke-reasoning"
    assert upstream_plan("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)[1] == {}
    _with_upstream(monkeypatch, {"one_shot": {"ranking": {"kind": "prm", "output": "model", "run": "grpo"}}})
    inputs, runs = upstream_plan("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    (rdir, run), = runs.items()  # a producer that records nothing is the card's plain job (rule train)
    assert rdir == inputs["ranking"]["run_dir"] == job_dir(resolve_job("one_shot_rlvr", "smoke-reasoning", "grpo", 42))
    assert "history" not in run


def test_upstream_paths_resolve_from_the_work_dir(tmp_path):
    from harness.train.job import upstream_paths

    job = resolve_job("one_shot_rlvr", "smoke-reasoning", "one_shot", 42)
    jf = tmp_path / job_dir(job) / "job.json"
    jf.parent.mkdir(parents=True)
    jf.write_text(json.dumps(job))
    with pytest.raises(ConfigError, match="missing .*ranking.json"):
        upstream_paths(job, jf)
    art = tmp_path / job["upstream"]["ranking"]["path"]
    art.parent.mkdir(parents=True)
    art.write_text("{}")
    assert upstream_paths(job, jf) == {"ranking": art.resolve()}
    assert upstream_paths(job, jf, {"ranking": str(jf)}) == {"ranking": jf.resolve()}
    with pytest.raises(ConfigError, match="valid: ranking"):
        upstream_paths(job, jf, {"prm": str(jf)})
    with pytest.raises(ConfigError, match="not in the work dir layout"):
        upstream_paths(job, tmp_path / "job.json")


def test_dag_dry_run_plans_ranking_runs_and_rankings(tmp_path):
    stdout, counts = snakemake_dry_run(["paper=one_shot_rlvr", "tier=smoke-reasoning"], tmp_path)
    assert counts["train_recorded"] == 3 and counts["rank_history"] == 6 and counts["train"] == 12
    assert "harness rank --history" in stdout and "/recorded/smoke-reasoning/grpo/" in stdout


def test_tiny_end_to_end_history_ranking_one_shot(tiny_base, tmp_path):
    """A ranking run records per-row accuracy through the trainer, `harness rank` ranks it, and the one-shot job's
    data hook trains on the top example only."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig

    from harness.data import smoke
    from harness.data.selection import HistoryRecorder
    from harness.face.cli import main
    from harness.methods.registry import get_method
    from harness.train.trainer import HarnessGRPOTrainer

    rows = [{**r, "row_index": i} for i, r in enumerate(smoke.rows(smoke.split_pairs(512, 1234)[0][:8]))]
    tok = AutoTokenizer.from_pretrained(tiny_base)

    def trainer(method, dataset, steps, **kw):
        set_seed(0)
        args = GRPOConfig(output_dir=str(tmp_path / method), use_cpu=True, bf16=False, report_to="none",
                          save_strategy="no", per_device_train_batch_size=16, num_generations=4,
                          max_completion_length=4, max_steps=steps, logging_steps=1, seed=0, disable_tqdm=True,
                          temperature=1.0)
        return HarnessGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_base),
                                  reward_funcs=[smoke.exact_match_reward], args=args,
                                  train_dataset=Dataset.from_list(dataset), processing_class=tok,
                                  method=get_method(method), **kw)

    rec = HistoryRecorder(group_size=4)
    trainer("grpo", rows, 4, history=rec).train()  # 4 batches of 4 prompts over 8 rows: 2 epochs
    assert sorted(map(int, rec.history)) == list(range(8)) and all(len(v) == 2 for v in rec.history.values())
    assert all(v in {i / 4 for i in range(5)} for h in rec.history.values() for v in h)
    hist = tmp_path / "train_history.json"
    hist.write_text(json.dumps(rec.to_dict()))
    ranking = tmp_path / "ranking.json"
    assert main(["rank", "--history", str(hist), "--rule", "std", "--out", str(ranking)]) == 0
    r = json.loads(ranking.read_text())
    top = r["ranking"][0]
    assert r["kind"] == "ranking" and r["n_examples"] == 8 and "content_hash" in r
    assert top["score"] == max(e["score"] for e in r["ranking"])
    assert top["row"] == {k: v for k, v in rows[top["index"]].items() if k != "row_index"}
    plain = [{k: v for k, v in x.items() if k != "row_index"} for x in rows]
    one = trainer("one_shot", plain, 1, hparams={"ranking": str(ranking)})
    seen = []
    score = one._score_batch
    one._score_batch = lambda inputs: (seen.extend(x["prompt"] for x in inputs), score(inputs))[1]
    one.train()
    assert seen and set(seen) == {top["row"]["prompt"]}


def test_run_job_records_history_on_its_row_subset(tiny_base, tmp_path):
    """harness train of a ranking run (job field history): the first n_train rows, train_history.json written."""
    from harness.train.job import run_job

    job = resolve_job("one_shot_rlvr", "smoke", "grpo", 42, history={"n_train": 8})
    job["trl"].update(per_device_train_batch_size=16, num_generations=4, steps_per_generation=1, max_steps=2,
                      warmup_steps=0)
    job["eval"] = {"every_steps": 100, "n_val": 4, "temperature": 1.0, "max_new_tokens": 4}
    out = tmp_path / job_dir(job)
    r = run_job(job, model_dir=tiny_base, out_dir=out, data_dir=tmp_path, mlflow_uri=None, save_model=False)
    h = json.loads((out / "train_history.json").read_text())
    assert h["kind"] == "train_history" and h["n"] == 4 and set(h["history"]) == {str(i) for i in range(8)}
    assert r["train_history_digest"] and all(len(v) == 1 for v in h["history"].values())  # 2 x 4 prompts: 1 epoch
    with pytest.raises(ConfigError, match="upstream input 'ranking' has no path"):
        run_job(resolve_job("one_shot_rlvr", "smoke", "one_shot", 42), model_dir=tiny_base, out_dir=tmp_path / "o",
                data_dir=tmp_path, mlflow_uri=None, save_model=False)


def test_a_planned_prm_spec_is_accepted_by_the_prm_trainer():
    """What the plan writes to upstream/prm/<key>/spec.json (settings plus the base model's parts) is what
    harness.train.prm reads: the bookkeeping keys are not settings, the settings are."""
    from harness.plan import upstream_plan
    from harness.train import prm

    inputs, _ = upstream_plan("implicit_prm", "smoke-reasoning", "implicit_prm", 42)
    spec = inputs["prm_dir"]
    assert {"model", "pretrain", "data"} <= set(spec)
    job = resolve_job("implicit_prm", "smoke-reasoning", "implicit_prm", 42)
    assert set(prm.settings(job, spec)) >= set(prm.DEFAULTS)
