def _job_with_model_dir(model_dir: str) -> dict:
    return next(j for j in JOBS.values() if model_dir_of(j) == model_dir)


def _model_spec(wc) -> str:
    """What a base model's key hashes (harness.results.store.base_model_key), from any job with that model: the
    same bytes whichever cards the run selects."""
    job = _job_with_model_dir(f"{WORK}/models/{wc.kind}-{wc.spec}/base")
    keys = ("model", "pretrain", "data") if wc.kind == "smoke" else ("model",)
    return json.dumps({k: job.get(k) for k in keys}, indent=1, sort_keys=True)


rule model_spec:
    """A base model's spec, keyed by its content: the model rules read it, not a job file (which job comes first
    depends on the cards a run selects, and a different input file would rebuild the model and retrain every job
    on it)."""
    output:
        WORK + "/models/{kind}-{spec}/spec.json",
    params:
        spec=_model_spec,
    log:
        WORK + "/logs/models/{kind}-{spec}-spec.log",
    wildcard_constraints:
        kind="smoke|hf|sft",
    shell:
        "printf '%s\\n' {params.spec:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"


rule pretrain_smoke:
    """Smoke tiers: build the tokenizer and pre-train the tiny model on the job's smoke task (no download); a base model
    pinned under results/models/ with the same key and intact files is restored instead (a fresh clone does not
    pre-train again)."""
    input:
        spec=WORK + "/models/smoke-{spec}/spec.json",
    output:
        directory(WORK + "/models/smoke-{spec}/base"),
    log:
        WORK + "/logs/pretrain/smoke-{spec}.log",
    threads: 2
    resources:
        mem_mb=2000,
    shell:
        "harness pretrain --spec {input.spec} --out {output} --threads {threads} "
        "--pinned-root " + config["results_dir"] + " > {log} 2>&1"


rule prepare_hf_model:
    """Real-model tiers: resolve the base model (hub id for users; the PyPI GGUF wheel offline) to a directory."""
    input:
        spec=WORK + "/models/hf-{spec}/spec.json",
    output:
        directory(WORK + "/models/hf-{spec}/base"),
    log:
        WORK + "/logs/models/hf-{spec}.log",
    shell:
        "harness prepare-model --spec {input.spec} --out {output} > {log} 2>&1"


def _cold_start_block(spec: str) -> dict:
    return _job_with_model_dir(f"{WORK}/models/sft-{spec}/base")["model"]["cold_start"]


def cold_start_launch(spec: str) -> str:
    """`accelerate launch ... --no_python ` in front of `harness cold-start` when the block's resources ask for
    several processes or an accelerate config (one node), else nothing."""
    from harness.plan.launch import cold_start_launch, launch_prefix

    block = _cold_start_block(spec)
    line = launch_prefix(cold_start_launch(block, f"model/cold_start of models/sft-{spec}"), key=spec,
                         trl=block.get("trl") or {})
    return line + " " if line else ""


def cold_start_resources(spec: str) -> dict:
    """Cluster resources of the cold start: its block's GPUs (one node), memory and runtime (defaults 16 GB, 24 h)."""
    r = _cold_start_block(spec).get("resources") or {}
    return {"gpu": r.get("gpus") or 0, "nodes": 1, "mem_mb": r.get("mem_mb") or 16000,
            "runtime": r.get("runtime_min") or 1440}


rule cold_start_model:
    """Real-model tiers with a cold start (model.cold_start): the hub model fine-tuned on the block's chat rows with
    TRL's SFTTrainer before any RL job starts from it (harness.train.cold_start, the ARPO/AEPO SFT stage), under
    accelerate when the block's resources ask for several processes; built once per distinct model block."""
    input:
        spec=WORK + "/models/sft-{spec}/spec.json",
    output:
        directory(WORK + "/models/sft-{spec}/base"),
    log:
        WORK + "/logs/models/sft-{spec}.log",
    params:
        launch=lambda wc: cold_start_launch(wc.spec),
    threads: 2
    resources:
        gpu=lambda wc: cold_start_resources(wc.spec)["gpu"],
        nodes=lambda wc: cold_start_resources(wc.spec)["nodes"],
        runtime=lambda wc: cold_start_resources(wc.spec)["runtime"],
        mem_mb=lambda wc: cold_start_resources(wc.spec)["mem_mb"],
    shell:
        "{params.launch}harness cold-start --spec {input.spec} --out {output} --data-dir " + config["data_dir"]
        + " --threads {threads} > {log} 2>&1"
