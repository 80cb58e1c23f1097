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
    """The analysis results a card's verdict reads: one per entry of the tier's analysis block, and the pass@k support
    analysis of a card with support claims (rules/passk.smk)."""
    block = load_card(wc.paper)["tiers"][wc.tier].get("analysis") or {}
    return [f"{WORK}/analysis/{wc.paper}/{wc.tier}/{name}.json" for name in block] + support_of(wc)


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


# ---- best-of-N against KL-constrained RL (alignment_asymptotics, arXiv 2404.01730) and the Differential-Information
# probes of DPO runs (diff_info, arXiv 2505.23761). bon_toy: closed form, no inputs (harness/analyze/bon_toy.py).
# reward_kl: per final checkpoint of the block's `methods` (and once per base model) the reward and KL to the base of
# `samples` responses to `prompts` held-out prompts at the jobs' training temperature and length, then one collected
# file per card with the best-of-N and KL-optimal curves of the base model (harness/analyze/reward_kl.py). did_drift:
# the DPO runs' DID-entropy and chosen-drift probes collected from their result files (harness/analyze/did_drift.py).
from harness.analyze.reward_kl import DEFAULTS as _REWARD_KL_DEFAULTS


rule analyze_bon_toy:
    """Exact best-of-N against the KL-optimal tilt on the memoryless toy LM with a linear reward (no training)."""
    output:
        WORK + "/analysis/{paper}/{tier}/bon_toy.json",
    params:
        settings=lambda wc: _json.dumps(analysis_settings(wc.paper, wc.tier, "bon_toy"), sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-bon_toy.log",
    shell:
        "python -m harness.analyze.bon_toy --settings {params.settings:q} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"


def _did_drift_results(wc) -> list[str]:
    """The result files of the DPO runs the card's did_drift block names (its methods' jobs at this tier)."""
    methods = set(analysis_settings(wc.paper, wc.tier, "did_drift").get("methods") or [])
    return [f"{WORK}/{d}/result.json" for d in RUNS.get(wc.paper, []) if JOBS[d]["method"] in methods]


rule analyze_did_drift:
    """The DID entropy and chosen/rejected drift of a card's DPO runs, collected into one curve file."""
    input:
        _did_drift_results,
    output:
        WORK + "/analysis/{paper}/{tier}/did_drift.json",
    params:
        settings=lambda wc: _json.dumps(analysis_settings(wc.paper, wc.tier, "did_drift"), sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-did_drift.log",
    shell:
        "python -m harness.analyze.did_drift --settings {params.settings:q} {input} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"


def _reward_kl_plan():
    """(paper -> per-checkpoint files, job dir -> protocol, base-eval key -> (job dir, protocol)); a checkpoint or base
    asked for under two protocols (cards, or jobs of one card, that disagree) stops the run before it starts."""
    per_paper, per_job, per_base = {}, {}, {}
    for paper in PAPERS:
        block = (load_card(paper)["tiers"][TIER].get("analysis") or {}).get("reward_kl")
        if block is None:
            continue
        s = {**_REWARD_KL_DEFAULTS, **block}
        files = per_paper.setdefault(paper, [])
        for d in RUNS.get(paper, []):
            job = JOBS[d]
            if job["method"] not in block["methods"]:
                continue
            trl = job["trl"]
            proto = (int(s["prompts"]), int(s["samples"]), int(s["seed"]), float(trl.get("temperature", 1.0)),
                     int(trl.get("max_completion_length", 256)))
            key = base_eval_key(job)
            for table, k, v in ((per_job, d, proto), (per_base, key, (d, proto))):
                old = table.setdefault(k, v)
                if (old[1] if table is per_base else old) != proto:
                    sys.stderr.write(f"error: replications/{paper}/card.yaml tiers/{TIER}/analysis/reward_kl: {k} is "
                                     f"measured under two protocols (prompts, samples, seed, temperature, length): "
                                     f"{old if table is per_job else old[1]} and {proto}\n")
                    sys.exit(2)
            for f in (f"{WORK}/{d}/analysis/reward_kl.json", f"{WORK}/base-evals/{TIER}/{key}/reward_kl.json"):
                if f not in files:
                    files.append(f)
    return per_paper, per_job, per_base


REWARD_KL_FILES, REWARD_KL_JOBS, REWARD_KL_BASE = _reward_kl_plan()


def _reward_kl_args(proto) -> str:
    prompts, samples, seed, temperature, length = proto
    return (f"--prompts {prompts} --samples {samples} --seed {seed} --temperature {temperature} "
            f"--max-new-tokens {length}")


rule reward_kl_checkpoint:
    """Reward and KL to the base model of a trained job's final checkpoint (its own samples)."""
    input:
        job=JOB + "/job.json",
        model=JOB + "/model",
        ref=base_model,
    output:
        JOB + "/analysis/reward_kl.json",
    params:
        args=lambda wc: _reward_kl_args(REWARD_KL_JOBS[f"jobs/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]),
        source=source_arg,
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/analysis/{tier}-{method}-{key}-seed{seed}-reward_kl.log",
    threads: THREADS
    resources:
        **tier_resources("eval", mem_mb=3000, runtime=60),
    shell:
        "python -m harness.analyze.reward_kl --job {input.job} --model-dir {input.model} --ref-dir {input.ref} "
        "{params.args} --source {params.source} --data-dir {params.data_dir} --threads {threads} --out {output} "
        "> {log} 2>&1"


rule reward_kl_base:
    """The base model's samples (KL 0): the per-prompt success rates best-of-N and the KL-optimal curve come from."""
    input:
        job=WORK + "/base-evals/{tier}/{spec}/spec.json",  # rules/eval.smk base_spec
        model=lambda wc: model_dir_of(JOBS[REWARD_KL_BASE[wc.spec][0]]),
    output:
        WORK + "/base-evals/{tier}/{spec}/reward_kl.json",
    params:
        args=lambda wc: _reward_kl_args(REWARD_KL_BASE[wc.spec][1]),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/analysis/base-{tier}-{spec}-reward_kl.log",
    threads: THREADS
    resources:
        **tier_resources("eval", mem_mb=3000, runtime=60),
    shell:
        "python -m harness.analyze.reward_kl --job {input.job} --model-dir {input.model} {params.args} "
        "--source tier={wildcards.tier},method=base --data-dir {params.data_dir} --threads {threads} --out {output} "
        "> {log} 2>&1"


rule analyze_reward_kl:
    """A card's reward-vs-KL curve file: its checkpoints' points, best-of-N and the KL-optimal frontier."""
    input:
        lambda wc: REWARD_KL_FILES.get(wc.paper, []),
    output:
        WORK + "/analysis/{paper}/{tier}/reward_kl.json",
    params:
        settings=lambda wc: _json.dumps(analysis_settings(wc.paper, wc.tier, "reward_kl"), sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-reward_kl.log",
    shell:
        "python -m harness.analyze.reward_kl collect {input} --settings {params.settings:q} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"


# ---- the policy cliff on a tiny LM (policy_cliff, arXiv 2507.20150; harness/analyze/cliff_sweep.py): per final
# checkpoint of the block's `methods` (one method per sweep point, harness/methods/policy_cliff.py), the rate of
# responses with a check step on the first `prompts` held-out prompts (one sample each at the tier's evaluation
# temperature, seed `seed`), then one collected file per card with a curve per entropy coefficient over the eps grid.
from harness.analyze.cliff_sweep import DEFAULTS as _CLIFF_SWEEP_DEFAULTS


def _cliff_sweep_plan():
    """(paper -> per-checkpoint files, job dir -> (prompts, seed)); a checkpoint asked for under two protocols (cards
    that disagree) stops the run before it starts."""
    per_paper, per_job = {}, {}
    for paper in PAPERS:
        block = (load_card(paper)["tiers"][TIER].get("analysis") or {}).get("cliff_sweep")
        if block is None:
            continue
        s = {**_CLIFF_SWEEP_DEFAULTS, **block}
        proto = (int(s["prompts"]), int(s["seed"]))
        files = per_paper.setdefault(paper, [])
        for d in RUNS.get(paper, []):
            if JOBS[d]["method"] not in block["methods"]:
                continue
            if per_job.setdefault(d, proto) != proto:
                sys.stderr.write(f"error: replications/{paper}/card.yaml tiers/{TIER}/analysis/cliff_sweep: {d} is "
                                 f"measured under two protocols (prompts, seed): {per_job[d]} and {proto}\n")
                sys.exit(2)
            f = f"{WORK}/{d}/analysis/cliff_sweep.json"
            if f not in files:
                files.append(f)
    return per_paper, per_job


CLIFF_SWEEP_FILES, CLIFF_SWEEP_JOBS = _cliff_sweep_plan()


rule cliff_sweep_checkpoint:
    """The check-step rate of a sweep job's final checkpoint (its own samples on the held-out prompts)."""
    input:
        job=JOB + "/job.json",
        model=JOB + "/model",
    output:
        JOB + "/analysis/cliff_sweep.json",
    params:
        args=lambda wc: "--prompts {} --seed {}".format(
            *CLIFF_SWEEP_JOBS[f"jobs/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]),
        source=source_arg,
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/analysis/{tier}-{method}-{key}-seed{seed}-cliff_sweep.log",
    threads: THREADS
    resources:
        **tier_resources("eval", mem_mb=3000, runtime=30),
    shell:
        "python -m harness.analyze.cliff_sweep --job {input.job} --model-dir {input.model} {params.args} "
        "--source {params.source} --data-dir {params.data_dir} --threads {threads} --out {output} > {log} 2>&1"


rule analyze_cliff_sweep:
    """A card's sweep curves: its checkpoints' check-step rates, grouped by (entropy coefficient, eps) and seed."""
    input:
        lambda wc: CLIFF_SWEEP_FILES.get(wc.paper, []),
    output:
        WORK + "/analysis/{paper}/{tier}/cliff_sweep.json",
    params:
        settings=lambda wc: _json.dumps(analysis_settings(wc.paper, wc.tier, "cliff_sweep"), sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-cliff_sweep.log",
    shell:
        "python -m harness.analyze.cliff_sweep collect {input} --settings {params.settings:q} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"
