import sys
from pathlib import Path

from harness.config import ConfigError, REPO_ROOT, jobs, resolve_job, validate_run_config, load_card
from harness.tracking import tracking_uri

try:
    validate_run_config(config)
    PAPER, TIER = config["paper"], config["tier"]
    CARD = load_card(PAPER)
    JOBS = jobs(config)
    for _m, _s in JOBS:  # resolves hyperparameters, TRL keys and the on-policy check of every job up front
        resolve_job(PAPER, TIER, _m, _s, check_trl=True)
    DATA_DIR = Path(config["data_dir"])
    _data = CARD["tiers"][TIER].get("data", {})
    for _key in ("train", "val"):
        if _key in _data:
            from harness.realdata import data_file
            data_file(DATA_DIR, _data[_key])  # raises ConfigError naming the missing file
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)

WORK = config["work_dir"]
MLFLOW_URI = tracking_uri(WORK, config.get("mlflow_tracking_uri"))
THREADS = int(config.get("torch_threads", 1))
METHODS, SEEDS = zip(*JOBS)
RUN = WORK + "/runs/{paper}/{tier}/{method}/seed{seed}"
RESULTS = expand(RUN + "/result.json", zip, paper=[PAPER] * len(JOBS), tier=[TIER] * len(JOBS),
                 method=METHODS, seed=SEEDS)
VERDICT = f"{WORK}/verdicts/{PAPER}/{TIER}/verdict.json"

wildcard_constraints:
    paper=r"[A-Za-z0-9_]+",
    tier=r"smoke|cpu-real|small|paper",
    method=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def model_kind(wc):
    return load_card(wc.paper)["tiers"][wc.tier]["model"]["kind"]
