# Agent evaluations (issue 14): the entries of config/agents.yaml (harness.evaluate.agent_spec), each a model
# playing a fixed list of text-game episodes (harness.evaluate.agent). Not part of `all`; run them with
#   snakemake --cores 2 agents
# Outputs, filed like the base-model evaluations (so a verdict can list them and `harness pin` can pin them):
#   WORK/base-evals/<tier>/<key>/agent_spec.json   what the key hashes (tier, model, games, settings)
#   WORK/base-evals/<tier>/<key>/agent.json        the eval_result (success with CIs, per task type, protocol hash)
# key: harness.plan.base_eval_key of the spec. The model comes from rules/models.smk (prepare_hf_model): each
# evaluation's spec is registered in JOBS under its own directory so that model_spec finds a spec with its model.
from harness.evaluate.agent_spec import agent_spec as _agent_spec, load_config as _agents_config
from harness.plan import base_eval_key as _base_eval_key

try:
    AGENT_EVALS = {}  # key -> {"name", "spec", "workers"}
    for _name, _entry in _agents_config(REPO_ROOT / "config" / "agents.yaml").items():
        _spec = _agent_spec(_entry)
        _key = _base_eval_key(_spec)
        if _key in AGENT_EVALS:
            raise ConfigError(f"config/agents.yaml: {_name} and {AGENT_EVALS[_key]['name']} are the same evaluation")
        AGENT_EVALS[_key] = {"name": _name, "spec": _spec, "workers": int(_entry.get("workers", 0))}
        JOBS.setdefault(f"base-evals/{_spec['tier']}/{_key}", _spec)  # for model_spec (rules/models.smk)
except ConfigError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def agent_targets() -> list[str]:
    return [f"{WORK}/base-evals/{a['spec']['tier']}/{key}/agent.json" for key, a in AGENT_EVALS.items()]


def _agent(wc) -> dict:
    if wc.spec not in AGENT_EVALS:
        raise ValueError(f"no agent evaluation with key {wc.spec} in config/agents.yaml")
    return AGENT_EVALS[wc.spec]


rule agent_spec:
    """An agent evaluation's spec (config/agents.yaml entry, as harness.evaluate.agent_spec.agent_spec gives it)."""
    output:
        WORK + "/base-evals/{tier}/{spec}/agent_spec.json",
    params:
        spec=lambda wc: json.dumps(_agent(wc)["spec"], indent=1, sort_keys=True),
    log:
        WORK + "/logs/eval/base-{tier}-{spec}-agent-spec.log",
    shell:
        "printf '%s\\n' {params.spec:q} > {output}.tmp && mv {output}.tmp {output} && echo wrote {output} > {log}"


rule agent_eval:
    """A model plays the evaluation's games (k episodes each); environments step in `workers` processes."""
    input:
        spec=WORK + "/base-evals/{tier}/{spec}/agent_spec.json",
        model=lambda wc: model_dir_of(_agent(wc)["spec"]),
    output:
        WORK + "/base-evals/{tier}/{spec}/agent.json",
    params:
        data_dir=config["data_dir"],
        workers=lambda wc: _agent(wc)["workers"],
    log:
        WORK + "/logs/eval/base-{tier}-{spec}-agent.log",
    threads: THREADS
    resources:
        mem_mb=6000,
        runtime=240,
    shell:
        "python -m harness.evaluate.agent --spec {input.spec} --model-dir {input.model} --data-dir {params.data_dir} "
        "--threads {threads} --workers {params.workers} --out {output} > {log} 2>&1"


rule agents:
    """Every agent evaluation of config/agents.yaml."""
    input:
        agent_targets(),
