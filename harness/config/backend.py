"""Which engine generates text at a tier, and what each consumer passes to it.

A tier generates with Hugging Face ``generate`` (the CPU tiers) or with vLLM (GPU tiers), in three places:

- training rollouts: TRL's own switch, ``tiers.<tier>.trl.use_vllm`` (``vllm_mode`` ``colocate``, the default, or
  ``server``), passed to ``GRPOConfig`` through :func:`grpo_vllm_args`;
- the final checkpoint's held-out evaluation: ``tiers.<tier>.eval.backend`` (``hf`` | ``vllm``;
  :class:`harness.config.tiers.EvalSpec`), read by :mod:`harness.evaluate.heldout`;
- the lm-eval benchmarks: ``tiers.<tier>.benchmarks.<name>.backend`` (:class:`harness.config.tiers.BenchmarkSpec`),
  read by ``harness eval --backend`` (lm-eval's ``vllm`` model instead of ``hf``).

vLLM needs a GPU, so every one of these on a tier whose ``resources.gpus`` is 0 (a CPU tier) is a configuration
error before anything runs (:func:`check_tier_generation`, called by :func:`harness.config.validate_run_config`),
and again at run time on a machine without CUDA or without vllm (:func:`require_vllm`). Everything here is plain
configuration: no vllm or torch import, so the arguments that would be passed are tested on a machine without a GPU.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Mapping

from harness.config.errors import ConfigError

BACKENDS = ("hf", "vllm")
VLLM_MODES = ("colocate", "server")
#: the vllm release to install on GPU machines: the newest that TRL 1.16's ``trl[vllm]`` extra (0.22-0.31) allows and
#: whose own pins fit the project's (vllm 0.31.0 wants transformers < 5.18; 0.30.0 wants torch 2.13.0 and
#: transformers >= 5.10.4)
VLLM_REQUIREMENT = "vllm==0.30.0"
#: ``vllm_mode: server``: where the ``trl vllm-serve`` process listens, when the card does not say (a site fact)
SERVER_URL_ENV = "RLVR_VLLM_SERVER_URL"
#: TRL fields that only colocated vLLM reads (a server takes them as ``trl vllm-serve`` flags) and only server mode reads
COLOCATE_ONLY = ("vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "vllm_enable_sleep_mode",
                 "vllm_max_model_length", "vllm_model_impl")
SERVER_ONLY = ("vllm_server_base_url", "vllm_server_host", "vllm_server_port", "vllm_server_timeout",
               "vllm_group_port")


def _gpus(tier: Mapping, where: str) -> tuple[int, int]:
    """(GPUs per node, training processes) the tier's ``resources`` block asks for."""
    from harness.config.tiers import ResourcesSpec, SettingError, parse

    try:
        r = parse(ResourcesSpec, tier.get("resources"), f"{where}/resources")
    except SettingError as e:
        raise ConfigError(str(e)) from None
    processes = getattr(r, "processes", None) or max(r.nodes * r.gpus, 1)
    return r.gpus, processes


def check_trl_vllm(trl: Mapping, where: str) -> None:
    """The vLLM fields of a TRL block are consistent: a boolean ``use_vllm``, a known ``vllm_mode``, no ``vllm_*``
    field without ``use_vllm: true``, no field of the other mode, a memory share in (0, 1]."""
    use = trl.get("use_vllm", False)
    if not isinstance(use, bool):
        raise ConfigError(f"{where}/use_vllm must be true or false, got {use!r}")
    set_keys = sorted(k for k in trl if k.startswith("vllm_"))
    if not use:
        if set_keys:
            raise ConfigError(f"{where}: {set_keys[0]} has no effect without use_vllm: true (HF generate makes the "
                              "rollouts); remove it or set use_vllm: true")
        return
    mode = trl.get("vllm_mode", VLLM_MODES[0])
    if mode not in VLLM_MODES:
        raise ConfigError(f"{where}/vllm_mode: unknown mode {mode!r}; valid: {', '.join(VLLM_MODES)}")
    wrong = [k for k in set_keys if k in (SERVER_ONLY if mode == "colocate" else COLOCATE_ONLY)]
    if wrong:
        how = ("only a server reads it (vllm_mode: server)" if mode == "colocate" else
               "a server takes it as a `trl vllm-serve` flag, not from the trainer")
        raise ConfigError(f"{where}/{wrong[0]}: no effect with vllm_mode {mode!r}: {how}")
    share = trl.get("vllm_gpu_memory_utilization")
    if share is not None and not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise ConfigError(f"{where}/vllm_gpu_memory_utilization must be in (0, 1], got {share!r}")


