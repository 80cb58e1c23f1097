# ---- analyses (harness/analyze/): computations over closed forms, checkpoints and runs that check the claims of
# analysis papers (issue 15). A card asks for one with a block `tiers.<tier>.analysis.<name>: {settings}` (schema:
# config/card.schema.json); the analysis `<name>` is the module harness/analyze/<name>.py and the rule
# `analyze_<name>` below; it writes an analysis_result (harness/analyze/record.py: settings, protocol and content
# hashes, provenance; atomic) to
#   WORK/analysis/<paper>/<tier>/<name>.json
# which the card's verdict reads (`harness verdict --analyses`, rules/verdict.smk) and `harness pin` pins with the
# verdict (results/<paper>/<tier>/analysis/<name>.json). The settings are the rule's params: editing the card's block
# reruns the analysis and its verdict, nothing else. Requires rules/common.smk (PAPERS, TIER, WORK, load_card).
import json as _json


def analysis_settings(paper: str, tier: str, name: str) -> dict:
    return (load_card(paper)["tiers"][tier].get("analysis") or {})[name]


def analyses_of(wc) -> list[str]:
    """The analysis results a card's verdict reads: one per entry of the tier's analysis block."""
    block = load_card(wc.paper)["tiers"][wc.tier].get("analysis") or {}
    return [f"{WORK}/analysis/{wc.paper}/{wc.tier}/{name}.json" for name in block]


def analysis_targets() -> list[str]:
    return [f for p in PAPERS for f in analyses_of(type("W", (), {"paper": p, "tier": TIER}))]


rule analyze_cliff:
    """The policy cliff, exactly: optimal policies of a multi-reward bandit over a grid of reward weights through a
    tie, without and with an entropy bonus (harness/analyze/cliff.py; no training, no inputs)."""
    output:
        WORK + "/analysis/{paper}/{tier}/cliff.json",
    params:
        settings=lambda wc: _json.dumps(analysis_settings(wc.paper, wc.tier, "cliff"), sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-cliff.log",
    shell:
        "python -m harness.analyze.cliff --settings {params.settings:q} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"


# ---- representation geometry (harness/analyze/geometry.py): RankMe and alpha-ReQ of final-layer last-token
# representations of the job's first `probe_size` held-out prompts, per checkpoint (every job of the methods the
# card's geometry claims name, and each one's base model), then one collected file per card that the verdict reads.
from harness.claims.registry import claim_tiers as _claim_tiers
from harness.plan import base_eval_key as _base_eval_key

GEOMETRY_CHECKS = ("geometry_vs_base",)


def _geometry_setting(wc, key, default):
    return (analysis_settings(wc.paper, wc.tier, "geometry") or {}).get(key, default)


def _geometry_plan():
    """(paper -> per-checkpoint files, base-eval key -> job dir defining that base model)."""
    per_paper, bases = {}, {}
    for paper in PAPERS:
        if "geometry" not in (load_card(paper)["tiers"][TIER].get("analysis") or {}):
            continue
        methods = {(c.get("params") or {}).get("method") for c in load_card(paper)["claims"]
                   if c["check"] in GEOMETRY_CHECKS and TIER in _claim_tiers(c)}
        files = per_paper.setdefault(paper, [])
        for d in RUNS.get(paper, []):
            job = JOBS[d]
            if job["method"] not in methods:
                continue
            key = _base_eval_key(job)
            bases.setdefault(key, d)
            for f in (f"{WORK}/{d}/analysis/geometry.json", f"{WORK}/base-evals/{TIER}/{key}/geometry.json"):
                if f not in files:
                    files.append(f)
    return per_paper, bases


GEOMETRY_FILES, GEOMETRY_BASE = _geometry_plan()


def _geometry_args(wc) -> str:
    """The card's protocol settings (the papers of one run must agree: the per-checkpoint files are shared)."""
    block = {}
    for p in GEOMETRY_FILES:
        b = analysis_settings(p, TIER, "geometry") or {}
        if block and b != block:
            raise ValueError(f"cards {sorted(GEOMETRY_FILES)} ask for geometry with different settings at {TIER}")
        block = b
    args = []
    if "probe_size" in block:
        args.append(f"--probe-size {int(block['probe_size'])}")
    if "centring" in block:
        args.append(f"--centring {block['centring']}")
    return " ".join(args)


rule geometry_checkpoint:
    """RankMe / alpha-ReQ of a trained job's final checkpoint on the probe set."""
    input:
        job=JOB + "/job.json",
        model=JOB + "/model",
    output:
        JOB + "/analysis/geometry.json",
    params:
        args=_geometry_args,
        source=source_arg,
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/analysis/{tier}-{method}-{key}-seed{seed}-geometry.log",
    threads: THREADS
    shell:
        "python -m harness.analyze.geometry --job {input.job} --model-dir {input.model} {params.args} "
        "--source {params.source} --data-dir {params.data_dir} --threads {threads} --out {output} > {log} 2>&1"


rule geometry_base:
    """The same for a base model (the job that defines it gives the probe set)."""
    input:
        job=WORK + "/base-evals/{tier}/{spec}/spec.json",  # rules/eval.smk base_spec
        model=lambda wc: model_dir_of(JOBS[GEOMETRY_BASE[wc.spec]]),
    output:
        WORK + "/base-evals/{tier}/{spec}/geometry.json",
    params:
        args=_geometry_args,
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/analysis/base-{tier}-{spec}-geometry.log",
    threads: THREADS
    shell:
        "python -m harness.analyze.geometry --job {input.job} --model-dir {input.model} {params.args} "
        "--source tier={wildcards.tier},method=base --data-dir {params.data_dir} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule analyze_geometry:
    """A card's geometry analysis: its checkpoints' and base models' records, collected (one protocol)."""
    input:
        lambda wc: GEOMETRY_FILES.get(wc.paper, []),
    output:
        WORK + "/analysis/{paper}/{tier}/geometry.json",
    log:
        WORK + "/logs/analysis/{paper}-{tier}-geometry.log",
    shell:
        "python -m harness.analyze.geometry collect {input} --source paper={wildcards.paper},tier={wildcards.tier} "
        "--out {output} > {log} 2>&1"
