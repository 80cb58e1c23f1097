# rlvr-harness: reproduce a paper's replication at one tier.
#   snakemake --cores 2                                  (default: entropy_mechanism, smoke tier)
#   snakemake --cores 2 --config paper=<id> tier=<tier>  (harness papers lists them; paper=all runs every card)
# The config is validated against config/schema.json and the paper's card before anything runs.
configfile: "config/config.yaml"

include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/train.smk"
include: "rules/prm.smk"
include: "rules/eval.smk"
include: "rules/passk.smk"
include: "rules/agents.smk"
include: "rules/analyze.smk"
include: "rules/verdict.smk"
include: "rules/track.smk"
include: "rules/gaia.smk"
include: "rules/released.smk"

# rules that only write a small spec file: never a cluster job of their own
localrules: job_spec, recorded_job_spec, upstream_spec, model_spec, base_spec, leaderboard, gaia_model_spec


rule all:
    input:
        VERDICTS,
        [f"{WORK}/atlas/{TIER}/atlas.json", f"{WORK}/report/report.html"] if PAPERS else [],
        eval_targets(),
        passk_targets(),
        analysis_targets(),
        RELEASED_TARGETS,
        local(config["results_dir"] + "/report.html"),
    default_target: True
