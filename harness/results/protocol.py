"""Evaluation protocol: everything that decides a benchmark number besides the model, and its hash.

A protocol covers the benchmark file digest (and which problems are scored), the prompt template, the chat
template (sha256 of its text) and system instruction, sampling settings, max tokens, k, the verifier version and
configuration, and seeds. Two numbers are comparable only if their protocol hashes are equal;
:func:`assert_same_protocol` refuses anything else and names the fields that differ.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

from harness.results import canonical_json

PROTOCOL_VERSION = 1


class ProtocolMismatch(ValueError):
    """Results evaluated under different protocols; ``.fields`` lists the differing (dotted) fields."""

    def __init__(self, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.fields = list(fields or [])


def text_sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def protocol_fields(*, benchmark: str, data_sha256: str, prompt_template: str, chat_template: str | None,
                    sampling: Mapping[str, Any], max_gen_toks: int, k: int, verifier: Mapping[str, Any],
                    seeds: Mapping[str, Any], system_instruction: str | None = None,
                    apply_chat_template: bool | None = None, problems: Mapping[str, Any] | None = None,
                    task_version: Any = None, max_length: int | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict:
    """The protocol of one benchmark evaluation, as a JSON-able dict (input of :func:`protocol_hash`).

    ``chat_template`` is the template text (stored as its sha256) or ``None`` when no chat template is applied;
    ``sampling`` holds ``do_sample``, ``temperature``, ``top_p`` and the stop strings; ``verifier`` is
    :func:`harness.verify.verifier_config`; ``problems`` says which problems are scored (limit, count, excluded ids).
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    fields = {
        "protocol_version": PROTOCOL_VERSION,
        "benchmark": str(benchmark),
        "data_sha256": str(data_sha256),
        "problems": dict(problems or {}),
        "prompt_template": prompt_template,
        "system_instruction": system_instruction,
        "apply_chat_template": bool(chat_template is not None if apply_chat_template is None else apply_chat_template),
        "chat_template_sha256": text_sha256(chat_template),
        "sampling": dict(sampling),
        "max_gen_toks": int(max_gen_toks),
        "max_length": None if max_length is None else int(max_length),
        "k": int(k),
        "verifier": dict(verifier),
        "seeds": dict(seeds),
        "task_version": task_version,
    }
    if extra:
        fields["extra"] = dict(extra)
    # round-trip through canonical JSON so that tuples/numpy scalars hash the same as what is stored
    import json

    return json.loads(canonical_json(fields))


def protocol_hash(fields: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``fields``."""
    return hashlib.sha256(canonical_json(dict(fields)).encode("utf-8")).hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k in obj:
            out.update(_flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        if not obj and prefix:
            out[prefix] = {}
        return out
    return {prefix: obj}


def diff_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted names of the fields whose values differ between two protocols (missing counts as different)."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, _MISSING) != fb.get(k, _MISSING))


_MISSING = object()


def _short(v: Any) -> str:
    if v is _MISSING:
        return "<missing>"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _protocol_of(r: Mapping[str, Any], i: int) -> dict:
    if not isinstance(r, Mapping) or "protocol" not in r:
        raise ProtocolMismatch(f"result #{i} carries no protocol (not an eval result?)", ["protocol"])
    p = r["protocol"]
    h = r.get("protocol_hash")
    if h is not None and h != protocol_hash(p):
        raise ProtocolMismatch(f"result #{i}: protocol_hash {h[:12]}... does not match its protocol "
                               f"({protocol_hash(p)[:12]}...): the file was edited", ["protocol_hash"])
    return p


def assert_same_protocol(results: Iterable[Mapping[str, Any]]) -> str:
    """Raise :class:`ProtocolMismatch` unless every result (a dict with ``protocol`` and ``protocol_hash``) was
    produced under the same protocol; the message names each differing field with both values.
    Returns the common protocol hash."""
    results = list(results)
    if not results:
        raise ValueError("no results to compare")
    protos = [_protocol_of(r, i) for i, r in enumerate(results)]
    ref = protos[0]
    for i, p in enumerate(protos[1:], 1):
        fields = diff_fields(ref, p)
        if fields:
            fa, fb = _flatten(ref), _flatten(p)
            details = "; ".join(f"{f}: {_short(fa.get(f, _MISSING))} vs {_short(fb.get(f, _MISSING))}"
                                for f in fields)
            raise ProtocolMismatch(
                f"protocol mismatch between result #0 and result #{i} in {len(fields)} field(s): {details}", fields)
    return protocol_hash(ref)
