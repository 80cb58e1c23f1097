"""One-call verification: :func:`verify` (pooled with a time limit, or in-process without one)."""

from __future__ import annotations

from .base import MODES, GoldParseError, Verdict
from .compare import _verify_local
from .extract import extract_answer
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


def answer_correct(gold: str, response: str, *, mode: str = "boxed", timeout: float | None = 5.0) -> bool | None:
    """Is the answer ``response`` commits to the gold answer? None when it commits to none (no complete
    ``\\boxed{}``; ``mode="plain"``: an empty response, whose stripped text is otherwise the answer). Two integers
    compare exactly without sympy (every smoke task's answers); a gold answer that cannot be parsed is False.
    The one scorer of the smoke reasoning task and of the reward methods that score answers themselves."""
    got = response.strip() if mode == "plain" else extract_answer(response)
    if got is None or not got.strip():
        return None
    got, gold = got.strip(), str(gold).strip()
    if got.isdigit() and gold.isdigit():
        return int(got) == int(gold)
    try:
        return bool(verify(gold, response, mode=mode, timeout=timeout).correct)
    except GoldParseError:
        return False
