# Parse-time planning: every (paper, method, seed) of the run is resolved once (harness.plan) into a job keyed by its
# content. Cards whose resolved configs agree share the job: it trains once per seed and every card's verdict reads
# it. Paths: jobs/<tier>/<method>/<job_key>/seed<seed>/ (job.json, result.json, metrics.jsonl, model/, evals/).
import json
import sys
from pathlib import Path

from harness.config import ConfigError, REPO_ROOT, TIERS, validate_run_config, load_card, list_papers, run_papers
from harness.config.released import RELEASED_TIER
from harness.config.tiers import BenchmarkSpec, parse as parse_setting
from harness.plan import base_eval_key, job_dir, jobs, resolve_job, smoke_spec, upstream_plan
from harness.results import config_hash
from harness.results.store import base_model_key
from harness.track import TIMEOUT_S as TRACKING_TIMEOUT_S, tracking_uri, ui_url

try:
    # --config values typed as config/schema.json says (Snakemake passes list items and null as strings): the same
    # coercion and checks as `harness validate`, in harness.config
    config.update(validate_run_config(config))
    # paper: one id, a comma-separated list, or "all" (every card that has the tier)
    TIER = config["tier"]
    PAPERS = run_papers(config)
    if TIER == RELEASED_TIER:  # tier=released evaluates the cards' released checkpoints (rules/released.smk)
        PAPERS = []
    JOBS = {}      # job dir (relative to the work dir) -> resolved job
    RUNS = {}      # paper -> [job dir of each (method, seed) the card asks for]
    BASE = {}      # paper -> (base-eval key, job dir of the job that defines the base model's held-out protocol)
    RECORDED = {}  # job dir (recorded/...) -> upstream producer run (e.g. a ranking run recording its history)
    UPSTREAM = {}  # (kind, key) -> resolved upstream input (harness.plan, "Upstream inputs"; rules/train.smk)
    for PAPER in PAPERS:
        CARD = load_card(PAPER)
        for _m, _s in jobs({**config, "paper": PAPER}):
            # resolves hyperparameters, TRL keys and the on-policy check of every job up front
            _job = resolve_job(PAPER, TIER, _m, _s, check_trl=True)
            JOBS.setdefault(job_dir(_job), _job)
            RUNS.setdefault(PAPER, []).append(job_dir(_job))
            if "upstream" in _job:  # the producers of its upstream inputs (content-keyed, shared like jobs)
                _inputs, _runs = upstream_plan(PAPER, TIER, _m, _s, check_trl=True)
                for _d, _r in _runs.items():  # a producer that records its history lives under recorded/
                    (RECORDED if _d.startswith("recorded/") else JOBS).setdefault(_d, _r)
                UPSTREAM.update({(_u["kind"], _u["key"]): _u for _u in _inputs.values()})
        _bj = resolve_job(PAPER, TIER, CARD["baseline"], int(CARD["tiers"][TIER]["seeds"][0]))
        JOBS.setdefault(job_dir(_bj), _bj)
        BASE[PAPER] = (base_eval_key(_bj), job_dir(_bj))
        DATA_DIR = Path(config["data_dir"])
        _data = CARD["tiers"][TIER].get("data", {})
        from harness.data.realdata import data_file, manifest
        for _b in CARD["tiers"][TIER].get("benchmarks") or {}:
            data_file(DATA_DIR, _b)  # benchmark files must exist and match their digests before anything runs
        for _key in ("train", "val"):
            # alfworld: ALFWorld splits (checked when the jobs resolved); their manifests and game files are checked
            # by the job that plays them (harness.data.alfworld_task: a missing one names the command that writes it);
            # arpo_tools: sets under data_dir/arpo_reasoning or on the hub, read by the job (harness.data.arpo_task)
            if _key in _data and _data.get("task") not in ("alfworld", "arpo_tools"):
                if _data[_key] not in manifest():
                    raise ConfigError(f"{PAPER} tiers/{TIER}/data/{_key}: unknown dataset {_data[_key]!r}; "
                                      f"valid: {', '.join(manifest())}")
                if manifest()[_data[_key]]["path"] is not None:  # hub-only sets are fetched inside the job
                    data_file(DATA_DIR, _data[_key])  # raises ConfigError naming the missing file
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)

