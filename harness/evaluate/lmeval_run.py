"""One lm-eval evaluation of a checkpoint, step by step: check the settings and data, load the model, run the
generated tasks through ``lm_eval.simple_evaluate`` (``log_samples=True``), score every sample with our verifier,
recompute the metrics with CIs, and build the ``eval_result`` (:mod:`harness.evaluate.record`) with the protocol
of each benchmark. Entry point: :func:`evaluate_checkpoint` (also exported by :mod:`harness.evaluate.lmeval`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.config import ConfigError
from harness.config.backend import BACKENDS, VllmEngine, lmeval_vllm_args, require_vllm
from harness.config.tiers import BenchmarkSpec
from harness.evaluate.lmeval_tasks import check_settings, gen_kwargs, task_yaml

#: sampling knobs of a model's generation_config that HF ``generate`` would apply silently unless overridden
_GEN_CONFIG_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_p": None, "typical_p": 1.0,
                       "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "num_beams": 1, "encoder_repetition_penalty": 1.0}


@dataclass
class Settings:
    """What an evaluation was asked for (checked by :func:`harness.evaluate.lmeval_tasks.check_settings`)."""
    benchmarks: list
    data_dir: Path
    k: int
    temperature: float
    top_p: float
    max_gen_toks: int
    limit: int | None
    seed: int
    apply_chat_template: bool
    system_instruction: str | None
    max_length: int | None
    batch_size: int
    device: str
    dtype: str
    bootstrap_iters: int
    backend: str = "hf"  # hf (HFLM) | vllm (lm-eval's vLLM model; harness.config.backend)
    vllm: VllmEngine = field(default_factory=VllmEngine)

    @property
    def greedy(self) -> bool:
        return float(self.temperature) == 0.0

    def gen_kwargs(self) -> dict:
        return gen_kwargs(greedy=self.greedy, temperature=self.temperature, top_p=self.top_p,
                          max_gen_toks=self.max_gen_toks)

    def seeds(self) -> dict:
        s = int(self.seed)
        return {"random": s, "numpy": s, "torch": s, "fewshot": s, "bootstrap": s}

    def as_dict(self, lm_max_length) -> dict:
        return {"k": int(self.k), "temperature": float(self.temperature), "top_p": float(self.top_p),
                "max_gen_toks": int(self.max_gen_toks), "limit": self.limit, "seed": int(self.seed),
                "apply_chat_template": bool(self.apply_chat_template), "system_instruction": self.system_instruction,
                "max_length": lm_max_length, "batch_size": self.batch_size, "device": self.device,
                "dtype": self.dtype, "data_dir": str(self.data_dir),
                # hf results keep their settings as before; a vllm result names its engine
                **({"backend": "vllm", "vllm": dataclasses.asdict(self.vllm)} if self.backend == "vllm" else {})}


@dataclass
class Model:
    """The loaded lm-eval model and what the protocol needs from it."""
    lm: Any
    load_seconds: float
    max_length: int | None
    chat_template: str | None
    gen_defaults: dict
    generation_seconds: float = 0.0


@dataclass
class Scored:
    """Per-sample verdicts of one benchmark."""
    correct: list = field(default_factory=list)
    votes: list = field(default_factory=list)
    per_problem: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    n_tok: list = field(default_factory=list)
    n_trunc: int = 0
    sample_lines: list = field(default_factory=list)


def evaluate_checkpoint(model_dir: str | os.PathLike, benchmarks: Sequence[str], *,
                        data_dir: str | os.PathLike | None = None, k: int = BenchmarkSpec.k, temperature: float = 0.0,
                        top_p: float = 1.0, max_gen_toks: int = BenchmarkSpec.max_gen_toks, limit: int | None = None,
                        seed: int = 0,
                        out: str | os.PathLike | None = None, apply_chat_template: bool = False,
                        system_instruction: str | None = None, max_length: int | None = None,
                        batch_size: int = 8, device: str = "cpu", dtype: str = "float32",
                        bootstrap_iters: int = 2000, verifier_timeout: float = 5.0, verifier_workers: int = 2,
                        samples_out: str | os.PathLike | None = None, threads: int | None = None,
                        model: Any = None, source: Mapping[str, Any] | None = None, backend: str = "hf",
                        vllm: VllmEngine | None = None) -> dict:
    """Evaluate ``model_dir`` (a local HF model directory) on ``benchmarks`` and return the result dict.

    ``temperature == 0`` means greedy decoding (then ``k`` must be 1; metric ``greedy_acc``); otherwise ``k``
    samples per problem at ``temperature``/``top_p`` (metrics ``avg@k``, ``pass@1``, ``pass@k``, ``maj@k``).
    ``limit`` takes the first ``limit`` scored problems of each benchmark (file order). ``data_dir`` defaults to
    ``RLVR_DATA_DIR`` or ``<repo>/../shared/data``; each file's sha256 is checked before the model is loaded.
    With ``out`` the result is written atomically (content hash inside); ``samples_out`` writes the per-sample
    responses and verdicts as JSONL. ``model`` may be a ready ``lm_eval`` LM object (reused across calls).
    ``backend`` ``vllm`` loads lm-eval's vLLM model instead of HFLM (a GPU and vllm needed; ``vllm`` sets its engine;
    ``device`` and ``dtype`` are HFLM's); the sampling, k, prompts and scoring are the same, so is the protocol.
    """
    from harness.evaluate.tasks import common

    t_start = time.time()
    benchmarks = list(benchmarks)
    check_settings(benchmarks, k, temperature, top_p, max_gen_toks, limit)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    s = Settings(benchmarks=benchmarks, data_dir=common.resolve_data_dir(data_dir), k=k, temperature=temperature,
                 top_p=top_p, max_gen_toks=max_gen_toks, limit=limit, seed=seed,
                 apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                 max_length=max_length, batch_size=batch_size, device=device, dtype=dtype,
                 bootstrap_iters=bootstrap_iters, backend=backend, vllm=vllm or VllmEngine())
    for b in benchmarks:  # fail on a missing or tampered file before any model is loaded
        common.data_path(b, s.data_dir)
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"lm-eval is not installed ({e}); install the eval extra: pip install -e '.[eval]'") from None
    common.configure_scoring(workers=verifier_workers, timeout=verifier_timeout)
    excluded = {b: common.excluded_problems(b, s.data_dir) for b in benchmarks}
    with _torch_threads(threads):
        return _run(model_dir, s, model=model, excluded=excluded, out=out, samples_out=samples_out,
                    source=source, t_start=t_start)


@contextlib.contextmanager
def _torch_threads(threads):
    """Set torch's CPU threads for the evaluation (restored afterwards); no-op for ``threads`` None or 0."""
    if not threads:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _run(model_dir, s: Settings, *, model, excluded, out, samples_out, source, t_start) -> dict:
    """Load, generate, score and record (the steps below); writes ``out`` and ``samples_out`` when given."""
    from harness.evaluate.record import bench_entry, eval_record, write_record
    from harness.results import atomic_write_text

    m = _load_model(model_dir, model, s)
    res, task_names, yaml_texts = _simple_evaluate(m, s)
    tok = getattr(m.lm, "tokenizer", None)
    entries, protocols, sample_lines, total_tokens = {}, {}, [], 0
    for b in s.benchmarks:
        name = task_names[b]
        cfg = _checked_config(b, res["configs"][name], s)
        sc = _score_samples(b, res["samples"][name], s, tok, want_lines=bool(samples_out))
        summary = _summarize(b, sc, s)
        protocols[b] = _protocol(b, s, cfg, m, n_problems=len(sc.correct), excluded=excluded[b])
        entries[b] = bench_entry(
            task=name, k=s.k, summary=summary, per_problem=sc.per_problem, protocol=protocols[b],
            n_excluded=len(excluded[b]), excluded=excluded[b], verdict_status=dict(sorted(sc.statuses.items())),
            mean_response_tokens=(sum(sc.n_tok) / len(sc.n_tok)) if sc.n_tok else None,
            truncation_rate=(sc.n_trunc / len(sc.n_tok)) if sc.n_tok else None,
            lm_eval_metrics={key: v for key, v in res["results"][name].items() if key != "alias"},
            task_yaml=yaml_texts[b])
        sample_lines += sc.sample_lines
        total_tokens += sum(sc.n_tok)
    result = eval_record(benchmarks=entries, protocol=protocols, source=source, settings=s.as_dict(m.max_length),
                         model_dir=model_dir, t0=t_start, extra=_timing(m, total_tokens, tok))
    if samples_out:
        atomic_write_text(samples_out, "\n".join(sample_lines) + "\n")
    return write_record(result, out)


