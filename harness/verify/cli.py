"""``python -m harness.verify``: verify a JSONL file of cases with a worker pool."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Iterable

from .base import MODES
from .pool import Verifier


class _InputError(Exception):
    pass


def _read_cases(path: str) -> list[dict]:
    from harness.results import jsonl_records

    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise _InputError(f"{path}: cannot open: {e.strerror or e}") from None
    cases = []
    with fh:
        try:
            for lineno, obj in jsonl_records(fh, path, _InputError):
                if not isinstance(obj, dict):
                    raise _InputError(f"{path}:{lineno}: expected a JSON object")
                missing = [k for k in ("id", "gold", "pred") if k not in obj]
                if missing:
                    raise _InputError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}")
                for k in ("gold", "pred"):
                    if not isinstance(obj[k], str):
                        raise _InputError(f"{path}:{lineno}: {k!r} must be a string")
                cases.append(obj)
        except UnicodeDecodeError as e:
            raise _InputError(f"{path}: not valid UTF-8 ({e.reason})") from None
    return cases


def _write_atomic(path: str, lines: Iterable[str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".verify-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
                out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cli_main(argv: list[str]) -> int:
    """``--input cases.jsonl --output out.jsonl [--workers N] [--timeout S] [--mode boxed|plain]``.

    Exit codes: 0 ok, 1 at least one unparsable gold (every line still written),
    2 bad input or usage, 3 the worker pool itself failed (nothing written).
    """
    ap = argparse.ArgumentParser(prog="python -m harness.verify", description="Fail-closed math answer verifier")
    ap.add_argument("--input", required=True, help="JSONL with id, gold, pred per line")
    ap.add_argument("--output", required=True, help="JSONL written atomically: id, correct, status, extracted")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--mode", choices=MODES, default="boxed")
    ap.add_argument("--mem-limit-mb", type=int, default=2048)
    argv = list(argv)
    if argv[:1] == ["--"]:  # tolerate wrappers that forward "-- <args>"
        argv = argv[1:]
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    if args.workers < 1 or args.timeout <= 0:
        print("error: --workers must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    try:
        cases = _read_cases(args.input)
    except _InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        print(f"error: {args.output}: output directory does not exist", file=sys.stderr)
        return 2
    try:
        with Verifier(workers=args.workers, timeout=args.timeout, mem_limit_mb=args.mem_limit_mb, mode=args.mode) as v:
            verdicts = v.verify_many(cases)
    except (RuntimeError, OSError) as e:
        print(f"error: verifier failed: {e}", file=sys.stderr)
        return 3
    lines = [
        json.dumps(
            {"id": c["id"], "correct": vd.correct, "status": vd.status, "extracted": vd.extracted},
            ensure_ascii=False,
        )
        for c, vd in zip(cases, verdicts)
    ]
    _write_atomic(args.output, lines)
    n_gold = sum(vd.status == "gold_error" for vd in verdicts)
    if n_gold:
        print(f"error: {n_gold} case(s) with unparsable gold (status gold_error)", file=sys.stderr)
        return 1
    return 0
