"""Claim checks: each card claim names a ``check`` registered here; each returns ``(verdict, numbers)``.

Verdicts: ``reproduced``, ``not_reproduced``, ``inconclusive`` (the data cannot decide, e.g. one seed or too
few points) and ``not_run`` (a claim of another tier: never judged with this tier's numbers).

Checks live in this package only: generic ones in :mod:`.checks` and :mod:`.train_metrics`, per-paper ones in
``papers/<paper>.py``. Every module of the package is discovered on first use (no import list, and no import of
the method registry, torch or TRL): claims read result files and the card as plain data.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Callable

CHECKS: dict[str, Callable] = {}
VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "not_run")
#: modules of this package that hold no checks
_NOT_CHECKS = {"registry", "law", "stats", "verdict", "analyses"}
_loaded = False


def check(name: str):
    """Register a claim check ``fn(results, **params[, evals][, analyses]) -> (verdict, numbers)`` under ``name``."""
    def deco(fn):
        if name in CHECKS and CHECKS[name] is not fn:
            raise KeyError(f"claim check {name!r} registered twice")
        CHECKS[name] = fn
        return fn
    return deco


def all_checks() -> dict[str, Callable]:
    """Every registered check (imports the package's check modules once)."""
    global _loaded
    if not _loaded:
        root = Path(__file__).parent
        for info in pkgutil.walk_packages([str(root)], prefix=f"{__package__}."):
            if info.name.rsplit(".", 1)[-1] not in _NOT_CHECKS:
                importlib.import_module(info.name)
        _loaded = True
    return dict(CHECKS)


def claim_tiers(claim: dict) -> list[str]:
    """The tiers a card's claim is judged at (``tier`` is one name or a list)."""
    t = claim["tier"]
    return [t] if isinstance(t, str) else list(t)


def evaluate_claims(card: dict, tier: str, results: list[dict], evals: list[dict] | None = None,
                    analyses: list[dict] | None = None) -> list[dict]:
    """Judge the card's claims of ``tier`` on the runs' results (and the checkpoints' eval results, for checks that
    take ``evals``; the analysis results, for checks that take ``analyses``)."""
    out = []
    for c in card["claims"]:
        tiers = claim_tiers(c)
        entry = {"id": c["id"], "tier": tier if tier in tiers else tiers[0], "statement": c["statement"],
                 "check": c["check"], "params": c.get("params", {})}
        if tier not in tiers:
            entry.update(verdict="not_run", numbers={"reason": f"{'/'.join(tiers)}-tier claim; this run is {tier}"})
        elif c["check"] not in all_checks():
            raise KeyError(f"claim {c['id']!r}: unknown check {c['check']!r}; valid: {', '.join(sorted(all_checks()))}")
        elif _unrun(c, results, card):
            entry.update(verdict="not_run", numbers={"reason": f"no run of {', '.join(_unrun(c, results, card))} in "
                                                               "this replication (e.g. a run restricted with methods=)"})
        else:
            fn = CHECKS[c["check"]]
            sig = inspect.signature(fn).parameters
            extra = {**({"evals": evals or []} if "evals" in sig else {}),
                     **({"analyses": analyses or []} if "analyses" in sig else {})}
            verdict, numbers = fn(results, **c.get("params", {}), **extra)
            entry.update(verdict=verdict, numbers=numbers)
        out.append(entry)
    return out


def _unrun(claim: dict, results: list[dict], card: dict) -> list[str]:
    """The card's methods a claim names (params ``method``, ``baseline``, ``methods``) of which no run is in
    ``results``: a claim on methods that were not trained is not run, not inconclusive. Names that are not the
    card's methods (a reported table's "original", "base") do not count; empty when nothing was trained at all (the
    checks report that themselves)."""
    trained = {r["job"]["method"] for r in results}
    if not trained or claim.get("check") == "reported_average":
        return []
    params = claim.get("params") or {}
    named = [params[k] for k in ("method", "baseline") if isinstance(params.get(k), str)]
    named += [m for m in params.get("methods") or [] if isinstance(m, str)]
    return sorted({m for m in named if m in card.get("methods", {}) and m not in trained})