def _load_model(model_dir, model, s: Settings) -> Model:
    """The lm-eval model (``model`` if given, else an HFLM of ``model_dir``), checked against the settings."""
    t_load = time.time()
    if model is None and s.backend == "vllm":
        lm = _vllm_lm(model_dir, s)
    elif model is None:
        from lm_eval.models.huggingface import HFLM

        margs = {"pretrained": str(model_dir), "dtype": s.dtype, "device": s.device, "batch_size": s.batch_size}
        if s.max_length is not None:
            margs["max_length"] = int(s.max_length)
        lm = HFLM(**margs)
    else:
        lm = model
    load_seconds = time.time() - t_load
    if s.max_length is not None and getattr(lm, "max_length", None) not in (None, int(s.max_length)):
        raise ConfigError(f"model max_length is {lm.max_length}, requested {s.max_length}")
    lm_max_length = getattr(lm, "max_length", None)
    if lm_max_length is not None and int(s.max_gen_toks) >= int(lm_max_length):
        raise ConfigError(f"max_gen_toks ({s.max_gen_toks}) must be below the model's max_length ({lm_max_length}); "
                          "pass max_length")
    chat_template = None
    if s.apply_chat_template:
        chat_template = lm.chat_template(True) or None
        if chat_template is None:
            raise ConfigError(f"apply_chat_template requested but the tokenizer of {model_dir} has no chat template")
    gen_model = getattr(lm, "model", None) if s.backend == "hf" else _GenConfigOf(model_dir)
    return Model(lm=lm, load_seconds=load_seconds, max_length=lm_max_length, chat_template=chat_template,
                 gen_defaults=_model_gen_defaults(gen_model))


