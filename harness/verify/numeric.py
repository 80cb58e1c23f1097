"""Numeric comparison policy layered on math-verify: relative tolerance for approximate golds, and a quick
"definitely different" test that spares sympy's simplify for expressions that differ at a sample point.

math-verify compares a float by rounding both sides to 6 decimal places (and a product such as
``4.6 \\times 10^{-24}`` by ``evalf(chop=True)`` of the difference): absolute tolerances under which tiny
numbers are all equal.
:func:`install` wraps ``math_verify.grader.sympy_numeric_eq`` -- the one function every math-verify comparison
of two numbers goes through, inside tuples, sets, intervals, matrices and solved equations too -- so that,
while :func:`rule` is active in this thread (only during this package's own comparisons; other callers of
math-verify in the process are unaffected):

* a gold written as one number in scientific or e-notation (``4.5 \\times 10^{33}``, ``4.5e33``: a measured,
  rounded quantity) matches a number within a relative tolerance of :data:`RELATIVE_TOLERANCE`;
* any other gold (integer, fraction, radical, pi, and plain decimals such as MATH's ``.35625``, which are exact
  values) compared with a float on either side matches if the two are equal up to float rounding noise
  (relative 1e-12), or if math-verify's 6-decimal rounding accepts them *and* they are within the relative
  tolerance (so ``10^{-24}`` no longer equals ``0.0`` and ``0.0000046`` no longer equals ``0.0000047``);
* exact against exact, percentages, and anything with a free symbol keep math-verify's verdict.
"""

from __future__ import annotations

import contextlib
import threading

#: Relative tolerance for a scientific-notation gold: |pred - gold| <= 1e-4 * max(|pred|,
#: |gold|). The value of Qwen2.5-Math's evaluation grader (``numeric_equal``: ``math.isclose(reference,
#: prediction, rel_tol=1e-4)``), the evaluation code widely used to report Minerva-Math in RLVR papers; lm-eval's
#: ``minerva_math`` (Lewkowycz et al. 2022, appendix D normalisation) has no tolerance at all (``sympy.simplify
#: (a - b) == 0``).
RELATIVE_TOLERANCE = 1e-4
#: A float answer this close to an exact gold is that number written as a float (0.7 \times 10^{38} = 7 \times 10^{37}).
_FLOAT_NOISE = 1e-12
#: Sample-point agreement below this relative difference is "maybe equal" (left to math-verify).
_SAMPLE_TOLERANCE = 1e-6
_SAMPLE_DIGITS = 30

_state = threading.local()


@contextlib.contextmanager
def rule(approx_gold: bool = False):
    """Activate the numeric policy for math-verify calls made in this thread."""
    saved = (getattr(_state, "active", False), getattr(_state, "approx", False))
    _state.active, _state.approx = True, bool(approx_gold)
    try:
        yield
    finally:
        _state.active, _state.approx = saved


def install(lib) -> None:
    """Wrap ``math_verify.grader.sympy_numeric_eq`` once per process (inactive outside :func:`rule`)."""
    grader = lib.mv_grader
    original = grader.sympy_numeric_eq
    if getattr(original, "_harness_verify_rule", False):
        return

    def sympy_numeric_eq(a, b, float_rounding, numeric_precision):
        if getattr(_state, "active", False):
            verdict = _numeric_verdict(a, b, lib, lambda: original(a, b, float_rounding, numeric_precision))
            if verdict is not None:
                return verdict
        return original(a, b, float_rounding, numeric_precision)

    sympy_numeric_eq._harness_verify_rule = True  # type: ignore[attr-defined]
    grader.sympy_numeric_eq = sympy_numeric_eq


def _is_pct(x, sympy) -> bool:
    return isinstance(x, sympy.Mul) and any(isinstance(a, sympy.UnevaluatedExpr) for a in x.args)


def _value(x, sympy, subs=None):
    """x (at the point ``subs``) as a finite sympy number (possibly complex), or None."""
    try:
        v = x.evalf(_SAMPLE_DIGITS, subs=subs)
    except Exception:
        return None
    if not getattr(v, "is_number", False) or v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return v


def rel_close(a, b, sympy, rtol: float = RELATIVE_TOLERANCE, subs=None) -> bool | None:
    """|a - b| <= rtol * max(|a|, |b|) for two numeric expressions (closed, or closed by ``subs``); None if
    either cannot be evaluated to a finite number."""
    va, vb = _value(a, sympy, subs), _value(b, sympy, subs)
    if va is None or vb is None:
        return None
    try:
        diff = sympy.Abs(va - vb).evalf(_SAMPLE_DIGITS)
        scale = sympy.Max(sympy.Abs(va), sympy.Abs(vb)).evalf(_SAMPLE_DIGITS)
        if not (diff.is_Number and scale.is_Number) or diff.has(sympy.nan) or scale.has(sympy.nan):
            return None
        return bool(diff <= rtol * scale)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _numeric_verdict(a, b, lib, original) -> bool | None:
    sympy = lib.sympy
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    if _is_pct(a, sympy) or _is_pct(b, sympy) or not (a.is_number and b.is_number):
        return None
    approx = getattr(_state, "approx", False)
    if not approx and not (a.has(sympy.Float) or b.has(sympy.Float)):
        return None  # exact against exact: math-verify's symbolic comparison
    close = rel_close(a, b, sympy)
    if close is None:
        return None
    if approx or not close:
        return close
    # a float on either side of any other gold: equal up to float rounding noise, or math-verify's 6 decimals
    # and relatively close
    return bool(rel_close(a, b, sympy, _FLOAT_NOISE)) or bool(original())


def _plain(e, lib) -> bool:
    """Only arithmetic and elementary functions of symbols and numbers (cheap and safe to evaluate)."""
    sympy = lib.sympy
    allowed = lib.plain_types
    return all(isinstance(n, allowed) for n in sympy.preorder_traversal(e))


def definitely_different(g, p, lib) -> bool:
    """True if the expressions ``g`` and ``p`` (with free symbols) take different values at a sample point.

    A difference at one point where both are defined means ``g - p`` is not identically zero, so math-verify's
    ``simplify(g - p) == 0`` cannot succeed either; without this test sympy may spend minutes expanding, e.g.
    ``(a+b+c+d+e+f)^{80}`` against ``(a+b+c+d+e+f)^{81}``. Agreement (or any doubt) leaves the verdict to
    math-verify.
    """
    sympy = lib.sympy
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return False
    if isinstance(g, sympy.Symbol) or isinstance(p, sympy.Symbol):
        return False  # math-verify's symbol/text comparison
    syms = g.free_symbols | p.free_symbols
    if not syms or len(syms) > 12 or g.has(sympy.Float) or p.has(sympy.Float):
        return False  # closed numbers, or float coefficients: math-verify and the numeric rule decide
    try:
        if not (_plain(g, lib) and _plain(p, lib)):
            return False
        names = sorted(syms, key=lambda s: s.name)
        for k in range(2):  # two fixed points with coordinates in (0.99, 1.99), distinct per symbol
            point = {s: sympy.Rational(1000 + (617 * (i + 3) * (k + 5)) % 1000, 1009) for i, s in enumerate(names)}
            close = rel_close(g, p, sympy, _SAMPLE_TOLERANCE, subs=point)
            if close is None:
                return False
            if not close:
                return True
    except Exception:
        return False
    return False