def check_tier_generation(tier: Mapping, where: str) -> None:
    """A tier's generation engines (module docstring): known backends, consistent TRL vLLM fields, and vLLM only
    where the tier asks for GPUs. ``where``: ``replications/<paper>/card.yaml tiers/<tier>``."""
    from harness.config.tiers import BenchmarkSpec, EvalSpec, SettingError, parse

    trl = tier.get("trl") or {}
    check_trl_vllm(trl, f"{where}/trl")
    users = ["trl/use_vllm"] if trl.get("use_vllm") else []
    try:
        ev = parse(EvalSpec, tier.get("eval"), f"{where}/eval")
        benches = {b: parse(BenchmarkSpec, s, f"{where}/benchmarks/{b}")
                   for b, s in (tier.get("benchmarks") or {}).items()}
    except SettingError as e:
        raise ConfigError(str(e)) from None
    for name, spec in [("eval", ev), *((f"benchmarks/{b}", s) for b, s in benches.items())]:
        if spec.backend not in BACKENDS:
            raise ConfigError(f"{where}/{name}/backend: unknown backend {spec.backend!r}; valid: "
                              f"{', '.join(BACKENDS)}")
        if spec.backend == "vllm":
            users.append(f"{name}/backend")
    gpus, processes = _gpus(tier, where)
    if users and gpus < 1:
        raise ConfigError(f"{where}/{users[0]}: vLLM needs a GPU and this is a CPU tier (resources.gpus is 0); use "
                          f"the hf backend here (use_vllm: false, backend: hf) or give the tier GPUs "
                          f"(resources: {{gpus: N}})")
    tp = trl.get("vllm_tensor_parallel_size", 1)
    if trl.get("use_vllm") and trl.get("vllm_mode", "colocate") == "colocate" and processes % int(tp):
        raise ConfigError(f"{where}/trl/vllm_tensor_parallel_size {tp} must divide the job's {processes} training "
                          "processes (colocated vLLM runs one engine per group of tp processes)")


def require_vllm(what: str, *, cuda_available: bool) -> None:
    """Run-time check before anything loads: vLLM needs CUDA and the vllm package."""
    if not cuda_available:
        raise ConfigError(f"{what} uses vLLM, which needs a GPU, and this machine has none (torch.cuda.is_available() "
                          "is False); run it on a GPU machine or use the hf backend (CPU tiers)")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{what} uses vLLM, which is not installed: pip install {VLLM_REQUIREMENT} "
                          "(on the GPU machine, with the CUDA build of torch)")


def grpo_vllm_args(trl: Mapping, *, cuda_available: bool, env: Mapping[str, str]) -> dict[str, Any]:
    """The TRL block as ``GRPOConfig`` keyword arguments, its vLLM fields checked (:func:`check_trl_vllm`, then
    :func:`require_vllm` when ``use_vllm``). Server mode without ``vllm_server_base_url``/``vllm_server_host`` in the
    card takes the URL from ``$RLVR_VLLM_SERVER_URL`` when set (where the site's ``trl vllm-serve`` listens: an
    execution fact, not part of the job); without either, TRL's default ``0.0.0.0:8000`` on the same node."""
    out = dict(trl)
    check_trl_vllm(out, "job trl")
    if not out.get("use_vllm"):
        return out
    require_vllm("training (trl.use_vllm)", cuda_available=cuda_available)
    if out.get("vllm_mode", "colocate") == "server" and not ({"vllm_server_base_url", "vllm_server_host"} & set(out)):
        url = env.get(SERVER_URL_ENV)
        if url:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"${SERVER_URL_ENV} must be an http(s) URL of a `trl vllm-serve` process, got {url!r}")
            out["vllm_server_base_url"] = url
    return out


