"""Pinned train results keep their per-step metrics compressed; their content hash does not change.

A train result's ``metrics`` (one dict per logged step, ~46 keys x 100 steps at the smoke tiers) is 90 % of its
file. ``harness pin`` stores it packed: the rows as columns (each key once, with the row numbers where it is
missing from some rows), as compact JSON, gzipped (mtime 0: the same bytes every time) and base64-encoded::

    "metrics": {"packed": "columns+gzip+base64/v1", "n_rows": 100, "data": "H4sI..."}

Packing is lossless: :func:`unpack` gives back exactly the list that was hashed, so ``content_hash`` (of the
unpacked result, :func:`harness.results.content_hash`) and every citation and verdict that lists it stay valid. Every
reader of a pinned result goes through :func:`read_result` (or :func:`unpack`); work dirs keep the plain form that
the training job writes. About 26 MB of pinned metrics become about 4 MB.
"""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from harness.results import atomic_write_text, content_hash

ENCODING = "columns+gzip+base64/v1"


def is_packed(result: dict) -> bool:
    m = result.get("metrics") if isinstance(result, dict) else None
    return isinstance(m, dict) and "packed" in m


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


def pack(result: dict) -> dict:
    """A copy of ``result`` with its metrics packed (a result without a metrics list, or packed already: as is)."""
    rows = result.get("metrics")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return result
    text = json.dumps(_columns(rows), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    data = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode("ascii")
    return {**result, "metrics": {"packed": ENCODING, "n_rows": len(rows), "data": data}}


def unpack(result: dict) -> dict:
    """``result`` with plain metrics (a plain result is returned as is). An unknown encoding raises ValueError."""
    if not is_packed(result):
        return result
    m = result["metrics"]
    if m["packed"] != ENCODING:
        raise ValueError(f"metrics packed as {m['packed']!r}; this harness reads {ENCODING!r}")
    columns = json.loads(gzip.decompress(base64.b64decode(m["data"])).decode())
    return {**result, "metrics": _rows(columns, m["n_rows"])}


def read_result(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """A result file, unpacked (:func:`unpack`); an unreadable file raises ``error`` naming it."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None
    try:
        return unpack(r)
    except (ValueError, KeyError, TypeError, OSError, EOFError) as e:
        raise error(f"cannot unpack the metrics of {path}: {e}") from None


def write_packed(path: str | Path, result: dict, error: type[Exception] = ValueError) -> Path:
    """Write ``result`` (with its ``content_hash``) packed, atomically, after checking that the packed form
    unpacks to that content hash (a result whose hash does not match its content raises ``error``)."""
    packed = pack(result)
    if content_hash(unpack(packed)) != result.get("content_hash"):
        raise error(f"{path}: the result's content_hash does not match its content; not written")
    return atomic_write_text(path, json.dumps(packed, indent=1, sort_keys=True) + "\n")
