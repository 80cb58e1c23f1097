"""The house rules, enforced on the import graph of ``harness/`` (every ``import`` statement, module level or
inside a function, read with ``ast``; dynamic discovery through importlib is not an edge).

- Direction: each stage package may import only the packages listed in :data:`ALLOWED` (face -> plan/train ->
  methods; claims and report read result files and plain card data; config and results are the shared core).
- Third-party: claims, report, config and results never import torch, TRL, transformers or lm-eval; methods never
  import the trainer or TRL (they see context objects).
- No cycles between modules.

The last tests plant violations in a synthetic tree and check that each is caught.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: stage package -> harness packages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "results": set(),
    "config": {"results"},
    "verify": {"results"},
    "data": {"config", "results", "verify", "envs"},  # envs: the household task's games (issue 14)
    "methods": {"config", "results", "verify"},
    "track": {"config", "results"},
    "plan": {"config", "results", "methods", "data"},  # data: the smoke task names a job is checked against
    "envs": {"config", "results", "verify"},  # text environments and agent tools (issue 14)
    "evaluate": {"config", "results", "data", "verify", "envs"},
    "train": {"config", "results", "data", "evaluate", "methods", "track", "envs"},
    "analyze": {"config", "results", "data", "evaluate"},  # checkpoint/closed-form analyses (issue 15)
    "claims": {"config", "results"},
    "report": {"config", "results", "claims"},
    "face": {"config", "results", "data", "verify", "envs", "methods", "track", "plan", "evaluate", "train", "analyze",
             "claims", "report"},
}
HEAVY = {"torch", "trl", "transformers", "lm_eval", "accelerate", "datasets"}
#: stage package -> third-party top-level modules it may not import
FORBIDDEN_EXTERNAL: dict[str, set[str]] = {
    "claims": HEAVY, "report": HEAVY, "config": HEAVY, "results": HEAVY, "verify": HEAVY, "envs": HEAVY,
    "plan": HEAVY - {"trl"},
    "methods": {"trl"},
}


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> harness modules it imports, module -> third-party top-level names it imports)."""
    files = {module_name(p, root): p for p in sorted((root / "harness").rglob("*.py"))}
    internal: dict[str, set[str]] = {m: set() for m in files}
    external: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # "from pkg import sub" names the submodule when one exists
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in files else prefix for a in node.names]
            else:
                continue
            for t in targets:
                if t == "harness" or t.startswith("harness."):
                    while t not in files and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t != mod and t in files:
                        internal[mod].add(t)
                elif t and t.split(".")[0] != "__future__":
                    external[mod].add(t.split(".")[0])
    return internal, external


def stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(root: Path) -> list[str]:
    internal, external = import_graph(root)
    out = []
    for mod, deps in sorted(internal.items()):
        s = stage(mod)
        for d in sorted(deps):
            ds = stage(d)
            if s is None or ds is None or ds == s:
                continue
            if s not in ALLOWED:
                out.append(f"{mod}: stage {s!r} is not in the house plan (tests/test_architecture.py ALLOWED)")
            elif ds not in ALLOWED[s]:
                out.append(f"{mod} imports {d}: {s} may import only {sorted(ALLOWED[s])}")
        for e in sorted(external[mod] & FORBIDDEN_EXTERNAL.get(s, set())):
            out.append(f"{mod} imports {e}: {s} must not import {sorted(FORBIDDEN_EXTERNAL[s])}")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(internal)]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_every_harness_package_is_a_known_stage():
    stages = {stage(m) for m in import_graph(ROOT)[0]} - {None}
    assert stages <= set(ALLOWED), f"new stage package(s) {sorted(stages - set(ALLOWED))}: add them to ALLOWED"


def test_house_rules_hold():
    assert violations(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_planted_violations_are_caught(tmp_path):
    root = _write(tmp_path, {
        "harness/__init__.py": "",
        "harness/claims/__init__.py": "",
        "harness/claims/bad.py": "def f():\n    import torch\n",  # lazy import counts too
        "harness/methods/__init__.py": "",
        "harness/methods/bad.py": "from harness.train.trainer import HarnessGRPOTrainer\n",
        "harness/train/__init__.py": "",
        "harness/train/trainer.py": "from harness.methods import registry\n",
        "harness/methods/registry.py": "",
        "harness/report/__init__.py": "",
        "harness/report/a.py": "from harness.report import b\n",
        "harness/report/b.py": "from . import a\n",
        "harness/config/__init__.py": "from harness.methods.registry import get_method\n",
    })
    found = "\n".join(violations(root))
    assert "harness.claims.bad imports torch" in found
    assert "harness.methods.bad imports harness.train.trainer" in found
    assert "harness.config imports harness.methods.registry" in found
    assert "import cycle: harness.report.a -> harness.report.b -> harness.report.a" in found
    assert "harness.train.trainer" not in found.replace("harness.methods.bad imports harness.train.trainer", "")


def test_a_clean_synthetic_tree_has_no_violations(tmp_path):
    root = _write(tmp_path, {
        "harness/__init__.py": "",
        "harness/face/__init__.py": "",
        "harness/face/cli.py": "from harness.train import job\nfrom harness.report import html\n",
        "harness/train/__init__.py": "",
        "harness/train/job.py": "import torch\nfrom harness.methods.registry import get_method\n",
        "harness/methods/__init__.py": "",
        "harness/methods/registry.py": "import torch\n",
        "harness/report/__init__.py": "",
        "harness/report/html.py": "import jinja2\nfrom harness.claims import stats\n",
        "harness/claims/__init__.py": "",
        "harness/claims/stats.py": "import numpy\n",
    })
    assert violations(root) == []


@pytest.mark.parametrize("stage_name", sorted(FORBIDDEN_EXTERNAL))
def test_forbidden_imports_are_stated_for_known_stages(stage_name):
    assert stage_name in ALLOWED
