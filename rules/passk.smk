# ---- pass@k evaluation (harness/evaluate/passk.py): n samples per held-out problem, the unbiased pass@k for a list
# of k, bootstrap CIs over problems, per-problem estimates (and tool-call statistics on tool tasks) in an eval_result.
# Which checkpoints: every job of a card's pass@k claims at this tier (checks in PASSK_CHECKS and SUPPORT_CHECKS;
# params `method`, `baseline`, `n`, `ks`, optional `method_variant` / `baseline_variant`; support claims also
# `steps`), and the base model of each. A variant is the card's job with some blocks changed
# (harness.evaluate.passk.apply_variant), re-keyed by its content like any job: e.g. ASPO's text variant
# {data: {task: reasoning}, pretrain: {tool_rate: null}} of a reasoning_calc job, which is the shared smoke-reasoning
# job of that method (trained once, whichever card asks). `steps: [S, ...]` (support claims) asks for the method's
# (and baseline's) job trained for S optimizer steps each: the variant {trl: {max_steps: S}} (S equal to the tier's
# max_steps is the card's own job). Requires rules/common.smk (JOBS, RUNS, PAPERS, TIER, WORK, source_arg,
# model_dir_of). Outputs (harness.evaluate.passk.passk_file: the default n keeps the name `passk.json`):
#   JOB/evals/passk.json | passk-n<n>.json                       a trained job's final checkpoint
#   WORK/base-evals/<tier>/<key>/passk.json | passk-n<n>.json    a base model (key: harness.plan.base_eval_key)
#   WORK/analysis/<paper>/<tier>/support.json                    the support analysis of a card's support claims
# Support claims (the pass@k boundary papers) read their pass@k evaluations with per-problem answer statistics
# (`--answers`), through the support analysis (harness/analyze/support.py), never directly: its settings are the
# claims' `n`, `ks`, `k` (support k, default the largest of ks) and `threshold` (default 0.5), which the card's
# support claims must agree on. One (checkpoint, n) is one file: claims asking it with other ks are an error, and
# answers are recorded when any claim of the run asks for them (a file without them is rerun when one does).
import json as _json

from harness.claims.registry import claim_tiers
from harness.evaluate.passk import DEFAULT_KS, DEFAULT_N, apply_variant, check_ks, passk_file
from harness.plan import keyed

#: claim checks that read pass@k evaluations directly (their params name the jobs; harness/claims/papers/aspo.py)
PASSK_CHECKS = ("passk_above_baseline", "aspo_first_call_earlier")
#: claim checks that read the support analysis of pass@k evaluations with answers (harness/claims/papers/
#: invisible_leash.py, rlvr_boundary.py)
SUPPORT_CHECKS = ("passk_crossover", "support_shrinks", "answer_entropy_falls", "passk_gap_sign_change",
                  "passk_gap_holds_longer")
SUPPORT_SETTINGS = ("k", "threshold")  # the analysis's own settings among a support claim's params
PASSK_SEED = 0  # sampling seed of every pass@k evaluation (the protocol's; as EVAL_SEED in rules/eval.smk)
PK = "{pk}"  # the file stem of a pass@k evaluation (passk_file); constrained per rule (storage plugins want one form)
PK_PATTERN = r"passk(-n[0-9]+)?"


def _merge_variant(a: dict | None, b: dict | None) -> dict | None:
    """Two variants block by block (b's keys win); None when both are empty."""
    out = {blk: dict(v) if isinstance(v, dict) else v for blk, v in (a or {}).items()}
    for blk, v in (b or {}).items():
        out[blk] = {**(out.get(blk) or {}), **v} if isinstance(v, dict) else v
    return out or None


def _passk_plan():
    """(job dir -> {n: (ks, answers)}, base-eval key -> (defining job dir, {n: (ks, answers)}),
    paper -> [passk paths its verdict reads], paper -> support analysis plan {files, settings})."""
    per_job, per_base, per_paper, support = {}, {}, {}, {}

    def add(table: dict, n: int, ks: tuple, answers: bool, what: str, where: str):
        old = table.get(n)
        if old is not None and old[0] != ks:
            raise ConfigError(f"{where}: pass@k of {what} with n = {n} is asked with two k lists ({list(old[0])} "
                              f"and {list(ks)}); give the claims the same ks")
        table[n] = (ks, answers or bool(old and old[1]))

    for paper in PAPERS:
        for c in load_card(paper)["claims"]:
            kind = "passk" if c["check"] in PASSK_CHECKS else "support" if c["check"] in SUPPORT_CHECKS else None
            if kind is None or TIER not in claim_tiers(c):
                continue
            p, where = c.get("params") or {}, f"replications/{paper}/card.yaml claim {c['id']}"
            n = int(p.get("n") or DEFAULT_N)
            try:
                ks = tuple(check_ks(p.get("ks") or DEFAULT_KS, n))
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if kind == "support":
                plan = support.setdefault(paper, {"files": [], "settings": {}})
                settings = {"n": n, "ks": list(ks), **{k: p[k] for k in SUPPORT_SETTINGS if k in p}}
                for key, value in settings.items():
                    if plan["settings"].setdefault(key, value) != value:
                        raise ConfigError(f"{where}: support claims of one card must agree on {key} "
                                          f"({plan['settings'][key]} and {value})")
            steps = [None] if kind == "passk" else list(p.get("steps") or [None])
            if any(s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 1) for s in steps):
                raise ConfigError(f"{where}: steps must be a list of positive integers (optimizer steps), got {steps}")
            for role in ("method", "baseline"):
                for d in RUNS.get(paper, []):
                    job = JOBS[d]
                    if job["method"] != p.get(role):
                        continue
                    for s in steps:
                        variant = _merge_variant(p.get(f"{role}_variant"), s and {"trl": {"max_steps": s}})
                        j = job
                        if variant:
                            try:
                                j = keyed(apply_variant(job, variant))
                            except ValueError as e:
                                raise ConfigError(f"{where}: {e}") from None
                            JOBS.setdefault(job_dir(j), j)
                        add(per_job.setdefault(job_dir(j), {}), n, ks, kind == "support", job_dir(j), where)
                        key = base_eval_key(j)
                        base = per_base.setdefault(key, (job_dir(j), {}))
                        add(base[1], n, ks, kind == "support", f"base model {key}", where)
                        files = (f"{WORK}/{job_dir(j)}/evals/{passk_file(n)}",
                                 f"{WORK}/base-evals/{TIER}/{key}/{passk_file(n)}")
                        paths = support[paper]["files"] if kind == "support" else per_paper.setdefault(paper, [])
                        paths += [f for f in files if f not in paths]
    # a card whose support claims name no trained method of this run (methods=...) has nothing to analyse
    return per_job, per_base, per_paper, {p: s for p, s in support.items() if s["files"]}


