"""The analysis result file every analysis writes (``kind: analysis_result``), read by the claims layer.

Fields: ``analysis`` (its name: the module, the card's ``tiers.<tier>.analysis.<name>`` block and the DAG rule
``analyze_<name>``), ``settings`` as resolved (defaults filled in), ``settings_hash``, ``protocol_hash`` (analysis
name, schema version and settings: two files with the same protocol hash computed the same thing), ``inputs``
(content hashes of the result files it read; empty for a closed-form analysis), ``source`` (paper and tier whose
card gave the settings, when one did), ``result`` (the numbers), provenance (git commit, package versions,
hardware), ``created``, ``wall_seconds`` and the ``content_hash`` of all of it. Written atomically: a reader never
sees half a file.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness.results import atomic_write_json, config_hash, provenance

SCHEMA_VERSION = 1
KIND = "analysis_result"


def analysis_record(name: str, settings: dict, result: dict, *, inputs: list[str] | None = None,
                    source: dict | None = None, wall_seconds: float | None = None) -> dict:
    """The record of one analysis (not yet hashed; :func:`write_analysis` hashes and writes it)."""
    return {
        "kind": KIND, "schema_version": SCHEMA_VERSION, "analysis": name, "settings": settings,
        "settings_hash": config_hash(settings),
        "protocol_hash": config_hash({"analysis": name, "schema_version": SCHEMA_VERSION, "settings": settings}),
        "inputs": sorted(inputs or []), "source": source or {}, "result": result,
        **provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": wall_seconds,
    }


def write_analysis(record: dict, out: str | Path) -> dict:
    """Hash and write ``record`` atomically to ``out``; returns the record as stored (with ``content_hash``)."""
    if record.get("kind") != KIND:
        raise ValueError(f"not an analysis record (kind {record.get('kind')!r}; valid: {KIND})")
    atomic_write_json(out, record, hashed=True)
    return json.loads(Path(out).read_text())


def read_analyses(paths, name: str) -> list[dict]:
    """The intact ``name`` analysis results in ``paths`` (a collector's per-checkpoint inputs), in order; a file that
    is not valid JSON, not a ``name`` analysis result, or whose content hash does not match raises ValueError naming
    it."""
    from harness.results import content_hash
    from harness.results.store import read_json

    out = []
    for p in paths:
        r = read_json(p, ValueError)
        if r.get("kind") != KIND or r.get("analysis") != name:
            raise ValueError(f"{p}: not a {name} analysis result")
        if content_hash(r) != r.get("content_hash"):
            raise ValueError(f"{p}: content_hash does not match its content")
        out.append(r)
    return out


def same_protocol(records: list[dict], name: str, agree: str) -> None:
    """A collector's first check: records given, all of one protocol (``agree``: what the protocol covers, for the
    message); else ValueError."""
    if not records:
        raise ValueError(f"{name} collect: no per-checkpoint records")
    n = len({r["protocol_hash"] for r in records})
    if n != 1:
        raise ValueError(f"{name} collect: the records have {n} protocols ({agree} must agree)")


def collect_files(name: str, paths, settings: dict, out, *, parse, collect, source: dict | None = None) -> dict:
    """A collector's card file: the per-checkpoint ``name`` records in ``paths`` (:func:`read_analyses`), the
    settings as ``parse(settings)`` resolves them, ``collect(records, settings)`` as the result, the records' content
    hashes as inputs; written atomically, returned as stored."""
    t0 = time.time()
    recs = read_analyses(paths, name)
    s = parse(settings)
    return write_analysis(analysis_record(name, s, collect(recs, s), inputs=[r["content_hash"] for r in recs],
                                          source=source, wall_seconds=time.time() - t0), out)


def parse_source(text: str | None) -> dict:
    """``paper=P,tier=T`` -> {"paper": P, "tier": T}; None or "" -> {}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("paper", "tier") or not value.strip():
            raise ValueError(f"--source: bad item {part!r}; valid: paper=<id>,tier=<tier>")
        out[key.strip()] = value.strip()
    return out
