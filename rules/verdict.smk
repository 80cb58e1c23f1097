rule verdict:
    """Claims -> verdicts, law fits, plots, and the comparison with pinned results (inputs, never outputs)."""
    input:
        results=results_of,
        evals=evals_of,
        passk=passk_of,
        task_report=task_report_of,
        analyses=analyses_of,
    output:
        verdict=WORK + "/verdicts/{paper}/{tier}/verdict.json",
        entropy_plot=WORK + "/verdicts/{paper}/{tier}/entropy_vs_step.png",
        law_plot=WORK + "/verdicts/{paper}/{tier}/reward_vs_entropy.png",
    params:
        claims=lambda wc: config_hash(load_card(wc.paper)["claims"]),
        pinned=config["results_dir"],
        task_report=lambda wc, input: f"--task-report {input.task_report}" if input.task_report else "",
        analyses=lambda wc, input: f"--analyses {' '.join(input.analyses)}" if input.analyses else "",
    # the tracking store is not a param (see rule train): a new store re-logs nothing and reruns no verdict
    log:
        WORK + "/logs/verdict/{paper}-{tier}.log",
    shell:
        "harness verdict --paper {wildcards.paper} --tier {wildcards.tier} --out-dir $(dirname {output.verdict}) "
        "--pinned-root {params.pinned} --mlflow-uri {MLFLOW_URI:q} --mlflow-timeout {MLFLOW_TIMEOUT} "
        "{params.task_report} {input.results} "
        "--evals {input.evals} {input.passk} {params.analyses} "
        "> {log} 2>&1 && cat {log}"


rule atlas:
    """Entropy atlas of the work dir's verdicts of a tier (this run's and earlier ones'): each method against the
    baseline's reward-entropy curve."""
    input:
        VERDICTS,
    output:
        json=WORK + "/atlas/{tier}/atlas.json",
        png=WORK + "/atlas/{tier}/entropy_atlas.png",
    log:
        WORK + "/logs/atlas/{tier}.log",
    shell:
        "harness atlas --results-dir {WORK} --tier {wildcards.tier} --out-dir $(dirname {output.json}) > {log} 2>&1 "
        "&& cat {log}"


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
        "harness leaderboard --results-dir {WORK} --out-dir $(dirname {output.md}) --mlflow-ui {MLFLOW_UI:q} "
        "> {log} 2>&1 && cat {log}"


rule leaderboard:
    """The shared leaderboard of the pinned results (results/leaderboard.md, report.html): a pure function of the
    committed result files, so rebuilding it changes nothing unless `harness pin` changed them."""
    input:
        # local(): the repository's pinned results, never a storage plugin's remote copy (profiles/kubernetes)
        pinned=lambda wc: [local(str(p)) for p in sorted(Path(config["results_dir"]).glob("*/*/verdict.json"))],
    output:
        md=local(config["results_dir"] + "/leaderboard.md"),
        html=local(config["results_dir"] + "/report.html"),
        json=local(config["results_dir"] + "/leaderboard.json"),
    log:
        local(WORK + "/logs/report/leaderboard.log"),
    shell:
        "harness leaderboard --results-dir {config[results_dir]} --manifest > {log} 2>&1 && cat {log}"