def _vllm_lm(model_dir, s: Settings):
    """lm-eval's vLLM model of ``model_dir`` (:func:`harness.config.backend.lmeval_vllm_args`), after the run-time
    check (CUDA, vllm installed)."""
    import torch

    require_vllm("this evaluation (--backend vllm)", cuda_available=torch.cuda.is_available())
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(**lmeval_vllm_args(str(model_dir), s.vllm, seed=s.seed, max_length=s.max_length,
                                   n_gpus=torch.cuda.device_count()))


class _GenConfigOf:
    """The checkpoint's generation_config.json (what vLLM applies as sampling defaults, as HF generate does), shaped
    like a model for :func:`_model_gen_defaults`: the protocol records the same non-neutral knobs for both backends."""

    def __init__(self, model_dir):
        from transformers import GenerationConfig

        try:
            self.generation_config = GenerationConfig.from_pretrained(str(model_dir))
        except (OSError, ValueError):  # no generation_config.json: no defaults beyond the neutral ones
            self.generation_config = None


def _model_gen_defaults(model) -> dict:
    gc = getattr(model, "generation_config", None)
    out = {}
    for key, neutral in _GEN_CONFIG_NEUTRAL.items():
        v = getattr(gc, key, neutral) if gc is not None else neutral
        if v is not None and v != neutral:
            out[key] = v
    return out


def _simple_evaluate(m: Model, s: Settings) -> tuple[dict, dict, dict]:
    """Run the generated tasks (YAMLs in a temporary include path); (lm-eval's results, task names, YAML texts).
    The generation calls are timed into ``m.generation_seconds`` without touching lm-eval's control flow."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = m.lm
    orig_generate = lm.generate_until

    def timed_generate(requests, *a, **kw):
        t = time.time()
        try:
            return orig_generate(requests, *a, **kw)
        finally:
            m.generation_seconds += time.time() - t

    lm.generate_until = timed_generate
    task_names, yaml_texts = {}, {}
    try:
        with tempfile.TemporaryDirectory(prefix="rlvr_eval_tasks_") as tdir:
            for b in s.benchmarks:
                name, text = task_yaml(b, k=s.k, temperature=s.temperature, top_p=s.top_p,
                                       max_gen_toks=s.max_gen_toks, data_dir=s.data_dir)
                (Path(tdir) / f"{name}.yaml").write_text(text)
                task_names[b], yaml_texts[b] = name, text
            tm = TaskManager(include_path=tdir, include_defaults=False)
            seed = s.seed
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[task_names[b] for b in s.benchmarks], task_manager=tm, limit=s.limit,
                log_samples=True, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed, apply_chat_template=bool(s.apply_chat_template),
                system_instruction=s.system_instruction)
    finally:
        lm.generate_until = orig_generate
    return res, task_names, yaml_texts


def _checked_config(b: str, cfg: dict, s: Settings) -> dict:
    """lm-eval's config of a task, refused unless it ran what was asked (no silent greedy / pass@1 fall-back)."""
    gk = dict(cfg["generation_kwargs"])
    want = s.gen_kwargs()
    if int(cfg["repeats"]) != int(s.k) or any(gk.get(key) != v for key, v in want.items()):
        raise RuntimeError(f"{b}: lm-eval ran repeats={cfg['repeats']}, generation_kwargs={gk}; "
                           f"requested k={s.k}, {want}")
    return cfg