try:
    PASSK_JOBS, PASSK_BASE, PASSK_PAPERS, SUPPORT = _passk_plan()
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def passk_of(wc) -> list[str]:
    """The pass@k evaluations a card's verdict reads (its jobs', its variants' and their base models')."""
    return PASSK_PAPERS.get(wc.paper, [])


def support_of(wc) -> list[str]:
    """The support analysis a card's verdict reads (cards with support claims at this tier; rules/analyze.smk's
    analyses_of lists it with the card's own analyses)."""
    return [f"{WORK}/analysis/{wc.paper}/{wc.tier}/support.json"] if wc.paper in SUPPORT and wc.tier == TIER else []


def passk_targets() -> list[str]:
    return [f for p in PAPERS for f in PASSK_PAPERS.get(p, [])] + [
        f"{WORK}/analysis/{p}/{TIER}/support.json" for p in PAPERS if p in SUPPORT]


def _n_of(pk: str) -> int:
    return DEFAULT_N if pk == "passk" else int(pk.rsplit("-n", 1)[1])


def _ks_arg(table: dict, wc) -> str:
    """The --ks value of one (checkpoint, n); with answers it carries the flag too (`1,2,4 --answers`), so the rules'
    command and params of evaluations without answers stay what they were (Snakemake's code and params rerun
    triggers: earlier pass@k evaluations are not rerun by this rule's extension)."""
    ks, answers = table[_n_of(wc.pk)]
    return ",".join(map(str, ks)) + (" --answers" if answers else "")


def _job_table(wc) -> dict:
    return PASSK_JOBS[f"jobs/{wc.tier}/{wc.method}/{wc.key}/seed{wc.seed}"]


rule passk:
    """A trained job's final checkpoint: n samples per held-out problem, pass@k for the claims' k list."""
    wildcard_constraints:
        pk=PK_PATTERN,
    input:
        job=JOB + "/job.json",
        model=JOB + "/model",
    output:
        JOB + "/evals/" + PK + ".json",
    params:
        n=lambda wc: _n_of(wc.pk),
        ks=lambda wc: _ks_arg(_job_table(wc), wc),
        data_dir=config["data_dir"],
        source=source_arg,
    log:
        WORK + "/logs/eval/{tier}-{method}-{key}-seed{seed}-{pk}.log",
    threads: THREADS
    resources:
        **tier_resources("eval", mem_mb=3000, runtime=60),
    shell:
        "python -m harness.evaluate.passk --job {input.job} --model-dir {input.model} --n {params.n} --ks {params.ks} "
        "--seed " + str(PASSK_SEED) + " --source {params.source} --data-dir {params.data_dir} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule passk_base:
    """A base model (the job that defines it gives the held-out protocol): the same pass@k evaluation."""
    wildcard_constraints:
        pk=PK_PATTERN,
    input:
        job=WORK + "/base-evals/{tier}/{spec}/spec.json",  # rules/eval.smk base_spec
        model=lambda wc: model_dir_of(JOBS[PASSK_BASE[wc.spec][0]]),
    output:
        WORK + "/base-evals/{tier}/{spec}/" + PK + ".json",
    params:
        n=lambda wc: _n_of(wc.pk),
        ks=lambda wc: _ks_arg(PASSK_BASE[wc.spec][1], wc),
        data_dir=config["data_dir"],
    log:
        WORK + "/logs/eval/base-{tier}-{spec}-{pk}.log",
    threads: THREADS
    resources:
        **tier_resources("eval", mem_mb=3000, runtime=60),
    shell:
        "python -m harness.evaluate.passk --job {input.job} --model-dir {input.model} --n {params.n} --ks {params.ks} "
        "--seed " + str(PASSK_SEED) + " --source tier={wildcards.tier},method=base --data-dir {params.data_dir} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule analyze_support:
    """The support analysis of a card's support claims (harness/analyze/support.py): its checkpoints' and base
    model's pass@k evaluations collected per (method, training length), curves, support shares, entropies."""
    input:
        lambda wc: SUPPORT[wc.paper]["files"],
    output:
        WORK + "/analysis/{paper}/{tier}/support.json",
    params:
        settings=lambda wc: _json.dumps({k: v for k, v in SUPPORT[wc.paper]["settings"].items() if k != "n"},
                                        sort_keys=True),
    log:
        WORK + "/logs/analysis/{paper}-{tier}-support.log",
    shell:
        "python -m harness.analyze.support {input} --settings {params.settings:q} "
        "--source paper={wildcards.paper},tier={wildcards.tier} --out {output} > {log} 2>&1"