@dataclass(frozen=True)
class VllmEngine:
    """The vLLM engine of an evaluation (not part of the protocol: how fast, not what is sampled)."""

    tensor_parallel_size: int = 1
    data_parallel_size: int | None = None  # None: every GPU the job holds, one engine per tensor-parallel group
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None: the model's context length
    dtype: str = "auto"  # the checkpoint's dtype (bf16 for most): vLLM has no fp32 CPU path

    def check(self, n_gpus: int) -> None:
        if self.tensor_parallel_size < 1 or (self.data_parallel_size is not None and self.data_parallel_size < 1):
            raise ConfigError(f"vLLM tensor/data parallel sizes must be >= 1, got {self.tensor_parallel_size}, "
                              f"{self.data_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"vLLM gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        need = self.tensor_parallel_size * (self.data_parallel_size or 1)
        if n_gpus < need:
            raise ConfigError(f"vLLM tensor_parallel_size {self.tensor_parallel_size} x data_parallel_size "
                              f"{self.data_parallel_size or 1} needs {need} GPUs; this job sees {n_gpus}")

    def dp(self, n_gpus: int) -> int:
        return self.data_parallel_size or max(n_gpus // self.tensor_parallel_size, 1)


def lmeval_vllm_args(model_dir: str, engine: VllmEngine, *, seed: int, max_length: int | None,
                     n_gpus: int) -> dict[str, Any]:
    """``model_args`` of lm-eval's ``vllm`` model (``lm_eval.models.vllm_causallms.VLLM``) for a local checkpoint.
    Data parallelism over more than one engine goes through ray (lm-eval's own requirement)."""
    engine.check(n_gpus)
    args = {"pretrained": str(model_dir), "dtype": engine.dtype, "tensor_parallel_size": engine.tensor_parallel_size,
            "data_parallel_size": engine.dp(n_gpus), "gpu_memory_utilization": engine.gpu_memory_utilization,
            "seed": int(seed), "batch_size": "auto"}
    if max_length is not None or engine.max_model_len is not None:
        args["max_model_len"] = int(engine.max_model_len or max_length)
    if args["data_parallel_size"] > 1 and importlib.util.find_spec("ray") is None:
        raise ConfigError(f"lm-eval runs {args['data_parallel_size']} vLLM engines through ray, which is not "
                          "installed: pip install ray, or pass --data-parallel-size 1")
    return args


def engine_args(model_dir: str, engine: VllmEngine, *, seed: int, n_gpus: int) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments of the held-out evaluation (one engine, tensor parallel over the job's GPUs
    when asked). The model's generation config supplies defaults as HF ``generate`` does (vLLM's ``auto``)."""
    engine.check(n_gpus)
    args = {"model": str(model_dir), "tokenizer": str(model_dir), "dtype": engine.dtype, "seed": int(seed),
            "tensor_parallel_size": engine.tensor_parallel_size,
            "gpu_memory_utilization": engine.gpu_memory_utilization, "generation_config": "auto"}
    if engine.max_model_len is not None:
        args["max_model_len"] = int(engine.max_model_len)
    return args


def sampling_args(*, n: int, temperature: float, max_tokens: int, seed: int, top_p: float = 1.0) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments matching the HF held-out evaluation: ``temperature == 0`` is
    greedy (one sample), otherwise ``n`` samples at ``temperature`` with top-k off (0) and ``top_p``; responses end
    at EOS or ``max_tokens``; special tokens are dropped from the text, as ``batch_decode(skip_special_tokens=True)``."""
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        if n != 1:
            raise ConfigError(f"greedy decoding (temperature 0) with n={n}: the samples would be identical")
        return {"n": 1, "temperature": 0.0, "max_tokens": int(max_tokens), "seed": int(seed),
                "skip_special_tokens": True}
    return {"n": int(n), "temperature": float(temperature), "top_p": float(top_p), "top_k": 0,
            "max_tokens": int(max_tokens), "seed": int(seed), "skip_special_tokens": True}
