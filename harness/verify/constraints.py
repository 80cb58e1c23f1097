"""Checkable instruction constraints: the one checker of the ``instruct`` smoke task (its rewards and held-out
score, :mod:`harness.data.instruct`) and of the Light-IF dense reward (:mod:`harness.methods.light_if`).

A response is a string of item letters (:data:`ITEMS`); a spec is ``kind=value`` pairs, ``;``-separated, with
kinds :data:`KINDS`: ``count`` (exactly n items), ``start`` / ``end`` (first / last item), ``avoid`` (letter absent),
``include`` (letter present). A malformed response (empty, or a character that is no item) satisfies none.
"""
from __future__ import annotations

ITEMS = "abcdefgh"
KINDS = ("count", "start", "end", "avoid", "include")


def parse_spec(spec: str) -> list[tuple[str, str]]:
    """``"count=5;end=e"`` -> ``[("count", "5"), ("end", "e")]``; anything else is a ValueError naming the kinds."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"instruct: empty or non-string constraint spec {spec!r}")
    out = []
    for part in spec.split(";"):
        kind, sep, value = part.partition("=")
        if not sep or kind not in KINDS:
            raise ValueError(f"instruct: bad constraint {part!r} in spec {spec!r}; valid kinds: {', '.join(KINDS)} "
                             "(written kind=value, ';'-separated)")
        ok = value.isdigit() and int(value) >= 1 if kind == "count" else (len(value) == 1 and value in ITEMS)
        if not ok:
            raise ValueError(f"instruct: bad value {value!r} for {kind!r} in spec {spec!r} "
                             f"({'a positive integer' if kind == 'count' else 'one of the letters ' + ITEMS})")
        out.append((kind, value))
    return out


def items_of(completion: str) -> str | None:
    """The response's items (its text, stripped), or None when malformed (empty, or a character that is no item)."""
    text = completion.strip()
    return text if text and all(c in ITEMS for c in text) else None


def check(kind: str, value: str, items: str | None) -> bool:
    """One constraint on a response's items (None: malformed, fails every constraint)."""
    if kind not in KINDS:
        raise ValueError(f"instruct: unknown constraint kind {kind!r}; valid: {', '.join(KINDS)}")
    if items is None:
        return False
    if kind == "count":
        return len(items) == int(value)
    if kind == "start":
        return items[0] == value
    if kind == "end":
        return items[-1] == value
    if kind == "avoid":
        return value not in items
    return value in items  # include


def satisfied(completion: str, spec: str) -> list[bool]:
    """Per constraint of ``spec`` (in order): does the completion satisfy it?"""
    items = items_of(completion)
    return [check(k, v, items) for k, v in parse_spec(spec)]


def dense_score(completion: str, spec: str) -> float:
    """Fraction of the constraints satisfied (the dense reward)."""
    s = satisfied(completion, spec)
    return sum(s) / len(s)


def all_satisfied(completion: str, spec: str) -> bool:
    """Every constraint satisfied (the all-or-nothing reward; the held-out score)."""
    return all(satisfied(completion, spec))
