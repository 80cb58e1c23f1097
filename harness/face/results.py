"""``harness`` verbs about results: verdicts, pinning (and rerun records), the results manifest, citations,
releases, the atlas, the leaderboard and the README's generated tables."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_leaderboard(a) -> int:
    from harness.report.leaderboard import write

    paths = write(a.results_dir, a.out_dir, mlflow_ui=a.mlflow_ui)
    if a.manifest:
        from harness.report.artifacts import build_manifest

        build_manifest(Path(a.results_dir))
    for k, p in paths.items():
        print(f"wrote {p}")
    return 0


def cmd_verdict(a) -> int:
    from harness.claims.verdict import build_verdict, format_verdict
    from harness.report.plots import verdict_plots

    from harness.track import configure, format_tracking, tracking_report

    configure(a.mlflow_timeout)
    out_dir = Path(a.out_dir)
    v = build_verdict(a.paper, a.tier, a.results, out_dir, Path(a.pinned_root), evals=a.evals, draw=verdict_plots,
                      task_report=a.task_report, tracking=lambda results: tracking_report(a.mlflow_uri, results),
                      analyses=a.analyses)
    if a.mlflow_uri and v["tracking"]["store"] == "ok":
        from harness.track import log_verdict_artifacts

        lost = set(v["tracking"]["lost"].values())
        rids = [r["mlflow_run_id"] for r in v["runs"].values() if r.get("mlflow_run_id") not in (None, *lost)]
        for err in log_verdict_artifacts(a.mlflow_uri, rids, [out_dir / "verdict.json", *sorted(out_dir.glob("*.png"))]):
            print(f"warning: MLflow artifact logging failed ({err}); the verdict is in {out_dir}")
    print(format_verdict(v))
    print("\n".join(format_tracking(v["tracking"], indent="  ")))
    return 0


def cmd_pin(a) -> int:
    from harness.config import load_run_config, run_papers
    from harness.report.pin import check_pinnable, pin_files, rebuild

    papers = run_papers({**load_run_config(), "paper": a.paper, "tier": a.tier})  # the DAG's reading of paper=
    if a.rerun:
        from harness.report.artifacts import build_manifest
        from harness.report.rerun import record_rerun

        for paper in papers:
            path, r = record_rerun(paper, a.tier, Path(a.work_dir), Path(a.results_dir))
            print(f"rerun of {paper} [{a.tier}]: {r['status']}, claims {'identical' if r['claims_identical'] else 'differ'}"
                  f" -> {path}")
        build_manifest(Path(a.results_dir))
        return 0
    if a.use_pinned:
        from harness.report.pin import adopt_pinned, stale_verdicts

        adopted, kept = adopt_pinned(papers, a.tier, Path(a.work_dir), Path(a.results_dir))
        for p in adopted:
            print(f"pinned record adopted (numbers identical; the retrained file kept as {Path(p).name}.retrained): {p}")
        for k in kept:
            print(f"kept (a new result): {k}")
        if not adopted:
            print("nothing to adopt: the verdicts list no retrained copy of a pinned result")
            return 0
        stale = stale_verdicts(Path(a.work_dir), adopted, {(p, a.tier) for p in papers})
        judge = ",".join([*papers, *(p for p, t in stale if t == a.tier)])
        if stale:
            print(f"other verdicts in {a.work_dir} list retrained files now set aside, so the atlas step refuses them "
                  f"until they are re-judged (or removed): {', '.join(f'{p} [{t}]' for p, t in stale)}")
            for t in sorted({t for _, t in stale} - {a.tier}):
                print(f"  re-judge [{t}]: `snakemake --cores 2 --config paper={','.join(p for p, u in stale if u == t)} "
                      f"tier={t} work_dir={a.work_dir}`")
        print(f"{len(adopted)} result(s) adopted. Re-judge, then pin: `snakemake --cores 2 --config paper={judge} "
              f"tier={a.tier} work_dir={a.work_dir}` (reruns the verdicts and analyses that read them), then "
              f"`harness pin --paper {a.paper} --tier {a.tier} --work-dir {a.work_dir}`")
        return 0
    checked = check_pinnable(papers, a.tier, Path(a.work_dir), Path(a.results_dir))
    for paper in papers:
        path = pin_files(paper, a.tier, Path(a.work_dir), Path(a.results_dir), checked[paper])
        print(f"pinned {paper} [{a.tier}] into {path}")
    rebuild(Path(a.results_dir))  # atlas, leaderboard, report and manifest once for all of them
    return 0


def cmd_verify_results(a) -> int:
    from harness.report.artifacts import verify_results

    problems = verify_results(Path(a.results_dir) if a.results_dir else None)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print(f"{len(problems)} problems" if problems else "all results verified")
    return 1 if problems else 0


def cmd_manifest(a) -> int:
    from harness.report.artifacts import build_manifest

    print(f"wrote {build_manifest(Path(a.results_dir) if a.results_dir else None)}")
    return 0


def cmd_cite(a) -> int:
    from harness.report.artifacts import citation

    print(citation(a.hash, Path(a.results_dir) if a.results_dir else None))
    return 0


def cmd_release(a) -> int:
    from harness.report.artifacts import release

    print(f"released {release(a.name, Path(a.results_dir) if a.results_dir else None)}")
    return 0


def cmd_atlas(a) -> int:
    from harness.report.atlas import build_atlas, pinned_runs

    groups = {k: v for k, v in pinned_runs(Path(a.results_dir)).items() if a.tier in (None, k[1])}
    out = Path(a.out_dir)
    atlas = build_atlas(groups, out / "atlas.json", out / "entropy_atlas.png")
    for name, page in atlas["pages"].items():
        for m, e in page["methods"].items():
            print(f"{name:<28} {m:<14} {e['verdict']:<12} residual {e['mean_residual']:+.4f} "
                  f"CI [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]")
    return 0


def cmd_readme(a) -> int:
    from harness.methods.registry import all_methods
    from harness.report.status import method_rows, update_readme

    changed = update_readme(check=a.check, methods=method_rows(all_methods().values()))
    if a.check and changed:
        print("README.md tables (status, methods, overhead, GPU check) are out of date: run `harness readme`", file=sys.stderr)
        return 1
    print("README.md tables (status, methods, overhead, GPU check) " + ("updated" if changed else "up to date"))
    return 0
