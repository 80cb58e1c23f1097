"""Benchmarks, prompt, document loading and scoring shared by every lm-eval task in ``harness/evaluate/tasks``.

The lm-eval YAMLs reach this module through ``harness/evaluate/tasks/_common/utils.py`` (``!function utils.load`` etc.).
State that must be shared between lm-eval's hooks and :mod:`harness.evaluate.lmeval` (the verifier pool and the
verdict cache) lives here, in the normally imported module, never in the file lm-eval loads by path.

Data: every benchmark is read from the data directory (``RLVR_DATA_DIR``, or ``data_dir`` passed through lm-eval
``--metadata``, default ``<repo>/../shared/data``) and checked against the sha256 manifest
``config/data_manifest.yaml`` before a single row is used; a mismatch raises :class:`harness.config.ConfigError`
naming the file and both digests.

Gold answers the verifier cannot parse are never scored (fail-closed: they would otherwise be a silent 0 for
every model, or worse a 1); they are excluded when the benchmark is loaded and listed in every result
(:func:`excluded_problems`). Which answers these are depends only on the data digest and the verifier version,
both part of the protocol hash.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent

#: the user turn; with ``apply_chat_template`` it becomes the user message, otherwise the whole prompt.
#: Same instruction as the cpu-real training prompt (``harness.data.realdata.SYSTEM_PROMPT``).
PROMPT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."
#: stop strings besides the tokenizer's EOS (lm-eval adds that one itself)
STOP_SEQUENCES = ["</s>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"]
DEFAULT_TEMPERATURE = 0.6  # DeepSeek-R1 / most 2025 RLVR papers: T=0.6, top_p=0.95
DEFAULT_TOP_P = 0.95
DEFAULT_MAX_GEN_TOKS = 4096
GOLD_CHECK_TIMEOUT = 10.0  # seconds per gold answer when checking that it parses


@dataclass(frozen=True)
class Benchmark:
    name: str
    manifest: str  # key in config/data_manifest.yaml
    id_field: str
    problem_field: str
    answer_field: str | None  # None: the last \boxed{} of `solution_field`
    hub: str  # for users with the hub (the local file is the reference; its digest is in the manifest)
    hub_revision: str | None  # None: not pinned from here (no hub access); pin at first use
    solution_field: str | None = None
    subset: tuple[str, str] | None = None  # (field, value) row filter
    note: str = ""


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("math500", "math500", "unique_id", "problem", "answer",
              hub="HuggingFaceH4/MATH-500", hub_revision="6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
              note="OpenAI PRM800K test split (500), byte-identical to prm800k/math_splits/test.jsonl"),
    Benchmark("aime24", "aime24", "id", "problem", "answer", hub="Maxwell-Jia/AIME_2024", hub_revision=None,
              note="AIME 2024 I+II (30); answers are 3-digit strings (leading zeros)"),
    Benchmark("aime25", "aime25", "id", "problem", "answer",
              hub="math-ai/aime25", hub_revision="563bb8404243c5f09de6ec262f2db674fe5bce9b",
              note="AIME 2025 I+II (30), converted from MathArena"),
    Benchmark("amc23", "amc23", "id", "problem", "answer", hub="math-ai/amc23", hub_revision=None,
              note="AMC 12A/12B 2023 (40); answers stored as floats (27.0), scored as integers"),
    Benchmark("minerva_math", "minerva_math", "idx", "problem", None, solution_field="solution",
              hub="math-ai/minervamath", hub_revision=None,
              note="Minerva OCW set (272); gold = last \\boxed{} of the reference solution"),
    Benchmark("olympiadbench", "olympiadbench", "id", "question", "final_answer",
              hub="Hothan/OlympiadBench (config OE_TO_maths_en_COMP)", hub_revision=None,
              note="text-only English open-ended maths competition subset (675), as Qwen2.5-Math eval uses it"),
    Benchmark("olympiadbench_numeric", "olympiadbench", "id", "question", "final_answer",
              hub="Hothan/OlympiadBench (config OE_TO_maths_en_COMP, answer_type Numerical)", hub_revision=None,
              subset=("answer_type", "Numerical"), note="numeric-answer rows of the 675 (572)"),
]}


def default_data_dir() -> Path:
    """``RLVR_DATA_DIR`` or ``<repo root>/../shared/data``."""
    env = os.environ.get("RLVR_DATA_DIR")
    if env:
        return Path(env)
    from harness.config import REPO_ROOT

    return REPO_ROOT.parent / "shared" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir not in (None, "") else default_data_dir()


def benchmark(name: str) -> Benchmark:
    from harness.config import ConfigError

    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def data_digest(name: str) -> str:
    from harness.data.realdata import manifest

    return manifest()[benchmark(name).manifest]["sha256"]


def data_path(name: str, data_dir=None) -> Path:
    """The benchmark file, after its sha256 was checked against the manifest (ConfigError otherwise)."""
    from harness.data.realdata import data_file

    return data_file(resolve_data_dir(data_dir), benchmark(name).manifest)


# ---------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------

def _gold_of(b: Benchmark, rec: dict) -> str | None:
    if b.answer_field is None:
        # Minerva: the last \boxed{} of the reference solution, normalised as every extracted answer is
        # (e-notation, spacing, outer punctuation), so the gold scored, shown and cached is that canonical form
        from harness.verify import extract_answer, normalize_answer

        ans = extract_answer(rec.get(b.solution_field) or "")
        return None if ans is None else (normalize_answer(ans) or None)
    ans = rec.get(b.answer_field)
    if isinstance(ans, list):
        ans = ans[0] if len(ans) == 1 else ",".join(str(a) for a in ans) if ans else None
    if isinstance(ans, float) and ans.is_integer():
        ans = int(ans)  # amc23 stores 27.0
    if ans is None or str(ans).strip() == "":
        return None
    return str(ans)


def _raw_docs(name: str, path: Path) -> list[dict]:
    from harness.config import ConfigError
    from harness.results import jsonl_records

    b = benchmark(name)
    docs = []
    with open(path, encoding="utf-8") as f:
        for i, rec in jsonl_records(f, path, ConfigError):
            if b.subset and rec.get(b.subset[0]) != b.subset[1]:
                continue
            rid = rec.get(b.id_field)
            docs.append({"id": str(rid if rid is not None else i), "problem": rec[b.problem_field],
                         "answer": _gold_of(b, rec)})
    return docs


@lru_cache(maxsize=64)
def _checked_docs(name: str, path: str, digest: str, verifier_version: str) -> tuple[tuple, tuple]:
    """(docs, excluded) for a digest-checked file; golds the verifier cannot parse are excluded."""
    docs = _raw_docs(name, Path(path))
    with_gold = [d for d in docs if d["answer"] is not None]
    excluded = [{"id": d["id"], "answer": None, "reason": "no_gold"} for d in docs if d["answer"] is None]
    # each gold against itself in "plain" mode, in the scoring pool (timeouts enforced, no signals)
    verdicts = _verifier()._run([{"id": d["id"], "gold": d["answer"], "pred": d["answer"]} for d in with_gold],
                                mode="plain", timeout=GOLD_CHECK_TIMEOUT)
    kept = []
    for d, v in zip(with_gold, verdicts):
        if v.status in ("gold_error", "timeout") or not v.correct:
            reason = {"gold_error": "gold_unparsable", "timeout": "gold_timeout"}.get(v.status, "gold_not_self_equal")
            excluded.append({"id": d["id"], "answer": d["answer"], "reason": reason})
        else:
            kept.append(d)
    return tuple(kept), tuple(excluded)


def load_docs(name: str, data_dir=None) -> list[dict]:
    """Scored documents ``{id, problem, answer}`` of a benchmark, in file order (digest checked)."""
    from harness.verify import VERIFIER_VERSION

    path = data_path(name, data_dir)
    docs, _ = _checked_docs(name, str(path.resolve()), data_digest(name), VERIFIER_VERSION)
    return [dict(d) for d in docs]


def excluded_problems(name: str, data_dir=None) -> list[dict]:
    """Problems left out of scoring: no gold, or a gold the verifier cannot parse (fail-closed)."""
    from harness.verify import VERIFIER_VERSION

    path = data_path(name, data_dir)
    _, excluded = _checked_docs(name, str(path.resolve()), data_digest(name), VERIFIER_VERSION)
    return [dict(e) for e in excluded]


def load(benchmark: str | None = None, data_dir: str | None = None, **_ignored) -> Any:
    """lm-eval ``custom_dataset`` hook: a ``DatasetDict`` with one split ``test``.

    Called by lm-eval as ``load(**metadata, **dataset_kwargs)``; our YAMLs set ``dataset_kwargs.benchmark``;
    ``data_dir`` may come from ``--metadata '{"data_dir": ...}'`` (else ``RLVR_DATA_DIR``, else the default).
    """
    import datasets

    if benchmark is None:
        from harness.config import ConfigError

        raise ConfigError("task config lacks dataset_kwargs.benchmark; valid: " + ", ".join(BENCHMARKS))
    docs = load_docs(benchmark, data_dir)
    features = datasets.Features({k: datasets.Value("string") for k in ("id", "problem", "answer")})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs, features=features)})


def doc_to_text(doc: dict) -> str:
    return PROMPT_TEMPLATE.replace("{problem}", doc["problem"])


def doc_to_target(doc: dict) -> str:
    return doc["answer"]


# ---------------------------------------------------------------------------
# Scoring (shared verifier pool + verdict cache)
# ---------------------------------------------------------------------------

_lock = threading.Lock()
_settings = {"workers": int(os.environ.get("RLVR_VERIFY_WORKERS", "2")),
             "timeout": float(os.environ.get("RLVR_VERIFY_TIMEOUT", "5.0"))}
_cache: dict[str, Any] = {}


def configure_scoring(*, workers: int | None = None, timeout: float | None = None) -> dict:
    """Set the verifier pool used by the tasks (closes a pool built with other settings); returns the settings."""
    from harness.verify import close_shared

    with _lock:
        new = dict(_settings)
        if workers is not None:
            new["workers"] = int(workers)
        if timeout is not None:
            new["timeout"] = float(timeout)
        if new != _settings:
            close_shared(workers=_settings["workers"], timeout=_settings["timeout"], mode="boxed")
            _settings.update(new)
            _cache.clear()
        return dict(_settings)


def scoring_config() -> dict:
    """The verifier configuration that scores the tasks (hashed into the protocol)."""
    from harness.verify import verifier_config

    return verifier_config(mode="boxed", timeout=_settings["timeout"])


def _verifier():
    from harness.verify import shared_verifier

    return shared_verifier(workers=_settings["workers"], timeout=_settings["timeout"], mode="boxed")


def _key(gold: str, response: str) -> str:
    h = hashlib.sha256(gold.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(response.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def score_responses(gold: str, responses: list[str]) -> list:
    """One :class:`harness.verify.Verdict` per response (cached: lm-eval's hooks and
    :mod:`harness.evaluate.lmeval` share the work)."""
    responses = [r if isinstance(r, str) else "" for r in responses]
    keys = [_key(gold, r) for r in responses]
    todo = [i for i, k in enumerate(keys) if k not in _cache]
    if todo:
        verdicts = _verifier().verify_many([{"id": str(i), "gold": gold, "pred": responses[i]} for i in todo])
        for i, v in zip(todo, verdicts):
            _cache[keys[i]] = v
    out = [_cache[k] for k in keys]
    if any(v.status == "gold_error" for v in out):
        from harness.verify import GoldParseError

        raise GoldParseError(f"cannot parse gold answer {gold[:200]!r} (it should have been excluded at load)")
    return out


def clear_cache() -> None:
    _cache.clear()


_VOTE_DROP_RE = re.compile(r"\s+|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\[,;:! ]|~|\\displaystyle")


def vote_key(verdict) -> str | None:
    """The answer a sample votes for in maj@k: every correct answer is one cluster (they all equal the gold);
    an incorrect one votes for its extracted string after whitespace/``\\left``/``\\dfrac`` normalisation;
    no extracted answer -> no vote."""
    if verdict.correct:
        return "<correct>"
    if verdict.extracted is None:
        return None
    s = _VOTE_DROP_RE.sub("", verdict.extracted)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    return "=" + s.rstrip(".")


def _responses(results: list) -> list[str]:
    first = results[0] if results else None
    if isinstance(first, str) or first is None:
        raise RuntimeError(
            "rlvr-harness task got a single response per problem where a list of k samples was expected: the "
            "task's filter_list must use take_first_k (lm-eval's default take_first turns pass@k into pass@1)")
    return list(first)


def process_results(doc: dict, results: list) -> dict:
    """k samples -> avg@k (mean correctness), pass@k (n = k: any correct), maj@k (majority vote)."""
    from harness.evaluate.metrics import majority_vote

    resps = _responses(results)
    verdicts = score_responses(doc["answer"], resps)
    correct = [bool(v.correct) for v in verdicts]
    maj = bool(majority_vote([[vote_key(v) for v in verdicts]], [correct])[0])
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct)), "maj_at_k": float(maj)}


def process_results_greedy(doc: dict, results: list) -> dict:
    """One greedy response -> accuracy."""
    resps = _responses(results)
    if len(resps) != 1:
        raise RuntimeError(f"greedy task got {len(resps)} responses per problem; expected 1")
    return {"acc": float(score_responses(doc["answer"], resps)[0].correct)}
