"""How a training job is launched (harness.plan.launch; rules/train.smk): one plain process for every tier that asks
for nothing (the CPU tiers: their train rule, shell template and params unchanged, so Snakemake reruns nothing), and
`accelerate launch` with one of TRL's accelerate configs for a tier with several processes, on several nodes one
launcher per node under srun. The equivalence of several processes with one is tests/test_multiprocess.py."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.config.tiers import ResourcesSpec, SettingError, parse
from harness.plan import launch as L

ROOT = Path(__file__).resolve().parents[1]
#: the train rule's shell template before multi-process jobs existed (Snakemake's code rerun trigger compares it)
PLAIN = ("harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
         "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
         "--threads {threads} > {log} 2>&1")


def _spec(**kw) -> ResourcesSpec:
    return parse(ResourcesSpec, kw, "test")


def test_defaults_keep_one_plain_process():
    one = L.launch_of(_spec(), "t")
    assert (one.processes, one.nodes, one.launched) == (1, 1, False)
    assert L.launch_prefix(one, key="0123456789ab", trl={"bf16": True}) == ""
    assert not L.launch_of(_spec(mem_mb=6000, cpus=4), "t").launched


def test_processes_default_to_one_per_gpu_and_are_checked():
    assert L.launch_of(_spec(nodes=4, gpus=8), "t").processes == 32
    assert L.launch_of(_spec(gpus=2), "t").launched
    assert L.launch_of(_spec(processes=4, gpus=8), "t").processes == 4  # e.g. GPUs left to a vLLM server
    assert L.launch_of(_spec(processes=2), "t").launched  # several CPU processes (gloo)
    with pytest.raises(ConfigError, match="12 per node, more than its 8 GPUs"):
        L.launch_of(_spec(processes=24, nodes=2, gpus=8), "t")
    with pytest.raises(ConfigError, match="multiple of nodes"):
        L.launch_of(_spec(processes=3, nodes=2, gpus=8), "t")
    with pytest.raises(ConfigError, match=r"processes 1 must be >= 1 and a multiple of nodes \(2\)"):
        L.launch_of(_spec(processes=1, nodes=2), "t")
    with pytest.raises(SettingError, match="processes must be int or null, got 'all'"):
        _spec(processes="all")


def test_accelerate_configs_are_trls_and_checked():
    names = L.accelerate_configs()
    assert {"zero1", "zero2", "zero3", "fsdp1", "fsdp2", "multi_gpu"} <= set(names) and "single_gpu" not in names
    assert L.config_file("zero3") == L.config_dir() / "zero3.yaml" and L.config_file("zero3").is_file()
    assert L.launch_of(_spec(gpus=8, accelerate_config="zero3"), "x").config == "zero3"
    assert L.launch_of(_spec(gpus=8), "x").config == "multi_gpu"  # null: plain DDP
    with pytest.raises(ConfigError, match=r"x: unknown accelerate_config 'zero4' \(did you mean 'zero3'\?\); valid: "
                                          r"fsdp1, fsdp2, multi_gpu, zero1, zero2, zero3"):
        L.launch_of(_spec(gpus=8, accelerate_config="zero4"), "x")
    with pytest.raises(ConfigError, match="single_gpu': one process on one device is the plain `harness train`"):
        L.launch_of(_spec(gpus=1, accelerate_config="single_gpu"), "x")
    with pytest.raises(ConfigError, match="accelerate_config 'zero3' needs GPUs"):
        L.launch_of(_spec(processes=2, accelerate_config="zero3"), "x")


def test_cli_prints_the_config_path_or_names_the_valid_ones():
    p = subprocess.run([sys.executable, "-m", "harness.plan.launch", "config-file", "fsdp2"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and Path(p.stdout.strip()) == L.config_dir() / "fsdp2.yaml"
    p = subprocess.run([sys.executable, "-m", "harness.plan.launch", "config-file", "zero9"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "valid: fsdp1, fsdp2, multi_gpu, zero1, zero2, zero3" in p.stderr


def test_one_node_launch_line():
    line = L.launch_prefix(L.Launch(8, 1, 8, "zero3"), key="0123456789ab", trl={"bf16": True})
    port = L.port_of("0123456789ab")
    assert line == ('accelerate launch --config_file "$(python -m harness.plan.launch config-file zero3)" '
                    f"--num_processes 8 --num_machines 1 --machine_rank 0 --main_process_port {port} "
                    "--mixed_precision bf16 --no_python")
    assert L.PORTS[0] <= port < L.PORTS[1] and port == L.port_of("0123456789ab") != L.port_of("0123456789ac")
    assert "--mixed_precision no " in L.launch_prefix(L.Launch(2), key="k", trl={})  # the harness's fp32
    assert "--mixed_precision fp16 " in L.launch_prefix(L.Launch(2), key="k", trl={"fp16": True})
    assert L.slurm_resources(L.Launch(8, 1, 8)) == {"mpi": None, "tasks": None, "tasks_per_gpu": None}


def test_multi_node_launch_line_runs_one_launcher_per_node():
    launch = L.Launch(128, 16, 8, "fsdp2")
    line = L.launch_prefix(launch, key="0123456789ab", trl={"bf16": True})
    check, head, rest = line.split(" && ")
    assert check == ': "${SLURM_JOB_NODELIST:?a multi-node job runs inside a SLURM allocation}"'
    assert head == 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    assert rest.startswith("srun --nodes 16 --ntasks-per-node 1 --kill-on-bad-exit=1 --gpus-per-node 8 accelerate "
                           'launch --config_file "$(python -m harness.plan.launch config-file fsdp2)" '
                           "--num_processes 128 --num_machines 16 --rdzv_backend c10d "
                           '--main_process_ip "$HEAD_NODE" --main_process_port ')
    assert rest.endswith("--mixed_precision bf16 --no_python") and "--machine_rank" not in rest  # c10d: ranks
    assert L.slurm_resources(launch) == {"mpi": "srun", "tasks": 16, "tasks_per_gpu": 0}
    # outside a SLURM allocation the line stops with a message instead of launching on one node
    p = subprocess.run(["bash", "-c", f"{check} && {head} && echo launched"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")}, timeout=60)
    assert p.returncode != 0 and "a multi-node job runs inside a SLURM allocation" in p.stderr
    assert "launched" not in p.stdout


def test_cards_sharing_a_job_take_the_largest_and_one_config(monkeypatch):
    cards = {"a": {"resources": {"gpus": 8, "nodes": 2}}, "b": {"resources": {"gpus": 8, "nodes": 4,
                                                                             "accelerate_config": "zero3"}},
             "c": {"resources": {"gpus": 8, "accelerate_config": "fsdp2"}}, "d": {}}
    monkeypatch.setattr(L, "load_card", lambda p: {"tiers": {"paper": cards[p]}})
    assert L.tier_launch(["a", "b"], "paper") == L.Launch(32, 4, 8, "zero3")
    assert L.tier_launch(["d"], "paper") == L.Launch()
    with pytest.raises(ConfigError, match="different accelerate configs: b: zero3, c: fsdp2"):
        L.tier_launch(["b", "c"], "paper")


def test_key_patterns_split_the_jobs_between_the_rules():
    keys = {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    plain, launched = L.key_pattern(keys, launched=False), L.key_pattern(keys, launched=True)

    def match(pattern, key):
        return re.fullmatch(rf"jobs/paper/grpo/(?P<key>{pattern})/seed42/result\.json",
                            f"jobs/paper/grpo/{key}/seed42/result.json") is not None

    for key in keys:
        assert match(launched, key) and not match(plain, key)
    assert match(plain, "abcabcabcabc") and not match(launched, "abcabcabcabc")
    assert match(plain, "aaaaaaaaaaab")  # a key sharing a prefix with a launched one stays plain
    assert not match(L.key_pattern(set(), launched=True), "aaaaaaaaaaaa")
    assert L.key_pattern(set(), launched=False) == "[0-9a-f]{12}"  # no launched job: the global constraint


def _rule_block(text: str, rule: str) -> str:
    return re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, re.S | re.M).group(1)


def _shell(block: str) -> str:
    lines = block.split("    shell:\n", 1)[1].strip().splitlines()
    return "".join(ast.literal_eval(x.strip()) for x in lines)


def test_plain_train_rules_are_unchanged():
    """Snakemake reruns a job when its rule's shell template or params change: the plain rules keep both."""
    text = (ROOT / "rules" / "train.smk").read_text()
    for plain, launched in (("train", "train_multi"), ("train_recorded", "train_recorded_multi")):
        p, m = _rule_block(text, plain), _rule_block(text, launched)
        assert _shell(p) == PLAIN
        assert _shell(m) == "{params.launch} " + PLAIN
        params = re.search(r"^    params:\n(.*?)^    log:", p, re.S | re.M).group(1)
        assert [x.strip() for x in params.splitlines() if x.strip() and not x.strip().startswith("#")] == [
            'data_dir=config["data_dir"],']
        assert 'key=key_pattern(LAUNCHED_KEYS["' in p and "launched=False" in p and "launched=True" in m


