"""Fail-closed math answer verifier (reward function for RLVR on maths data).

Built on math-verify (comparison: ``math_verify.verify``) and its parsing backend
latex2sympy2_extended + sympy. This module only adds policy around them:

* **What is credited** -- only the answer a response commits to: the last
  ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled) or an explicit
  final-answer statement ("The final answer is ...", "Final answer: ..."),
  whichever comes last. No box and no statement -> ``parse_fail``. An
  unterminated (truncated) last box -> ``parse_fail``. ``mode="plain"`` treats
  the whole response as the answer (gold strings, synthetic smoke tasks).
* **Fail-closed** -- an unparsable gold raises :class:`GoldParseError` (status
  ``gold_error`` in batch results); an unparsable prediction is incorrect
  (``parse_fail``); anything over the static size guards is refused before sympy
  sees it; a worker that exceeds the time limit or dies -> ``timeout``.
* **Safe under load** -- :class:`Verifier` runs cases in a pool of worker
  processes (fresh interpreters started with ``subprocess``, so the caller's
  ``__main__`` -- e.g. a training script importing torch -- is never re-imported)
  with an address-space cap (RLIMIT_AS) set in each worker. Timeouts are enforced
  by the parent waiting on sockets and killing the worker -- no SIGALRM anywhere
  (math-verify's own signal timeouts are disabled with ``timeout_seconds=None``),
  so it can be called from threads and from a trainer's reward function.

Normalisation added on top of math-verify (each one is covered by the golden
suite ``tests/data/verify_golden.jsonl``):

* ``i`` is the imaginary unit (math-verify keeps it as a plain symbol whose
  real-ness depends on surrounding whitespace, so ``2i`` != ``2 i`` there);
  every other symbol is parsed with the same assumptions on both sides.
* multiple-choice letters (``C``, ``(C)``, ``\\text{(C)}``, ``\\textbf{(C) }12``)
  and plain-word answers (``\\text{Evelyn}``) are compared as strings;
* thin-space thousands separators (``1\\,000``, ``1\\ 000``, ``1 000``);
* ``\\varnothing``/``\\{\\}`` -> ``\\emptyset``; unicode ``°``, ``π``, ``∞``, ``−``;
* finite sets with symbolic elements are matched element-wise regardless of
  order (math-verify relies on sympy's sort order there).

Documented math-verify asymmetries are kept on purpose (they prevent reward
hacking): an interval gold is not matched by an inequality prediction, and an
equation-chain gold is not matched by its final number.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

__all__ = [
    "VERIFIER_VERSION",
    "GoldParseError",
    "Verdict",
    "Verifier",
    "cli_main",
    "extract_answer",
    "is_equivalent",
    "verifier_config",
    "verify",
]

VERIFIER_VERSION = "1"

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

logger = logging.getLogger(__name__)


class GoldParseError(ValueError):
    """The gold answer could not be parsed; never reward against it."""


@dataclass(frozen=True)
class Verdict:
    id: str | None
    correct: bool
    status: str  # 'ok' | 'parse_fail' | 'timeout' | 'gold_error'
    extracted: str | None


# ---------------------------------------------------------------------------
# Answer extraction (pure string work, linear time)
# ---------------------------------------------------------------------------

_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_FINAL_RE = re.compile(
    r"final\s+answer\s*(?:\*\*|__)?\s*(?:is\b\s*:?|:)\s*(?:\*\*|__)?[ \t]*", re.IGNORECASE
)
_HOPE_RE = re.compile(r"\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _clean(text: str) -> str:
    return _CTRL_RE.sub(" ", text)


def _match_brace(s: str, open_pos: int) -> int | None:
    """Index of the brace closing ``s[open_pos] == '{'``; escaped braces ignored."""
    depth = 0
    i, n = open_pos, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_box(text: str) -> tuple[int, str | None] | None:
    """(start, content) of the last box; content None if it is unterminated/empty."""
    last = None
    for m in _BOX_RE.finditer(text):
        last = m
    if last is None:
        return None
    i = last.end()
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    if i < n and text[i] == "{":
        end = _match_brace(text, i)
        if end is None:
            return last.start(), None  # truncated: the box never closes
        content = text[i + 1 : end].strip()
        return last.start(), (content or None)
    # "\boxed 5" -- a single token without braces
    m = re.match(r"[^\s$]+", text[i:])
    if m is None or m.group(0).startswith("\\"):
        return last.start(), None
    return last.start(), m.group(0)


_MATH_ENV_RES = [
    re.compile(r"\$\$(.+?)\$\$", re.DOTALL),
    re.compile(r"\\\[(.+?)\\\]", re.DOTALL),
    re.compile(r"\\\((.+?)\\\)", re.DOTALL),
    re.compile(r"(?<!\\)\$((?:\\\$|[^$])+?)(?<!\\)\$", re.DOTALL),
]


def _statement_answer(rest: str) -> tuple[str | None, bool]:
    """(answer, from_math_env) following "final answer is"/"final answer:"."""
    rest = rest[:4000].lstrip()
    if not rest:
        return None, False
    # A display environment may span lines.
    for opener, closer in (("$$", "$$"), ("\\[", "\\]")):
        if rest.startswith(opener):
            end = rest.find(closer, len(opener))
            if end < 0:
                return None, False
            return rest[len(opener) : end].strip() or None, True
    line = rest.split("\n", 1)[0][:1000]
    line = _HOPE_RE.sub("", line).strip()
    best = None
    for rx in _MATH_ENV_RES:
        m = rx.search(line)
        if m and (best is None or m.start() < best.start()):
            best = m
    if best is not None:
        return best.group(1).strip() or None, True
    m = _SENTENCE_END_RE.search(line)
    if m:
        line = line[: m.start()]
    line = line.strip().strip("*_").strip()
    line = re.sub(r"^(?:the\s+answer\s+is\s*:?\s*)", "", line, flags=re.IGNORECASE)
    line = line.rstrip(".,;: ").strip()
    return line or None, False


def _is_prose(answer: str) -> bool:
    """Plain text with words outside any LaTeX command, e.g. "let me double-check"."""
    bare = re.sub(r"\\[A-Za-z]+(?:\{[^{}]*\})?", " ", answer)
    return len(re.findall(r"[A-Za-z]{3,}", bare)) >= 2


def extract_answer(response: str) -> str | None:
    """The answer a response commits to, or None.

    The last ``\\boxed{}``/``\\fbox{}`` or the last explicit final-answer
    statement, whichever starts later in the text (a statement followed only by
    prose does not override an earlier box). Anything else -- a value merely
    mentioned, a truncated box -- yields None.
    """
    if not isinstance(response, str) or not response:
        return None
    text = _clean(response)
    box = _last_box(text)
    final = None
    for m in _FINAL_RE.finditer(text):
        final = m
    if box is not None and (final is None or box[0] >= final.start()):
        return box[1]
    if final is not None:
        answer, from_math = _statement_answer(text[final.end() :])
        if box is not None and (answer is None or (not from_math and _is_prose(answer))):
            return box[1]  # "...before the final answer: let me check" commits to nothing new
        return answer
    return None


def _extract(response: str, mode: str) -> str | None:
    if mode == "plain":
        if not isinstance(response, str):
            return None
        s = response.strip()
        return s or None
    if mode == "boxed":
        return extract_answer(response)
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


# ---------------------------------------------------------------------------
# String normalisation (applied to both gold and prediction)
# ---------------------------------------------------------------------------

_UNICODE_REPL = [
    ("\u2212", "-"),  # minus sign
    ("\u00d7", "\\times "),
    ("\u00b7", "\\cdot "),
    ("\u03c0", "\\pi "),
    ("\u221e", "\\infty "),
    ("\u00b0", "^\\circ "),
    ("\u2264", "\\le "),
    ("\u2265", "\\ge "),
    ("\u00a0", " "),
]
_THIN_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\\,|\\;|\\:|\\ |\\!|~|\{,\})(?=\d{3}(?!\d))")
_SPACE_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_EMPTYSET_RE = re.compile(r"\\varnothing|\\\{\s*\\\}|\\O(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\\degree(?![A-Za-z])|\\textdegree(?![A-Za-z])")


def _unwrap_outer(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = s.strip()
        for left, right in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
                changed = True
                break
        if changed:
            continue
        m = re.match(r"\\(?:boxed|fbox)\s*\{", s)
        if m and _match_brace(s, m.end() - 1) == len(s) - 1:
            s = s[m.end() : -1]
            changed = True
            continue
        if s.endswith((".", ",", ";")) and not s.endswith("\\."):
            s = s[:-1]
            changed = True
    return s.strip()


def _normalize(s: str) -> str:
    s = _clean(s)
    for a, b in _UNICODE_REPL:
        s = s.replace(a, b)
    s = _unwrap_outer(s)
    s = _DEGREE_RE.sub("^\\\\circ", s)
    s = _EMPTYSET_RE.sub("\\\\emptyset", s)
    s = _THIN_THOUSANDS_RE.sub("", s)
    if _SPACE_THOUSANDS_RE.fullmatch(s):
        s = s.replace(" ", "")
    return s


_CANON_DROP_RE = re.compile(r"\s+|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\[,;:! ]|~")
_CANON_SCRIPT_RE = re.compile(r"([_^])\{([A-Za-z0-9])\}")


def _canon_str(s: str) -> str:
    """Whitespace/spacing-insensitive form for the exact-match fast path."""
    s = _CANON_DROP_RE.sub("", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _CANON_SCRIPT_RE.sub(r"\1\2", s)
    return s


_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)
_LETTER_RE = re.compile(r"^\s*(?:\(\s*([A-Z])\s*\)|([A-Z])(?:\s*[.):]|\s*$))")
_GOLD_LETTER_RE = re.compile(r"^\s*\(?\s*([A-Z])\s*\)?\s*$|^\s*\(\s*([A-Z])\s*\)")
_WORDS_RE = re.compile(r"[A-Za-z]+(?:(?:\s+|-|')[A-Za-z]+)*")


def _strip_text_cmds(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1) + " ", s)
    s = s.replace("\\ ", " ").replace("~", " ")
    return s.strip()


def _mc_letter(s: str, *, gold: bool) -> str | None:
    t = _strip_text_cmds(s)
    m = (_GOLD_LETTER_RE if gold else _LETTER_RE).match(t)
    if not m:
        return None
    tail = t[m.end() :].strip()
    if not gold and re.search(r"(?<![A-Za-z])[A-Z](?![A-Za-z])", tail):
        return None  # "C. D." / "(C) or (D)": hedging over several choices
    if not gold and tail[:1] in set("+-*/^_=<>,;.!\\"):
        return None  # "(C)+1": an expression, not a choice
    return m.group(1) or m.group(2)


_BASE_NUM_RE = re.compile(r"([0-9A-Za-z]+)_\{?\s*(\d+)\s*\}?")


def _base_number(s: str) -> tuple[str, int] | None:
    """("52", 8) for "52_8" / "52_{8}"; None if ``s`` is not a number with a base subscript."""
    m = _BASE_NUM_RE.fullmatch(_strip_text_cmds(s).replace(" ", ""))
    if not m:
        return None
    digits, base = m.group(1).upper(), int(m.group(2))
    if not 2 <= base <= 36 or not any(c.isdigit() for c in digits):
        return None
    if any(int(c, 36) >= base for c in digits):
        return None
    return digits.lstrip("0") or "0", base


def _words(s: str) -> tuple[str, ...] | None:
    t = _strip_text_cmds(s).rstrip(".").strip()
    if not _WORDS_RE.fullmatch(t):
        return None
    return tuple(w.lower() for w in re.split(r"[\s\-']+", t) if w)


def _gold_is_text(gold: str, words: tuple[str, ...] | None) -> bool:
    if words is None:
        return False
    if _TEXT_CMD_RE.search(gold) is not None:
        return True
    return any(len(w) >= 3 for w in words)


def _bracket_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "({[":
            depth += 1
            if depth > best:
                best = depth
        elif c in ")}]":
            depth -= 1
    return best


def _guard_string(s: str) -> str | None:
    """Reason to refuse the answer string outright, or None if it may be parsed."""
    if len(s) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    if _bracket_depth(s) > MAX_BRACKET_DEPTH:
        return f"bracket nesting deeper than {MAX_BRACKET_DEPTH}"
    return None


# ---------------------------------------------------------------------------
# Parsing (latex2sympy2_extended, the math-verify backend) and guards
# ---------------------------------------------------------------------------

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

    # We pass timeout_seconds=None / never call parse(); silence the one-off
    # "timeout disabled" warning -- our timeouts live in the process pool.
    mv_grader.TIMEOUT_WARNING_SHOWN = True
    mv_parser.TIMEOUT_WARNING_SHOWN = True

    ns = types.SimpleNamespace(
        sympy=sympy,
        l2s=l2s,
        L2SAnd=L2SAnd,
        L2SFiniteSet=L2SFiniteSet,
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
    )
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


def _sympy_equiv(g, p) -> bool:
    lib = _lib()
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


# ---------------------------------------------------------------------------
# Equivalence (in-process)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gold:
    norm: str
    canon: str
    letter: str | None
    words: tuple[str, ...] | None
    base: tuple[str, int] | None
    expr: Any


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
    expr = None if (letter is not None or base is not None) else _parse(g)
    if expr is None and letter is None and words is None and base is None:
        raise GoldParseError(f"cannot parse gold answer {gold[:200]!r}")
    return _Gold(norm=g, canon=_canon_str(g), letter=letter, words=words, base=base, expr=expr)


def _check(gold: str, pred: str | None) -> tuple[bool, str]:
    """(correct, status) with status 'ok' or 'parse_fail'. Raises GoldParseError."""
    G = _prepare_gold(gold)
    if not isinstance(pred, str) or len(pred) > MAX_RAW_ANSWER_CHARS:
        return False, "parse_fail"
    p = _normalize(pred)
    if not p or _guard_string(p):
        return False, "parse_fail"
    if _canon_str(p) == G.canon:
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
    P = _parse(p)
    if P is None:
        return False, "parse_fail"
    return _sympy_equiv(G.expr, P), "ok"


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


# ---------------------------------------------------------------------------
# Worker process pool
# ---------------------------------------------------------------------------


# Generic answer shapes parsed/compared once per worker before it reports ready:
# the ANTLR parser builds its DFA cache and sympy its caches lazily, which makes a
# cold worker ~2x slower on its first few hundred cases.
_WARM_UP_PAIRS = [
    ("42", "\\boxed{042}"), ("1,000", "\\boxed{1000}"), ("\\frac{3}{4}", "\\boxed{0.75}"),
    ("-\\frac{7}{2}", "\\boxed{-3.5}"), ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}"), ("\\frac{\\pi}{3}", "\\boxed{\\pi/3}"),
    ("x^2-1", "\\boxed{(x-1)(x+1)}"), ("3-2i", "\\boxed{3 - 2i}"), ("(1,-2)", "\\boxed{(1, -2)}"),
    ("[0,\\infty)", "\\boxed{[0, \\infty)}"), ("(-\\infty,1)\\cup(2,\\infty)", "\\boxed{(2,\\infty)\\cup(-\\infty,1)}"),
    ("1,-3", "\\boxed{-3, 1}"), ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}"),
    ("30^\\circ", "\\boxed{30}"), ("25\\%", "\\boxed{25}"), ("\\text{(B)}", "\\boxed{B}"), ("y=2x+1", "\\boxed{y = 1 + 2x}"),
    ("12", "\\boxed{13}"), ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"), ("p+q", "\\boxed{\\frac{5}{2}}"),
]


def _warm_up() -> None:
    for gold, response in _WARM_UP_PAIRS:
        _verify_local(gold, response, "boxed")


def _worker_main(conn, mem_limit_mb: int | None, warm_up: bool = True) -> None:
    """Worker loop: receive (idx, gold, response, mode), reply (idx, correct, status, extracted, recycle)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    except Exception:
        pass
    if mem_limit_mb:
        try:
            import resource

            limit = int(mem_limit_mb) * 1024 * 1024
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except Exception:
            pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    if warm_up:
        _warm_up()
    else:
        _verify_local("1", "1", "plain")  # import everything before declaring ready
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        idx, gold, response, mode = msg
        recycle = False
        try:
            correct, status, extracted = _verify_local(gold, response, mode)
        except MemoryError:
            correct, status, extracted, recycle = False, "timeout", None, True
        except Exception:
            correct, status, extracted = False, "parse_fail", None
        try:
            conn.send((idx, correct, status, extracted, recycle))
        except (OSError, ValueError):
            break
        if recycle:
            break


