rule train:
    """One job per (paper, method, seed, tier): the TRL GRPO trainer with the method from the registry."""
    input:
        model=base_model,
    output:
        result=RUN + "/result.json",
        metrics=RUN + "/metrics.jsonl",
        model=directory(RUN + "/model"),  # the final policy, evaluated by rules/eval.smk
    params:
        # the fully resolved job config (hyperparameters, TRL settings): a change reruns only this job
        config_hash=lambda wc: resolve_job(wc.paper, wc.tier, wc.method, int(wc.seed))["config_hash"],
        data_dir=config["data_dir"],
        mlflow_uri=MLFLOW_URI,
    log:
        WORK + "/logs/train/{paper}/{tier}/{method}-seed{seed}.log",
    threads: THREADS
    resources:
        mem_mb=3000,
    shell:
        "harness train --paper {wildcards.paper} --tier {wildcards.tier} --method {wildcards.method} "
        "--seed {wildcards.seed} --model-dir {input.model} --out $(dirname {output.result}) "
        "--data-dir {params.data_dir} --mlflow-uri '{params.mlflow_uri}' --threads {threads} > {log} 2>&1"