# ---- dry runs of the DAG (a copy of the project; no cluster needed)


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    from conftest import make_project_copy

    return make_project_copy(tmp_path_factory.mktemp("launch"), tiny=False)


def _dry_run(proj: Path, *config: str) -> str:
    p = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--nolock", "--config", *config], cwd=proj,
                       env={**os.environ, "RLVR_HARNESS_ROOT": str(proj)}, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p.stdout


def _blocks(out: str, rule: str) -> list[str]:
    return [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", out) if b.startswith(f"rule {rule}:")]


def test_paper_tier_dry_run_prints_the_launch_line_and_resources(proj):
    out = _dry_run(proj, "paper=forking_tokens", "tier=paper")
    assert not _blocks(out, "train")
    blocks = _blocks(out, "train_multi")
    assert {re.search(r"method=(\w+)", b).group(1) for b in blocks} == {"grpo", "forking_tokens",
                                                                         "forking_tokens_trl"}
    for b in blocks:
        res = re.search(r"^\s+resources: (.*)$", b, re.M).group(1)
        assert all(x in res.split(", ") for x in ("nodes=16", "gres=gpu:8", "mpi=srun", "tasks=16",
                                                  "tasks_per_gpu=0", "runtime=10080", "mem_mb=1000000"))
        cmd = re.search(r"^Shell command: (.*)$", b, re.M).group(1)
        assert "srun --nodes 16 --ntasks-per-node 1" in cmd
        assert ('accelerate launch --config_file "$(python -m harness.plan.launch config-file fsdp2)" '
                "--num_processes 128 --num_machines 16 --rdzv_backend c10d") in cmd
        assert "--mixed_precision bf16 --no_python harness train --job " in cmd


def test_smoke_tier_dry_run_keeps_the_plain_command(proj):
    out = _dry_run(proj, "paper=entropy_mechanism", "tier=smoke", "methods=[grpo]", "seeds=[42]")
    assert not _blocks(out, "train_multi")
    (b,) = _blocks(out, "train")
    cmd = re.search(r"^Shell command: (.*)$", b, re.M).group(1)
    assert cmd.startswith("harness train --job ") and "accelerate" not in cmd
    res = re.search(r"^\s+resources: (.*)$", b, re.M).group(1)
    assert "mpi" not in res and "tasks" not in res
