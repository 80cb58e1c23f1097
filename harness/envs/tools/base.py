"""The one tool interface: a tool takes one string and returns a :class:`ToolResult`, never an exception.

Bad tool input -- code that hangs or floods, a file that does not exist or has an unknown type, an empty query --
is the agent's mistake, not the program's: the agent sees an error text, and :class:`Toolbox` counts it by kind so
a rollout can penalise it. Exceptions are kept for bad configuration (a duplicate tool name, an unusable sandbox).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: error kinds a tool reports (``ToolResult.error``)
ERROR_KINDS = ("bad_input", "unknown_tool", "timeout", "output_limit", "memory", "process_limit", "exit_code",
               "not_found", "unsupported_type", "too_large", "unreadable", "backend_error", "tool_crashed",
               "malformed_call", "call_budget")  # the last two: an agent loop's (harness.envs.gaia_agent)


@dataclass(frozen=True)
class ToolResult:
    """``text``: what the agent sees; ``error``: None on success, else one of :data:`ERROR_KINDS`;
    ``info``: details for logs (exit code, bytes, isolation), not shown to the agent."""
    text: str
    error: str | None = None
    info: dict = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def error(kind: str, text: str, **info) -> ToolResult:
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown tool error kind {kind!r}; valid: {', '.join(ERROR_KINDS)}")
    return ToolResult(f"ERROR ({kind}): {text}", kind, info)


@runtime_checkable
class Tool(Protocol):
    """A tool: ``name`` (how the agent calls it), ``description`` (one paragraph for the prompt)."""

    name: str
    description: str

    def __call__(self, argument: str) -> ToolResult:
        ...


class Toolbox:
    """Calls tools by name and counts calls and errors; a tool that raises anyway is caught (``tool_crashed``)."""

    def __init__(self, tools: Iterable[Tool]):
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def call(self, name: str, argument: str) -> ToolResult:
        if name not in self.tools:
            result = error("unknown_tool", f"no tool {name!r}; valid: {', '.join(self.tools)}")
        elif not isinstance(argument, str):
            result = error("bad_input", f"{name} takes one string, got {type(argument).__name__}")
        else:
            try:
                result = self.tools[name](argument)
            except Exception as e:  # a bug in a tool must not end the episode; it is counted and logged
                result = error("tool_crashed", f"{name} failed: {type(e).__name__}: {e}"[:500])
        self.calls[name] += 1
        if result.error:
            self.errors[result.error] += 1
        return result

    def describe(self) -> str:
        """The tool list for a prompt: one ``name: description`` line per tool."""
        return "\n".join(f"{t.name}: {t.description}" for t in self.tools.values())

    def stats(self) -> dict:
        return {"calls": dict(self.calls), "errors": dict(self.errors), "total_calls": sum(self.calls.values()),
                "total_errors": sum(self.errors.values())}