def _score_samples(b: str, samples: list, s: Settings, tok, *, want_lines: bool) -> Scored:
    """Our verifier's verdict on each of the k responses of each problem (doc order), with response lengths."""
    from harness.evaluate import metrics as M
    from harness.evaluate.tasks import common

    k, sc = int(s.k), Scored()
    for smp in sorted(samples, key=lambda x: x["doc_id"]):
        resps = smp["filtered_resps"][0]
        if isinstance(resps, str) or len(resps) != k:
            raise RuntimeError(f"{b}: doc {smp['doc_id']} has {1 if isinstance(resps, str) else len(resps)} "
                               f"responses after filtering, expected k={s.k}")
        doc = smp["doc"]
        verdicts = common.score_responses(doc["answer"], list(resps))
        c = [bool(v.correct) for v in verdicts]
        sc.correct.append(c)
        sc.votes.append([common.vote_key(v) for v in verdicts])
        sc.statuses.update(v.status for v in verdicts)
        lens = [len(x) for x in tok(list(resps), add_special_tokens=False)["input_ids"]] if tok is not None else []
        sc.n_tok.extend(lens)
        sc.n_trunc += sum(n >= int(s.max_gen_toks) for n in lens)
        maj = bool(M.majority_vote([sc.votes[-1]], [c])[0])
        sc.per_problem.append({"id": doc["id"], "n_correct": int(sum(c)), "maj_correct": maj})
        if want_lines:
            sc.sample_lines.append(json.dumps({
                "benchmark": b, "id": doc["id"], "gold": doc["answer"], "responses": list(resps),
                "verdicts": [{"correct": v.correct, "status": v.status, "extracted": v.extracted}
                             for v in verdicts]}, ensure_ascii=False))
    return sc


def _summarize(b: str, sc: Scored, s: Settings) -> dict:
    from harness.evaluate import metrics as M

    if not sc.correct:
        raise RuntimeError(f"{b}: lm-eval returned no samples")
    return M.summarize(sc.correct, None if s.greedy else sc.votes, greedy=s.greedy, iters=s.bootstrap_iters,
                       seed=s.seed)


def _protocol(b: str, s: Settings, cfg: dict, m: Model, *, n_problems: int, excluded: list) -> dict:
    """The protocol fields of one benchmark: data, problems, prompt, sampling as run, k, verifier, seeds."""
    from harness.evaluate.tasks import common
    from harness.results.protocol import protocol_fields

    gk = dict(cfg["generation_kwargs"])
    return protocol_fields(
        benchmark=b, data_sha256=common.data_digest(b),
        problems={"limit": None if s.limit is None else int(s.limit), "n_problems": n_problems,
                  "excluded_ids": sorted(e["id"] for e in excluded)},
        prompt_template=common.PROMPT_TEMPLATE, system_instruction=s.system_instruction,
        apply_chat_template=bool(s.apply_chat_template), chat_template=m.chat_template,
        sampling={**{key: v for key, v in gk.items() if key != "max_gen_toks"},
                  "model_generation_config": m.gen_defaults},
        max_gen_toks=int(gk["max_gen_toks"]), max_length=m.max_length, k=int(cfg["repeats"]),
        verifier=common.scoring_config(), seeds=s.seeds(), task_version=cfg.get("metadata", {}).get("version"),
        extra={"bootstrap_iters": int(s.bootstrap_iters)})


def _timing(m: Model, total_tokens: int, tok) -> dict:
    """The lm-eval result's extra top-level fields: load and generation time, generated tokens, throughput."""
    gen = m.generation_seconds
    return {"model_load_seconds": round(m.load_seconds, 2), "generation_seconds": round(gen, 2),
            "generated_tokens": int(total_tokens),
            "tokens_per_second": (total_tokens / gen) if gen > 0 and tok is not None else None,
            "tokens_note": "generated tokens counted by re-tokenising the responses (stop strings removed)"}
