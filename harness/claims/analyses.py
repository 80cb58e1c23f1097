"""The analysis a claim check reads: checks that take ``analyses`` (the verdict's analysis result files, as plain
dicts) name the one they judge, and a missing or doubled one is a verdict of its own, worded the same for every
paper."""
from __future__ import annotations


def one_analysis(analyses: list[dict] | None, name: str) -> tuple[dict | None, tuple[str, dict] | None]:
    """(the analysis named ``name``, None), or (None, (verdict, numbers)) for the check to return: ``not_run`` when
    none is among the inputs (the card or the DAG does not wire it), ``inconclusive`` when several are."""
    found = [a for a in analyses or [] if a.get("analysis") == name]
    if not found:
        present = sorted({str(a.get("analysis")) for a in analyses or []})
        return None, ("not_run", {"reason": f"no analysis {name!r} among this verdict's inputs (the tier's card block "
                                            f"has no analysis.{name}, or its rule has not run); present: "
                                            f"{', '.join(present) or 'none'}"})
    if len(found) > 1:
        return None, ("inconclusive", {"reason": f"{len(found)} analyses named {name!r}; the check reads one"})
    return found[0], None
