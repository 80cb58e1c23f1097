from harness.results import config_hash


rule pretrain_smoke:
    """Smoke tier: build the tokenizer and pre-train the tiny model on noisy addition (no download)."""
    output:
        directory(WORK + "/models/smoke-{spec}/base"),
    params:
        paper=lambda wc: next(p for p in list_papers() if "smoke" in load_card(p)["tiers"] and smoke_spec(p) == wc.spec),
    log:
        WORK + "/logs/pretrain/smoke-{spec}.log",
    threads: 2
    resources:
        mem_mb=2000,
    shell:
        "harness pretrain --paper {params.paper} --tier smoke --out {output} --threads {threads} > {log} 2>&1"


rule prepare_hf_model:
    """Real-model tiers: resolve the base model (hub id for users; the PyPI GGUF wheel offline) to a directory."""
    output:
        directory(WORK + "/models/{paper}/{tier}/base"),
    wildcard_constraints:
        tier=r"cpu-real|small|paper",
    params:
        spec=lambda wc: config_hash(load_card(wc.paper)["tiers"][wc.tier]["model"]),
    log:
        WORK + "/logs/models/{paper}-{tier}.log",
    shell:
        "harness prepare-model --paper {wildcards.paper} --tier {wildcards.tier} --out {output} > {log} 2>&1"
