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
        kind="smoke|hf",
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
