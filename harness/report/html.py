"""A self-contained static HTML report of the leaderboard: ``results/report.html``.

Rendered from the dict of :func:`harness.report.leaderboard.build` (result files only) with the Jinja2 template
``harness/report/templates/report.html.j2``. The page needs nothing but itself: plots are embedded as base64
``data:image/png`` URIs and the CSS/JS (tier and benchmark filters) are inline. The output is deterministic for the
same input (no timestamps, sorted iteration), so it can be pinned next to ``leaderboard.md``.

Filters can be preset from the URL: ``report.html#tier=cpu-real&bench=heldout``.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jinja2

from harness.config import TIERS
from harness.report import analysis_plots, passk
from harness.report.format import fmt_cell, fmt_reported, run_links, verdict_text
from harness.results import atomic_write_text

TEMPLATE = "report.html.j2"
PLOT_NAMES = ("entropy_vs_step.png", "reward_vs_entropy.png")
VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "not_run")
ROLE_SUFFIX = {"baseline": " (baseline)", "base model": " (before RL)"}


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


# ---------------------------------------------------------------------------
# formatting helpers (strings only reach the template; it escapes them)
# ---------------------------------------------------------------------------

def _ci(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("value") is None:
        return "—"
    lo, hi = d.get("ci") or (None, None)
    if lo is None or hi is None:
        return f"{d['value']:.{digits}f}"
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _verdict_class(v: dict | None) -> str:
    s = (v or {}).get("verdict", "not_run")
    return s if s in VERDICTS else "not_run"


def _verdict_detail(v: dict | None) -> str:
    """One line under the verdict: what it was decided on."""
    if not v:
        return ""
    parts = []
    if v.get("benchmark"):
        parts.append(f"on {v['benchmark']}")
    if v.get("kind"):
        parts.append(str(v["kind"]))
    ci = v.get("ci")
    if isinstance(v.get("diff"), (int, float)) and ci and len(ci) == 2 and None not in ci:
        parts.append(f"Δ {v['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    elif isinstance(v.get("reported"), (int, float)):
        parts.append(f"paper {v['reported']:.3f}"
                     + (f" vs ours {v['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
                        if isinstance(v.get("mean"), (int, float)) and ci and None not in ci else ""))
    return "; ".join(parts)


def _verdict_view(v: dict | None) -> dict:
    return {"cls": _verdict_class(v), "text": verdict_text(v), "detail": _verdict_detail(v),
            "reason": (v or {}).get("reason") or ""}


def _column_view(bench: str, col: dict) -> dict:
    p = col.get("protocol") or {}
    seeds = p.get("seeds")
    return {"bench": bench, "hash": (col.get("protocol_hash") or "")[:12], "data": p.get("data_sha256") or "",
            "n_problems": p.get("n_problems"), "sampling": p.get("sampling"), "k": p.get("k"),
            "max_tokens": p.get("max_tokens"), "template": p.get("template"), "verifier": p.get("verifier"),
            "seeds": json.dumps(seeds, sort_keys=True) if isinstance(seeds, (dict, list)) else seeds}


def _row_view(row: dict, benches: list[str], ui: str) -> dict:
    cells = []
    for b in benches:
        c = (row.get("cells") or {}).get(b)
        cells.append({"bench": b, "text": fmt_cell(c),
                      "title": (f"{c.get('n_seeds')} seeds × {c.get('n_problems')} problems; seeds "
                                f"{c.get('seeds')}" if c else "not evaluated")})
    poi = row.get("poi")
    return {
        "paper": row.get("paper", "?"), "papers": row.get("papers") or [row.get("paper", "?")],
        "tier": row.get("tier", "?"), "method": row.get("method", "?"),
        "role": row.get("role", ""), "role_suffix": ROLE_SUFFIX.get(row.get("role"), ""),
        "model": row.get("model", "?"), "cells": cells,
        "iqm": _ci(row.get("iqm")), "poi": _ci(poi, 2),
        "poi_title": f"P({row.get('method')} > {poi.get('baseline')})" if poi else "",
        "reported": fmt_reported(row.get("reported")),
        "reported_title": ((row.get("reported") or {}).get("source") or "") if row.get("reported") else "",
        "verdict": _verdict_view(row.get("verdict")) if row.get("role") == "method" or row.get("verdict") else None,
        "links": [{"label": n, "url": u} for n, u in run_links(row, ui)],
    }


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------

def _data_uri(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _safe_part(s: str) -> bool:
    return bool(s) and s not in (".", "..") and "/" not in s and "\\" not in s and "\x00" not in s


def _plots_for(root: Path, paper: str, tier: str) -> list[dict]:
    if not (_safe_part(paper) and _safe_part(tier)):
        return []
    for d in (root / paper / tier, root / "verdicts" / paper / tier):
        found = []
        for name in PLOT_NAMES:
            uri = _data_uri(d / name)
            if uri:
                found.append({"name": name, "src": uri, "tier": tier,
                              "alt": f"{paper} {tier}: {name[:-4].replace('_', ' ')}"})
        if found:
            return found
    return []


def _passk_plots(lb: dict, paper: str, tier: str) -> list[dict]:
    """The paper's pass@k curves at ``tier``, one plot per leaderboard table (rows of one protocol)."""
    out = []
    for t in lb.get("tables", []):
        rows = [r for r in t.get("rows", []) if t.get("tier") == tier and paper in r.get("papers", [r["paper"]])]
        alt = f"{paper} {tier}: pass@k (table {t.get('id')})"
        uri = passk.plot_uri(rows, alt)
        if uri:
            out.append({"name": "passk", "src": uri, "tier": tier, "alt": alt})
    return out


