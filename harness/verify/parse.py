"""Parsing (latex2sympy2_extended, the math-verify backend), size guards and sympy-level equivalence."""

from __future__ import annotations

import math
from functools import lru_cache

from . import numeric
from .base import MAX_RESULT_DIGITS, MAX_SUM_TERMS, MAX_SYMBOLIC_EXPONENT

_mv = None  # lazily imported math-verify / sympy namespace


def _lib():
    """Import math-verify and friends once (heavy; done lazily)."""
    global _mv
    if _mv is not None:
        return _mv
    import types

    import sympy
    from latex2sympy2_extended import latex2sympy2 as l2s
    from latex2sympy2_extended.logic import And as L2SAnd
    from latex2sympy2_extended.sets import FiniteSet as L2SFiniteSet

    import math_verify.grader as mv_grader
    import math_verify.parser as mv_parser
    from sympy.functions.elementary.hyperbolic import HyperbolicFunction, InverseHyperbolicFunction
    from sympy.functions.elementary.trigonometric import InverseTrigonometricFunction, TrigonometricFunction

    # We pass timeout_seconds=None / never call parse(); silence the one-off
    # "timeout disabled" warning -- our timeouts live in the process pool.
    mv_grader.TIMEOUT_WARNING_SHOWN = True
    mv_parser.TIMEOUT_WARNING_SHOWN = True

    ns = types.SimpleNamespace(
        sympy=sympy,
        l2s=l2s,
        L2SAnd=L2SAnd,
        L2SFiniteSet=L2SFiniteSet,
        mv_grader=mv_grader,
        mv_verify=mv_grader.verify,
        get_last_eq=mv_parser.get_last_eq,
        norm_cfg=l2s.NormalizationConfig(
            basic_latex=True,
            units=True,
            malformed_operators=True,
            nits=True,
            boxed="none",  # extraction already happened
            equations=False,
        ),
        i_sym=sympy.Symbol("i", real=True),
        # node types numeric.definitely_different may evaluate at a sample point
        plain_types=(
            sympy.Symbol, sympy.Number, sympy.NumberSymbol, sympy.core.numbers.ImaginaryUnit, sympy.Add, sympy.Mul,
            sympy.Pow, sympy.exp, sympy.log, sympy.Abs, TrigonometricFunction, InverseTrigonometricFunction,
            HyperbolicFunction, InverseHyperbolicFunction,
        ),
    )
    numeric.install(ns)
    _mv = ns
    return ns


def _latex2sympy(latex: str):
    lib = _lib()
    return lib.l2s.latex2sympy(latex, is_real=True, convert_degrees=False, normalization_config=None)


def _subs_imaginary(e):
    """Replace the symbol ``i`` with sympy's I, preserving latex2sympy's ordered containers."""
    lib = _lib()
    sympy = lib.sympy
    if isinstance(e, sympy.MatrixBase):
        return e.applyfunc(_subs_imaginary)
    if not isinstance(e, sympy.Basic):
        return e
    try:
        if lib.i_sym not in e.free_symbols:
            return e
    except Exception:
        return e
    if e == lib.i_sym:
        return sympy.I
    if isinstance(e, lib.L2SFiniteSet):
        return lib.L2SFiniteSet(*[_subs_imaginary(a) for a in getattr(e, "_unsorted_args", e.args)])
    if isinstance(e, lib.L2SAnd):
        return lib.L2SAnd(*[_subs_imaginary(a) for a in getattr(e, "_unsorted_args", e.args)])
    return e.func(*[_subs_imaginary(a) for a in e.args])


def _log10_bound(e, lib) -> float | None:
    """Upper bound on log10|e| for a closed numeric expression, None if unknown."""
    sympy = lib.sympy
    if isinstance(e, sympy.Integer):
        v = abs(int(e))
        return math.log10(v) if v > 1 else 0.0
    if isinstance(e, sympy.Rational):
        return max(_log10_bound(sympy.Integer(e.p), lib), _log10_bound(sympy.Integer(e.q), lib))
    if isinstance(e, sympy.Float):
        try:
            v = abs(float(e))
        except (OverflowError, ValueError):
            return math.inf
        return math.log10(v) if v > 1 else 0.0
    if e.is_Number or e in (sympy.pi, sympy.E, sympy.I):
        return 1.0
    if isinstance(e, sympy.Pow):
        b = _log10_bound(e.base, lib)
        x = _log10_bound(e.exp, lib)
        if b is None or x is None:
            return None
        if b == 0.0:
            return 0.0
        exp_val = 10.0**x if x < 300 else math.inf
        return b * exp_val if exp_val != math.inf else math.inf
    if isinstance(e, (sympy.Add, sympy.Mul)):
        parts = [_log10_bound(a, lib) for a in e.args]
        if any(p is None for p in parts):
            return None
        total = sum(parts)
        return total + (math.log10(len(parts)) if isinstance(e, sympy.Add) else 0.0)
    if isinstance(e, sympy.factorial):
        x = _log10_bound(e.args[0], lib)
        if x is None:
            return None
        n = 10.0**x if x < 300 else math.inf
        return n * math.log10(max(n, 2.0))
    return None


