"""What a new user hits (issue 17): config values typed in one place for `harness validate` and the DAG, typed card
hyperparameters, a tracking store that is down or lost, corrupt pinned files, and the smaller traps. Each test fails
on the behaviour the issue reports. The README's commands and the recovery after `kill -9` are in
tests/test_readme_commands.py; the DAG-level tracking checks (a new store reruns nothing, the end-of-run summary) in
tests/test_dag_end_to_end.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_project_copy

from harness.config import ConfigError, load_run_config
from harness.face.cli import _kv
from harness.methods.registry import HParam, RegistryError, all_methods, get_method, register_loss, unregister
from harness.results import atomic_write_json


@pytest.fixture
def toy_name(request):
    name = "toy_" + re.sub(r"\W", "_", request.node.name)
    yield name
    unregister(name)


def _harness(args, root: Path | None = None, **kw):
    env = {**os.environ, **({"RLVR_HARNESS_ROOT": str(root)} if root else {})}
    return subprocess.run([sys.executable, "-m", "harness.face.cli", *args], capture_output=True, text=True,
                          cwd=root or ROOT, env=env, timeout=300, **kw)


# ------------------------------------------------------------------ 1. config values: one coercion for both paths
@pytest.mark.parametrize("args", [
    ["seeds=[1,2,3]", "methods=[grpo,clip_cov]"],
    ["seeds=42", "methods=grpo,clip_cov", "torch_threads=2"],
    ["mlflow_tracking_uri=null", "methods=null", "seeds=null"],
    ["mlflow_timeout_s=2.5", "work_dir=work2"],
])
def test_snakemake_and_harness_validate_read_config_values_alike(args):
    """Snakemake's --config parser hands `[1,2,3]` over as ['1', '2', '3'] and `null` as 'null'; `harness validate`
    passes text. Both go through harness.config.coerce_run_config and end up with the same typed values."""
    from snakemake.cli import parse_config

    from harness.config import coerce_run_config

    via_snakemake, via_validate = coerce_run_config(parse_config(args)), coerce_run_config(_kv(args))
    assert via_snakemake == via_validate
    cfg = load_run_config(via_snakemake)  # and the schema accepts them
    if "seeds=[1,2,3]" in args:
        assert cfg["seeds"] == [1, 2, 3] and cfg["methods"] == ["grpo", "clip_cov"]
    if "seeds=42" in args:
        assert cfg["seeds"] == [42] and cfg["methods"] == ["grpo", "clip_cov"] and cfg["torch_threads"] == 2
    if "methods=null" in args:
        assert cfg["methods"] is None and cfg["seeds"] is None and cfg["mlflow_tracking_uri"] is None


@pytest.mark.parametrize("override,needle", [
    ({"methods": "[]"}, "config: methods is an empty list (give at least one, or null for every method of the card); "
                        "valid for entropy_mechanism [smoke]: grpo, clip_cov, kl_cov"),
    ({"seeds": []}, "config: seeds is an empty list (give at least one, or null for the tier's seeds); "
                    "valid for entropy_mechanism [smoke]: 42, 7"),
    ({"seeds": "[1.5]"}, "config: seeds/0: 1.5 is not of type 'integer'"),
    ({"paper": ","}, "config: paper is empty"),
])
def test_empty_or_mistyped_lists_are_one_line_errors(override, needle):
    with pytest.raises(ConfigError) as e:
        load_run_config(override)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_paper_all_and_comma_lists_mean_the_same_to_validate_and_the_dag():
    from harness.config import run_papers

    from harness.config import list_papers, load_card

    cfg = load_run_config({"paper": "all", "tier": "smoke"})
    smoke = [p for p in list_papers() if "smoke" in load_card(p)["tiers"]]  # agent cards have smoke-agent instead
    assert run_papers(cfg) == smoke and len(smoke) < len(list_papers())
    assert run_papers(load_run_config({"paper": "bapo, canon"})) == ["bapo", "canon"]
    p = _harness(["validate", "paper=all", "tier=smoke"])
    papers = list_papers()
    assert p.returncode == 0 and p.stdout.startswith(f"ok: {', '.join(smoke)} [smoke]"), (p.stdout, p.stderr)
    p = _harness(["validate", "paper=bapo,nope"])
    assert p.returncode == 2 and p.stderr.startswith(f"error: unknown paper 'nope'; valid: {', '.join(papers)}\n")


# ------------------------------------------------------------------ 4. typed card hyperparameters
def test_every_hyperparameter_has_a_type():
    for m in all_methods().values():
        for name, hp in m.hparams.items():
            assert hp.types and hp.types != (type(None),), (m.name, name)
            assert hp.accepts(hp.default), (m.name, name, hp.default)


def test_a_null_default_needs_an_explicit_type(toy_name):
    with pytest.raises(RegistryError, match=f"method '{toy_name}': anchor: .*needs an explicit type"):
        register_loss(toy_name, paper="toy", source="test", hparams={"anchor": HParam(None, "nats", "h", "s")})(
            lambda ctx, anchor: None)
    unregister(toy_name)
    register_loss(toy_name, paper="toy", source="test",
                  hparams={"anchor": HParam(None, "nats", "h", "s", type=float | None)})(lambda ctx, anchor: None)
    m = get_method(toy_name)
    assert m.resolve({"anchor": 2})["anchor"] == 2 and m.resolve({"anchor": None})["anchor"] is None
    with pytest.raises(RegistryError, match=f"method '{toy_name}': anchor must be float or null, got 'x'"):
        m.resolve({"anchor": "x"})


@pytest.mark.parametrize("method,field,value,ok", [
    ("clip_cov", "clip_cov_lb", 1, True),             # an int is a valid float
    ("clip_cov", "clip_cov_lb", "abc", False),
    ("clip_cov", "clip_cov_lb", True, False),         # a bool is not a number here
    ("clip_cov", "clip_cov_lb", "1e-3", False),       # YAML 1.1 reads 1e-3 as a string
    ("hicra", "first_k", 1.5, False),                 # an int field takes no float
    ("forking_tokens", "clip_ratio_c", None, True),   # null: dual clip off
    ("steer", "clip_ratio_c", None, False),
    ("hapo", "token_level_adv", 1, False),
    ("hicra", "strategic_grams", [[1, 2]], True),
])
def test_hyperparameter_values_are_type_checked(method, field, value, ok):
    m = get_method(method)
    if ok:
        assert m.resolve({field: value})[field] == value
    else:
        with pytest.raises(RegistryError, match=f"method '{method}': {field} must be "):
            m.resolve({field: value})


@pytest.fixture
def bad_card_project(tmp_path):
    proj = make_project_copy(tmp_path)
    card = proj / "replications" / "entropy_mechanism" / "card.yaml"
    data = yaml.safe_load(card.read_text())
    data["tiers"]["smoke"]["methods"]["clip_cov"]["clip_cov_lb"] = "abc"
    card.write_text(yaml.safe_dump(data, sort_keys=False))
    return proj


def test_a_mistyped_card_value_stops_validate_and_the_dag_before_anything_runs(bad_card_project):
    """`clip_cov_lb: abc` used to pass both checks and die in training with a raw TypeError."""
    want = ("error: replications/entropy_mechanism/card.yaml: tiers/smoke/methods/clip_cov: method 'clip_cov': "
            "clip_cov_lb must be float, got 'abc' (str)")
    p = _harness(["validate"], root=bad_card_project)
    assert p.returncode == 2 and p.stderr.strip() == want, p.stderr
    env = {**os.environ, "RLVR_HARNESS_ROOT": str(bad_card_project)}
    p = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=bad_card_project, env=env, capture_output=True,
                       text=True, timeout=300)
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert p.returncode != 0 and errors == [want], p.stderr[-2000:]
    assert not (bad_card_project / "work").exists()


# ------------------------------------------------------------------ 2. a tracking server that is down
def _toy_job(method="grpo", seed=1):
    return {"tier": "smoke", "method": method, "job_key": "0123456789ab", "seed": seed, "hparams": {}, "trl": {}}


def test_mlflow_env_vars_the_harness_sets_are_mlflows():
    """harness.track.bounded sets MLflow's own retry and timeout variables: they must exist in the installed mlflow
    (mlflow/environment_variables.py) and be read at request time."""
    import inspect

    import mlflow.environment_variables as ev
    from mlflow.utils import rest_utils

    assert ev.MLFLOW_HTTP_REQUEST_MAX_RETRIES.name == "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    assert ev.MLFLOW_HTTP_REQUEST_TIMEOUT.name == "MLFLOW_HTTP_REQUEST_TIMEOUT"
    src = inspect.getsource(rest_utils.http_request)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()" in src and "MLFLOW_HTTP_REQUEST_TIMEOUT.get()" in src


def test_an_unreachable_tracking_server_fails_fast_and_leaves_the_environment_alone(monkeypatch):
    """A closed port used to keep one job logging for minutes (MLflow's 7 retries with backoff, times our own 6
    attempts). Now: one bounded attempt, then the error for the caller's warning. The bound is generous: this checks
    the behaviour (seconds, not minutes), it is not a benchmark."""
    from harness import track

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    track.configure(3)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception, match="127.0.0.1"):
            track.log_job(uri="http://127.0.0.1:9", job=_toy_job(), trl_args={}, metrics=[], evals=[], artifacts=[],
                          dataset_digests={}, tags={})
        assert time.monotonic() - t0 < 60
        t0 = time.monotonic()
        errors = track.log_verdict_artifacts("http://127.0.0.1:9", ["0" * 32], [Path(__file__)])
        assert len(errors) == 1 and "\n" not in errors[0] and time.monotonic() - t0 < 60
        t0 = time.monotonic()
        rep = track.tracking_report("http://127.0.0.1:9", [{"job": _toy_job(), "mlflow_run_id": "0" * 32}])
        assert rep["store"].startswith("unreachable") and time.monotonic() - t0 < 60
    finally:
        track.configure(None)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_tracking_timeout_is_a_documented_setting():
    from harness.track import TIMEOUT_S

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert "mlflow_timeout_s" in cfg and load_run_config({"mlflow_timeout_s": 3})["mlflow_timeout_s"] == 3
    with pytest.raises(ConfigError, match="mlflow_timeout_s"):
        load_run_config({"mlflow_timeout_s": 0})
    out = " ".join(_harness(["train", "--help"]).stdout.split())
    assert f"(default {TIMEOUT_S}; the run config's mlflow_timeout_s)" in out


# ------------------------------------------------------------------ 5. tracking failures and lost runs are reported
def _log_in_a_new_process(uri: str, seed: int, cwd: Path) -> str:
    """Log a toy job as `harness train` does, in a process of its own (every job of the DAG is one): its run id."""
    code = ("import sys, json; from harness import track; "
            f"print(track.log_job(uri={uri!r}, job={_toy_job(seed=seed)!r}, trl_args={{}}, metrics=[], evals=[], "
            "artifacts=[], dataset_digests={}, tags={})[0])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip().splitlines()[-1]


def test_tracking_report_names_jobs_without_runs_and_runs_a_store_lost(tmp_path, monkeypatch):
    from harness import track

    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under ./mlruns
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    logged = []
    for seed in (1, 2):
        rid, _ = track.log_job(uri=uri, job=_toy_job(seed=seed), trl_args={}, metrics=[{"step": 1, "loss": 0.5}],
                               evals=[], artifacts=[], dataset_digests={}, tags={})
        logged.append({"job": _toy_job(seed=seed), "mlflow_run_id": rid})
    failed = {"job": _toy_job(seed=3), "tracking_error": "MlflowException: API request to http://x failed"}
    rep = track.tracking_report(uri, [*logged, failed])
    assert (rep["store"], rep["logged"], rep["lost"]) == ("ok", 2, {})
    assert rep["not_logged"] == {"smoke/grpo/0123456789ab/seed3": failed["tracking_error"]}
    lines = track.format_tracking(rep)
    assert lines[0].startswith("tracking: WARNING 1 of 3 jobs have no MLflow run in sqlite:///")
    assert lines[1] == "  not logged: smoke/grpo/0123456789ab/seed3: MlflowException: API request to http://x failed"
    assert track.format_tracking(track.tracking_report(uri, logged)) == [
        f"tracking: 2 of 2 jobs logged to MLflow ({uri})"]

    db.unlink()  # deleted mid-run: reported, and not silently recreated by the check
    rep = track.tracking_report(uri, logged)
    assert rep["store"] == "missing" and len(rep["lost"]) == 2 and not db.exists()
    assert "2 runs lost: the store is gone (deleted?)" in "\n".join(track.format_tracking(rep))

    # a later job recreates the store (new experiment): the earlier runs are gone from it, and that is said
    rid = _log_in_a_new_process(uri, 4, tmp_path)
    code = ("import json, sys; from harness import track; "
            f"print(json.dumps(track.tracking_report({uri!r}, json.loads(sys.stdin.read()))))")
    logged4 = [*logged, {"job": _toy_job(seed=4), "mlflow_run_id": rid}]
    p = subprocess.run([sys.executable, "-c", code], input=json.dumps(logged4), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # a fresh process, as the end-of-run summary and the verdict are
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["store"] == "ok" and rep["logged"] == 1
    assert rep["lost"] == {f"smoke/grpo/0123456789ab/seed{s}": r["mlflow_run_id"] for s, r in zip((1, 2), logged)}
    text = "\n".join(track.format_tracking(rep))
    assert "2 runs lost: the store no longer has them (deleted or recreated since they were logged)" in text


def test_the_verdict_carries_and_prints_the_tracking_report(tmp_path):
    from harness.results.store import replications

    rep = replications(ROOT / "results")[("entropy_mechanism", "smoke")]
    paths = []
    for i, r in enumerate(rep["train"]):
        r = {k: v for k, v in r.items() if k != "_file"}
        r["mlflow_run_id"] = f"{i:032x}"
        if i == 0:
            r.pop("mlflow_run_id")
            r["tracking_error"] = "MlflowException: API request to http://127.0.0.1:9 failed"
        paths.append(str(atomic_write_json(tmp_path / f"r{i}.json", r, hashed=True)))
    (tmp_path / "pinned").mkdir()
    p = _harness(["verdict", "--paper", "entropy_mechanism", "--tier", "smoke", "--out-dir", str(tmp_path / "v"),
                  "--pinned-root", str(tmp_path / "pinned"), "--mlflow-uri", f"sqlite:///{tmp_path}/gone.db",
                  "--mlflow-timeout", "3", *paths])
    assert p.returncode == 0, p.stderr[-2000:]
    v = json.loads((tmp_path / "v" / "verdict.json").read_text())
    t = v["tracking"]
    assert t["store"] == "missing" and len(t["lost"]) == 5 and len(t["not_logged"]) == 1
    assert list(t["not_logged"].values()) == ["MlflowException: API request to http://127.0.0.1:9 failed"]
    assert "tracking: WARNING 6 of 6 jobs have no MLflow run" in p.stdout and "5 runs lost" in p.stdout
    assert not (tmp_path / "gone.db").exists()


# ------------------------------------------------------------------ should-fix items
def test_a_tampered_pinned_result_is_reported_as_corrupt_not_as_a_reproducibility_failure(tmp_path):
    from harness.claims.verdict import format_verdict, reproducibility
    from harness.results.store import replications

    root = tmp_path / "results"
    shutil.copytree(ROOT / "results", root, ignore=shutil.ignore_patterns("releases", "*.png", "*.html"))
    rep = replications(root)[("entropy_mechanism", "smoke")]
    fresh = [{k: v for k, v in r.items() if k != "_file"} for r in rep["train"]]
    evals = [{k: v for k, v in e.items() if k != "_file"} for e in rep["evals"]]
    assert reproducibility("entropy_mechanism", "smoke", fresh, root, evals)["status"] == "identical"
    victim = root / rep["train"][0]["_file"]
    data = json.loads(victim.read_text())
    data["heldout"][-1]["entropy"] += 0.125  # the content hash inside is left as it was
    victim.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    r = reproducibility("entropy_mechanism", "smoke", fresh, root, evals)
    rel = rep["train"][0]["_file"]
    assert r["status"] == "pinned_corrupt" and list(r["corrupt_files"]) == [rel]
    text = format_verdict({"paper": "entropy_mechanism", "tier": "smoke", "counts": {}, "claims": [],
                           "reproducibility": r})
    assert f"pinned file corrupt: {root / rel}: content_hash" in text
    # the same content written differently: its content hash holds, its sha256 is not the manifest's
    data["heldout"][-1]["entropy"] -= 0.125
    victim.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    r = reproducibility("entropy_mechanism", "smoke", fresh, root, evals)
    assert r["status"] == "pinned_corrupt" and r["corrupt_files"] == {rel: "sha256 differs from manifest.json"}
    # a hash recomputed after an edit: the pinned verdict lists a result that is no longer there
    data["heldout"][-1]["entropy"] += 0.125
    atomic_write_json(victim, {k: v for k, v in data.items() if k != "content_hash"}, hashed=True)
    r = reproducibility("entropy_mechanism", "smoke", fresh, root, evals)
    assert r["status"] == "pinned_corrupt" and "lists result hashes not found" in r["corrupt_files"][""]


def test_an_evaluation_of_another_model_or_protocol_is_a_change_not_a_reproducibility_failure():
    """A rerun after a job's config or the base model changed evaluates another checkpoint: its different numbers
    are reported as a change; only the same model under the same protocol with other numbers is a failure."""
    from harness.claims.verdict import reproducibility
    from harness.results.store import replications

    rep = replications(ROOT / "results")[("entropy_mechanism", "smoke")]
    fresh = [{k: v for k, v in r.items() if k != "_file"} for r in rep["train"]]
    evals = [json.loads(json.dumps({k: v for k, v in e.items() if k != "_file"})) for e in rep["evals"]]
    base = next(e for e in evals if (e.get("source") or {}).get("method") in (None, "base"))
    trained = next(e for e in evals if (e.get("source") or {}).get("job_key"))
    for e in (base, trained):  # other numbers everywhere
        e["benchmarks"]["heldout"]["metrics"]["pass@1"]["value"] += 0.01
    assert reproducibility("entropy_mechanism", "smoke", fresh, ROOT / "results", evals)["status"] == "failure"
    base["model_dir"] = "/elsewhere/models/smoke-000000000000/base"
    trained["source"]["job_key"] = "000000000000"
    r = reproducibility("entropy_mechanism", "smoke", fresh, ROOT / "results", evals)
    statuses = {k: v["status"] for k, v in r["evals"].items()}
    assert r["status"] == "partial", statuses
    assert sorted(s for s in statuses.values() if s != "identical") == ["model_changed", "model_changed"]
    assert r["evals"]["base:heldout,heldout_greedy"]["fresh"] == "base model smoke-000000000000"
    trained["protocol_hash"] = "0" * 64
    r = reproducibility("entropy_mechanism", "smoke", fresh, ROOT / "results", evals)
    assert "protocol_changed" in {v["status"] for v in r["evals"].values()} and r["status"] == "partial"


def test_a_corrupt_results_manifest_is_a_one_line_error(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(ROOT / "results", root, ignore=shutil.ignore_patterns("releases"))
    (root / "manifest.json").write_text('{"broken')
    p = _harness(["verify-results", "--results-dir", str(root)])
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"FAIL {root / 'manifest.json'}: not valid JSON")


def test_cite_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    h = json.loads((ROOT / "results" / "manifest.json").read_text())["results"][0]["content_hash"]
    err = tmp_path / "err.txt"
    # `true` exits without reading: harness's write meets a closed pipe (what `| head` does to a long output)
    p = subprocess.run(["bash", "-c", f"{sys.executable} -m harness.face.cli cite {h[:12]} 2>{err} | true; "
                                      "echo ${PIPESTATUS[0]}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.stdout.strip() == "0" and err.read_text() == ""


def _one_paper_work_dir(root: Path, papers=("entropy_mechanism",)) -> Path:
    """A work dir holding these papers' smoke replications (the pinned files, in the work layout)."""
    from harness.results.store import replications

    reps = replications(ROOT / "results")
    for paper in papers:
        rep = reps[(paper, "smoke")]
        for r in [*rep["train"], *rep["evals"]]:
            dest = root / r["_file"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "results" / r["_file"], dest)
        shutil.copytree(ROOT / "results" / paper / "smoke", root / "verdicts" / paper / "smoke")
    return root


