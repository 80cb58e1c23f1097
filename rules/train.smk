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
        mem_mb=3000,
    shell:
        "harness train --job {input.job} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "--threads {threads} > {log} 2>&1"
