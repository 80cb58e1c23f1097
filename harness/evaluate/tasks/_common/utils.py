"""lm-eval hooks of every harness task (``!function utils.<name>`` in ``_common/*.yaml``).

lm-eval imports this file by path, so everything here is re-exported from :mod:`harness.evaluate.tasks.common`, where the
shared state (verifier pool, verdict cache) lives. Works with the harness installed (``pip install -e .``) or
from a checkout (the repository root is put on ``sys.path`` when ``harness`` is not importable).
"""
import sys
from pathlib import Path

try:
    import harness.evaluate.tasks.common  # noqa: F401
except ImportError:  # pragma: no cover - a checkout used without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from harness.evaluate.tasks.common import (  # noqa: E402,F401
    doc_to_target,
    doc_to_text,
    load,
    process_results,
    process_results_greedy,
)
