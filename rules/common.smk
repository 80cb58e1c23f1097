import sys
from pathlib import Path

from harness.config import ConfigError, REPO_ROOT, validate_run_config, load_card

from harness.plan import jobs, resolve_job
from harness.track import tracking_uri

from harness.config import list_papers

from harness.plan import smoke_spec

try:
    # paper: one id, a comma-separated list, or "all" (every card that has the tier)
    TIER = config["tier"]
    if config["paper"] == "all":
        PAPERS = [p for p in list_papers() if TIER in load_card(p)["tiers"]]
    else:
        PAPERS = [p.strip() for p in str(config["paper"]).split(",") if p.strip()]
    ALL = []  # (paper, method, seed)
    for PAPER in PAPERS:
        validate_run_config({**config, "paper": PAPER})
        CARD = load_card(PAPER)
        for _m, _s in jobs({**config, "paper": PAPER}):
            # resolves hyperparameters, TRL keys and the on-policy check of every job up front
            resolve_job(PAPER, TIER, _m, _s, check_trl=True)
            ALL.append((PAPER, _m, _s))
        DATA_DIR = Path(config["data_dir"])
        _data = CARD["tiers"][TIER].get("data", {})
        from harness.data.realdata import data_file, manifest
        for _b in CARD["tiers"][TIER].get("benchmarks") or {}:
            data_file(DATA_DIR, _b)  # benchmark files must exist and match their digests before anything runs
        for _key in ("train", "val"):
            if _key in _data:
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
THREADS = int(config.get("torch_threads", 1))
RUN = WORK + "/runs/{paper}/{tier}/{method}/seed{seed}"
VERDICTS = [f"{WORK}/verdicts/{p}/{TIER}/verdict.json" for p in PAPERS]


def results_of(wc):
    return [f"{WORK}/runs/{p}/{wc.tier}/{m}/seed{s}/result.json" for p, m, s in ALL if p == wc.paper]


def base_model(wc):
    """Smoke-tier base models are shared by every card with the same model/pre-training spec."""
    if load_card(wc.paper)["tiers"][wc.tier]["model"]["kind"] == "smoke":
        return f"{WORK}/models/smoke-{smoke_spec(wc.paper)}/base"
    return f"{WORK}/models/{wc.paper}/{wc.tier}/base"

from harness.evaluate.tasks.common import BENCHMARKS as _BENCHMARKS

wildcard_constraints:
    paper=r"[A-Za-z0-9_]+",
    benchmark="|".join(sorted(_BENCHMARKS)),
    tier=r"smoke|cpu-real|small|paper",
    method=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def model_kind(wc):
    return load_card(wc.paper)["tiers"][wc.tier]["model"]["kind"]


def evals_of(wc):
    """Every checkpoint evaluation of a replication: the held-out set (k samples + greedy) and the tier's
    benchmarks, for the base model and for each trained run."""
    tier_cfg = load_card(wc.paper)["tiers"][wc.tier]
    benches = ["heldout", *(tier_cfg.get("benchmarks") or {})]
    who = ["base"] + [f"{m}/seed{s}" for p, m, s in ALL if p == wc.paper]
    return [f"{WORK}/evals/{wc.paper}/{wc.tier}/{w}/{b}.json" for w in who for b in benches]


def eval_targets():
    return [f for p in PAPERS for f in evals_of(type("W", (), {"paper": p, "tier": TIER}))]


def eval_args(wc):
    spec = load_card(wc.paper)["tiers"][wc.tier]["benchmarks"][wc.benchmark]
    who = "base" if getattr(wc, "method", "base") == "base" else f"{wc.method},seed={wc.seed}"
    source = f"paper={wc.paper},tier={wc.tier},method={who}"
    args = [f"--source {source}", f"--k {spec.get('k', 1)}", f"--max-gen-toks {spec.get('max_gen_toks', 1024)}"]
    if spec.get("limit") is not None:
        args.append(f"--limit {spec['limit']}")
    if "temperature" in spec:
        args.append(f"--temperature {spec['temperature']}")
    if spec.get("chat_template"):
        args.append("--chat-template")
    return " ".join(args)
