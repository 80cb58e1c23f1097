"""The worker process side of the pool: warm-up, memory cap and the request loop."""

from __future__ import annotations

import logging
import os

from .compare import _verify_local

# Generic answer shapes parsed/compared once per worker before it reports ready:
# the ANTLR parser builds its DFA cache and sympy its caches lazily, which makes a
# cold worker ~2x slower on its first few hundred cases.
_WARM_UP_PAIRS = [
    ("42", "\\boxed{042}"), ("1,000", "\\boxed{1000}"), ("\\frac{3}{4}", "\\boxed{0.75}"),
    ("-\\frac{7}{2}", "\\boxed{-3.5}"), ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}"), ("\\frac{\\pi}{3}", "\\boxed{\\pi/3}"),
    ("x^2-1", "\\boxed{(x-1)(x+1)}"), ("3-2i", "\\boxed{3 - 2i}"), ("(1,-2)", "\\boxed{(1, -2)}"),
    ("[0,\\infty)", "\\boxed{[0, \\infty)}"), ("(-\\infty,1)\\cup(2,\\infty)", "\\boxed{(2,\\infty)\\cup(-\\infty,1)}"),
    ("1,-3", "\\boxed{-3, 1}"), ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}"),
    ("30^\\circ", "\\boxed{30}"), ("25\\%", "\\boxed{25}"), ("\\text{(B)}", "\\boxed{B}"), ("y=2x+1", "\\boxed{y = 1 + 2x}"),
    ("12", "\\boxed{13}"), ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"), ("p+q", "\\boxed{\\frac{5}{2}}"),
]


def _warm_up() -> None:
    for gold, response in _WARM_UP_PAIRS:
        _verify_local(gold, response, "boxed")


def _worker_main(conn, mem_limit_mb: int | None, warm_up: bool = True) -> None:
    """Worker loop: receive (idx, gold, response, mode), reply (idx, correct, status, extracted, recycle)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    except Exception:
        pass
    if mem_limit_mb:
        try:
            import resource

            limit = int(mem_limit_mb) * 1024 * 1024
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except Exception:
            pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    if warm_up:
        _warm_up()
    else:
        _verify_local("1", "1", "plain")  # import everything before declaring ready
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        idx, gold, response, mode = msg
        recycle = False
        try:
            correct, status, extracted = _verify_local(gold, response, mode)
        except MemoryError:
            correct, status, extracted, recycle = False, "timeout", None, True
        except Exception:
            correct, status, extracted = False, "parse_fail", None
        try:
            conn.send((idx, correct, status, extracted, recycle))
        except (OSError, ValueError):
            break
        if recycle:
            break


def _worker_entry(fd: int, mem_limit_mb: int, warm_up: int = 1) -> None:
    """Entry point of a worker subprocess (see ``Verifier._spawn``)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        _worker_main(conn, mem_limit_mb or None, bool(warm_up))
    finally:
        try:
            conn.close()
        except Exception:
            pass
