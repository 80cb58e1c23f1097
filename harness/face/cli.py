"""``harness``: one entry point per verb (methods, papers, validate, pretrain, train, verdict, pin, readme, verify)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.config import ConfigError


def cmd_methods(a) -> int:
    from harness.methods.registry import all_methods

    for m in all_methods().values():
        print(f"{m.name:<12} {m.point:<9} paper={m.paper:<18} source: {m.source}")
        if a.verbose:
            for k, hp in m.hparams.items():
                print(f"    {k} = {hp.default!r} [{hp.unit}] {hp.help} (from {hp.source})")
            for k, v in m.trl_overrides.items():
                print(f"    TRL {k} = {v!r}")
    return 0


def cmd_papers(a) -> int:
    from harness.report.status import paper_status

    for row in paper_status():
        tiers = "  ".join(f"{t}={s}" for t, s in row["tiers"].items())
        print(f"{row['paper']:<20} arXiv {row['arxiv']:<11} methods={','.join(row['methods'])}  {tiers}")
    return 0


def cmd_validate(a) -> int:
    from harness.config import load_run_config
    from harness.plan import jobs, resolve_job

    cfg = load_run_config(_kv(a.config))
    for m, s in jobs(cfg):
        resolve_job(cfg["paper"], cfg["tier"], m, s, check_trl=True)
    print(f"ok: {cfg['paper']} [{cfg['tier']}], {len(jobs(cfg))} jobs")
    return 0


def cmd_pretrain(a) -> int:
    import torch

    from harness.data import smoke
    from harness.config import load_card

    torch.set_num_threads(a.threads)
    t = load_card(a.paper)["tiers"][a.tier]
    if t["model"]["kind"] != "smoke":
        raise ConfigError(f"tier {a.tier!r} of {a.paper!r} has model kind {t['model']['kind']!r}; pretrain is for 'smoke'")
    smoke.pretrain(a.out, {**t["model"], **t["pretrain"]}, t["data"]["split_seed"], t["data"]["n_val"])
    return 0


def cmd_train(a) -> int:
    from harness.train.job import main_train

    return main_train(a)


def cmd_eval_heldout(a) -> int:
    from harness.evaluate.heldout import evaluate_heldout

    source = None if a.method == "base" else {"paper": a.paper, "tier": a.tier, "method": a.method, "seed": a.train_seed}
    r = evaluate_heldout(a.paper, a.tier, a.model_dir, data_dir=a.data_dir, out=a.out, seed=a.seed, k=a.k,
                         source=source, threads=a.threads)
    for name, e in r["benchmarks"].items():
        print(f"{name:<16} n={e['n_problems']:<4} k={e['k']:<3} " + "  ".join(
            f"{m}={v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for m, v in e["metrics"].items()))
    print(f"wrote {a.out} ({r['wall_seconds']} s)")
    return 0


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

    out_dir = Path(a.out_dir)
    v = build_verdict(a.paper, a.tier, a.results, out_dir, Path(a.pinned_dir), evals=a.evals, draw=verdict_plots)
    if a.mlflow_uri:
        from harness.track import log_verdict_artifacts

        rids = [r["mlflow_run_id"] for r in v["runs"].values() if r.get("mlflow_run_id")]
        for err in log_verdict_artifacts(a.mlflow_uri, rids, [out_dir / "verdict.json", *sorted(out_dir.glob("*.png"))]):
            print(f"warning: MLflow artifact logging failed ({err}); the verdict is in {out_dir}")
    print(format_verdict(v))
    return 0


def cmd_pin(a) -> int:
    from harness.report.pin import pin

    path = pin(a.paper, a.tier, Path(a.work_dir), Path(a.results_dir))
    print(f"pinned {a.paper} [{a.tier}] into {path}")
    return 0


def cmd_prepare_model(a) -> int:
    from harness.data.realdata import prepare_model

    print(f"model ready in {prepare_model(a.paper, a.tier, Path(a.out))}")
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

    if a.results:
        groups: dict = {}
        for p in a.results:
            r = json.loads(Path(p).read_text())
            groups.setdefault((r["job"]["paper"], r["job"]["tier"]), []).append(r)
    else:
        groups = pinned_runs(Path(a.results_dir))
    out = Path(a.out_dir)
    atlas = build_atlas(groups, out / "atlas.json", out / "entropy_atlas.png")
    for name, page in atlas["pages"].items():
        for m, e in page["methods"].items():
            print(f"{name:<28} {m:<14} {e['verdict']:<12} residual {e['mean_residual']:+.4f} "
                  f"CI [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]")
    return 0


def cmd_readme(a) -> int:
    from harness.report.status import update_readme

    changed = update_readme(check=a.check)
    if a.check and changed:
        print("README.md status table is out of date: run `harness readme`", file=sys.stderr)
        return 1
    print("README.md status table " + ("updated" if changed else "up to date"))
    return 0


def cmd_verify(a) -> int:
    from harness.verify import cli_main

    return cli_main(a.rest)


def _kv(items) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--config expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("methods", help="list registered methods (paper, extension point, source)")
    s.add_argument("--verbose", "-v", action="store_true", help="also list hyperparameters with units")
    s.set_defaults(fn=cmd_methods)
    sub.add_parser("papers", help="list replications and their status per tier").set_defaults(fn=cmd_papers)
    s = sub.add_parser("validate", help="validate the run config (config/config.yaml + key=value overrides)")
    s.add_argument("config", nargs="*", help="overrides, e.g. paper=entropy_mechanism tier=smoke")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("pretrain", help="pre-train the smoke tier's tiny model")
    s.add_argument("--paper", required=True); s.add_argument("--tier", default="smoke")
    s.add_argument("--out", required=True); s.add_argument("--threads", type=int, default=2)
    s.set_defaults(fn=cmd_pretrain)
    s = sub.add_parser("train", help="run one (paper, method, seed, tier) training job")
    for k in ("paper", "tier", "method", "model-dir", "out"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--data-dir", default="../shared/data")
    s.add_argument("--mlflow-uri", default=None)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("eval-heldout", help="evaluate a checkpoint on the tier's held-out set (k samples + greedy)")
    for k in ("paper", "tier", "model-dir", "out"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--method", default="base", help="method that trained the checkpoint ('base': the base model)")
    s.add_argument("--train-seed", type=int, default=None, help="training seed of the checkpoint")
    s.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation (part of the protocol)")
    s.add_argument("--k", type=int, default=None, help="samples per problem (default: the tier's eval.final_k or 4)")
    s.add_argument("--data-dir", default="../shared/data")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_eval_heldout)
    s = sub.add_parser("leaderboard", help="leaderboard.md, leaderboard.json and the HTML report from result files")
    s.add_argument("--results-dir", default="results", help="pinned results or a DAG work dir (default results)")
    s.add_argument("--out-dir", default=None, help="where to write (default: the results dir)")
    s.add_argument("--mlflow-ui", default="http://127.0.0.1:5000", help="MLflow UI base URL for the run links")
    s.add_argument("--manifest", action="store_true", help="also rebuild the results manifest (pinned results)")
    s.set_defaults(fn=cmd_leaderboard)
    s = sub.add_parser("verdict", help="claims, law fits, plots and the reproducibility check of a replication")
    s.add_argument("--paper", required=True); s.add_argument("--tier", required=True)
    s.add_argument("--out-dir", required=True); s.add_argument("--pinned-dir", required=True)
    s.add_argument("--mlflow-uri", default=None)
    s.add_argument("--evals", nargs="*", default=[], help="eval_result files of the checkpoints (held-out set, "
                   "benchmarks) of this replication")
    s.add_argument("results", nargs="+", help="result.json files of the runs")
    s.set_defaults(fn=cmd_verdict)
    s = sub.add_parser("pin", help="copy a checked run's artifacts into results/<paper>/<tier>/")
    s.add_argument("--paper", required=True); s.add_argument("--tier", required=True)
    s.add_argument("--work-dir", default="work"); s.add_argument("--results-dir", default="results")
    s.set_defaults(fn=cmd_pin)
    s = sub.add_parser("prepare-model", help="resolve a real-model tier's base model to a local directory")
    s.add_argument("--paper", required=True); s.add_argument("--tier", required=True); s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_prepare_model)
    for name, fn, hlp in (("verify-results", cmd_verify_results, "recompute every hash in results/"),
                          ("manifest", cmd_manifest, "rebuild results/manifest.json")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--results-dir", default=None)
        s.set_defaults(fn=fn)
    s = sub.add_parser("cite", help="print a citation (plain text and BibTeX) for a result hash prefix")
    s.add_argument("hash"); s.add_argument("--results-dir", default=None)
    s.set_defaults(fn=cmd_cite)
    s = sub.add_parser("release", help="freeze results/ into results/releases/<name>/")
    s.add_argument("name"); s.add_argument("--results-dir", default=None)
    s.set_defaults(fn=cmd_release)
    s = sub.add_parser("atlas", help="entropy atlas: does each method beat the baseline's reward-entropy curve?")
    s.add_argument("--results-dir", default="results", help="pinned results (used when no result files are given)")
    s.add_argument("--out-dir", default="results")
    s.add_argument("results", nargs="*", help="result.json files of a fresh run")
    s.set_defaults(fn=cmd_atlas)
    s = sub.add_parser("readme", help="regenerate the README's paper/tier status table")
    s.add_argument("--check", action="store_true", help="exit 1 if the table is out of date")
    s.set_defaults(fn=cmd_readme)
    sub.add_parser("eval", help="evaluate a checkpoint on benchmarks through lm-eval (harness eval --help)", add_help=False)
    s = sub.add_parser("verify", help="check math answers: --input cases.jsonl --output out.jsonl", add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:  # its own argument parser: harness verify --input cases.jsonl --output out.jsonl
        from harness.verify import cli_main

        return cli_main(argv[1:])
    if argv[:1] == ["eval"]:  # its own argument parser: harness eval --model-dir D --benchmarks math500 ...
        from harness.evaluate.lmeval import cli_main as eval_main

        return eval_main(argv[1:])
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
