# Checkpoint evaluation: the held-out set of the tier (k samples + greedy) and the tier's lm-eval benchmarks,
# for the base model and for every trained run's final checkpoint. Results feed the verdicts and leaderboards.

EVAL_SEED = 0  # sampling seed of every checkpoint evaluation (part of the protocol: same for every method)


rule eval_heldout_base:
    """The base model on the tier's held-out set."""
    input:
        model=base_model,
    output:
        WORK + "/evals/{paper}/{tier}/base/heldout.json",
    params:
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/{paper}-{tier}-base-heldout.log",
    shell:
        "harness eval-heldout --paper {wildcards.paper} --tier {wildcards.tier} --model-dir {input.model} "
        f"--seed {EVAL_SEED} "
        "--data-dir {params.data_dir} --out {output} > {log} 2>&1"


rule eval_heldout:
    """A trained run's final checkpoint on the tier's held-out set."""
    input:
        model=RUN + "/model",
    output:
        WORK + "/evals/{paper}/{tier}/{method}/seed{seed}/heldout.json",
    params:
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/{paper}-{tier}-{method}-seed{seed}-heldout.log",
    shell:
        "harness eval-heldout --paper {wildcards.paper} --tier {wildcards.tier} --model-dir {input.model} "
        f"--seed {EVAL_SEED} "
        "--method {wildcards.method} --train-seed {wildcards.seed} --data-dir {params.data_dir} --out {output} "
        "> {log} 2>&1"


rule eval_benchmarks_base:
    """lm-eval evaluation of a tier's base model on the card's benchmarks (protocol hash + CIs in the result)."""
    input:
        model=base_model,
    output:
        WORK + "/evals/{paper}/{tier}/base/{benchmark}.json",
    params:
        args=lambda wc: eval_args(wc),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/{paper}-{tier}-base-{benchmark}.log",
    threads: 1
    shell:
        "harness eval --model-dir {input.model} --benchmarks {wildcards.benchmark} --data-dir {params.data_dir} "
        f"--seed {EVAL_SEED} "
        "{params.args} --threads {threads} --out {output} > {log} 2>&1"


rule eval_benchmarks:
    """lm-eval evaluation of a trained run's final checkpoint on the card's benchmarks."""
    input:
        model=RUN + "/model",
    output:
        WORK + "/evals/{paper}/{tier}/{method}/seed{seed}/{benchmark}.json",
    params:
        args=lambda wc: eval_args(wc),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/{paper}-{tier}-{method}-seed{seed}-{benchmark}.log",
    threads: 1
    shell:
        "harness eval --model-dir {input.model} --benchmarks {wildcards.benchmark} --data-dir {params.data_dir} "
        f"--seed {EVAL_SEED} "
        "{params.args} --threads {threads} --out {output} > {log} 2>&1"
