"""Equivalence of one answer string with one gold (in-process, no time limit)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .base import MAX_RAW_ANSWER_CHARS, GoldParseError
from .extract import _extract
from .normalize import (
    _SCI_RE,
    _base_number,
    _canon_str,
    _expand_pm,
    _gold_is_text,
    _guard_string,
    _mc_letter,
    _normalize,
    _strip_text_cmds,
    _words,
)
from .parse import _is_finite_set, _is_number, _parse, _sympy_equiv
from .units import split_unit, unit_key


@dataclass(frozen=True)
class _Gold:
    norm: str
    canon: str
    letter: str | None
    words: tuple[str, ...] | None
    base: tuple[str, int] | None
    expr: Any
    value_canon: str = ""  # canonical string of the value without its unit
    unit: str | None = None  # the unit stated after a numeric gold
    numeric: bool = False  # the gold's value is a number: units after answers are split off
    is_set: bool = False  # a set of solutions: \pm in answers is expanded
    approx: bool = False  # one number in scientific notation: relative tolerance


@lru_cache(maxsize=4096)
def _prepare_gold(gold: str) -> _Gold:
    if not isinstance(gold, str):
        raise GoldParseError(f"gold must be a string, got {type(gold).__name__}")
    if len(gold) > MAX_RAW_ANSWER_CHARS:
        raise GoldParseError(f"gold refused: longer than {MAX_RAW_ANSWER_CHARS} characters")
    g = _normalize(gold)
    if not g:
        raise GoldParseError("gold is empty")
    reason = _guard_string(g)
    if reason:
        raise GoldParseError(f"gold refused: {reason}")
    letter = _mc_letter(g, gold=True)
    words = _words(g)
    if not _gold_is_text(g, words):
        words = None
    base = _base_number(g)
    value, unit, expr = g, None, None
    if letter is None and base is None:
        split = split_unit(g)
        if split is not None:
            v_expr = _parse(split[0])
            if _is_number(v_expr):
                (value, unit), expr = split, v_expr
        if expr is None:
            expanded = _expand_pm(g)
            expr = (_parse(expanded) if expanded is not None else None) or _parse(g)
    if expr is None and letter is None and words is None and base is None:
        raise GoldParseError(f"cannot parse gold answer {gold[:200]!r}")
    return _Gold(norm=g, canon=_canon_str(g), letter=letter, words=words, base=base, expr=expr,
                 value_canon=_canon_str(value), unit=unit, numeric=_is_number(expr),
                 is_set=_is_finite_set(expr), approx=_SCI_RE.fullmatch(value) is not None)


def _check_number_with_unit(G: _Gold, p: str) -> tuple[bool, str] | None:
    """A numeric gold against an answer with a trailing unit: the numbers decide, unless both sides state a
    unit and the units differ. None if ``p`` has no unit after a number."""
    split = split_unit(p)
    if split is None:
        return None
    value, unit = split
    P = _parse(value)
    if not _is_number(P):
        return None
    if G.unit is not None:
        gk, pk = unit_key(G.unit), unit_key(unit)
        if gk is not None and pk is not None and gk != pk:
            return False, "ok"
    if _canon_str(value) == G.value_canon:
        return True, "ok"
    return _sympy_equiv(G.expr, P, approx=G.approx), "ok"


def _check(gold: str, pred: str | None) -> tuple[bool, str]:
    """(correct, status) with status 'ok' or 'parse_fail'. Raises GoldParseError."""
    G = _prepare_gold(gold)
    if not isinstance(pred, str) or len(pred) > MAX_RAW_ANSWER_CHARS:
        return False, "parse_fail"
    p = _normalize(pred)
    if not p or _guard_string(p):
        return False, "parse_fail"
    canon = _canon_str(p)
    if canon == G.canon:
        return True, "ok"
    if G.letter is not None:
        pl = _mc_letter(p, gold=False)
        if pl is not None:
            return pl == G.letter, "ok"
        # Only a choice letter can answer a multiple-choice gold.
        return False, ("ok" if _parse(p) is not None or _words(p) else "parse_fail")
    pb = _base_number(p)
    if G.base is not None:
        # latex2sympy drops number subscripts (52_8 == 52_9 == 52), so numbers in
        # another base are compared digit by digit; bare digits are accepted.
        if pb is not None:
            return pb == G.base, "ok"
        bare = _strip_text_cmds(p).replace(" ", "").upper()
        if re.fullmatch(r"[0-9A-Z]+", bare):
            return (bare.lstrip("0") or "0") == G.base[0], "ok"
        return False, ("ok" if _parse(p) is not None else "parse_fail")
    if pb is not None and pb[1] != 10:
        return False, "ok"  # a number in another base cannot match a base-10 gold
    if G.words is not None:
        pw = _words(p)
        if pw is not None:
            return pw == G.words, "ok"
        if G.expr is None:
            return False, ("ok" if _parse(p) is not None else "parse_fail")
    if G.numeric:
        if canon == G.value_canon:
            return True, "ok"
        verdict = _check_number_with_unit(G, p)
        if verdict is not None:
            return verdict
    # \pm in an answer to a set of solutions stands for both values; elsewhere only if latex2sympy cannot
    # read it (the expansion is then a set, which cannot equal a single gold)
    P = None
    if G.is_set:
        expanded = _expand_pm(p)
        if expanded is not None:
            P = _parse(expanded)
    if P is None:
        P = _parse(p)
    if P is None and not G.is_set:
        expanded = _expand_pm(p)
        if expanded is not None:
            P = _parse(expanded)
    if P is None:
        return False, "parse_fail"
    return _sympy_equiv(G.expr, P, approx=G.approx), "ok"


def is_equivalent(gold: str, pred: str) -> bool:
    """Is the answer string ``pred`` equivalent to the gold answer string?

    In-process, no timeout (use :class:`Verifier` for untrusted input at scale).
    Raises :class:`GoldParseError` if ``gold`` cannot be parsed.
    """
    return _check(gold, pred)[0]


def _verify_local(gold: Any, response: Any, mode: str) -> tuple[bool, str, str | None]:
    """(correct, status, extracted) computed in this process; never raises."""
    try:
        extracted = _extract(response, mode) if isinstance(response, str) else None
    except ValueError:
        raise
    except Exception:  # pragma: no cover - defensive
        extracted = None
    try:
        _prepare_gold(gold)
    except GoldParseError:
        return False, "gold_error", extracted
    except Exception:
        return False, "gold_error", extracted
    if extracted is None:
        return False, "parse_fail", None
    try:
        correct, status = _check(gold, extracted)
    except GoldParseError:
        return False, "gold_error", extracted
    except MemoryError:
        return False, "timeout", extracted
    except Exception:
        return False, "parse_fail", extracted
    return bool(correct), status, extracted
