"""Limits an agent loop puts around ANY tool, whatever the tool itself enforces: a wall-clock timeout and an
output cap, so that a tool that hangs (a user's search backend waiting on a dead server) or floods (a huge file, a
runaway backend) costs one failed call, never the episode or the run.

The sandboxed ``python`` tool already stops its program at its own limits (:mod:`.sandbox`); the guard is the
backstop for everything else, and for a bug in a tool. A call runs in a daemon thread: at the timeout the loop goes
on with a ``timeout`` error, and the abandoned thread cannot keep the process alive at exit (Python cannot kill a
thread; a tool that must release resources on timeout has to enforce its own deadline, as the sandbox does).
"""
from __future__ import annotations

import threading

from .base import Tool, ToolResult, error


class Guarded:
    """``tool`` with a ``timeout_s`` per call and at most ``max_chars`` characters of result text: longer text is
    cut (the agent is told how much was cut) and counted as an ``output_limit`` failure when it exceeds
    ``flood_chars`` (default: 50 x ``max_chars``). Name and description are the tool's own."""

    def __init__(self, tool: Tool, *, timeout_s: float = 30.0, max_chars: int = 8000, flood_chars: int | None = None):
        if not timeout_s > 0 or not max_chars > 0:
            raise ValueError(f"timeout_s and max_chars must be positive, got {timeout_s}, {max_chars}")
        self.tool, self.timeout_s, self.max_chars = tool, float(timeout_s), int(max_chars)
        self.flood_chars = int(flood_chars) if flood_chars is not None else 50 * self.max_chars
        self.name, self.description = tool.name, tool.description

    def __call__(self, argument: str) -> ToolResult:
        box: dict = {}

        def run() -> None:
            try:
                box["result"] = self.tool(argument)
            except BaseException as e:  # a bug in a tool: reported as tool_crashed below
                box["error"] = e

        worker = threading.Thread(target=run, name=f"tool-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            return error("timeout", f"{self.name} did not answer within {self.timeout_s:g} s; the call was abandoned",
                         timeout_s=self.timeout_s)
        if "error" in box:
            e = box["error"]
            return error("tool_crashed", f"{self.name} failed: {type(e).__name__}: {e}"[:500])
        result = box.get("result")
        if not isinstance(result, ToolResult):
            return error("tool_crashed", f"{self.name} returned {type(result).__name__}, not a ToolResult")
        text = result.text if isinstance(result.text, str) else str(result.text)
        if len(text) <= self.max_chars:
            return result
        cut = text[: self.max_chars] + f"\n[output truncated: first {self.max_chars} of {len(text)} characters shown]"
        info = {**result.info, "chars": len(text)}
        if len(text) > self.flood_chars:
            return ToolResult(f"ERROR (output_limit): {self.name} returned {len(text)} characters, more than "
                              f"{self.flood_chars}.\n{cut}", "output_limit", info)
        return ToolResult(cut, result.error, info)
