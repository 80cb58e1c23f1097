"""Text formatting shared by the Markdown leaderboard and the HTML report (cells, reported numbers, verdicts,
run links)."""
from __future__ import annotations


def fmt_seeds(seeds) -> str:
    return ", ".join(f"{k}={v}" for k, v in seeds.items()) if isinstance(seeds, dict) else str(seeds)


def fmt_cell(c: dict | None) -> str:
    if not c:
        return "—"
    return f"{c['mean']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"


def fmt_reported(rep: dict | None) -> str:
    if not rep or not rep.get("values"):
        return "—"
    vals = ", ".join(f"{k} {v:g}" for k, v in list(rep["values"].items())[:4])
    return f"{rep['model']}: {vals}"


def verdict_text(v: dict | None) -> str:
    if not v:
        return "—"
    s = v["verdict"]
    if s == "inconclusive" and v.get("more_seeds") is not None:
        s += f" (~{v['more_seeds']} more seeds)"
    elif s == "inconclusive" and "seeds_needed" in v:
        s += f" (needs {v['seeds_needed']} seeds)"
    return s


def run_links(row: dict, ui: str | None = None) -> list[tuple[str, str | None]]:
    """(label, url) per training run of a row: the result file and its content hash, or, when ``ui`` names an
    MLflow UI (a report built next to its store), the MLflow run."""
    out = []
    for r in row.get("runs", []):
        who = f"{r['paper']}/" if r.get("paper") and len(row.get("papers", [])) > 1 and ui else ""
        if ui:
            rid, exp = r.get("mlflow_run_id"), r.get("mlflow_experiment_id")
            if rid:
                out.append((f"{who}seed{r['seed']}:{rid[:8]}", f"{ui}/#/experiments/{exp}/runs/{rid}" if exp else None))
        else:
            out.append((f"seed{r['seed']}:{r['result_hash'][:12]}", r.get("file")))
    return out
