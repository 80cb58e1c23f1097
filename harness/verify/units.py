"""Trailing physical units: ``0.49~\\text{arcsec}`` -> value ``0.49`` and unit ``\\text{arcsec}``.

Pure string work. :func:`split_unit` finds the unit, :func:`unit_key` turns it into a spelling-free key
(``\\mathrm{m}\\,\\mathrm{s}^{-1}``, ``\\text{m/s}`` and ``\\text{ meters per second}`` share one key) so that two
stated units can be compared; no unit conversion is ever attempted.
"""

from __future__ import annotations

import re

_UNIT_CMD = r"\\(?:text|mathrm|textrm|mbox|rm|operatorname|mathit|textit)\s*\{[^{}]*\}"
_UNIT_SYMBOL = r"\\AA(?![A-Za-z])|\\mu(?![A-Za-z])|\\Omega(?![A-Za-z])|[\u00c5\u212b\u03bc\u00b5\u03a9]"
_EXP = r"(?:\s*\^\s*(?:\{\s*[-+]?\s*\d+\s*\}|[-+]?\d))?"
_TAIL_CMD_RE = re.compile(rf"(?:{_UNIT_CMD}|{_UNIT_SYMBOL}){_EXP}$")
_TAIL_WORD_RE = re.compile(rf"(?<![A-Za-z\\])[A-Za-z]+{_EXP}$")
_TAIL_SEP_RE = re.compile(r"(?:\s|~|\\[,;:! ]|\\q?quad(?![A-Za-z])|\\cdot(?![A-Za-z])|/)+$")
# what may stand between the number and a bare unit word: "0.49~arcsec", "3\,cm" (not a plain space:
# "7.6 Z" and "\frac{37}{4} m" are products with a variable)
_EXPLICIT_SEP_RE = re.compile(r"~|\\[,;:! ]|\\q?quad(?![A-Za-z])")
_JOIN_ONLY_RE = re.compile(r"^(?:\s*(?:/|\\cdot(?![A-Za-z]))\s*)+$")
_MAX_UNIT_TOKENS = 8


def split_unit(s: str) -> tuple[str, str] | None:
    """(value, unit) if ``s`` ends in a unit written as ``\\text{}``/``\\mathrm{}``/``\\mbox{}`` (optionally with an
    exponent), ``\\AA``, ``\\mu``, ``\\Omega``, or a word after ``~``/``\\,``/``\\;``/``\\ `` (``0.49~arcsec``);
    None otherwise. Whether the value is a number is for the caller to decide."""
    rest = s.rstrip()
    tokens: list[tuple[int, bool, str]] = []  # (start of separator, is bare word, separator), right to left
    while rest and len(tokens) < _MAX_UNIT_TOKENS:
        m = _TAIL_CMD_RE.search(rest)
        word = False
        if m is None:
            m = _TAIL_WORD_RE.search(rest)
            word = True
        if m is None:
            break
        before = rest[: m.start()]
        sm = _TAIL_SEP_RE.search(before)
        sep = sm.group(0) if sm else ""
        rest = before[: len(before) - len(sep)]
        tokens.append((len(rest), word, sep))
    # The unit starts at the leftmost token that can follow a number: a command/symbol after anything but a
    # bare "/" or "\cdot", or a word after an explicit spacing separator. Tokens to its right only extend it.
    best = None
    for start, word, sep in tokens:  # right to left: the last one that qualifies is the leftmost
        if word and not _EXPLICIT_SEP_RE.search(sep):
            if best is not None and not sep:
                break  # "2x\,\text{m}": the word is part of the value
            continue
        if _JOIN_ONLY_RE.match(sep):
            continue
        best = start
    if best is None:
        return None
    value, unit = s[:best].rstrip(), s[best:].strip()
    if not value or not unit:
        return None
    return value, unit


_UNWRAP_RE = re.compile(r"\\(?:text|mathrm|textrm|mbox|rm|operatorname|mathit|textit)\s*\{([^{}]*)\}")
_UNIT_TOKEN_RE = re.compile(
    r"\s*(?:(?P<slash>/)|(?P<name>[A-Za-z\u00c5\u03bc\u03a9]+|'')\s*(?:\^\s*\{?\s*(?P<exp>[-+]?\s*\d+)\s*\}?)?)"
)
_ALIASES = {
    "meter": "m", "metre": "m", "centimeter": "cm", "centimetre": "cm", "millimeter": "mm", "millimetre": "mm",
    "kilometer": "km", "kilometre": "km", "micrometer": "\u03bcm", "micrometre": "\u03bcm", "micron": "\u03bcm",
    "nanometer": "nm", "nanometre": "nm", "angstrom": "\u00c5", "\u00e5ngstr\u00f6m": "\u00c5",
    "second": "s", "sec": "s", "minute": "min", "min": "min", "hour": "h", "hr": "h", "day": "d", "year": "yr",
    "gram": "g", "kilogram": "kg", "kelvin": "K", "joule": "J", "watt": "W", "newton": "N", "hertz": "Hz",
    "electronvolt": "eV", "parsec": "pc", "lightyear": "ly", "au": "AU", "arcsecond": "arcsec", "''": "arcsec",
    "arcminute": "arcmin", "degree": "deg", "radian": "rad", "inch": "in", "foot": "ft", "feet": "ft",
    "mile": "mi", "liter": "L", "litre": "L", "mole": "mol", "pascal": "Pa", "atmosphere": "atm", "volt": "V",
    "ampere": "A", "amp": "A", "ohm": "\u03a9", "tesla": "T", "gauss": "G", "coulomb": "C", "calorie": "cal",
    "dollar": "$", "erg": "erg", "cent": "cent",
}


def _alias(name: str) -> str:
    low = name.lower()
    for cand in (low, low[:-1] if low.endswith("s") else None, low[:-2] if low.endswith("es") else None):
        if cand and len(low) >= 3 and cand in _ALIASES:
            return _ALIASES[cand]
    return name


def unit_key(unit: str) -> tuple[tuple[str, int], ...] | None:
    """Spelling-free key of a unit (base symbol -> exponent), or None if the unit is not a plain product of
    unit words and powers (then it is not compared)."""
    t = unit.replace("\\$", " dollar ")
    prev = None
    while prev != t:
        prev = t
        t = _UNWRAP_RE.sub(lambda m: " " + m.group(1) + " ", t)
    t = t.replace("\\AA", " \u00c5 ").replace("\u212b", "\u00c5").replace("\\Omega", " \u03a9 ")
    t = t.replace("\u00b5", "\u03bc")
    t = re.sub(r"\\mu\s*", "\u03bc", t)
    t = re.sub(r"\\cdot(?![A-Za-z])|\*|~|\\[,;:! ]|\\q?quad(?![A-Za-z])|\.", " ", t)
    exps: dict[str, int] = {}
    pos, sign, power = 0, 1, 1
    while pos < len(t):
        if t[pos:].strip() == "":
            break
        m = _UNIT_TOKEN_RE.match(t, pos)
        if m is None or m.end() == pos:
            return None
        pos = m.end()
        if m.group("slash"):
            sign = -1
            continue
        name = m.group("name")
        low = name.lower()
        if low in ("square", "sq"):
            power = 2
            continue
        if low in ("cubic", "cu"):
            power = 3
            continue
        if low == "per":
            sign = -1
            continue
        exp = int(m.group("exp").replace(" ", "")) if m.group("exp") else 1
        key = _alias(name)
        exps[key] = exps.get(key, 0) + sign * power * exp
        sign, power = 1, 1
    key = tuple(sorted((k, v) for k, v in exps.items() if v))
    return key or None