def _too_big(expr) -> bool:
    """True if evaluating ``expr`` could produce astronomically large numbers."""
    lib = _lib()
    sympy = lib.sympy
    if isinstance(expr, sympy.MatrixBase):
        return any(_too_big(x) for x in expr)
    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Pow, sympy.factorial, sympy.Integer)):
            if isinstance(node, sympy.Integer):
                continue
            if isinstance(node, sympy.Pow) and node.base.free_symbols:
                x = _log10_bound(node.exp, lib)
                if x is not None and x > math.log10(MAX_SYMBOLIC_EXPONENT):
                    return True
                continue
            bound = _log10_bound(node, lib)
            if bound is not None and bound > MAX_RESULT_DIGITS:
                return True
        elif isinstance(node, (sympy.Sum, sympy.Product)):
            for lim in node.limits:
                if len(lim) == 3 and lim[1].is_number and lim[2].is_number:
                    try:
                        span = abs(float(lim[2] - lim[1]))
                    except (TypeError, ValueError, OverflowError):
                        return True
                    if not span < MAX_SUM_TERMS:
                        return True
        elif isinstance(node, (sympy.binomial, sympy.subfactorial, sympy.RisingFactorial,
                               sympy.FallingFactorial, sympy.factorial2)):
            for a in node.args:
                x = _log10_bound(a, lib)
                if x is not None and x > 4:
                    return True
    return False


@lru_cache(maxsize=4096)
def _parse(s: str):
    """sympy object for a normalised answer string, or None if unparsable/refused."""
    lib = _lib()
    body = s.replace("\n", " ").replace("\\$", " ").replace("$", " ")
    normalized = lib.l2s.normalize_latex(body, lib.norm_cfg)
    if not normalized:
        return None
    try:
        expr = _latex2sympy(normalized)
    except Exception:
        last = lib.get_last_eq(normalized)
        if last == normalized:
            return None
        try:
            expr = _latex2sympy(last)
        except Exception:
            return None
    if expr is None or isinstance(expr, str):
        return None
    try:
        if _too_big(expr):
            return None
        return _subs_imaginary(expr)
    except Exception:
        return None


def _is_number(e) -> bool:
    """A closed numeric expression (no free symbols; not a set, tuple, relation or matrix)."""
    if e is None:
        return False
    sympy = _lib().sympy
    return isinstance(e, sympy.Expr) and bool(e.is_number)


def _is_finite_set(e) -> bool:
    return e is not None and isinstance(e, _lib().sympy.FiniteSet)


def _finite_elems(x, lib):
    sympy = lib.sympy
    if isinstance(x, sympy.FiniteSet):
        return list(getattr(x, "_unsorted_args", x.args))
    return None


def _pct_value(x, lib):
    """n for latex2sympy's percent form n*UnevaluatedExpr(1/100), else None."""
    sympy = lib.sympy
    if (
        isinstance(x, sympy.Mul)
        and len(x.args) == 2
        and x.args[1] == sympy.UnevaluatedExpr(sympy.Rational(1, 100))
        and x.args[0].is_Number
    ):
        return x.args[0]
    return None


def _mv_eq(g, p, lib) -> bool:
    try:
        return bool(lib.mv_verify(g, p, timeout_seconds=None, raise_on_error=False))
    except Exception:
        return False


def _sympy_equiv(g, p, approx: bool = False) -> bool:
    """math-verify's equivalence plus this package's additions; ``approx``: the gold is one number in
    scientific notation (compared with a relative tolerance, see :mod:`.numeric`)."""
    lib = _lib()
    if numeric.definitely_different(g, p, lib):
        return False
    with numeric.rule(approx_gold=approx):
        return _sympy_equiv_rules(g, p, lib)


def _sympy_equiv_rules(g, p, lib) -> bool:
    if _mv_eq(g, p, lib):
        return True
    # "12.5\%" vs "12.5": math-verify accepts the bare percentage number only for
    # integers (50\% = 50); extend that to decimals (the 0.125 form already works).
    gp, pp = _pct_value(g, lib), _pct_value(p, lib)
    if gp is not None and pp is None and getattr(p, "is_Number", False):
        if _mv_eq(gp, p, lib):
            return True
    if pp is not None and gp is None and getattr(g, "is_Number", False):
        if _mv_eq(g, pp, lib):
            return True
    # Order-free matching of finite sets (math-verify pairs elements by sort order).
    ge, pe = _finite_elems(g, lib), _finite_elems(p, lib)
    if ge is None or pe is None or len(ge) != len(pe) or len(ge) > 12:
        return False
    unused = list(pe)
    for a in ge:
        for j, b in enumerate(unused):
            if _mv_eq(a, b, lib):
                del unused[j]
                break
        else:
            return False
    return True
