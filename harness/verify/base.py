"""Constants, exception and result type shared by every module of :mod:`harness.verify`."""

from __future__ import annotations

from dataclasses import dataclass

VERIFIER_VERSION = "2"  # 2: issue-18 rules (e-notation, units, relative tolerance, formatting noise, \pm)

MODES = ("boxed", "plain")
STATUSES = ("ok", "parse_fail", "timeout", "gold_error")

# Static guards, applied before anything reaches sympy. MATH500 answers are at
# most 53 characters with bracket depth 2; these limits are far above that.
MAX_ANSWER_CHARS = 1000
MAX_RAW_ANSWER_CHARS = 4 * MAX_ANSWER_CHARS  # refused before any normalisation work
MAX_BRACKET_DEPTH = 40
MAX_RESULT_DIGITS = 100_000  # refuse numbers whose evaluation would exceed this
MAX_SYMBOLIC_EXPONENT = 1_000  # refuse x^n (symbolic base) with |n| above this
MAX_SUM_TERMS = 10_000  # refuse sums/products over more terms than this


class GoldParseError(ValueError):
    """The gold answer could not be parsed; never reward against it."""


@dataclass(frozen=True)
class Verdict:
    id: str | None
    correct: bool
    status: str  # 'ok' | 'parse_fail' | 'timeout' | 'gold_error'
    extracted: str | None


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def verifier_config(mode: str = "boxed", timeout: float = 5.0) -> dict:
    """Everything that determines verdicts; hashed into the protocol."""
    return {
        "version": VERIFIER_VERSION,
        "math_verify_version": _dist_version("math-verify"),
        "latex2sympy2_extended_version": _dist_version("latex2sympy2_extended"),
        "sympy_version": _dist_version("sympy"),
        "mode": mode,
        "timeout": float(timeout),
    }
