# ---- tier=released: the checkpoints a paper's authors released (the card's `released` block,
# harness/config/released.py), evaluated on the paper's benchmarks under the paper's protocol (lm-eval; its vLLM
# model where the block's benchmarks say backend: vllm), and every number the paper reports for them judged against
# what the evaluation measures (harness/claims/released.py: reads the result files only). Nothing is trained.
#   snakemake --cores 2 --config tier=released paper=<id>        (paper=all: every card with a released block)
# Paths (content-keyed: a checkpoint listed by two cards is fetched and evaluated once):
#   WORK/released/models/<ckpt key>/{spec.json,model/}   the checkpoint at its revision (harness prepare-model)
#   WORK/released/evals/<ckpt key>/<benchmark>-<protocol key>.json   eval_result with a `released` block
#   WORK/released/<paper>/verdict.json                   reported-value verdicts
# Requires rules/common.smk (config, TIER, WORK, load_card, run_papers) and rules/eval.smk (EVAL_SEED); with
# tier=released rules/common.smk plans no training job (its PAPERS is empty).
from harness.config.released import RELEASED_TIER, released_of
from harness.config.tiers import ResourcesSpec

RELEASED = {}            # paper -> its released block (harness.config.released.Released)
RELEASED_CKPTS = {}      # checkpoint key -> (Checkpoint, paper of the first card listing it)
RELEASED_PROTOCOLS = {}  # protocol key -> a benchmark's protocol as the card writes it
RELEASED_EVALS = {}      # paper -> eval_result paths its verdict reads
try:
    from harness.evaluate.tasks.common import BENCHMARKS as _RELEASED_BENCHMARKS, data_path as _data_path

    for _p in run_papers(config) if TIER == RELEASED_TIER else []:
        RELEASED[_p] = _r = released_of(load_card(_p))
        for _b, _proto in _r.benchmarks.items():
            if _b not in _RELEASED_BENCHMARKS:
                raise ConfigError(f"replications/{_p}/card.yaml released/benchmarks: unknown benchmark {_b!r}; "
                                  f"valid: {', '.join(_RELEASED_BENCHMARKS)}")
            _data_path(_b, config["data_dir"])  # present and matching its digest before anything runs
            RELEASED_PROTOCOLS[_r.protocol_key(_b)] = _proto
        for _c in _r.checkpoints:
            RELEASED_CKPTS.setdefault(_c.key, (_c, _p))
            RELEASED_EVALS.setdefault(_p, []).extend(
                f"{WORK}/released/evals/{_c.key}/{_x.benchmark}-{_r.protocol_key(_x.benchmark)}.json"
                for _x in _c.reported)
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)

RELEASED_TARGETS = [f"{WORK}/released/{p}/verdict.json" for p in RELEASED]

localrules: released_model_spec, verdict_released


def _released_resources(wc) -> ResourcesSpec:
    """The evaluation jobs' resources: the `resources` of the card that first lists the checkpoint."""
    _c, paper = RELEASED_CKPTS[wc.ckpt]
    return parse_setting(ResourcesSpec, RELEASED[paper].resources, f"replications/{paper}/card.yaml released/resources")


rule released_model_spec:
    """A released checkpoint's model spec (hub id, revision, offline source): what `harness prepare-model` reads."""
    output:
        WORK + "/released/models/{ckpt}/spec.json",
    params:
        spec=lambda wc: json.dumps({"model": RELEASED_CKPTS[wc.ckpt][0].model_spec()}, indent=1, sort_keys=True),
    log:
        WORK + "/logs/released/{ckpt}-spec.log",
    wildcard_constraints:
        ckpt=r"[0-9a-f]{12}",
    shell:
        "printf '%s\\n' {params.spec:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"


rule prepare_released_model:
    """The checkpoint at its revision from the hub (offline: the card's `local` stand-in; source.json says which)."""
    input:
        spec=WORK + "/released/models/{ckpt}/spec.json",
    output:
        directory(WORK + "/released/models/{ckpt}/model"),
    log:
        WORK + "/logs/released/{ckpt}-model.log",
    wildcard_constraints:
        ckpt=r"[0-9a-f]{12}",
    resources:
        mem_mb=lambda wc: _released_resources(wc).mem_mb or 8000,
        runtime=lambda wc: _released_resources(wc).runtime_min or 60,
    shell:
        "harness prepare-model --spec {input.spec} --out {output} > {log} 2>&1"


rule eval_released:
    """A released checkpoint on one benchmark under the paper's protocol (harness/evaluate/released.py)."""
    input:
        model=WORK + "/released/models/{ckpt}/model",
    output:
        WORK + "/released/evals/{ckpt}/{benchmark}-{spec}.json",
    params:
        protocol=lambda wc: json.dumps(RELEASED_PROTOCOLS[wc.spec], sort_keys=True),
        checkpoint=lambda wc: json.dumps({"key": wc.ckpt, "hub": RELEASED_CKPTS[wc.ckpt][0].hub,
                                          "revision": RELEASED_CKPTS[wc.ckpt][0].revision,
                                          "method": RELEASED_CKPTS[wc.ckpt][0].method}, sort_keys=True),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/released/{ckpt}-{benchmark}-{spec}.log",
    wildcard_constraints:
        ckpt=r"[0-9a-f]{12}",
    threads: 1
    resources:
        nodes=1,
        gpu=lambda wc: _released_resources(wc).gpus,
        mem_mb=lambda wc: _released_resources(wc).mem_mb or 4000,
        runtime=lambda wc: _released_resources(wc).runtime_min or 60,
        cpus_per_task=lambda wc: _released_resources(wc).cpus,
    shell:
        "python -m harness.evaluate.released --model-dir {input.model} --benchmark {wildcards.benchmark} "
        "--protocol {params.protocol:q} --checkpoint {params.checkpoint:q} --data-dir {params.data_dir} "
        "--seed " + str(EVAL_SEED) + " --threads {threads} --out {output} > {log} 2>&1"


rule verdict_released:
    """Reported-value verdicts of a card's released checkpoints, from their eval_result files."""
    input:
        lambda wc: RELEASED_EVALS[wc.paper],
    output:
        WORK + "/released/{paper}/verdict.json",
    params:
        card=lambda wc: config_hash(load_card(wc.paper)["released"]),  # a changed reported number reruns it
    log:
        WORK + "/logs/released/{paper}-verdict.log",
    shell:
        "python -m harness.claims.released --paper {wildcards.paper} --out {output} {input} > {log} 2>&1 "
        "&& cat {log}"