def test_a_one_paper_report_shows_that_paper_and_lists_the_rest_apart(tmp_path):
    from harness.config import list_papers
    from harness.report.leaderboard import write

    work = _one_paper_work_dir(tmp_path / "work")
    paths = write(work, work / "report", iters=100)
    html = paths["html"].read_text()
    assert 'id="paper-entropy_mechanism"' in html and "No evaluated rows" not in html
    others = [p for p in list_papers() if p != "entropy_mechanism"]
    assert not any(f'id="paper-{p}"' in html for p in others)
    section = html[html.index('<section id="other-papers">'):]
    assert all(f'data-paper="{p}"' in section for p in others) and "smoke: " in section
    md = paths["md"].read_text()
    assert "## Other papers: not in these result files" in md and "| bapo | 2510.18927 | smoke: " in md
    lb = json.loads(paths["json"].read_text())
    assert lb["papers"] == ["entropy_mechanism"] and {r["paper"] for r in lb["not_run"]} == {"entropy_mechanism"}


def test_the_atlas_covers_every_paper_in_the_work_dir(tmp_path):
    """A second paper run in the same work dir adds to work/atlas/<tier>/atlas.json (the atlas rule reads every
    verdict in the work dir), it does not replace the first."""
    work = _one_paper_work_dir(tmp_path / "work", papers=("bapo", "canon"))
    p = _harness(["atlas", "--results-dir", str(work), "--tier", "smoke", "--out-dir", str(work / "atlas/smoke")])
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads((work / "atlas/smoke/atlas.json").read_text())["pages"]) == ["bapo/smoke", "canon/smoke"]


def test_training_leaves_no_empty_trainer_folder(tiny_base, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from harness.data import smoke
    from harness.train.trainer import HarnessGRPOTrainer

    out = tmp_path / "run" / "trainer"
    args = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, max_steps=1, logging_steps=1, report_to="none",
                      save_strategy="no", seed=0, disable_tqdm=True, per_device_train_batch_size=8,
                      num_generations=4, max_completion_length=4)
    trainer = HarnessGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_base), args=args,
                                 reward_funcs=[smoke.exact_match_reward], processing_class=AutoTokenizer.from_pretrained(
                                     tiny_base), train_dataset=Dataset.from_list(smoke.rows(smoke.split_pairs(
                                         512, 1234)[0][:16])), method=get_method("grpo"))
    assert out.is_dir()  # transformers creates it up front
    trainer.train()
    assert not out.exists()


def test_venv_is_git_ignored():
    p = subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=ROOT)
    assert p.returncode == 0, ".venv/ is not in .gitignore"
