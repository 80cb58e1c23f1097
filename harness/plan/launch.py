"""How a training job is launched: one process (``harness train ...``, as every CPU tier runs), or several under
``accelerate launch`` with one of the accelerate configs TRL ships (DDP, DeepSpeed ZeRO 1-3, FSDP 1/2).

The card's tier states it in ``resources:`` (:class:`harness.config.tiers.ResourcesSpec`): ``processes`` (null: one
per GPU, ``nodes x gpus``, 1 without GPUs) and ``accelerate_config`` (a file name of ``trl/accelerate_configs/``,
referenced, never copied; null: ``multi_gpu``). A job is *launched* when it has more than one process or states an
accelerate config; every other job keeps the plain command, so the DAG's train rule and its rerun triggers are
untouched for them (rules/train.smk routes launched jobs to ``train_multi`` by job key).

The launch line (:func:`launch_prefix`) goes in front of ``harness train ...``:

- one node: ``accelerate launch --config_file <cfg> --num_processes P --num_machines 1 --machine_rank 0
  --main_process_port <port> --mixed_precision <mp> --no_python``; the port is derived from the job key, so two
  jobs on one node do not collide; the mixed precision follows the job's TRL ``bf16``/``fp16`` (a DeepSpeed config
  whose precision disagrees with the Trainer's is an error in transformers).
- several nodes (SLURM): one launcher per node, ``srun --nodes N --ntasks-per-node 1 accelerate launch ...
  --num_machines N --rdzv_backend c10d --main_process_ip <first node of the allocation>`` (accelerate's own SLURM
  recipe: the c10d rendezvous assigns the node ranks). The rule marks such jobs ``mpi`` for the SLURM executor
  (:func:`slurm_resources`), so the job step is not wrapped in ``srun -n1`` and the command's own ``srun`` places
  the launchers.

The config file is resolved when the job runs (``python -m harness.plan.launch config-file <name>``): where TRL is
installed is not part of what a job computes, so it stays out of the rule's params (a different environment path
reruns nothing; a different process count or config does).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError, load_card
from harness.config.tiers import ResourcesSpec, SettingError, parse

#: the accelerate config of a launched job whose card names none (plain data-parallel; torchrun on CPU)
DEFAULT_CONFIG = "multi_gpu"
#: configs that shard or offload through DeepSpeed or FSDP: GPU only (accelerate ignores them with --cpu)
GPU_ONLY = ("zero1", "zero2", "zero3", "fsdp1", "fsdp2")
#: configs TRL ships that a job cannot use, and why
EXCLUDED = {"single_gpu": "one process on one device is the plain `harness train` (leave accelerate_config null)"}
#: the range of rendezvous ports a single-node job picks from (by its key)
PORTS = (20000, 40000)


def config_dir() -> Path:
    """``trl/accelerate_configs`` of the installed TRL (found without importing TRL, which imports torch)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("TRL is not installed: the accelerate configs of multi-process jobs are TRL's")
    return Path(list(spec.submodule_search_locations)[0]) / "accelerate_configs"


def accelerate_configs() -> list[str]:
    """Names of the accelerate configs TRL ships that a job can use (``zero3``, ``fsdp2``, ...)."""
    return sorted(p.stem for p in config_dir().glob("*.yaml") if p.stem not in EXCLUDED)


def config_file(name: str) -> Path:
    """The path of TRL's accelerate config ``name``; an unknown name is a ConfigError naming the valid ones."""
    valid = accelerate_configs()
    if name in EXCLUDED:
        raise ConfigError(f"accelerate_config {name!r}: {EXCLUDED[name]}; valid: {', '.join(valid)}")
    if name not in valid:
        hint = difflib.get_close_matches(name, valid, n=1)
        raise ConfigError(f"unknown accelerate_config {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; valid: {', '.join(valid)}")
    return config_dir() / f"{name}.yaml"


@dataclass(frozen=True)
class Launch:
    """How one job runs: ``processes`` in all, on ``nodes`` nodes with ``gpus`` GPUs each, under
    ``accelerate_config`` (None: :data:`DEFAULT_CONFIG` when launched)."""

    processes: int = 1
    nodes: int = 1
    gpus: int = 0
    accelerate_config: str | None = None

    @property
    def launched(self) -> bool:
        """True: ``accelerate launch``; False: the plain ``harness train`` command."""
        return self.processes > 1 or self.accelerate_config is not None or self.nodes > 1

    @property
    def config(self) -> str:
        return self.accelerate_config or DEFAULT_CONFIG


def launch_of(spec: ResourcesSpec, where: str) -> Launch:
    """A tier's :class:`ResourcesSpec` -> :class:`Launch`, checked: processes >= 1, a whole number per node, at most
    one per GPU on GPU nodes; a known accelerate config, and no DeepSpeed/FSDP config without GPUs."""
    nodes, gpus = spec.nodes, spec.gpus
    if nodes < 1 or gpus < 0:
        raise ConfigError(f"{where}: nodes must be >= 1 and gpus >= 0, got nodes {nodes}, gpus {gpus}")
    processes = spec.processes if spec.processes is not None else max(nodes * gpus, 1)
    if processes < 1 or processes % nodes:
        raise ConfigError(f"{where}: processes {processes} must be >= 1 and a multiple of nodes ({nodes})")
    if gpus and processes // nodes > gpus:
        raise ConfigError(f"{where}: processes {processes} on {nodes} node(s) is {processes // nodes} per node, more "
                          f"than its {gpus} GPUs (one process per GPU at most)")
    if spec.accelerate_config is not None:
        try:
            config_file(spec.accelerate_config)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if not gpus and spec.accelerate_config in GPU_ONLY:
            raise ConfigError(f"{where}: accelerate_config {spec.accelerate_config!r} needs GPUs (gpus: 0); on CPU "
                              f"use {DEFAULT_CONFIG} or leave it null")
    return Launch(processes, nodes, gpus, spec.accelerate_config)


