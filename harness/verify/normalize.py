"""String normalisation applied to both gold and prediction, and the string-level answer shapes
(choice letters, plain words, numbers in another base) compared without sympy."""

from __future__ import annotations

import re

from .base import MAX_ANSWER_CHARS, MAX_BRACKET_DEPTH
from .extract import _clean, _match_brace

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
# LaTeX spacing at either end of an answer: "\ 8640\ ", "\;3\;", "~5", "\quad x"
_EDGE_SPACE = r"(?:\s|~|\\[ ,;:!]|\\q?quad(?![A-Za-z]))"
_LEAD_SPACE_RE = re.compile(rf"^{_EDGE_SPACE}+")
_TRAIL_SPACE_RE = re.compile(rf"{_EDGE_SPACE}+$")
_BOLD_RE = re.compile(r"\\(?:mathbf|textbf|boldsymbol|bm|pmb)\s*\{")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
# 4.5e33, 1E-5: a number in e-notation standing alone (the whole answer or a list element, possibly followed by
# a unit); "2e-1" inside a larger expression, or "2e - 1", keeps e as Euler's number
_ENOTATION_RE = re.compile(r"(?<![^\s,(\[=~])([+-]?)(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?)0*(\d{1,4})(?=$|[\s,)\]~]|\\)")
# one number in scientific notation (after e-notation was rewritten): 4.5\times 10^{33}, 7 \cdot 10^{-3}
_SCI_RE = re.compile(
    r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*(?:\{\s*[+-]?\s*\d+\s*\}|[+-]?\d+)"
)
_BARE_POINT_RE = re.compile(r"(?<=\d)\.(?=\s*[/*)])")  # "-1./3" (a float literal as in Python) -> "-1/3"


def _strip_spacing(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = _TRAIL_SPACE_RE.sub("", _LEAD_SPACE_RE.sub("", s))
        if s.endswith("\\") and (len(s) - len(s.rstrip("\\"))) % 2 == 1:
            s = s[:-1]  # a lone trailing backslash: the rest of "\ " after the space was stripped
    return s


def _unwrap_bold(s: str) -> str:
    """\\mathbf{...}/\\textbf{...}/\\boldsymbol{...} around a number, fraction or radical -> its content.
    Content with letters outside commands (a vector, "\\textbf{(C)}") is left alone."""
    if "\\" not in s:
        return s
    out, i = [], 0
    for m in _BOLD_RE.finditer(s):
        if m.start() < i:
            continue
        end = _match_brace(s, m.end() - 1)
        if end is None:
            break
        inner = s[m.end() : end]
        if re.search(r"[A-Za-z]", _COMMAND_RE.sub("", inner)):
            continue
        out.append(s[i : m.start()])
        out.append(_unwrap_bold(inner))
        i = end + 1
    out.append(s[i:])
    return "".join(out)


def _enotation(m: re.Match) -> str:
    sign, mant, esign, exp = m.groups()
    mant = mant.rstrip(".") or mant
    return f"{sign}{mant}\\times 10^{{{'-' if esign == '-' else ''}{exp}}}"


def _unwrap_outer(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = _strip_spacing(s.strip())
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
        if s.endswith((".", ",", ";")) and not s[:-1].endswith("\\"):
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
    s = _unwrap_bold(s)
    if "e" in s or "E" in s:
        s = _ENOTATION_RE.sub(_enotation, s)
    if "." in s:
        s = _BARE_POINT_RE.sub("", s)
    return s


def normalize_answer(answer: str) -> str:
    """The string normalisation every gold and every extracted answer goes through before comparison
    (outer ``$``/``\\boxed``/spacing/punctuation removed, e-notation as ``\\times 10^{}``, bold around numbers
    dropped, thousands separators, unicode symbols); idempotent. Units and ``\\pm`` are kept: they are
    compared, not erased."""
    return _normalize(answer)


_PM_RE = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
_RELATION_RE = re.compile(r"=|<|>|\\(?:le|ge|leq|geq|ne|neq|approx|lt|gt|in)(?![A-Za-z])")
_OPEN, _CLOSE = "([{", ")]}"


def _split_top_level(s: str) -> list[str] | None:
    """``s`` split at commas outside brackets; None if the brackets do not balance."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    if depth:
        return None
    parts.append(s[start:])
    return parts


def _expand_pm(s: str) -> str | None:
    """``1, \\frac{3 \\pm \\sqrt{21}}{2}`` -> ``1, \\frac{3 + \\sqrt{21}}{2}, \\frac{3 - \\sqrt{21}}{2}``: each
    list element with ``\\pm``/``\\mp`` becomes its two values. None if there is nothing to expand, or the
    answer is a relation (``x = 1 \\pm 2``) or has the sign inside a tuple/interval."""
    if not _PM_RE.search(s) or _RELATION_RE.search(s):
        return None
    body, wrapped = s.strip(), False
    if body.startswith("\\{") and body.endswith("\\}"):
        body, wrapped = body[2:-2], True
    parts = _split_top_level(body)
    if parts is None:
        return None
    out = []
    for part in parts:
        part = part.strip()
        if not _PM_RE.search(part):
            out.append(part)
            continue
        if "," in part:
            return None  # (1 \pm 2, 3): a sign inside a tuple or interval
        out.append(_PM_RE.sub(lambda m: "+" if m.group(0) == "\\pm" else "-", part))
        out.append(_PM_RE.sub(lambda m: "-" if m.group(0) == "\\pm" else "+", part))
    joined = ", ".join(out)
    return "\\{" + joined + "\\}" if wrapped else joined


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
