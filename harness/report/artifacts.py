"""Citable artifacts: the results manifest, ``harness verify-results``, ``harness cite`` and ``harness release``.

Every JSON result under ``results/`` carries ``content_hash`` (sha256 of its canonical JSON without that field);
``results/manifest.json`` lists each one with its provenance. A one-byte change anywhere fails verification.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config import REPO_ROOT, ConfigError
from harness.results import atomic_dir, atomic_write_json, content_hash, file_sha256
from harness.results.packing import unpack

MANIFEST = "manifest.json"
SKIP = {MANIFEST, "MANIFEST.json"}
#: regenerated from the pinned files by ``harness leaderboard`` (plots embedded: megabytes), so neither tracked
#: (.gitignore), hashed, released nor checked
GENERATED = {"report.html"}


def _listed(d: Path, p: Path) -> bool:
    """A file of ``d`` that the manifest lists: not the manifest, a release or a generated page."""
    rel = p.relative_to(d)
    return p.is_file() and p.name != MANIFEST and rel.parts[0] != "releases" and str(rel) not in GENERATED


def _results_dir(results_dir: Path | None) -> Path:
    return Path(results_dir) if results_dir else REPO_ROOT / "results"


def _entries(results_dir: Path) -> list[dict]:
    records = []
    for p in sorted(results_dir.rglob("*.json")):
        rel = p.relative_to(results_dir)
        if p.name in SKIP or rel.parts[0] == "releases":
            continue
        r = json.loads(p.read_text())
        if "content_hash" in r:
            records.append((rel, r))
    used_by: dict[str, list[str]] = {}  # a shared run or evaluation belongs to every card whose verdict lists it
    for _, r in records:
        if r.get("kind") == "verdict":
            for h in [*r.get("inputs", []), *r.get("eval_inputs", [])]:
                used_by.setdefault(h, []).append(r["paper"])
    out = []
    for rel, r in records:
        job = r.get("job") or {k: v for k, v in (r.get("source") or {}).items()}  # eval results name their checkpoint
        prov = r.get("provenance") or {}
        from_path = (rel.parts[0], rel.parts[1]) if len(rel.parts) > 2 else (None, None)
        if rel.parts[0] in ("jobs", "base-evals"):
            from_path = (", ".join(sorted(set(used_by.get(r["content_hash"], [])))) or None, rel.parts[1])
        out.append({
            "path": str(rel), "content_hash": r["content_hash"], "kind": r.get("kind"),
            "paper": job.get("paper", r.get("paper")) or from_path[0],
            "tier": job.get("tier", r.get("tier")) or from_path[1],
            "method": job.get("method"), "seed": job.get("seed"), "config_hash": job.get("config_hash"),
            "protocol_hash": r.get("protocol_hash"), "git_commit": r.get("git_commit", prov.get("git_commit")),
            "versions": r.get("versions", prov.get("versions")), "hardware": r.get("hardware", prov.get("hardware")),
            "dataset_digests": r.get("dataset_digests"), "mlflow_run_id": r.get("mlflow_run_id"),
            "resolved_config": r["job"] if "job" in r else (r.get("settings") or None),
        })
    return out


def build_manifest(results_dir: Path | None = None) -> Path:
    d = _results_dir(results_dir)
    files = {str(p.relative_to(d)): file_sha256(p) for p in sorted(d.rglob("*")) if _listed(d, p)}
    return atomic_write_json(d / MANIFEST, {"results": _entries(d), "files": files})


def verify_results(results_dir: Path | None = None) -> list[str]:
    """Problems found (empty: all good): hash mismatches, files missing from or not in the manifest."""
    d = _results_dir(results_dir)
    problems = []
    mpath = d / MANIFEST
    if not mpath.exists():
        return [f"{mpath} is missing (run `harness pin` or `harness manifest`)"]
    try:
        manifest = json.loads(mpath.read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        why = f"not valid JSON ({e.msg}, line {e.lineno})" if isinstance(e, json.JSONDecodeError) else \
            "not a results manifest (no 'files')" if not isinstance(e, UnicodeDecodeError) else "not text"
        return [f"{mpath}: {why}; nothing was checked against it (rebuild it with `harness manifest` after "
                "checking the files with git)"]
    for p in sorted(d.rglob("*")):
        if not _listed(d, p):
            continue
        rel = str(p.relative_to(d))
        if rel not in listed:
            if rel != "README.md":
                problems.append(f"{rel}: not listed in {MANIFEST}")
            continue
        if file_sha256(p) != listed[rel]:
            problems.append(f"{rel}: sha256 {file_sha256(p)} != manifest {listed[rel]}")
        if p.suffix == ".json" and p.name not in SKIP:
            try:
                r = unpack(json.loads(p.read_text()))  # the hash is of the unpacked metrics (results.packing)
            except json.JSONDecodeError as e:
                problems.append(f"{rel}: not valid JSON ({e.msg})")
                continue
            except (ValueError, KeyError, TypeError, OSError, EOFError) as e:
                problems.append(f"{rel}: packed metrics do not unpack ({e})")
                continue
            if isinstance(r, dict) and "content_hash" in r and content_hash(r) != r["content_hash"]:
                problems.append(f"{rel}: content_hash {r['content_hash'][:12]} does not match its content "
                                f"({content_hash(r)[:12]})")
    for rel in listed:
        if not (d / rel).exists():
            problems.append(f"{rel}: listed in {MANIFEST} but missing")
    hashes = {e["content_hash"] for e in manifest.get("results", [])}
    for e in _entries(d):
        if e["content_hash"] not in hashes:
            problems.append(f"{e['path']}: result {e['content_hash'][:12]} not in the manifest's results")
    return problems


def find(prefix: str, results_dir: Path | None = None) -> dict:
    d = _results_dir(results_dir)
    if len(prefix) < 6:
        raise ConfigError("give at least 6 hex digits of the result hash")
    hits = [e for e in _entries(d) if e["content_hash"].startswith(prefix.lower())]
    if not hits:
        raise ConfigError(f"no result in {d} has a hash starting with {prefix!r} (see {d / MANIFEST})")
    if len(hits) > 1:
        raise ConfigError(f"{len(hits)} results match {prefix!r}: " + ", ".join(h["content_hash"][:16] for h in hits))
    return hits[0]


def citation(prefix: str, results_dir: Path | None = None) -> str:
    from harness import __version__

    e = find(prefix, results_dir)
    r = unpack(json.loads((_results_dir(results_dir) / e["path"]).read_text()))
    paper, tier = e.get("paper") or "all papers", e.get("tier") or "all tiers"
    what = f"{paper} [{tier}]" + (f" {e['method']}" if e.get("method") else "") + (
        f" seed {e['seed']}" if e.get("seed") is not None else "")
    if r.get("kind") == "eval_result":
        headline = "; ".join(f"{b}: " + ", ".join(f"{k} {v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
                                                  for k, v in spec["metrics"].items())
                             for b, spec in r["benchmarks"].items()) + f"; protocol {r.get('protocol_hash', '')[:16]}"
    elif r.get("kind") == "entropy_atlas":
        headline = "; ".join(f"{page}: " + ", ".join(f"{m} {v['verdict']}" for m, v in p["methods"].items())
                             for page, p in r["pages"].items())
    elif r.get("kind") == "verdict":
        c = r["counts"]
        headline = (f"{c['reproduced']} claims reproduced, {c['not_reproduced']} not reproduced, "
                    f"{c['inconclusive']} inconclusive, {c['not_run']} not run")
    else:
        last = (r.get("heldout") or [{}])[-1]
        headline = f"held-out sampled accuracy {last.get('sampled_acc')}, entropy {last.get('entropy')}"
    key = f"rlvrharness_{paper.replace(' ', '')}_{tier.replace('-', '').replace(' ', '')}_{e['content_hash'][:8]}"
    plain = (f"rlvr-harness contributors. rlvr-harness v{__version__}: {what} ({r.get('kind')}). "
             f"Result sha256:{e['content_hash']}; commit {e.get('git_commit')}. {headline}.")
    bib = (f"@misc{{{key},\n  title = {{rlvr-harness v{__version__}: replication of {paper}, {tier}}},\n"
           f"  author = {{{{rlvr-harness contributors}}}},\n  note = {{{r.get('kind')} {what}; result sha256:"
           f"{e['content_hash']}; git commit {e.get('git_commit')}; {headline}}},\n  year = {{2026}}\n}}")
    return plain + "\n\n" + bib


def release(name: str, results_dir: Path | None = None) -> Path:
    """Freeze the current results (and leaderboard) into results/releases/<name>/ (git stores identical files once)."""
    d = _results_dir(results_dir)
    problems = verify_results(d)
    if problems:
        raise ConfigError(f"refusing to release: {problems[0]} ({len(problems)} problems; run harness verify-results)")
    dest = d / "releases" / name
    if dest.exists():
        raise ConfigError(f"release {name!r} exists already ({dest}); releases are immutable")
    with atomic_dir(dest) as tmp:
        for p in sorted(d.rglob("*")):
            rel = p.relative_to(d)
            if _listed(d, p) or p.name == MANIFEST and len(rel.parts) == 1:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, tmp / rel)
    return dest
