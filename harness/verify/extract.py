"""Answer extraction: which part of a response is the committed answer (pure string work, linear time)."""

from __future__ import annotations

import re

from .base import MODES

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


def _strip_keep_escape(s: str) -> str:
    """``s.strip()``, except that a trailing escaped space (``\\ ``) keeps its space."""
    t = s.strip()
    if t.endswith("\\") and len(t) < len(s.rstrip("\n")) and (len(t) - len(t.rstrip("\\"))) % 2 == 1:
        t += " "
    return t


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
        content = _strip_keep_escape(text[i + 1 : end])
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
