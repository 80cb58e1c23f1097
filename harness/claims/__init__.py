"""Claims: checks registered by name (:mod:`.registry`), generic checks, per-paper checks (``papers/``), the entropy
law, seed x problem statistics and the verdict file. Reads result files and cards as plain data: no torch, no TRL,
no method registry (an import-graph test enforces it)."""
from harness.claims.registry import CHECKS, VERDICTS, all_checks, check, evaluate_claims  # noqa: F401
