"""Aggregate a replication's runs: claim verdicts, law fits, plots, and the check against pinned results."""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness.claims import evaluate_claims
from harness.config import load_card
from harness.claims.law import fit_law
from harness.results import atomic_write_json, compare_results, content_hash, file_sha256, provenance
from harness.results.packing import read_result


def _load(paths) -> list[dict]:
    out = []
    for p in paths:
        try:
            out.append(read_result(p, OSError))  # a pinned (packed) result file reads as the plain one
        except OSError as e:
            raise SystemExit(f"error: {e} (a result file)")
    return out


def _analysis_key(a: dict) -> str:
    """What an analysis result is of, across reruns: its name and its source (the checkpoint or card it analysed)."""
    src = {k: v for k, v in (a.get("source") or {}).items() if k not in ("paper",)}
    return a["analysis"] + (":" + ",".join(f"{k}={v}" for k, v in sorted(src.items())) if src else "")


def load_analyses(paths, paper: str, tier: str) -> list[dict]:
    """Analysis result files (``kind: analysis_result``; one per analysis, or one per checkpoint for analyses of
    checkpoints), sorted by :func:`_analysis_key`. Each must hold its own content hash and, where its ``source``
    names a paper or tier, be of this replication's."""
    out = []
    for p, a in zip(paths, _load(paths)):
        if not isinstance(a, dict) or a.get("kind") != "analysis_result":
            kind = a.get("kind") if isinstance(a, dict) else type(a).__name__
            raise SystemExit(f"error: {p}: not an analysis result (kind {kind!r}; valid: analysis_result)")
        if content_hash(a) != a.get("content_hash"):
            raise SystemExit(f"error: {p}: content_hash {str(a.get('content_hash'))[:12]} does not match its content")
        src = a.get("source") or {}
        for k, want in (("paper", paper), ("tier", tier)):
            if src.get(k) not in (None, want):
                raise SystemExit(f"error: {p}: an analysis of {k} {src[k]!r}, not of this verdict's {paper} [{tier}]")
        out.append(a)
    keys = [_analysis_key(a) for a in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SystemExit(f"error: two analysis results of {dup[0]} for {paper} [{tier}]")
    return sorted(out, key=_analysis_key)


def analysis_summary(analyses: list[dict]) -> dict:
    """What the verdict lists of each analysis it read (by :func:`_analysis_key`): its file's and protocol's hash."""
    return {_analysis_key(a): {"content_hash": a["content_hash"], "protocol_hash": a.get("protocol_hash")}
            for a in analyses}


def summarize(results: list[dict]) -> dict:
    rows = {}
    for r in results:
        j, ev = r["job"], r["heldout"]
        rows[f"{j['method']}/seed{j['seed']}"] = {
            "method": j["method"], "seed": j["seed"], "job_key": j.get("job_key"), "config_hash": j["config_hash"],
            "result_hash": r["content_hash"], "steps": ev[-1]["step"],
            "heldout_entropy_start": ev[0]["entropy"], "heldout_entropy_end": ev[-1]["entropy"],
            "heldout_sampled_acc_start": ev[0]["sampled_acc"], "heldout_sampled_acc_end": ev[-1]["sampled_acc"],
            "heldout_greedy_acc_end": ev[-1]["greedy_acc"], "wall_seconds": r["wall_seconds"],
            "peak_rss_mb": r["peak_rss_mb"], "mlflow_run_id": r.get("mlflow_run_id"),
        }
    return rows


def eval_summary(evals: list[dict]) -> dict:
    """Headline numbers of the checkpoints' evaluations: method/seed -> benchmark -> metric -> value [CI]."""
    out: dict = {}
    for e in evals:
        src = e.get("source") or {}
        key = "base" if src.get("method") in (None, "base") else f"{src['method']}/seed{src['seed']}"
        for b, entry in e["benchmarks"].items():
            out.setdefault(key, {})[b] = {m: {"value": v["value"], "ci": v["ci"]} for m, v in entry["metrics"].items()}
            out[key][b]["protocol_hash"] = entry["protocol_hash"]
    return dict(sorted(out.items()))


def _run_key(r: dict) -> str:
    return f"{r['job']['method']}/seed{r['job']['seed']}"


def _eval_key(e: dict) -> str:
    src = e.get("source") or {}
    who = "base" if src.get("method") in (None, "base") else f"{src['method']}/seed{src['seed']}"
    return f"{who}:{','.join(sorted(e['benchmarks']))}"


def _evaluated_model(e: dict) -> str | None:
    """What an evaluation evaluated: the trained job's key, or the base model's directory key
    (``.../models/<key>/base``); None when the record does not say."""
    src = e.get("source") or {}
    if src.get("job_key"):
        return f"job {src['job_key']}"
    model_dir = Path(str(e.get("model_dir") or ""))
    return f"base model {model_dir.parent.name}" if model_dir.name == "base" and model_dir.parent.name else None


def _eval_change(pinned: dict, fresh: dict) -> str | None:
    """Why a fresh evaluation is not comparable with the pinned one (then a difference is no failure):
    another protocol (data, sampling, verifier, template) or another model (changed job config, base model)."""
    if pinned.get("protocol_hash") != fresh.get("protocol_hash"):
        return "protocol_changed"
    a, b = _evaluated_model(pinned), _evaluated_model(fresh)
    if a and b and a != b:
        return "model_changed"
    return None


#: keys under which an analysis result (or a claim's numbers) refers to other result records by their content hash.
#: Those hashes cover the records' volatile fields (creation time, wall time), so they differ in every rerun; the
#: records themselves (runs, evaluations, analyses) are compared on their own.
REFERENCE_KEYS = frozenset({"inputs", "result_hash", "evals", "analysis_hash", "record_hash"})


def _is_sha256(x) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def _is_reference(v) -> bool:
    return _is_sha256(v) or (isinstance(v, list) and bool(v) and all(_is_sha256(x) for x in v))


def without_references(obj):
    """``obj`` without the content-hash references of :data:`REFERENCE_KEYS` (only where the value is one: a sha256
    or a list of them), at any depth."""
    if isinstance(obj, dict):
        return {k: without_references(v) for k, v in obj.items() if not (k in REFERENCE_KEYS and _is_reference(v))}
    if isinstance(obj, list):
        return [without_references(v) for v in obj]
    return obj


#: what a retrained run (``train_result``) or a re-run evaluation must share with the pinned one to be the same
#: result: its job and numbers; creation and wall times, hardware and code provenance (and so the hash) may differ
SAME_RESULT_FIELDS = {"train_result": ("job", "metrics", "heldout"), "eval_result": ("benchmarks", "protocol_hash")}


def result_diffs(pinned: dict, fresh: dict) -> list[str]:
    """The fields in which ``fresh`` differs from ``pinned``, a run or evaluation of the same job
    (:data:`SAME_RESULT_FIELDS`; another kind, or two kinds, raise ValueError)."""
    kind = fresh.get("kind")
    if kind not in SAME_RESULT_FIELDS or pinned.get("kind") != kind:
        raise ValueError(f"cannot compare a {pinned.get('kind')!r} with a {kind!r} result "
                         f"(valid kinds: {', '.join(SAME_RESULT_FIELDS)})")
    fields = SAME_RESULT_FIELDS[kind]
    return compare_results({k: pinned.get(k) for k in fields}, {k: fresh.get(k) for k in fields})


def reproducibility(paper: str, tier: str, results: list[dict], pinned_root: Path,
                    evals: list[dict] | None = None, analyses: list[dict] | None = None) -> dict:
    """Same seeds and config on CPU must give the same numbers as the pinned replication: the runs and evaluations
    its pinned verdict lists (by content hash), matched by method and seed, and the analyses pinned with it
    (``<paper>/<tier>/analysis/``), matched by name and source; fields that differ are listed."""
    from harness.results.store import replications

    pinned_dir = Path(pinned_root) / paper / tier
    if not (pinned_dir / "verdict.json").is_file():
        return {"status": "no_pinned_results", "pinned_dir": str(pinned_dir)}
    try:
        rep = replications(pinned_root).get((paper, tier))
    except ValueError as e:  # e.g. a pinned verdict lists a result whose file was edited and re-hashed
        return {"status": "pinned_corrupt", "pinned_dir": str(pinned_dir), "corrupt_files": {"": str(e)}}
    corrupt = pinned_corrupt(Path(pinned_root), [*rep["train"], *rep["evals"]])
    if corrupt:  # never judge reproducibility against a pinned file that is not what was pinned
        return {"status": "pinned_corrupt", "pinned_dir": str(pinned_dir), "corrupt_files": corrupt}
    pinned_runs = {_run_key(r): r for r in rep["train"]}
    report, failures = {}, 0
    for r in results:
        key = _run_key(r)
        pinned = pinned_runs.get(key)
        if pinned is None:
            report[key] = {"status": "no_pinned_run"}
            continue
        if pinned["job"]["config_hash"] != r["job"]["config_hash"]:
            report[key] = {"status": "config_changed", "diff_fields": compare_results(pinned["job"], r["job"])}
            continue
        diffs = result_diffs(pinned, r)
        failures += bool(diffs)
        report[key] = {"status": "identical" if not diffs else "REPRODUCIBILITY_FAILURE",
                       "n_fields_differing": len(diffs), "fields_differing": diffs[:50],
                       "pinned_hash": pinned.get("content_hash")}
    eval_report = {}
    if evals is not None:
        pinned_evals = {_eval_key(e): e for e in rep["evals"]}
        for e in evals:
            key = _eval_key(e)
            if key not in pinned_evals:
                eval_report[key] = {"status": "no_pinned_eval"}
                continue
            pe = pinned_evals[key]
            src = e.get("source") or {}
            run = report.get(f"{src.get('method')}/seed{src.get('seed')}", {})
            # the run it evaluated was trained with another config: another checkpoint, whatever the records say
            change = _eval_change(pe, e) or ("model_changed" if run.get("status") == "config_changed" else None)
            if change:
                eval_report[key] = {"status": change, "pinned": _evaluated_model(pe), "fresh": _evaluated_model(e)}
                continue
            diffs = result_diffs(pe, e)
            failures += bool(diffs)
            eval_report[key] = {"status": "identical" if not diffs else "REPRODUCIBILITY_FAILURE",
                                "n_fields_differing": len(diffs), "fields_differing": diffs[:50]}
    analysis_report = {}
    pinned_analyses = {}
    for pf in sorted((pinned_dir / "analysis").rglob("*.json")) if analyses else []:
        pa = json.loads(pf.read_text())
        if isinstance(pa, dict) and pa.get("kind") == "analysis_result":
            pinned_analyses[_analysis_key(pa)] = (pf, pa)
    for a in analyses or []:
        key = _analysis_key(a)
        if key not in pinned_analyses:
            analysis_report[key] = {"status": "no_pinned_analysis"}
            continue
        pf, pa = pinned_analyses[key]
        if content_hash(pa) != pa.get("content_hash"):
            analysis_report[key] = {"status": "pinned_corrupt", "pinned": str(pf)}
            continue
        if pa.get("protocol_hash") != a.get("protocol_hash"):
            analysis_report[key] = {"status": "protocol_changed"}
            continue
        if len(pa.get("inputs") or []) != len(a.get("inputs") or []):  # e.g. the card gained a method
            analysis_report[key] = {"status": "inputs_changed", "n_pinned_inputs": len(pa.get("inputs") or []),
                                    "n_fresh_inputs": len(a.get("inputs") or [])}
            continue
        # everything but provenance and references to other records: settings/protocol, numbers
        diffs = compare_results(without_references({k: v for k, v in pa.items() if k != "versions"}),
                                without_references({k: v for k, v in a.items() if k != "versions"}))
        failures += bool(diffs)
        analysis_report[key] = {"status": "identical" if not diffs else "REPRODUCIBILITY_FAILURE",
                                "n_fields_differing": len(diffs), "fields_differing": diffs[:50]}
    entries = [*report.values(), *eval_report.values(), *analysis_report.values()]
    status = "failure" if failures else ("identical" if all(v["status"] == "identical" for v in entries) else "partial")
    return {"status": status, "pinned_dir": str(pinned_dir), "runs": report, "evals": eval_report,
            **({"analyses": analysis_report} if analyses else {})}


def pinned_corrupt(pinned_root: Path, records: list[dict]) -> dict[str, str]:
    """Pinned files (as :func:`harness.results.store.replications` read them) that are not what was pinned: the
    content hash inside does not match the content, or the file's sha256 differs from ``manifest.json``'s.
    File (relative to ``pinned_root``) -> what is wrong."""
    manifest_path = pinned_root / "manifest.json"
    try:
        listed = json.loads(manifest_path.read_text()).get("files", {}) if manifest_path.is_file() else {}
    except (OSError, json.JSONDecodeError, AttributeError):
        listed = {}  # an unreadable manifest is harness verify-results' to report; the content hashes still count
    out = {}
    for rel in sorted({r["_file"] for r in records if r.get("_file")}):
        path = pinned_root / rel
        on_disk = read_result(path)  # replications() has read it already: valid JSON, metrics unpacked
        if content_hash(on_disk) != on_disk.get("content_hash"):
            out[rel] = f"content_hash {str(on_disk.get('content_hash'))[:12]} does not match its content"
        elif rel in listed and file_sha256(path) != listed[rel]:
            out[rel] = "sha256 differs from manifest.json"
    return out


def card_order(card: dict, tier: str, results: list[dict], evals: list[dict]) -> tuple[list[dict], list[dict]]:
    """Runs in the card's order (methods as listed, then the tier's seeds), evaluations base model first, then the
    runs' in that order (held-out set before the card's benchmarks): what the DAG passes, whatever order the files
    come in, so pooled fits and bootstraps do not depend on how the inputs were listed."""
    methods = list(card["methods"])
    seeds = [int(s) for s in card["tiers"].get(tier, {}).get("seeds", [])]
    benches = list(card["tiers"].get(tier, {}).get("benchmarks") or {})
    rank = lambda xs, x: (xs.index(x), 0) if x in xs else (len(xs), x)  # noqa: E731

    def run_key(method, seed):
        return (rank(methods, method), rank(seeds, int(seed)))

    def eval_key(e):
        src = e.get("source") or {}
        who = ((-1, 0), (-1, 0)) if src.get("method") in (None, "base") else run_key(src["method"], src["seed"])
        first = next(iter(e["benchmarks"]))
        return (who, 0 if first.startswith("heldout") else 1, rank(benches, first))

    return (sorted(results, key=lambda r: run_key(r["job"]["method"], r["job"]["seed"])),
            sorted(evals, key=eval_key))


def task_report_summary(path: str | Path) -> dict:
    """The base model's task report as the verdict lists it: its content hash (pinned with the verdict's inputs)
    and which of the task's properties held (``harness task-report``)."""
    r = json.loads(Path(path).read_text())
    if r.get("kind") != "task_report":
        raise ValueError(f"{path}: not a task report (kind {r.get('kind')!r})")
    return {"content_hash": r["content_hash"], "task": r["settings"]["task"],
            "checks": {name: {"value": c["value"], "ok": c["ok"]} for name, c in r["checks"].items()}}


def build_verdict(paper: str, tier: str, result_paths: list[str], out_dir: Path, pinned_root: Path,
                  evals: list[str] | None = None, draw=None, task_report: str | None = None,
                  tracking=None, analyses: list[str] | None = None) -> dict:
    """Judge the card's claims on the runs' result files (and the checkpoints' eval files); write verdict.json.

    ``draw(results, fits, out_dir, title)``, when given, draws the plots first (the face passes
    :func:`harness.report.plots.verdict_plots`): claims never import the report layer, the verdict only lists the
    hashes of the PNG files it finds. ``analyses``: analysis result files (:func:`load_analyses`), read by the
    checks that take them and listed under ``analysis_inputs`` (``harness pin`` pins them).
    ``tracking(results)``, when given, says what the MLflow store holds of the runs
    (the face passes :func:`harness.track.tracking_report`); the verdict keeps it under ``tracking``."""
    card = load_card(paper)
    results, eval_results = card_order(card, tier, _load(result_paths), _load(evals or []))
    analysis_results = load_analyses(analyses or [], paper, tier)
    claims = evaluate_claims(card, tier, results, eval_results, analysis_results)
    fits = {}
    base = [r for r in results if r["job"]["method"] == card["baseline"]]
    pts = lambda rs, k: [e[k] for r in rs for e in r["heldout"]]  # noqa: E731
    if base:
        fits[f"{card['baseline']} fit"] = fit_law(pts(base, "entropy"), pts(base, "sampled_acc")).to_dict()
    if results:  # a replication of analyses only (no training) has no law to fit
        fits["pooled fit"] = fit_law(pts(results, "entropy"), pts(results, "sampled_acc")).to_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{paper} · {tier}"
    if draw is not None:
        draw(results, fits, out_dir, title)
    counts = {v: sum(c["verdict"] == v for c in claims) for v in ("reproduced", "not_reproduced", "inconclusive",
                                                                  "not_run")}
    verdict = {
        "kind": "verdict", "schema_version": 1, "paper": paper, "tier": tier, "title": card["title"],
        "arxiv": card["arxiv"], "claims": claims, "counts": counts, "law_fits": fits,
        "runs": summarize(results),
        "reproducibility": reproducibility(paper, tier, results, pinned_root, eval_results, analysis_results),
        "plots": {p.name: file_sha256(p) for p in sorted(out_dir.glob("*.png"))},
        "inputs": sorted(r["content_hash"] for r in results),
        "eval_inputs": sorted(e["content_hash"] for e in eval_results),
        "evals": eval_summary(eval_results),
        **({"analysis_inputs": sorted(a["content_hash"] for a in analysis_results),
            "analyses": analysis_summary(analysis_results)} if analysis_results else {}),
        **({"task_report": task_report_summary(task_report)} if task_report else {}),
        **({"tracking": tracking(results)} if tracking is not None else {}),
        **provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out_dir / "verdict.json", verdict, hashed=True)
    return verdict


def format_verdict(v: dict) -> str:
    lines = [f"{v['paper']} [{v['tier']}]: " + ", ".join(f"{n} {k}" for k, n in v["counts"].items() if n)]
    for c in v["claims"]:
        lines.append(f"  {c['verdict']:>15}  {c['id']}")
    rep = v["reproducibility"]
    lines.append(f"  reproducibility vs pinned: {rep['status']}")
    for rel, why in (rep.get("corrupt_files") or {}).items():
        where = f"{Path(rep['pinned_dir']).parent.parent / rel}: " if rel else ""
        lines.append(f"  pinned file corrupt: {where}{why} (not compared; run `harness verify-results`)")
    return "\n".join(lines)
