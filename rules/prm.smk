# ---- the implicit PRM (arXiv 2412.01981), an upstream input of kind `prm` (harness.plan, "Upstream inputs").
# A card's tier asks for it with `upstream: {implicit_prm: {prm_dir: {kind: prm, output: model, <settings>}}}`
# (settings: harness.train.prm.DEFAULTS); the DAG writes the spec (rule upstream_spec), this rule trains the PRM into
# upstream/prm/<key>/model, the train rule waits for it and `harness train` gives its path to the method as prm_dir.
# The PRM starts from the base model of the jobs that use it (also its pi_ref) and samples the job's training prompts.


def prm_consumer(wc) -> dict:
    """The job whose data, sampling settings and base model the PRM uses: the first (seed, key) of the jobs that
    take this PRM. Jobs on different base models cannot share one PRM (their spec would need to differ)."""
    users = [j for j in JOBS.values() for u in (j.get("upstream") or {}).values()
             if u["kind"] == "prm" and u["key"] == wc.ukey]
    if not users:
        raise ValueError(f"no job takes the PRM upstream/prm/{wc.ukey}")
    bases = sorted({model_dir_of(j) for j in users})
    if len(bases) > 1:
        raise ValueError(f"upstream/prm/{wc.ukey} is used by jobs on different base models ({', '.join(bases)}): give "
                         "their cards' prm specs a distinguishing setting")
    return min(users, key=lambda j: (int(j["seed"]), j["job_key"]))


rule train_prm:
    """Sample the base model on training prompts, label with the verifier, train a copy as the implicit PRM with the
    CE loss (pi_ref = the base model), best-of-N on held-out prompts (harness.train.prm)."""
    input:
        spec=WORK + "/upstream/prm/{ukey}/spec.json",
        job=lambda wc: f"{WORK}/{job_dir(prm_consumer(wc))}/job.json",
        model=lambda wc: model_dir_of(prm_consumer(wc)),
    output:
        directory(WORK + "/upstream/prm/{ukey}/model"),
    params:
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/upstream/prm-{ukey}.log",
    threads: THREADS
    resources:
        mem_mb=3000,
    shell:
        "python -m harness.train.prm --spec {input.spec} --job {input.job} --model-dir {input.model} --out {output} "
        "--data-dir {params.data_dir} --threads {threads} > {log} 2>&1"