def _atlas(root: Path) -> list[dict]:
    out = []
    uri = _data_uri(root / "entropy_atlas.png")
    if uri:
        out.append({"tier": None, "src": uri, "alt": "entropy atlas"})
    adir = root / "atlas"
    if adir.is_dir():
        tiers = sorted((p.name for p in adir.iterdir() if p.is_dir()),
                       key=lambda t: (TIERS.index(t) if t in TIERS else len(TIERS), t))
        for t in tiers:
            uri = _data_uri(adir / t / "entropy_atlas.png")
            if uri:
                out.append({"tier": t, "src": uri, "alt": f"entropy atlas ({t})"})
    return out


# ---------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------

def _tier_key(t: str) -> tuple:
    return (TIERS.index(t) if t in TIERS else len(TIERS), t)


def context(lb: dict, root: str | Path, *, mlflow_ui: str | None = None) -> dict[str, Any]:
    """The template's view of the leaderboard: plain strings, lists and dicts in a fixed order."""
    root = Path(root)
    tables = []
    for t in lb.get("tables", []):
        benches = list(t.get("benchmarks", []))
        tables.append({"id": t.get("id", "?"), "tier": t.get("tier", "?"), "benches": benches,
                       "benches_json": json.dumps(benches),
                       "columns": [_column_view(b, (t.get("columns") or {}).get(b, {})) for b in benches],
                       "rows": [_row_view(r, benches, mlflow_ui) for r in t.get("rows", [])]})
    not_run = [{"paper": r.get("paper", "?"), "tier": r.get("tier", "paper"), "method": r.get("method", "?"),
                "role_suffix": ROLE_SUFFIX.get(r.get("role"), ""), "model": r.get("model", "?"),
                "reported": fmt_reported(r.get("reported")),
                "reported_title": (r.get("reported") or {}).get("source") or "",
                "verdict": _verdict_view(r.get("verdict") or {"verdict": "not_run"})}
               for r in lb.get("not_run", [])]

    claims = lb.get("claims") or {}
    tiers = sorted({t["tier"] for t in tables} | {r["tier"] for r in not_run}
                   | {k.split("/", 1)[1] for k in claims if "/" in k}, key=_tier_key)
    benches = []
    for t in tables:
        benches += [b for b in t["benches"] if b not in benches]

    papers = list(dict.fromkeys([*lb.get("papers", []),
                                 *(x for t in tables for r in t["rows"] for x in r.get("papers", [r["paper"]])),
                                 *(r["paper"] for r in not_run), *(k.split("/", 1)[0] for k in claims)]))
    pages = []
    for p in papers:
        rows = [{**r, "table": t["id"]} for t in tables for r in t["rows"] if p in r.get("papers", [r["paper"]])]
        pt = sorted({k.split("/", 1)[1] for k in claims if k.split("/", 1)[0] == p and "/" in k}
                    | {r["tier"] for r in rows}, key=_tier_key)
        blocks = []
        for tier in pt:
            c = claims.get(f"{p}/{tier}")
            blocks.append({
                "tier": tier,
                "counts": ", ".join(f"{k}: {v}" for k, v in sorted((c or {}).get("counts", {}).items())),
                "claims": [{"id": x.get("id", "?"), "statement": x.get("statement", ""),
                            "verdict": _verdict_view({"verdict": x.get("verdict", "not_run")})}
                           for x in (c or {}).get("claims", [])],
                "has_claims": c is not None,
                "plots": (_plots_for(root, p, tier) + _passk_plots(lb, p, tier) + passk.support_plots(root, p, tier)
                          + analysis_plots.plots_for(root, p, tier)),
            })
        pages.append({"id": p, "rows": rows, "blocks": blocks,
                      "not_run": [r for r in not_run if r["paper"] == p]})
    return {"tables": tables, "not_run": not_run, "tiers": tiers, "benches": benches, "pages": pages,
            "atlas": _atlas(root), "atlas_rows": [
                {**a, "residual": "—" if a.get("mean_residual") is None else f"{a['mean_residual']:+.4f}",
                 "ci": "—" if not a.get("ci95") or None in a["ci95"] else f"[{a['ci95'][0]:+.4f}, {a['ci95'][1]:+.4f}]"}
                for a in lb.get("atlas", [])], "root_name": root.name or str(root), "mlflow_ui": mlflow_ui,
            "verdicts": VERDICTS, "other_papers": lb.get("other_papers") or []}


def to_html(lb: dict, root: str | Path, *, mlflow_ui: str | None = None) -> str:
    """The report as one HTML string (deterministic for the same ``lb`` and files under ``root``)."""
    return _env().get_template(TEMPLATE).render(**context(lb, root, mlflow_ui=mlflow_ui))


def write_report(lb: dict, root: str | Path, out_path: str | Path, *, mlflow_ui: str | None = None) -> Path:
    """Render and write the report atomically; returns its path."""
    return atomic_write_text(out_path, to_html(lb, root, mlflow_ui=mlflow_ui))