def cold_start_launch(block: dict, where: str) -> Launch:
    """The launch of a model block's cold start (``model.cold_start.resources``; one node)."""
    try:
        spec = parse(ResourcesSpec, block.get("resources"), f"{where}/resources")
    except SettingError as e:
        raise ConfigError(str(e)) from None
    if spec.nodes != 1:
        raise ConfigError(f"{where}/resources: a cold start runs on one node, got nodes {spec.nodes}")
    return launch_of(spec, f"{where}/resources")


def tier_launch(papers: list[str], tier: str) -> Launch:
    """The launch of a job read by the cards ``papers`` at ``tier``: the largest processes, nodes and GPUs they
    state (as the rule's resources take the largest), one accelerate config (cards that name different ones are a
    ConfigError)."""
    out, configs = Launch(), {}
    for p in sorted(papers):
        where = f"replications/{p}/card.yaml tiers/{tier}/resources"
        try:
            spec = parse(ResourcesSpec, load_card(p)["tiers"].get(tier, {}).get("resources"), where)
        except SettingError as e:
            raise ConfigError(str(e)) from None
        one = launch_of(spec, where)
        if one.accelerate_config is not None:
            configs[p] = one.accelerate_config
        out = Launch(max(out.processes, one.processes), max(out.nodes, one.nodes), max(out.gpus, one.gpus))
    if len(set(configs.values())) > 1:
        raise ConfigError(f"tier {tier}: the cards sharing a job name different accelerate configs: "
                          + ", ".join(f"{p}: {c}" for p, c in sorted(configs.items())))
    return Launch(out.processes, out.nodes, out.gpus, next(iter(configs.values()), None))


def mixed_precision(trl: dict) -> str:
    """accelerate's ``--mixed_precision`` for a job's TRL settings (the harness trains in fp32 unless bf16/fp16)."""
    return "bf16" if trl.get("bf16") else "fp16" if trl.get("fp16") else "no"


def port_of(key: str) -> int:
    """A rendezvous port from the job key (stable, spread over :data:`PORTS`)."""
    lo, hi = PORTS
    return lo + int(hashlib.sha256(key.encode()).hexdigest(), 16) % (hi - lo)


def launch_prefix(launch: Launch, *, key: str, trl: dict) -> str:
    """The shell text that goes in front of ``harness train ...`` for a job (``""``: not launched)."""
    if not launch.launched:
        return ""
    cfg = f'"$(python -m harness.plan.launch config-file {launch.config})"'
    args = ["accelerate", "launch", "--config_file", cfg, "--num_processes", str(launch.processes),
            "--num_machines", str(launch.nodes)]
    if launch.nodes == 1:
        args += ["--machine_rank", "0"]
    else:
        args += ["--rdzv_backend", "c10d", "--main_process_ip", '"$HEAD_NODE"']
    args += ["--main_process_port", str(port_of(key)), "--mixed_precision", mixed_precision(trl), "--no_python"]
    if launch.nodes == 1:
        return " ".join(args)
    srun = ["srun", "--nodes", str(launch.nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1"]
    if launch.gpus:
        srun += ["--gpus-per-node", str(launch.gpus)]
    head = (': "${SLURM_JOB_NODELIST:?a multi-node job runs inside a SLURM allocation}" && '
            'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) &&')
    return " ".join([head, *srun, *args])


def slurm_resources(launch: Launch) -> dict:
    """Extra SLURM executor resources of a multi-node job: ``mpi`` (the job step runs the command itself, whose srun
    starts one launcher per node), ``tasks`` = nodes (sbatch --ntasks) and ``tasks_per_gpu`` 0 (else the plugin
    would turn ``tasks`` into --ntasks-per-gpu on GPU jobs). None for a one-node job: nothing is asked."""
    if launch.nodes == 1:
        return {"mpi": None, "tasks": None, "tasks_per_gpu": None}
    return {"mpi": "srun", "tasks": launch.nodes, "tasks_per_gpu": 0}


def key_pattern(keys: set[str] | list[str], *, launched: bool) -> str:
    """The ``key`` wildcard constraint of the plain rule (``launched=False``: every 12-hex key but ``keys``) or of
    the launching rule (``launched=True``: only ``keys``; none: a pattern that matches nothing)."""
    keys = sorted(keys)
    if launched:
        return "|".join(keys) if keys else "(?!)x"
    return f"(?!(?:{'|'.join(keys)})/)[0-9a-f]{{12}}" if keys else "[0-9a-f]{12}"


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.plan.launch config-file <name>``: print the path of TRL's accelerate config."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "config-file":
        print("usage: python -m harness.plan.launch config-file <name>", file=sys.stderr)
        return 2
    try:
        print(config_file(argv[1]))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
