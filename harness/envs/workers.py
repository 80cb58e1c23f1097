"""One environment per live episode, stepped as a batch: in this process, or spread over worker processes.

The episode player (:func:`harness.evaluate.episodes.run_episodes`) samples one turn for every live episode with
one batched ``generate`` call, then steps every episode's environment with its action. ALFWorld's PDDL engine
takes tens of milliseconds per step and seconds to load a game, so with many episodes the environments, not the
model, can dominate a turn. :class:`WorkerEnvs` moves the environments into ``workers`` processes (episode ``i``
lives in worker ``i % workers``): a batch of resets or steps is sent to every worker at once and the workers step
their episodes in parallel while the main process waits, so generation stays one batched call per turn.

Both classes serve the same two calls, :meth:`~InProcessEnvs.reset` (one new environment per game id, reset to it)
and :meth:`~InProcessEnvs.step` (``{episode index: action}``), and return the same :class:`Seen` values: each
environment is created, reset and stepped exactly as in-process, so the episodes are identical whichever is used
(a test checks it). An exception raised by an environment in a worker (an unknown game id, an altered game file) is
raised again in the main process with its own type and message, plus a note with the worker's traceback.

Start method: ``fork`` where the platform has it (as PyTorch's DataLoader workers: no re-import of the caller's
modules, and an ``env_factory`` may be any callable, a lambda included); ``spawn`` elsewhere, which needs a
picklable factory (a module-level function or ``functools.partial``). Workers ignore SIGINT: the main process
shuts them down (:meth:`WorkerEnvs.close`, also on errors).
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import traceback
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from harness.envs.base import Step, TextEnv

#: seconds to wait for a worker to exit after ``close`` before it is terminated
JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Seen:
    """What the player needs after a reset or step: the :class:`Step` and the environment's current task text and
    task type (attributes of the environment object, which stays in its process)."""
    step: Step
    task: str
    task_type: str


def _seen(env: TextEnv, step: Step) -> Seen:
    return Seen(step, env.task, env.task_type)


class InProcessEnvs:
    """The environments in this process (``workers=0``)."""

    def __init__(self, env_factory: Callable[[], TextEnv]) -> None:
        self.env_factory = env_factory
        self.envs: list[TextEnv] = []

    def reset(self, game_ids: Sequence[str]) -> list[Seen]:
        """One new environment per entry of ``game_ids`` (episode ``len(previous) + j``), reset to that game."""
        out = []
        for gid in game_ids:
            env = self.env_factory()
            self.envs.append(env)
            out.append(_seen(env, env.reset(gid)))
        return out

    def step(self, actions: Mapping[int, str]) -> dict[int, Seen]:
        """Step episode ``i`` with ``actions[i]``, in ascending episode order."""
        return {i: _seen(self.envs[i], self.envs[i].step(actions[i])) for i in sorted(actions)}

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def _serve(conn, env_factory: Callable[[], TextEnv]) -> None:
    """A worker's loop: ``("reset", [(i, game_id)])``, ``("step", [(i, action)])``, ``("close", None)``; each answered
    ``("ok", [(i, Seen)])`` or ``("error", exception, traceback text)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: dict[int, TextEnv] = {}
    try:
        while True:
            try:
                op, items = conn.recv()
            except EOFError:  # the main process is gone
                return
            if op == "close":
                conn.send(("ok", []))
                return
            try:
                out = []
                for i, arg in items:
                    if op == "reset":
                        envs[i] = env_factory()
                        out.append((i, _seen(envs[i], envs[i].reset(arg))))
                    else:
                        out.append((i, _seen(envs[i], envs[i].step(arg))))
                conn.send(("ok", out))
            except Exception as e:  # noqa: BLE001 - every error goes back to the main process
                tb = traceback.format_exc()
                try:
                    conn.send(("error", e, tb))
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}"), tb))
    finally:
        for env in envs.values():
            env.close()
        conn.close()


class WorkerEnvs:
    """The environments in ``workers`` processes (episode ``i`` in worker ``i % workers``)."""

    def __init__(self, env_factory: Callable[[], TextEnv], workers: int, *, start_method: str | None = None) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        methods = mp.get_all_start_methods()
        method = start_method or ("fork" if "fork" in methods else "spawn")
        if method not in methods:
            raise ValueError(f"unknown start method {method!r}; valid here: {', '.join(methods)}")
        ctx = mp.get_context(method)
        self.workers, self.n, self._conns, self._procs = workers, 0, [], []
        try:
            for w in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, env_factory), name=f"env-worker-{w}", daemon=True)
                try:
                    proc.start()
                except (AttributeError, TypeError, ValueError, pickle.PicklingError) as e:  # spawn pickles the factory
                    raise ValueError(f"env_factory cannot be sent to a {method!r} worker ({e}); use a module-level "
                                     "function or functools.partial") from None
                finally:
                    child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    def _call(self, op: str, items: list[tuple[int, object]]) -> dict[int, Seen]:
        per: list[list] = [[] for _ in range(self.workers)]
        for i, arg in items:
            per[i % self.workers].append((i, arg))
        busy = [w for w in range(self.workers) if per[w]]
        for w in busy:  # every worker starts before any answer is read: they run in parallel
            self._conns[w].send((op, per[w]))
        out, error = {}, None
        for w in busy:  # read every answer, so no worker is left with an unread reply
            try:
                reply = self._conns[w].recv()
            except EOFError:
                self._procs[w].join(JOIN_TIMEOUT_S)  # reap it, for its exit code
                code = self._procs[w].exitcode
                reply = ("error", RuntimeError(f"env worker {w} died (exit code {code}) during {op}"), "")
            if reply[0] == "ok":
                out.update(reply[1])
            elif error is None:
                error = (w, reply[1], reply[2])
        if error is not None:
            w, exc, tb = error
            if tb:
                exc.add_note(f"raised in env worker {w}:\n{tb}")
            raise exc
        return out

    def reset(self, game_ids: Sequence[str]) -> list[Seen]:
        start = self.n
        self.n += len(game_ids)
        seen = self._call("reset", [(start + j, gid) for j, gid in enumerate(game_ids)])
        return [seen[start + j] for j in range(len(game_ids))]

    def step(self, actions: Mapping[int, str]) -> dict[int, Seen]:
        seen = self._call("step", sorted(actions.items()))
        return {i: seen[i] for i in sorted(actions)}

    def close(self) -> None:
        """Ask every worker to close its environments and exit; terminate one that does not within
        :data:`JOIN_TIMEOUT_S`."""
        for conn, proc in zip(self._conns, self._procs):
            try:
                if proc.is_alive():
                    conn.send(("close", None))
                    if conn.poll(JOIN_TIMEOUT_S):
                        conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for conn, proc in zip(self._conns, self._procs):
            proc.join(JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(JOIN_TIMEOUT_S)
            conn.close()
        self._conns, self._procs = [], []


def make_envs(env_factory: Callable[[], TextEnv], workers: int = 0, *, start_method: str | None = None
              ) -> InProcessEnvs | WorkerEnvs:
    """:class:`InProcessEnvs` for ``workers == 0``, else :class:`WorkerEnvs` with that many processes."""
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0: in-process), got {workers!r}")
    return InProcessEnvs(env_factory) if workers == 0 else WorkerEnvs(env_factory, workers, start_method=start_method)
