"""Agent tools behind one interface (:mod:`.base`): sandboxed Python (:mod:`.python_exec` on :mod:`.sandbox`), an
attachment reader (:mod:`.files`) and web search through a pluggable backend (:mod:`.search`). Every tool takes one
string and returns a :class:`ToolResult`; bad tool input (a hang, a flood, an unknown file type) is an error text
the agent sees, never an exception, and :class:`Toolbox` counts it.

A GAIA episode's tools, for a record ``rec``::

    box = Toolbox([PythonTool(files=[rec.file_path] if rec.file_path else []),
                   FileReader([rec.file_path] if rec.file_path else []),
                   WebSearch(LocalCorpusSearch("tests/fixtures/gaia/corpus"))])
"""
from .base import ERROR_KINDS, Tool, ToolResult, Toolbox, error
from .files import FileReader
from .guard import Guarded
from .python_exec import PythonTool
from .sandbox import Limits, RunResult, Sandbox, SandboxError, default_sandbox
from .search import LocalCorpusSearch, SearchBackend, SearchHit, WebSearch

__all__ = ["ERROR_KINDS", "FileReader", "Guarded", "Limits", "LocalCorpusSearch", "PythonTool", "RunResult",
           "Sandbox", "SandboxError", "SearchBackend", "SearchHit", "Tool", "ToolResult", "Toolbox", "WebSearch",
           "default_sandbox", "error"]
