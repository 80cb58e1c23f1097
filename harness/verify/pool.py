"""Signal-free process pool (:class:`Verifier`) and the per-process shared pools."""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
from typing import Iterable

from .base import MODES, Verdict, verifier_config
from .extract import _extract

# Workers are fresh interpreters started with subprocess (not multiprocessing's
# spawn/forkserver): those re-import the caller's __main__ module in every child,
# which for a training script means importing torch/CUDA under RLIMIT_AS.
_WORKER_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from harness.verify.worker import _worker_entry as entry; "
    "entry(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
)
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    __slots__ = ("proc", "conn", "state", "task", "deadline")

    def __init__(self, proc, conn, startup_deadline: float):
        self.proc = proc
        self.conn = conn
        self.state = "starting"  # starting | idle | busy
        self.task: int | None = None
        self.deadline = startup_deadline


class Verifier:
    """Batch verifier running cases in a pool of memory-capped worker processes.

    ``Verifier(workers=2, timeout=5.0, mem_limit_mb=2048, mode="boxed")``;
    ``verify_many(cases)`` takes dicts with ``id``, ``gold`` and ``pred`` (the
    model response; in plain mode the answer itself) and returns one
    :class:`Verdict` per case, in order. Thread-safe (calls are serialised).

    Workers are separate interpreters; each sets RLIMIT_AS to ``mem_limit_mb``
    before importing sympy, and (``warm_up=True``) runs a few generic cases so
    the parser caches are hot before it accepts work. A case that runs past
    ``timeout`` seconds, or whose worker dies, gets status ``timeout``; the
    worker is killed and replaced. Timeouts are measured in the parent from
    dispatch, with no signals involved.
    """

    STARTUP_TIMEOUT = 120.0
    MAX_START_FAILURES = 3

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 5.0,
        mem_limit_mb: int = 2048,
        mode: str = "boxed",
        *,
        warm_up: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if int(workers) < 1:
            raise ValueError("workers must be >= 1")
        if timeout is None or float(timeout) <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.n_workers = int(workers)
        self.timeout = float(timeout)
        self.mem_limit_mb = int(mem_limit_mb) if mem_limit_mb else None
        self.mode = mode
        self.warm_up = bool(warm_up)
        self._pid = os.getpid()  # workers belong to this process, not to forked children
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._closed = False
        self._start_failures = 0
        for _ in range(self.n_workers):
            self._workers.append(self._spawn())

    # -- lifecycle ---------------------------------------------------------
    def _spawn(self) -> _Worker:
        import socket
        import subprocess
        from multiprocessing.connection import Connection

        parent_sock, child_sock = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_CODE,
                    _PKG_ROOT,
                    str(child_sock.fileno()),
                    str(self.mem_limit_mb or 0),
                    str(int(self.warm_up)),
                ],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        return _Worker(proc, conn, time.monotonic() + self.STARTUP_TIMEOUT)

    def _kill(self, w: _Worker) -> None:
        try:
            w.conn.close()
        except Exception:
            pass
        try:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(timeout=5.0)
        except Exception:
            pass

    def _replace(self, w: _Worker, *, failed_start: bool = False) -> None:
        self._kill(w)
        if failed_start:
            self._start_failures += 1
            if self._start_failures >= self.MAX_START_FAILURES:
                self._shutdown()
                raise RuntimeError(
                    "harness.verify: worker processes keep dying during start-up "
                    f"(mem_limit_mb={self.mem_limit_mb}); verifier closed"
                )
        i = self._workers.index(w)
        self._workers[i] = self._spawn()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _shutdown(self) -> None:
        self._closed = True
        if os.getpid() != self._pid:
            # A forked copy must not signal the parent's workers.
            self._workers = []
            return
        asked = []
        for w in self._workers:
            if w.state == "idle":  # idle workers exit cleanly on None; others are killed
                try:
                    w.conn.send(None)
                    asked.append(w)
                except Exception:
                    pass
        deadline = time.monotonic() + 1.0
        for w in asked:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass
        for w in self._workers:
            self._kill(w)
        self._workers = []

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._shutdown()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            if not self._closed:
                self._shutdown()
        except Exception:
            pass

    def config(self) -> dict:
        return verifier_config(mode=self.mode, timeout=self.timeout)

    # -- verification ------------------------------------------------------
    def verify_many(self, cases: Iterable[dict]) -> list[Verdict]:
        return self._run(cases, mode=self.mode, timeout=self.timeout)

    def verify(self, gold: str, response: str, id: str | None = None) -> Verdict:
        return self._run([{"id": id, "gold": gold, "pred": response}], mode=self.mode, timeout=self.timeout)[0]

    def _run(self, cases: Iterable[dict], *, mode: str, timeout: float) -> list[Verdict]:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        items = []
        for c in cases:
            cid = c.get("id") if isinstance(c, dict) else None
            gold = c.get("gold") if isinstance(c, dict) else None
            pred = c.get("pred") if isinstance(c, dict) else None
            items.append((None if cid is None else str(cid), gold, pred))
        results: list[Verdict | None] = [None] * len(items)
        queue: collections.deque[int] = collections.deque()
        for i, (cid, gold, pred) in enumerate(items):
            if not isinstance(gold, str):
                results[i] = Verdict(cid, False, "gold_error", None)
            elif not isinstance(pred, str):
                results[i] = Verdict(cid, False, "parse_fail", None)
            else:
                queue.append(i)
        if not queue:
            return results  # type: ignore[return-value]
        with self._lock:
            if self._closed:
                raise RuntimeError("Verifier is closed")
            if os.getpid() != self._pid:
                raise RuntimeError("Verifier was created in another process (fork); create a new one here")
            try:
                self._loop(items, results, queue, mode, timeout)
            except BaseException:
                # Interrupted (e.g. KeyboardInterrupt): workers still holding a case
                # would answer into the next call; replace them so state stays clean.
                if not self._closed:
                    for w in list(self._workers):
                        if w.state == "busy":
                            try:
                                self._replace(w)
                            except Exception:
                                pass
                raise
        return results  # type: ignore[return-value]

    def _loop(self, items, results, queue, mode, timeout) -> None:
        from multiprocessing.connection import wait

        remaining = len(queue)
        while remaining:
            # Dispatch to idle workers.
            for w in list(self._workers):
                if w.state != "idle" or not queue:
                    continue
                i = queue.popleft()
                _cid, gold, pred = items[i]
                try:
                    w.conn.send((i, gold, pred, mode))
                except (OSError, ValueError):
                    queue.appendleft(i)
                    self._replace(w)
                    continue
                w.state, w.task, w.deadline = "busy", i, time.monotonic() + timeout

            waiting = [w for w in self._workers if w.state != "idle"]
            if not waiting:  # pragma: no cover - cannot happen while remaining > 0
                continue
            now = time.monotonic()
            wait_for = max(0.0, min(w.deadline for w in waiting) - now)
            ready = wait([w.conn for w in waiting], timeout=wait_for)
            by_conn = {id(w.conn): w for w in waiting}
            for conn in ready:
                w = by_conn[id(conn)]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:  # worker died
                    if w.state == "busy":
                        self._finish(results, items, w.task, False, "timeout", None, mode)
                        remaining -= 1
                        self._replace(w)
                    else:
                        self._replace(w, failed_start=True)
                    continue
                if msg[0] == "ready":
                    w.state, w.task = "idle", None
                    self._start_failures = 0
                    continue
                idx, correct, status, extracted, recycle = msg
                if w.state == "busy" and idx == w.task:
                    self._finish(results, items, idx, bool(correct), status, extracted, mode)
                    remaining -= 1
                w.state, w.task = "idle", None
                if recycle:
                    self._replace(w)
            # Enforce deadlines.
            now = time.monotonic()
            for w in list(self._workers):
                if w.state == "busy" and now >= w.deadline:
                    self._finish(results, items, w.task, False, "timeout", None, mode)
                    remaining -= 1
                    self._replace(w)
                elif w.state == "starting" and now >= w.deadline:
                    self._replace(w, failed_start=True)

    @staticmethod
    def _finish(results, items, idx, correct, status, extracted, mode) -> None:
        if results[idx] is not None:
            return
        cid, _gold, pred = items[idx]
        if status == "timeout" and extracted is None and isinstance(pred, str) and len(pred) <= 1_000_000:
            try:  # cheap, linear-time: tell the caller what the timed-out answer was
                extracted = _extract(pred, mode)
            except Exception:
                extracted = None
        results[idx] = Verdict(cid, bool(correct) and status == "ok", status, extracted)


_shared_lock = threading.Lock()
_shared: dict[tuple, Verifier] = {}


def shared_verifier(workers: int = 1, timeout: float = 5.0, mode: str = "boxed") -> Verifier:
    """A lazily started pool per (workers, timeout, mode), private to this process (restarted after a fork)."""
    key = (workers, timeout, mode)
    with _shared_lock:
        v = _shared.get(key)
        if v is None or v._closed or v._pid != os.getpid():
            v = _shared[key] = Verifier(workers=workers, timeout=timeout, mode=mode)
        return v


def close_shared(workers: int = 1, timeout: float = 5.0, mode: str = "boxed") -> None:
    with _shared_lock:
        v = _shared.pop((workers, timeout, mode), None)
    if v is not None:
        v.close()


@atexit.register
def _close_shared() -> None:  # pragma: no cover - exit hook
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for v in pools:
        try:
            v.close()
        except Exception:
            pass
