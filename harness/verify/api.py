"""One-call verification: :func:`verify` (pooled with a time limit, or in-process without one)."""

from __future__ import annotations

from .base import MODES, GoldParseError, Verdict
from .compare import _verify_local
from .pool import shared_verifier


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
