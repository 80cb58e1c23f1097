"""End to end through Snakemake on a tiny copy of the smoke tier: outputs, MLflow, no-op rerun, selective
rerun after a hyperparameter edit, pinning and the same-seed reproducibility check, bad input."""
import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import make_project_copy


def _run(cmd, proj, check=True):
    env = {**os.environ, "RLVR_HARNESS_ROOT": str(proj)}
    env.pop("MLFLOW_TRACKING_URI", None)
    p = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _jobs_in_dry_run(out: str) -> dict:
    counts = {}
    lines = out.splitlines()
    if "Job stats:" not in out:
        return counts
    i = lines.index("Job stats:")
    for line in lines[i + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project_copy(tmp_path_factory.mktemp("proj"))
    p = _run(["snakemake", "--cores", "2"], proj)
    (proj / "first_run.log").write_text(p.stdout + p.stderr)
    return proj


def test_outputs_and_verdicts(project):
    v = json.loads((project / "work/verdicts/entropy_mechanism/smoke/verdict.json").read_text())
    assert len(v["runs"]) == 6
    assert {c["verdict"] for c in v["claims"]} <= {"reproduced", "not_reproduced", "inconclusive", "not_run"}
    assert all(c["verdict"] == "not_run" for c in v["claims"] if c["tier"] == "paper")
    assert v["reproducibility"]["status"] == "no_pinned_results"
    for png in ("entropy_vs_step.png", "reward_vs_entropy.png"):
        assert (project / "work/verdicts/entropy_mechanism/smoke" / png).stat().st_size > 10_000
    results = sorted(project.glob("work/jobs/smoke/*/*/seed*/result.json"))
    assert len(results) == 6
    for path, r in ((p, json.loads(p.read_text())) for p in results):
        assert r["content_hash"] and r["job"]["config_hash"] and r["versions"]["trl"] == "1.16.0"
        # the job file the DAG wrote once is exactly the job the run trained; its folder is its content key
        assert json.loads((path.parent / "job.json").read_text()) == r["job"]
        assert path.parent.parent.name == r["job"]["job_key"] and "paper" not in r["job"]
        assert r["dataset_digests"]["train"] and r.get("mlflow_run_id"), r.get("tracking_error")
        assert r["mlflow_experiment_id"]


def test_checkpoints_are_evaluated_and_feed_claims_and_leaderboards(project):
    work = project / "work"
    for run in work.glob("jobs/smoke/*/*/seed*"):
        assert (run / "model" / "model.safetensors").exists()  # the final policy, saved atomically
    evals = sorted(work.glob("**/heldout.json"))
    assert len(evals) == 7  # the base model + 6 trained checkpoints
    (clip,) = work.glob("jobs/smoke/clip_cov/*/seed42/evals/heldout.json")
    e = json.loads(clip.read_text())
    assert e["source"] == {"tier": "smoke", "method": "clip_cov", "seed": 42, "job_key": clip.parents[2].name}
    assert set(e["benchmarks"]) == {"heldout", "heldout_greedy"} and e["protocol_hash"]
    assert len(e["benchmarks"]["heldout"]["per_problem"]) == e["benchmarks"]["heldout"]["n_problems"]
    v = json.loads((work / "verdicts/entropy_mechanism/smoke/verdict.json").read_text())
    claim = next(c for c in v["claims"] if c["id"] == "clip_cov_final_accuracy_above_grpo")
    assert claim["verdict"] in ("reproduced", "not_reproduced", "inconclusive")
    assert claim["numbers"]["protocol_hash"] == e["benchmarks"]["heldout"]["protocol_hash"]
    assert len(v["eval_inputs"]) == 7 and "clip_cov/seed42" in v["evals"]
    # this run's leaderboard and report, and the (empty) shared one of the pinned results
    md = (work / "report/leaderboard.md").read_text()
    assert "| entropy_mechanism | clip_cov |" in md and "heldout" in md
    html = (work / "report/report.html").read_text()
    assert len(html) > 10_000 and 'id="paper-entropy_mechanism"' in html
    # the atlas page: the entropy_mechanism methods at smoke tier with their verdicts, and the atlas plot
    atlas_rows = html[html.index('class="atlas-rows"'):]
    assert all(f"<td>{m}</td>" in atlas_rows for m in ("clip_cov", "kl_cov")) and 'alt="entropy atlas (smoke)"' in html
    assert (project / "results/leaderboard.md").exists() and (project / "results/report.html").exists()


def test_mlflow_has_one_run_per_job_with_step_metrics(project):
    import mlflow

    uri = "sqlite:///" + str(project / "work" / "mlflow.db")
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("jobs/smoke")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 6
    assert {(r.data.tags["method"], r.data.tags["seed"]) for r in runs} == {
        (m, s) for m in ("grpo", "clip_cov", "kl_cov") for s in ("42", "7")}
    for r in runs:
        for key in ("entropy", "cov_logp_adv/mean", "reward", "heldout/entropy"):
            hist = client.get_metric_history(r.info.run_id, key)
            assert len(hist) >= 2, (key, r.data.tags["method"])
        assert r.data.params["job.hparams.k_percent" if r.data.tags["method"] == "kl_cov" else "job.method"]
        assert r.data.params["trl.learning_rate"]


def test_identical_jobs_of_two_cards_train_once(project):
    """A second card whose smoke GRPO resolves to the same job reads the first card's runs: nothing to train."""
    card = project / "replications/entropy_mechanism/card.yaml"
    twin = project / "replications/twin/card.yaml"
    twin.parent.mkdir()
    twin.write_text(card.read_text().replace("id: entropy_mechanism", "id: twin", 1))
    try:
        out = _run(["snakemake", "-n", "--cores", "2", "--config", "paper=entropy_mechanism,twin"], project).stdout
        counts = _jobs_in_dry_run(out)
        assert "train" not in counts and counts.get("verdict") == 1, out[-3000:]  # only the twin's verdict
    finally:
        twin.unlink()
        twin.parent.rmdir()


def test_second_run_does_nothing(project):
    out = _run(["snakemake", "-n", "--cores", "2"], project).stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_editing_clip_cov_ratio_reruns_only_clip_cov(project):
    card_path = project / "replications/entropy_mechanism/card.yaml"
    original = card_path.read_text()
    card = yaml.safe_load(original)
    card["tiers"]["smoke"]["methods"]["clip_cov"]["clip_cov_ratio"] = 0.2
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    try:
        out = _run(["snakemake", "-n", "--cores", "2"], project).stdout
        assert _jobs_in_dry_run(out) == {"all": 1, "job_spec": 2, "train": 2, "eval_heldout": 2, "verdict": 1,
                                         "atlas": 1, "report": 1}, out[-3000:]
        train_outputs = re.findall(r"rule train:\n\s+input: [^\n]*\n\s+output: (\S+)/result.json", out)
        assert sorted(re.sub(r"/[0-9a-f]{12}/", "/KEY/", o) for o in train_outputs) == [
            "work/jobs/smoke/clip_cov/KEY/seed42", "work/jobs/smoke/clip_cov/KEY/seed7"], out[-3000:]
    finally:
        card_path.write_text(original)


def test_new_jobs_on_a_trained_base_model_do_not_rebuild_it(project):
    """A changed TRL setting makes every job of the card new, the first one included; the base model (its key does
    not hash TRL settings) is read through its own spec file, so it is neither pre-trained nor restored again, and
    its evaluations (keyed by the base spec, not by the baseline job that first asked for them) are not re-run: a
    re-run would give them new content hashes and orphan the verdicts that cite them."""
    card_path = project / "replications/entropy_mechanism/card.yaml"
    original = card_path.read_text()
    card = yaml.safe_load(original)
    card["tiers"]["smoke"].setdefault("trl", {})["learning_rate"] = 1.234e-4
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    try:
        out = _run(["snakemake", "-n", "--cores", "2"], project).stdout
        counts = _jobs_in_dry_run(out)
        assert counts.get("train") == 6 and "pretrain_smoke" not in counts and "model_spec" not in counts, out[-3000:]
        assert not {"base_spec", "eval_heldout_base", "eval_benchmarks_base"} & set(counts), out[-3000:]
    finally:
        card_path.write_text(original)


def test_pin_then_rerun_is_identical(project):
    _run(["harness", "pin", "--paper", "entropy_mechanism", "--tier", "smoke"], project)
    pinned = project / "results/entropy_mechanism/smoke"
    manifest = json.loads((pinned / "MANIFEST.json").read_text())
    assert "verdict.json" in manifest["files"] and len(manifest["shared_files"]) == 13  # 6 runs + 7 evaluations
    assert len(list((project / "results/jobs").glob("smoke/*/*/seed*/result.json"))) == 6
    assert len(list((project / "results").glob("**/heldout.json"))) == 7
    assert "| entropy_mechanism | clip_cov |" in (project / "results/leaderboard.md").read_text()
    _run(["harness", "verify-results"], project)  # the rebuilt leaderboard and report are in the manifest
    _run(["snakemake", "--cores", "2", "--config", "work_dir=work2", "methods=[grpo]"], project)
    v = json.loads((project / "work2/verdicts/entropy_mechanism/smoke/verdict.json").read_text())
    assert v["reproducibility"]["status"] == "identical", v["reproducibility"]
    assert {k: e["status"] for k, e in v["reproducibility"]["evals"].items()} == {
        "base:heldout,heldout_greedy": "identical", "grpo/seed42:heldout,heldout_greedy": "identical",
        "grpo/seed7:heldout,heldout_greedy": "identical"}


@pytest.mark.parametrize("override,needle", [
    ("paper=nope", "unknown paper 'nope'; valid: "),
    ("tier=huge", "'huge' is not one of"),
    ("methods=[foo]", "has no method 'foo'; valid: grpo, clip_cov, kl_cov"),
    ("tierr=smoke", "unknown key 'tierr'"),
    ("data_dir=/nonexistent", None),
])
def test_bad_input_fails_with_one_line_error(project, override, needle):
    args = ["snakemake", "-n", "--cores", "1", "--config", override]
    if override.startswith("data_dir"):
        args += ["tier=cpu-real"]
        needle = "missing data file /nonexistent/"
    before = sorted(p for p in (project / "results").rglob("*"))
    p = _run(args, project, check=False)
    assert p.returncode != 0
    err_lines = [line for line in (p.stderr + p.stdout).splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and needle in err_lines[0], p.stderr[-2000:]
    assert sorted(p for p in (project / "results").rglob("*")) == before


def test_the_run_ends_with_a_tracking_summary_and_the_verdict_carries_it(project):
    uri = "sqlite:///" + str(project / "work" / "mlflow.db")
    assert f"tracking: 6 of 6 jobs logged to MLflow ({uri})" in (project / "first_run.log").read_text()
    t = json.loads((project / "work/verdicts/entropy_mechanism/smoke/verdict.json").read_text())["tracking"]
    assert (t["store"], t["logged"], t["lost"], t["not_logged"]) == ("ok", 6, {}, {})


def test_a_new_tracking_store_reruns_nothing(project):
    """Where results are logged is not part of what a job computes (issue 17: the URI was a param of the train
    rule, so every job retrained)."""
    for env_uri, config in ((f"sqlite:///{project}/elsewhere.db", []),
                            (None, ["mlflow_tracking_uri=http://127.0.0.1:9", "mlflow_timeout_s=7"])):
        env = {**os.environ, "RLVR_HARNESS_ROOT": str(project)}
        env.pop("MLFLOW_TRACKING_URI", None)
        if env_uri:
            env["MLFLOW_TRACKING_URI"] = env_uri
        p = subprocess.run(["snakemake", "-n", "--cores", "2", *(["--config", *config] if config else [])],
                           cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0 and "Nothing to be done" in p.stdout, (p.stdout + p.stderr)[-3000:]
    assert not (project / "elsewhere.db").exists()


def test_a_deleted_store_is_reported_at_the_end_of_the_run(project):
    db = project / "work" / "mlflow.db"
    saved = db.with_name("mlflow.db.saved")
    db.rename(saved)
    try:
        p = _run(["snakemake", "--cores", "1", "--forcerun", "atlas"], project)
        out = p.stdout + p.stderr
        assert "tracking: WARNING 6 of 6 jobs have no MLflow run" in out, out[-3000:]
        assert "6 runs lost: the store is gone (deleted?)" in out and not db.exists()
    finally:
        saved.rename(db)
