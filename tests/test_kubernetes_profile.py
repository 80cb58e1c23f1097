"""The Kubernetes path (issue 16): profiles/kubernetes (snakemake-executor-plugin-kubernetes, no shared filesystem,
every file through an S3 bucket with snakemake-storage-plugin-s3), without a cluster.

- Dry runs with the profile against a local S3 endpoint (moto's server: the storage plugin checks every file in the
  bucket even in a dry run): every job's files live under the bucket prefix, and the jobs ask for what the card's
  tier states (gpu, mem_mb, runtime), the rest for the profile's defaults.
- What the plugin would submit for those resources: its own pod builder (``Executor.run_job``) run with the Kubernetes
  API replaced by a recorder: GPU requests and limits, memory, ephemeral storage, the GPU toleration; and why the
  profile states gpu_manufacturer (the plugin refuses a ``gpu`` resource without it, and every rule carries one).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from conftest import make_project_copy
from harness.config import load_card

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "kubernetes" / "config.yaml"
PLUGINS = ("snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_s3", "moto")
BUCKET, PREFIX = "rlvr-test", "s3://rlvr-test/run"
KEYS = {"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "test", "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "test",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def missing() -> str | None:
    gone = [m for m in PLUGINS if importlib.util.find_spec(m) is None]
    if gone:
        return (f"not installed: {', '.join(gone)} (pip install snakemake-executor-plugin-kubernetes==0.5.1 "
                "snakemake-storage-plugin-s3==0.3.6 'moto[server]==5.2.5')")
    return None


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint with an empty bucket (moto's threaded server)."""
    reason = missing()
    if reason:  # the test extra pins them: under CI a missing plugin is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    return make_project_copy(tmp_path_factory.mktemp("k8s"), tiny=False)


def _dry_run(proj: Path, s3: str, *config: str) -> str:
    argv = [sys.executable, "-m", "snakemake", "-n", "--nolock", "--profile", "profiles/kubernetes",
            "--storage-s3-endpoint-url", s3, "--default-storage-prefix", PREFIX, "--config", *config]
    p = subprocess.run(argv, cwd=proj, capture_output=True, text=True, timeout=900,
                       env={**os.environ, **KEYS, "RLVR_HARNESS_ROOT": str(proj)})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p.stdout


def _jobs(out: str) -> list[tuple[str, list[str], dict]]:
    """(rule, output files, resources) of every job of a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not m or not res:
            continue
        outs = re.search(r"^\s+output: (.*)$", block, re.M)
        files = [f.split(" (")[0] for f in outs.group(1).split(", ")] if outs else []
        jobs.append((m.group(1), files, dict(kv.split("=", 1) for kv in res.group(1).split(", "))))
    return jobs


def test_profile_is_the_kubernetes_executor_with_s3_storage_and_no_site_or_rule_settings():
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "kubernetes" and prof["default-storage-provider"] == "s3"
    assert prof["default-resources"]["gpu_manufacturer"] == "'nvidia'"
    assert "set-resources" not in prof  # it would override the cards' tiers
    assert not [k for k in prof if k.startswith(("kubernetes-", "storage-s3-"))]  # site settings: command line


def test_paper_tier_dry_run_keeps_every_file_in_the_bucket_and_asks_for_the_cards_resources(proj, s3):
    r = load_card("tool_light")["tiers"]["paper"]["resources"]  # one node, 2 GPUs
    assert r["nodes"] == 1
    jobs = _jobs(_dry_run(proj, s3, "paper=tool_light", "tier=paper", "seeds=[1]", "work_dir=work"))
    rules = {rule for rule, _, _ in jobs}
    assert {"verdict", "eval_heldout", "eval_heldout_base"} <= rules and any(x.startswith("train") for x in rules)
    for rule, files, _ in jobs:  # (the pinned leaderboard is built from the repository's results/)
        assert rule in ("all", "leaderboard") or files and all(f.startswith(f"{PREFIX}/") for f in files), (rule, files)
    for rule, files, res in jobs:
        if rule.startswith(("train", "eval_")):  # the tier's GPUs, memory and time; the profile's disk
            assert (res["gpu"], res["gpu_manufacturer"], res["mem_mb"], res["runtime"], res["disk_mb"]) == (
                str(r["gpus"]), "nvidia", str(r["mem_mb"]), str(r["runtime_min"]), "50000"), (rule, res)
    verdict = next(res for rule, _, res in jobs if rule == "verdict")
    assert (verdict.get("gpu"), verdict["mem_mb"], verdict["runtime"]) == (None, "2000", "30")


def test_smoke_tier_dry_run_asks_for_no_gpu(proj, s3):
    jobs = _jobs(_dry_run(proj, s3, "paper=entropy_mechanism", "tier=smoke", "methods=[grpo]", "seeds=[42]",
                          "work_dir=work"))
    train = next(res for rule, _, res in jobs if rule == "train")
    assert (train["gpu"], train["gpu_manufacturer"], train["mem_mb"]) == ("0", "nvidia", "6000")
    assert all(f.startswith(f"{PREFIX}/work/") for rule, files, _ in jobs if rule != "leaderboard" for f in files)


def _pod(resources: dict):
    """The Kubernetes Job the plugin would create for a job with these resources (API calls recorded, not sent)."""
    from snakemake_executor_plugin_kubernetes import Executor, PersistentVolume

    ex = Executor.__new__(Executor)  # no kubeconfig here: skip __post_init__, set what run_job reads
    sent = {}
    ex.k8s_cpu_scalar, ex.k8s_service_account_name, ex.namespace = 0.95, None, "default"
    ex.secret_envvars, ex.container_image, ex.privileged, ex.run_namespace = {}, "rlvr-harness:test", False, "t"
    ex.persistent_volumes = [PersistentVolume("shared-data", Path("/data"))]
    ex.logger = logging.getLogger("k8s-test")
    ex.workflow = types.SimpleNamespace(deployment_settings=types.SimpleNamespace(deployment_method=set()))
    ex.format_job_exec = lambda job: "harness train ..."
    ex.batchapi = types.SimpleNamespace(create_namespaced_job=lambda ns, body: sent.setdefault("body", body))
    ex._kubernetes_retry = lambda fn: fn()
    ex.report_job_submission = lambda info: None
    ex.run_job(types.SimpleNamespace(resources=resources, jobid=1, attempt=1, is_containerized=False))
    return sent["body"].spec.template.spec


def test_the_plugin_turns_the_tier_resources_into_gpu_requests_and_needs_the_manufacturer():
    from snakemake_interface_common.exceptions import WorkflowError

    reason = missing()
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    pod = _pod({"_cores": 2, "gpu": 2, "gpu_manufacturer": "nvidia", "mem_mb": 400000, "disk_mb": 50000,
                "runtime": 2880})
    c = pod.containers[0]
    assert c.resources.requests == {"cpu": "1900m", "memory": "400000M", "ephemeral-storage": "50000M",
                                    "nvidia.com/gpu": "2"}
    assert c.resources.limits is None  # the plugin's default: requests only ("scale")
    assert [(t.key, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
    assert [(v.name, v.mount_path) for v in c.volume_mounts] == [("workdir", "/workdir"), ("shared-data", "/data")]
    cpu = _pod({"_cores": 1, "gpu": 0, "gpu_manufacturer": "nvidia", "mem_mb": 6000})  # a CPU tier's job
    assert cpu.containers[0].resources.requests["nvidia.com/gpu"] == "0"
    with pytest.raises(WorkflowError, match="GPU requested but no manufacturer set"):
        _pod({"_cores": 1, "gpu": 0, "mem_mb": 6000})  # why the profile states gpu_manufacturer