def _worker_entry(fd: int, mem_limit_mb: int, warm_up: int = 1) -> None:
    """Entry point of a worker subprocess (see ``Verifier._spawn``)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        _worker_main(conn, mem_limit_mb or None, bool(warm_up))
    finally:
        try:
            conn.close()
        except Exception:
            pass


# Workers are fresh interpreters started with subprocess (not multiprocessing's
# spawn/forkserver): those re-import the caller's __main__ module in every child,
# which for a training script means importing torch/CUDA under RLIMIT_AS.
_WORKER_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "import harness.verify as m; m._worker_entry(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
)
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    __slots__ = ("proc", "conn", "state", "task", "deadline")

    def __init__(self, proc, conn, startup_deadline: float):
        self.proc = proc
        self.conn = conn
        self.state = "starting"  # starting | idle | busy
        self.task: int | None = None
        self.deadline = startup_deadline


class Verifier:
    """Batch verifier running cases in a pool of memory-capped worker processes.

    ``Verifier(workers=2, timeout=5.0, mem_limit_mb=2048, mode="boxed")``;
    ``verify_many(cases)`` takes dicts with ``id``, ``gold`` and ``pred`` (the
    model response; in plain mode the answer itself) and returns one
    :class:`Verdict` per case, in order. Thread-safe (calls are serialised).

    Workers are separate interpreters; each sets RLIMIT_AS to ``mem_limit_mb``
    before importing sympy, and (``warm_up=True``) runs a few generic cases so
    the parser caches are hot before it accepts work. A case that runs past
    ``timeout`` seconds, or whose worker dies, gets status ``timeout``; the
    worker is killed and replaced. Timeouts are measured in the parent from
    dispatch, with no signals involved.
    """

    STARTUP_TIMEOUT = 120.0
    MAX_START_FAILURES = 3

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 5.0,
        mem_limit_mb: int = 2048,
        mode: str = "boxed",
        *,
        warm_up: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if int(workers) < 1:
            raise ValueError("workers must be >= 1")
        if timeout is None or float(timeout) <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.n_workers = int(workers)
        self.timeout = float(timeout)
        self.mem_limit_mb = int(mem_limit_mb) if mem_limit_mb else None
        self.mode = mode
        self.warm_up = bool(warm_up)
        self._pid = os.getpid()  # workers belong to this process, not to forked children
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._closed = False
        self._start_failures = 0
        for _ in range(self.n_workers):
            self._workers.append(self._spawn())

    # -- lifecycle ---------------------------------------------------------
    def _spawn(self) -> _Worker:
        import socket
        import subprocess
        from multiprocessing.connection import Connection

        parent_sock, child_sock = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_CODE,
                    _PKG_ROOT,
                    str(child_sock.fileno()),
                    str(self.mem_limit_mb or 0),
                    str(int(self.warm_up)),
                ],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        return _Worker(proc, conn, time.monotonic() + self.STARTUP_TIMEOUT)

    def _kill(self, w: _Worker) -> None:
        try:
            w.conn.close()
        except Exception:
            pass
        try:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(timeout=5.0)
        except Exception:
            pass

    def _replace(self, w: _Worker, *, failed_start: bool = False) -> None:
        self._kill(w)
        if failed_start:
            self._start_failures += 1
            if self._start_failures >= self.MAX_START_FAILURES:
                self._shutdown()
                raise RuntimeError(
                    "harness.verify: worker processes keep dying during start-up "
                    f"(mem_limit_mb={self.mem_limit_mb}); verifier closed"
                )
        i = self._workers.index(w)
        self._workers[i] = self._spawn()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _shutdown(self) -> None:
        self._closed = True
        if os.getpid() != self._pid:
            # A forked copy must not signal the parent's workers.
            self._workers = []
            return
        asked = []
        for w in self._workers:
            if w.state == "idle":  # idle workers exit cleanly on None; others are killed
                try:
                    w.conn.send(None)
                    asked.append(w)
                except Exception:
                    pass
        deadline = time.monotonic() + 1.0
        for w in asked:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass
        for w in self._workers:
            self._kill(w)
        self._workers = []

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._shutdown()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            if not self._closed:
                self._shutdown()
        except Exception:
            pass

    def config(self) -> dict:
        return verifier_config(mode=self.mode, timeout=self.timeout)

    # -- verification ------------------------------------------------------
    def verify_many(self, cases: Iterable[dict]) -> list[Verdict]:
        return self._run(cases, mode=self.mode, timeout=self.timeout)

    def verify(self, gold: str, response: str, id: str | None = None) -> Verdict:
        return self._run([{"id": id, "gold": gold, "pred": response}], mode=self.mode, timeout=self.timeout)[0]

    def _run(self, cases: Iterable[dict], *, mode: str, timeout: float) -> list[Verdict]:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        items = []
        for c in cases:
            cid = c.get("id") if isinstance(c, dict) else None
            gold = c.get("gold") if isinstance(c, dict) else None
            pred = c.get("pred") if isinstance(c, dict) else None
            items.append((None if cid is None else str(cid), gold, pred))
        results: list[Verdict | None] = [None] * len(items)
        queue: collections.deque[int] = collections.deque()
        for i, (cid, gold, pred) in enumerate(items):
            if not isinstance(gold, str):
                results[i] = Verdict(cid, False, "gold_error", None)
            elif not isinstance(pred, str):
                results[i] = Verdict(cid, False, "parse_fail", None)
            else:
                queue.append(i)
        if not queue:
            return results  # type: ignore[return-value]
        with self._lock:
            if self._closed:
                raise RuntimeError("Verifier is closed")
            if os.getpid() != self._pid:
                raise RuntimeError("Verifier was created in another process (fork); create a new one here")
            try:
                self._loop(items, results, queue, mode, timeout)
            except BaseException:
                # Interrupted (e.g. KeyboardInterrupt): workers still holding a case
                # would answer into the next call; replace them so state stays clean.
                if not self._closed:
                    for w in list(self._workers):
                        if w.state == "busy":
                            try:
                                self._replace(w)
                            except Exception:
                                pass
                raise
        return results  # type: ignore[return-value]

    def _loop(self, items, results, queue, mode, timeout) -> None:
        from multiprocessing.connection import wait

        remaining = len(queue)
        while remaining:
            # Dispatch to idle workers.
            for w in list(self._workers):
                if w.state != "idle" or not queue:
                    continue
                i = queue.popleft()
                _cid, gold, pred = items[i]
                try:
                    w.conn.send((i, gold, pred, mode))
                except (OSError, ValueError):
                    queue.appendleft(i)
                    self._replace(w)
                    continue
                w.state, w.task, w.deadline = "busy", i, time.monotonic() + timeout

            waiting = [w for w in self._workers if w.state != "idle"]
            if not waiting:  # pragma: no cover - cannot happen while remaining > 0
                continue
            now = time.monotonic()
            wait_for = max(0.0, min(w.deadline for w in waiting) - now)
            ready = wait([w.conn for w in waiting], timeout=wait_for)
            by_conn = {id(w.conn): w for w in waiting}
            for conn in ready:
                w = by_conn[id(conn)]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:  # worker died
                    if w.state == "busy":
                        self._finish(results, items, w.task, False, "timeout", None, mode)
                        remaining -= 1
                        self._replace(w)
                    else:
                        self._replace(w, failed_start=True)
                    continue
                if msg[0] == "ready":
                    w.state, w.task = "idle", None
                    self._start_failures = 0
                    continue
                idx, correct, status, extracted, recycle = msg
                if w.state == "busy" and idx == w.task:
                    self._finish(results, items, idx, bool(correct), status, extracted, mode)
                    remaining -= 1
                w.state, w.task = "idle", None
                if recycle:
                    self._replace(w)
            # Enforce deadlines.
            now = time.monotonic()
            for w in list(self._workers):
                if w.state == "busy" and now >= w.deadline:
                    self._finish(results, items, w.task, False, "timeout", None, mode)
                    remaining -= 1
                    self._replace(w)
                elif w.state == "starting" and now >= w.deadline:
                    self._replace(w, failed_start=True)

    @staticmethod
    def _finish(results, items, idx, correct, status, extracted, mode) -> None:
        if results[idx] is not None:
            return
        cid, _gold, pred = items[idx]
        if status == "timeout" and extracted is None and isinstance(pred, str) and len(pred) <= 1_000_000:
            try:  # cheap, linear-time: tell the caller what the timed-out answer was
                extracted = _extract(pred, mode)
            except Exception:
                extracted = None
        results[idx] = Verdict(cid, bool(correct) and status == "ok", status, extracted)


# ---------------------------------------------------------------------------
# Convenience API
# ---------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: dict[tuple, Verifier] = {}


def shared_verifier(workers: int = 1, timeout: float = 5.0, mode: str = "boxed") -> Verifier:
    """A lazily started pool per (workers, timeout, mode), private to this process (restarted after a fork)."""
    key = (workers, timeout, mode)
    with _shared_lock:
        v = _shared.get(key)
        if v is None or v._closed or v._pid != os.getpid():
            v = _shared[key] = Verifier(workers=workers, timeout=timeout, mode=mode)
        return v


def close_shared(workers: int = 1, timeout: float = 5.0, mode: str = "boxed") -> None:
    with _shared_lock:
        v = _shared.pop((workers, timeout, mode), None)
    if v is not None:
        v.close()


@atexit.register
def _close_shared() -> None:  # pragma: no cover - exit hook
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for v in pools:
        try:
            v.close()
        except Exception:
            pass


def verify(gold: str, response: str, *, mode: str = "boxed", timeout: float | None = 5.0) -> Verdict:
    """Verify one response against one gold answer.

    With a positive ``timeout`` the work runs in a shared, lazily started,
    memory-capped worker process (the only signal-free way to stop runaway sympy);
    with ``timeout=None`` it runs entirely in the calling process without a time
    limit. Raises :class:`GoldParseError` if the gold answer cannot be parsed.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if timeout is None or timeout <= 0:
        correct, status, extracted = _verify_local(gold, response, mode)
        verdict = Verdict(None, correct, status, extracted)
    else:
        verdict = shared_verifier()._run(
            [{"id": None, "gold": gold, "pred": response}], mode=mode, timeout=float(timeout)
        )[0]
    if verdict.status == "gold_error":
        raise GoldParseError(f"cannot parse gold answer {str(gold)[:200]!r}")
    return verdict


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


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


