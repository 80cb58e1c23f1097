rule verdict:
    """Claims -> verdicts, law fits, plots, and the comparison with pinned results (inputs, never outputs)."""
    input:
        results=results_of,
        evals=evals_of,
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
        "--pinned-dir {params.pinned} --mlflow-uri '{params.mlflow_uri}' {input.results} --evals {input.evals} "
        "> {log} 2>&1 && cat {log}"


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


rule report:
    """This run's leaderboard and HTML report (from the work dir's result files: verdicts, evals, runs)."""
    input:
        VERDICTS,
        f"{WORK}/atlas/{TIER}/atlas.json",
        eval_targets(),
    output:
        md=WORK + "/report/leaderboard.md",
        html=WORK + "/report/report.html",
        json=WORK + "/report/leaderboard.json",
    log:
        WORK + "/logs/report/report.log",
    shell:
        "harness leaderboard --results-dir {WORK} --out-dir $(dirname {output.md}) > {log} 2>&1 && cat {log}"


rule leaderboard:
    """The shared leaderboard of the pinned results (results/leaderboard.md, report.html): a pure function of the
    committed result files, so rebuilding it changes nothing unless `harness pin` changed them."""
    input:
        pinned=lambda wc: sorted(Path(config["results_dir"]).glob("*/*/verdict.json")),
    output:
        md=config["results_dir"] + "/leaderboard.md",
        html=config["results_dir"] + "/report.html",
        json=config["results_dir"] + "/leaderboard.json",
    log:
        WORK + "/logs/report/leaderboard.log",
    shell:
        "harness leaderboard --results-dir {config[results_dir]} --manifest > {log} 2>&1 && cat {log}"