WORK = config["work_dir"]
MLFLOW_URI = tracking_uri(WORK, config.get("mlflow_tracking_uri"))
MLFLOW_TIMEOUT = config.get("mlflow_timeout_s") or TRACKING_TIMEOUT_S  # one bounded attempt (harness.track)
MLFLOW_UI = ui_url(MLFLOW_URI)  # a tracking server is its own UI; a local store: mlflow ui's default address
THREADS = int(config.get("torch_threads", 1))
JOB = WORK + "/jobs/{tier}/{method}/{key}/seed{seed}"
VERDICTS = [f"{WORK}/verdicts/{p}/{TIER}/verdict.json" for p in PAPERS]
BASE_JOB = {key: jd for key, jd in BASE.values()}  # base-eval key -> job dir defining the base model and protocol


def job_of(wc) -> dict:
    return JOBS[f"jobs/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]


def results_of(wc):
    return [f"{WORK}/{d}/result.json" for d in RUNS[wc.paper]]


def model_dir_of(job: dict) -> str:
    """The base model a job starts from: smoke-tier models are shared by every card with the same spec."""
    return f"{WORK}/models/{base_model_key(job)}/base"


def base_model(wc):
    return model_dir_of(job_of(wc))

from harness.evaluate.tasks.common import BENCHMARKS as _BENCHMARKS

wildcard_constraints:
    paper=r"[A-Za-z0-9_]+",
    benchmark="|".join(sorted(_BENCHMARKS)),
    tier="|".join(sorted(TIERS, key=len, reverse=True)),
    method=r"[A-Za-z0-9_]+",
    key=r"[0-9a-f]{12}",
    spec=r"[0-9a-f]{12}",
    ukey=r"[0-9a-f]{12}",
    kind=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def bench_spec(paper: str, benchmark: str) -> dict:
    return load_card(paper)["tiers"][TIER]["benchmarks"][benchmark]


def bench_key(paper: str, benchmark: str) -> str:
    """An lm-eval benchmark's settings from the card (k, limit, sampling, template): part of its result's path, so two
    cards that evaluate the same checkpoint the same way share the evaluation."""
    return config_hash(bench_spec(paper, benchmark))[:12]


BENCH_SPECS = {bench_key(p, b): bench_spec(p, b) for p in PAPERS
               for b in load_card(p)["tiers"][TIER].get("benchmarks") or {}}


def evals_of(wc):
    """Every checkpoint evaluation a card's verdict reads: the held-out set (k samples + greedy) and the tier's
    benchmarks, for the base model and for each trained run of the card."""
    benches = [f"{b}-{bench_key(wc.paper, b)}" for b in load_card(wc.paper)["tiers"][wc.tier].get("benchmarks") or {}]
    key = BASE[wc.paper][0]
    out = [f"{WORK}/base-evals/{wc.tier}/{key}/{n}.json" for n in ["heldout", *benches]]
    out += [f"{WORK}/{d}/evals/{n}.json" for d in RUNS[wc.paper] for n in ["heldout", *benches]]
    return out


def task_report_of(wc) -> list[str]:
    """The base model's task report, for smoke tasks other than addition (their verdicts list it)."""
    key, jd = BASE[wc.paper]
    job = JOBS[jd]
    if job["model"]["kind"] != "smoke" or job["data"].get("task") in (None, "addition"):
        return []
    return [f"{WORK}/base-evals/{wc.tier}/{key}/task_report.json"]


def eval_targets():
    return [f for p in PAPERS for f in evals_of(type("W", (), {"paper": p, "tier": TIER}))]


def eval_args(wc):
    """`harness eval` arguments of a card's benchmark (defaults from harness.config.tiers.BenchmarkSpec)."""
    spec = parse_setting(BenchmarkSpec, BENCH_SPECS[wc.spec], f"benchmark {wc.benchmark}")
    args = [f"--k {spec.k}", f"--max-gen-toks {spec.max_gen_toks}"]
    if spec.limit is not None:
        args.append(f"--limit {spec.limit}")
    if spec.temperature is not None:
        args.append(f"--temperature {spec.temperature}")
    if spec.chat_template:
        args.append("--chat-template")
    if spec.top_p is not None:
        args.append(f"--top-p {spec.top_p}")
    if spec.backend != "hf":
        args.append(f"--backend {spec.backend}")
    return " ".join(args)


def source_arg(wc) -> str:
    """Who an evaluation is of: the base model, or a job's (method, seed, job key)."""
    if getattr(wc, "method", None) is None:
        return f"tier={wc.tier},method=base"
    return f"tier={wc.tier},method={wc.method},seed={wc.seed},job_key={wc.key}"


# ---- cluster resources (profiles/slurm): a rule's jobs ask for what the card's tier states in `resources:`
# (harness.config.tiers.ResourcesSpec: nodes, gpus per node, mem_mb, runtime_min), not for constants. A tier that
# states nothing (the CPU tiers) gets the rule's own small defaults. A job shared by several cards (content-keyed)
# asks for the largest of their values; a job no card of the run lists directly (an upstream producer run) for the
# largest over the run's cards.
from functools import lru_cache

from harness.config.tiers import ResourcesSpec

_CARDS_OF = {}  # job dir -> the cards of this run that read it
for _p in PAPERS:
    for _d in [*RUNS[_p], BASE[_p][1]]:
        _CARDS_OF.setdefault(_d, set()).add(_p)


def _job_dir_of_wildcards(wc) -> str | None:
    if getattr(wc, "method", None) is not None:
        return f"jobs/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"
    return BASE_JOB.get(getattr(wc, "spec", None) or getattr(wc, "base", None) or "")


def tier_resources_of(wc) -> dict:
    """The card tier's `resources:` values for a job (None: not stated), the largest over the cards that read it."""
    return _tier_resources(_job_dir_of_wildcards(wc), getattr(wc, "tier", TIER))


@lru_cache(maxsize=None)
def _tier_resources(job_dir: str | None, tier: str) -> dict:
    out = {"nodes": 1, "gpus": 0, "mem_mb": None, "runtime_min": None, "cpus": None}
    for p in sorted(_CARDS_OF.get(job_dir) or PAPERS):
        block = load_card(p)["tiers"].get(tier, {}).get("resources")
        spec = parse_setting(ResourcesSpec, block, f"replications/{p}/card.yaml tiers/{tier}/resources")
        for k in out:
            v = getattr(spec, k)
            if v is not None:
                out[k] = v if out[k] is None else max(out[k], v)
    return out


def tier_resources(role: str, *, mem_mb: int, runtime: int) -> dict:
    """The `resources:` of a rule (``resources: **tier_resources("train", mem_mb=..., runtime=...)``), as callables of
    the job's wildcards. role "train": the tier's nodes and GPUs per node; "eval": one node with the tier's GPUs.
    mem_mb (MiB per node) and runtime (minutes): the tier's values, else the given defaults. GPUs: `gpu` (sbatch
    --gpus, the total) on one node; `gres: gpu:N` (per node) when a job spans nodes, since --gpus over several nodes
    may be split unevenly. cpus_per_task: the tier's `cpus` if stated, else unset (the plugin asks for the rule's
    threads)."""
    if role not in ("train", "eval"):
        raise ValueError(f"tier_resources: unknown role {role!r}; valid: train, eval")

    def nodes(wc):
        return tier_resources_of(wc)["nodes"] if role == "train" else 1

    def gpus(wc):
        return tier_resources_of(wc)["gpus"]

    return {
        "nodes": nodes,
        "gpu": lambda wc: gpus(wc) if nodes(wc) == 1 else None,
        "gres": lambda wc: f"gpu:{gpus(wc)}" if nodes(wc) > 1 and gpus(wc) else None,
        "mem_mb": lambda wc: tier_resources_of(wc)["mem_mb"] or mem_mb,
        "runtime": lambda wc: tier_resources_of(wc)["runtime_min"] or runtime,
        "cpus_per_task": lambda wc: tier_resources_of(wc)["cpus"],
    }
