# ---- upstream inputs (harness.plan, "Upstream inputs"): a job whose method takes another job's or rule's output.
# Jobs without upstream inputs are untouched: their train rule's input list, params and shell are as before.
REC = WORK + "/recorded/{tier}/{method}/{key}/seed{seed}"


def recorded_of(wc) -> dict:
    return RECORDED[f"recorded/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]


def upstream_of(wc) -> dict:
    return UPSTREAM[(getattr(wc, "kind", "ranking"), wc.ukey)]


def upstream_inputs(wc) -> list[str]:
    """The artifacts a job's method takes as inputs (none for almost every job)."""
    return [f"{WORK}/{u['path']}" for u in (job_of(wc).get("upstream") or {}).values()]


# ---- multi-process jobs (harness.plan.launch): a job whose card tier asks for several processes (resources:
# processes, or nodes x gpus) or names an accelerate config runs `harness train` under `accelerate launch`, through
# rules train_multi / train_recorded_multi; every other job keeps rules train / train_recorded exactly as they were
# (same shell template and params, so no rerun trigger fires for them). The rules are told apart by job key.
from harness.plan.launch import key_pattern, launch_prefix, slurm_resources, tier_launch


def _launch_of_dir(jd: str):
    """The launch of a job dir (jobs/... or recorded/...): the largest over the cards of the run that read any seed
    of its key (all cards of the run for a job no card lists directly, as tier_resources does)."""
    kind, tier, _m, key, _s = jd.split("/")
    cards = set().union(*(_CARDS_OF.get(d) or set(PAPERS) for d in _DIRS_OF_KEY[(kind, key)]))
    return tier_launch(sorted(cards), tier)


_DIRS_OF_KEY = {}
for _d in [*JOBS, *RECORDED]:
    _DIRS_OF_KEY.setdefault((_d.split("/")[0], _d.split("/")[3]), []).append(_d)
try:
    LAUNCH = {_d: _launch_of_dir(_d) for _d in [*JOBS, *RECORDED]}  # job dir -> harness.plan.launch.Launch
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
LAUNCHED_KEYS = {kind: {d.split("/")[3] for d, l in LAUNCH.items() if l.launched and d.startswith(kind + "/")}
                 for kind in ("jobs", "recorded")}


def launch_of(wc, kind: str = "jobs"):
    return LAUNCH[f"{kind}/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]


def launch_line(wc, kind: str = "jobs") -> str:
    """`accelerate launch ... --no_python` (srun per node on several nodes), in front of `harness train`."""
    job = (JOBS if kind == "jobs" else RECORDED)[f"{kind}/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]
    return launch_prefix(launch_of(wc, kind), key=wc.key, trl=job.get("trl") or {})


def launch_resources(kind: str = "jobs") -> dict:
    """SLURM executor resources of a multi-node launch (mpi, tasks; None on one node)."""
    return {k: (lambda wc, k=k: slurm_resources(launch_of(wc, kind))[k]) for k in ("mpi", "tasks", "tasks_per_gpu")}


rule job_spec:
    """The resolved job (hyperparameters, TRL settings, model, data, evaluation), written once: every later step
    reads this file. Its path is its content key, so a changed setting is a new job. (A shell rule: a `run:` block
    would re-parse the whole workflow in a subprocess per job.)"""
    output:
        JOB + "/job.json",
    params:
        job=lambda wc: json.dumps(job_of(wc), indent=1, sort_keys=True),
    log:
        WORK + "/logs/jobs/{tier}-{method}-{key}-seed{seed}.log",
    shell:
        "printf '%s\\n' {params.job:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"


rule train:
    """One job per distinct (resolved config, seed): the TRL GRPO trainer with the method from the registry."""
    input:
        job=JOB + "/job.json",
        model=base_model,
        upstream=upstream_inputs,  # a method's upstream inputs (none for most jobs); harness train finds them
    output:
        result=JOB + "/result.json",
        metrics=JOB + "/metrics.jsonl",
        model=directory(JOB + "/model"),  # the final policy, evaluated by rules/eval.smk
    params:
        data_dir=config["data_dir"],
    # Where results are logged is not part of what a job computes: the tracking store (MLFLOW_URI, MLFLOW_TIMEOUT
    # from rules/common.smk) is read from the shell template, not from params, so pointing MLFLOW_TRACKING_URI or
    # mlflow_tracking_uri elsewhere reruns nothing (Snakemake's rerun triggers compare params and the unformatted
    # template).
    log:
        WORK + "/logs/train/{tier}/{method}-{key}-seed{seed}.log",
    threads: THREADS
    resources:
        **tier_resources("train", mem_mb=6000, runtime=60),  # tiers without `resources:`: cpu-real peak RSS 5.2 GB
    wildcard_constraints:
        key=key_pattern(LAUNCHED_KEYS["jobs"], launched=False),  # launched jobs: rule train_multi
    shell:
        "harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "--threads {threads} > {log} 2>&1"


rule train_multi:
    """rule train for a job of several processes or with an accelerate config (harness.plan.launch): the same
    command under `accelerate launch` with TRL's config (DDP, DeepSpeed ZeRO, FSDP), one launcher per node (srun)
    on several nodes. The launch line is a param: another process count or config reruns the job."""
    input:
        job=JOB + "/job.json",
        model=base_model,
        upstream=upstream_inputs,
    output:
        result=JOB + "/result.json",
        metrics=JOB + "/metrics.jsonl",
        model=directory(JOB + "/model"),
    params:
        data_dir=config["data_dir"],
        launch=launch_line,
    log:
        WORK + "/logs/train/{tier}/{method}-{key}-seed{seed}.log",
    threads: THREADS
    resources:
        **tier_resources("train", mem_mb=6000, runtime=60),
        **launch_resources(),
    wildcard_constraints:
        key=key_pattern(LAUNCHED_KEYS["jobs"], launched=True),
    shell:
        "{params.launch} harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "--threads {threads} > {log} 2>&1"


rule recorded_job_spec:
    """The resolved job of an upstream producer run (e.g. a ranking run: the job plus `history`), written once."""
    output:
        REC + "/job.json",
    params:
        job=lambda wc: json.dumps(recorded_of(wc), indent=1, sort_keys=True),
    log:
        WORK + "/logs/recorded/{tier}-{method}-{key}-seed{seed}.log",
    shell:
        "printf '%s\\n' {params.job:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"


rule train_recorded:
    """An upstream producer run: trains like rule train and also records each training row's accuracy per visit
    (train_history.json); never evaluated or judged, only read by the rules downstream of it."""
    input:
        job=REC + "/job.json",
        model=lambda wc: model_dir_of(recorded_of(wc)),
    output:
        result=REC + "/result.json",
        metrics=REC + "/metrics.jsonl",
        history=REC + "/train_history.json",
    params:
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/train/recorded-{tier}/{method}-{key}-seed{seed}.log",
    threads: THREADS
    resources:
        **tier_resources("train", mem_mb=6000, runtime=60),  # tiers without `resources:`: cpu-real peak RSS 5.2 GB
    wildcard_constraints:
        key=key_pattern(LAUNCHED_KEYS["recorded"], launched=False),  # launched runs: rule train_recorded_multi
    shell:
        "harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "--threads {threads} > {log} 2>&1"


rule train_recorded_multi:
    """rule train_recorded under `accelerate launch` (as train_multi is to train)."""
    input:
        job=REC + "/job.json",
        model=lambda wc: model_dir_of(recorded_of(wc)),
    output:
        result=REC + "/result.json",
        metrics=REC + "/metrics.jsonl",
        history=REC + "/train_history.json",
    params:
        data_dir=config["data_dir"],
        launch=lambda wc: launch_line(wc, "recorded"),
    log:
        WORK + "/logs/train/recorded-{tier}/{method}-{key}-seed{seed}.log",
    threads: THREADS
    resources:
        **tier_resources("train", mem_mb=6000, runtime=60),
        **launch_resources("recorded"),
    wildcard_constraints:
        key=key_pattern(LAUNCHED_KEYS["recorded"], launched=True),
    shell:
        "{params.launch} harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "--threads {threads} > {log} 2>&1"


rule rank_history:
    """1-shot RLVR data selection: a ranking run's accuracy history -> the examples ranked by a rule (std, lim,
    random; harness.data.selection)."""
    input:
        history=lambda wc: f"{WORK}/{upstream_of(wc)['run_dir']}/train_history.json",
    output:
        WORK + "/upstream/ranking/{ukey}/ranking.json",
    params:
        rule=lambda wc: upstream_of(wc)["rule"],
        seed=lambda wc: upstream_of(wc)["seed"],
    log:
        WORK + "/logs/upstream/ranking-{ukey}.log",
    shell:
        "harness rank --history {input.history} --rule {params.rule} --seed {params.seed} --out {output} > {log} 2>&1"


rule upstream_spec:
    """The resolved spec of an upstream input of another kind (e.g. prm), for the rule of that kind that produces
    upstream/<kind>/<key>/<output> (see harness.plan)."""
    output:
        WORK + "/upstream/{kind}/{ukey}/spec.json",
    params:
        spec=lambda wc: json.dumps(upstream_of(wc), indent=1, sort_keys=True),
    log:
        WORK + "/logs/upstream/{kind}-{ukey}-spec.log",
    shell:
        "printf '%s\\n' {params.spec:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"
