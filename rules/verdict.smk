rule verdict:
    """Claims -> verdicts, law fits, plots, and the comparison with pinned results (inputs, never outputs)."""
    input:
        results_of,
    output:
        verdict=WORK + "/verdicts/{paper}/{tier}/verdict.json",
        entropy_plot=WORK + "/verdicts/{paper}/{tier}/entropy_vs_step.png",
        law_plot=WORK + "/verdicts/{paper}/{tier}/reward_vs_entropy.png",
    params:
        claims=lambda wc: config_hash(load_card(wc.paper)["claims"]),
        mlflow_uri=MLFLOW_URI,
        pinned=lambda wc: f"{config['results_dir']}/{wc.paper}/{wc.tier}",
    log:
        WORK + "/logs/verdict/{paper}-{tier}.log",
    shell:
        "harness verdict --paper {wildcards.paper} --tier {wildcards.tier} --out-dir $(dirname {output.verdict}) "
        "--pinned-dir {params.pinned} --mlflow-uri '{params.mlflow_uri}' {input} > {log} 2>&1 && cat {log}"


rule atlas:
    """Entropy atlas of this run: each method against the baseline's reward-entropy curve."""
    input:
        lambda wc: [f for p in PAPERS for f in results_of(type("W", (), {"paper": p, "tier": TIER}))],
    output:
        json=WORK + "/atlas/{tier}/atlas.json",
        png=WORK + "/atlas/{tier}/entropy_atlas.png",
    log:
        WORK + "/logs/atlas/{tier}.log",
    shell:
        "harness atlas --out-dir $(dirname {output.json}) {input} > {log} 2>&1 && cat {log}"


rule eval_benchmarks:
    """lm-eval evaluation of a tier's base model on the card's benchmarks (protocol hash + CIs in the result)."""
    input:
        model=base_model,
    output:
        WORK + "/evals/{paper}/{tier}/base/{benchmark}.json",
    params:
        args=lambda wc: eval_args(wc),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/{paper}-{tier}-{benchmark}.log",
    threads: 1
    shell:
        "harness eval --model-dir {input.model} --benchmarks {wildcards.benchmark} --data-dir {params.data_dir} "
        "{params.args} --threads {threads} --out {output} > {log} 2>&1"
