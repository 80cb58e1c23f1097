"""Pinned results keep their bulky lists compressed; their content hash does not change.

Two lists make up most of the pinned bytes: a train result's ``metrics`` (one dict per logged step, ~46 keys x 100
steps at the smoke tiers; 90 % of its file) and an eval result's ``benchmarks.<name>.per_problem`` (one dict per
problem: samples' correctness, an agent game's episodes; ~75 % of every pinned evaluation's bytes). ``harness pin``
stores each packed: the rows as columns (each key once, with the row numbers where it is missing from some rows), as
compact JSON, gzipped (mtime 0: the same bytes every time) and base64-encoded::

    "metrics": {"packed": "columns+gzip+base64/v1", "n_rows": 100, "data": "H4sI..."}
    "benchmarks": {"math500": {..., "per_problem": {"packed": "columns+gzip+base64/v1", "n_rows": 256, ...}}}

Packing is lossless: :func:`unpack` gives back exactly the lists that were hashed, so ``content_hash`` (of the
unpacked result, :func:`harness.results.content_hash`) and every citation and verdict that lists it stay valid. Every
reader of a pinned result goes through :func:`read_result` (or :func:`unpack`); work dirs keep the plain form that
the jobs write.
"""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from harness.results import atomic_write_text, content_hash

ENCODING = "columns+gzip+base64/v1"
#: the result kinds whose lists are pinned packed
PACKED_KINDS = ("train_result", "eval_result")


def _is_packed_list(v) -> bool:
    return isinstance(v, dict) and "packed" in v


def _benchmarks(result: dict) -> dict:
    b = result.get("benchmarks") if isinstance(result, dict) else None
    return b if isinstance(b, dict) else {}


def is_packed(result: dict) -> bool:
    """Whether any of the result's lists is stored packed."""
    if not isinstance(result, dict):
        return False
    return _is_packed_list(result.get("metrics")) or any(
        isinstance(e, dict) and _is_packed_list(e.get("per_problem")) for e in _benchmarks(result).values())


def _columns(rows: list[dict]) -> dict:
    """key -> {"v": values} (present in every row) or {"i": row numbers, "v": values} (present in some)."""
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        idx = [i for i, r in enumerate(rows) if k in r]
        col = {"v": [rows[i][k] for i in idx]}
        if len(idx) != len(rows):
            col["i"] = idx
        out[k] = col
    return out


def _rows(columns: dict, n_rows: int) -> list[dict]:
    rows: list[dict] = [{} for _ in range(n_rows)]
    for k in sorted(columns):
        col = columns[k]
        for i, v in zip(col.get("i", range(n_rows)), col["v"]):
            rows[i][k] = v
    return rows


def _pack_rows(rows):
    """A list of dicts, packed; anything else (a packed list, no list) as is."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return rows
    text = json.dumps(_columns(rows), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    data = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode("ascii")
    return {"packed": ENCODING, "n_rows": len(rows), "data": data}


def _unpack_rows(v, what: str):
    if not _is_packed_list(v):
        return v
    if v["packed"] != ENCODING:
        raise ValueError(f"{what} packed as {v['packed']!r}; this harness reads {ENCODING!r}")
    columns = json.loads(gzip.decompress(base64.b64decode(v["data"])).decode())
    return _rows(columns, v["n_rows"])


def _map_lists(result: dict, fn) -> dict:
    """A copy of ``result`` with ``fn(list, what)`` applied to its metrics and each benchmark's per_problem."""
    out = dict(result)
    if "metrics" in result:
        out["metrics"] = fn(result["metrics"], "metrics")
    if _benchmarks(result):
        out["benchmarks"] = {b: ({**e, "per_problem": fn(e["per_problem"], f"benchmarks.{b}.per_problem")}
                                 if isinstance(e, dict) and "per_problem" in e else e)
                             for b, e in result["benchmarks"].items()}
    return out


def pack(result: dict) -> dict:
    """A copy of ``result`` with its metrics and per-problem lists packed (what has none, or is packed already:
    equal to ``result``)."""
    if not isinstance(result, dict):
        return result
    return _map_lists(result, lambda v, what: _pack_rows(v))


def unpack(result: dict) -> dict:
    """``result`` with plain lists (a plain result is returned as is). An unknown encoding raises ValueError."""
    if not is_packed(result):
        return result
    return _map_lists(result, _unpack_rows)


def needs_packing(result: dict) -> bool:
    """Whether ``result`` (a train or eval result) has a list that :func:`pack` would pack."""
    return isinstance(result, dict) and result.get("kind") in PACKED_KINDS and pack(result) != result


def read_result(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """A result file, unpacked (:func:`unpack`); an unreadable file raises ``error`` naming it."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None
    try:
        return unpack(r)
    except (ValueError, KeyError, TypeError, OSError, EOFError) as e:
        raise error(f"cannot unpack the packed lists of {path}: {e}") from None


def write_packed(path: str | Path, result: dict, error: type[Exception] = ValueError) -> Path:
    """Write ``result`` (with its ``content_hash``) packed, atomically, after checking that the packed form
    unpacks to that content hash (a result whose hash does not match its content raises ``error``)."""
    packed = pack(result)
    if content_hash(unpack(packed)) != result.get("content_hash"):
        raise error(f"{path}: the result's content_hash does not match its content; not written")
    return atomic_write_text(path, json.dumps(packed, indent=1, sort_keys=True) + "\n")
