def _job_with_model_dir(model_dir: str) -> dict:
    return next(j for j in JOBS.values() if model_dir_of(j) == model_dir)


rule pretrain_smoke:
    """Smoke tiers: build the tokenizer and pre-train the tiny model on the job's smoke task (no download); a base model
    pinned under results/models/ with the same key and intact files is restored instead (a fresh clone does not
    pre-train again)."""
    input:
        job=lambda wc: f"{WORK}/{job_dir(_job_with_model_dir(f'{WORK}/models/smoke-{wc.spec}/base'))}/job.json",
    output:
        directory(WORK + "/models/smoke-{spec}/base"),
    log:
        WORK + "/logs/pretrain/smoke-{spec}.log",
    threads: 2
    resources:
        mem_mb=2000,
    shell:
        "harness pretrain --job {input.job} --out {output} --threads {threads} "
        "--pinned-root " + config["results_dir"] + " > {log} 2>&1"


rule prepare_hf_model:
    """Real-model tiers: resolve the base model (hub id for users; the PyPI GGUF wheel offline) to a directory."""
    input:
        job=lambda wc: f"{WORK}/{job_dir(_job_with_model_dir(f'{WORK}/models/hf-{wc.spec}/base'))}/job.json",
    output:
        directory(WORK + "/models/hf-{spec}/base"),
    log:
        WORK + "/logs/models/hf-{spec}.log",
    shell:
        "harness prepare-model --job {input.job} --out {output} > {log} 2>&1"