class _InputError(Exception):
    pass


def _read_cases(path: str) -> list[dict]:
    from harness.results import jsonl_records

    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise _InputError(f"{path}: cannot open: {e.strerror or e}") from None
    cases = []
    with fh:
        try:
            for lineno, obj in jsonl_records(fh, path, _InputError):
                if not isinstance(obj, dict):
                    raise _InputError(f"{path}:{lineno}: expected a JSON object")
                missing = [k for k in ("id", "gold", "pred") if k not in obj]
                if missing:
                    raise _InputError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}")
                for k in ("gold", "pred"):
                    if not isinstance(obj[k], str):
                        raise _InputError(f"{path}:{lineno}: {k!r} must be a string")
                cases.append(obj)
        except UnicodeDecodeError as e:
            raise _InputError(f"{path}: not valid UTF-8 ({e.reason})") from None
    return cases


def _write_atomic(path: str, lines: Iterable[str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".verify-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
                out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cli_main(argv: list[str]) -> int:
    """``--input cases.jsonl --output out.jsonl [--workers N] [--timeout S] [--mode boxed|plain]``.

    Exit codes: 0 ok, 1 at least one unparsable gold (every line still written),
    2 bad input or usage, 3 the worker pool itself failed (nothing written).
    """
    ap = argparse.ArgumentParser(prog="python -m harness.verify", description="Fail-closed math answer verifier")
    ap.add_argument("--input", required=True, help="JSONL with id, gold, pred per line")
    ap.add_argument("--output", required=True, help="JSONL written atomically: id, correct, status, extracted")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--mode", choices=MODES, default="boxed")
    ap.add_argument("--mem-limit-mb", type=int, default=2048)
    argv = list(argv)
    if argv[:1] == ["--"]:  # tolerate wrappers that forward "-- <args>"
        argv = argv[1:]
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    if args.workers < 1 or args.timeout <= 0:
        print("error: --workers must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    try:
        cases = _read_cases(args.input)
    except _InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        print(f"error: {args.output}: output directory does not exist", file=sys.stderr)
        return 2
    try:
        with Verifier(workers=args.workers, timeout=args.timeout, mem_limit_mb=args.mem_limit_mb, mode=args.mode) as v:
            verdicts = v.verify_many(cases)
    except (RuntimeError, OSError) as e:
        print(f"error: verifier failed: {e}", file=sys.stderr)
        return 3
    lines = [
        json.dumps(
            {"id": c["id"], "correct": vd.correct, "status": vd.status, "extracted": vd.extracted},
            ensure_ascii=False,
        )
        for c, vd in zip(cases, verdicts)
    ]
    _write_atomic(args.output, lines)
    n_gold = sum(vd.status == "gold_error" for vd in verdicts)
    if n_gold:
        print(f"error: {n_gold} case(s) with unparsable gold (status gold_error)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Re-import as ``harness.verify`` so worker processes and exception classes
    # share one module identity with library users.
    from harness.verify import cli_main as _cli_main

    sys.exit(_cli_main(sys.argv[1:]))
