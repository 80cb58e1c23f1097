"""``harness``: one entry point per verb (methods, papers, validate, pretrain, train, rank, verdict, pin, readme, verify)."""
from __future__ import annotations

import argparse
import os
import sys

from harness.config import ConfigError
from harness.face.data import cmd_rank
from harness.face.models import cmd_cold_start, cmd_prepare_model, cmd_pretrain, cmd_task_report
from harness.face.results import (cmd_atlas, cmd_cite, cmd_leaderboard, cmd_manifest, cmd_pin, cmd_readme,
                                  cmd_release, cmd_verdict, cmd_verify_results)


def cmd_methods(a) -> int:
    from harness.methods.registry import all_methods

    for m in all_methods().values():
        ver = f" v{m.version}" if m.version > 1 else ""
        print(f"{m.name:<12} {m.point:<9} paper={m.paper:<18}{ver} source: {m.source}")
        if a.verbose:
            for k, hp in m.hparams.items():
                print(f"    {k} = {hp.default!r} [{hp.unit}] {hp.help} (type {hp.type_name}; from {hp.source})")
            for k, v in m.trl_overrides.items():
                print(f"    TRL {k} = {v!r}")
    return 0


def cmd_settings(a) -> int:
    from harness.config.tiers import BLOCKS, describe

    from harness.data.chat_sft import ColdStartSpec

    for block, cls in [*BLOCKS.items(), ("model.cold_start", ColdStartSpec)]:
        print(f"{block}{'.<name>' if block == 'benchmarks' else ''}: {cls.__name__}: {(cls.__doc__ or '').strip()}")
        for line in describe(cls):
            print(f"    {line}")
    return 0


def cmd_papers(a) -> int:
    from harness.report.status import paper_status

    for row in paper_status():
        tiers = "  ".join(f"{t}={s}" for t, s in row["tiers"].items())
        print(f"{row['paper']:<20} arXiv {row['arxiv']:<11} methods={','.join(row['methods'])}  {tiers}")
    return 0


def cmd_validate(a) -> int:
    from harness.config import load_run_config, run_papers
    from harness.plan import job_dir, jobs, resolve_job

    cfg = load_run_config(_kv(a.config))  # coerced and checked as the Snakefile does (harness.config)
    papers = run_papers(cfg)
    distinct = set()  # cards whose resolved jobs agree share them (the DAG trains each once)
    for paper in papers:
        for m, s in jobs({**cfg, "paper": paper}):
            distinct.add(job_dir(resolve_job(paper, cfg["tier"], m, s, check_trl=True)))
    print(f"ok: {', '.join(papers)} [{cfg['tier']}], {len(distinct)} jobs")
    return 0


def cmd_job(a) -> int:
    from harness.plan import resolve_job
    from harness.results import atomic_write_json

    job = resolve_job(a.paper, a.tier, a.method, a.seed, check_trl=True)
    atomic_write_json(a.out, job)
    print(f"wrote {a.out} (job_key {job['job_key']})")
    return 0


def cmd_train(a) -> int:
    from harness.track import configure
    from harness.train.job import main_train

    configure(a.mlflow_timeout)  # one bounded attempt to reach the tracking store (harness.track)
    return main_train(a)


def _timeout_arg(s) -> None:
    from harness.track import TIMEOUT_S

    s.add_argument("--mlflow-timeout", type=float, default=TIMEOUT_S,
                   help="seconds of the one attempt to reach the MLflow store (MLflow's retries off); then a warning "
                        "and the results as always (default %(default)s; the run config's mlflow_timeout_s)")


def cmd_eval_heldout(a) -> int:
    from harness.evaluate.heldout import check_job, evaluate_heldout_job
    from harness.evaluate.record import format_benchmarks, parse_source

    if a.job:  # a job resolved once (job.json); the checkpoint is named by --source (absent: the base model)
        if a.paper or a.tier or a.method or a.train_seed is not None:
            raise ConfigError("--job replaces --paper/--tier/--method/--train-seed; name the checkpoint with --source")
        job, source = check_job(a.job), parse_source(a.source)
    else:  # resolve the job from the card; the base model takes the job of the baseline's first seed
        from harness.config import load_card
        from harness.plan import resolve_job

        if not (a.paper and a.tier) or a.source:
            raise ConfigError("eval-heldout needs --job [--source ...] or --paper and --tier [--method --train-seed]")
        method = a.method or "base"
        if method != "base" and a.train_seed is None:
            raise ConfigError(f"--method {method} needs --train-seed")
        card = load_card(a.paper)
        if a.tier not in card["tiers"]:
            raise ConfigError(f"paper {a.paper!r} has no tier {a.tier!r}; valid: {', '.join(card['tiers'])}")
        seed = int(card["tiers"][a.tier]["seeds"][0]) if method == "base" else a.train_seed
        job = resolve_job(a.paper, a.tier, card["baseline"] if method == "base" else method, seed)
        source = {"paper": a.paper, "tier": a.tier, "method": method,
                  **({} if method == "base" else {"seed": a.train_seed})}
    r = evaluate_heldout_job(job, a.model_dir, data_dir=a.data_dir, out=a.out, seed=a.seed, k=a.k, source=source,
                             threads=a.threads)
    print("\n".join(format_benchmarks(r)))
    print(f"wrote {a.out} ({r['wall_seconds']} s)")
    return 0


def cmd_verify(a) -> int:
    from harness.verify import cli_main

    return cli_main(a.rest)


def _kv(items) -> dict:
    """``key=value`` overrides as text: harness.config.coerce_run_config types them, as it does Snakemake's."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--config expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    from harness.config.tiers import EvalSpec

    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("methods", help="list registered methods (paper, extension point, source)")
    s.add_argument("--verbose", "-v", action="store_true", help="also list hyperparameters with units")
    s.set_defaults(fn=cmd_methods)
    sub.add_parser("papers", help="list replications and their status per tier").set_defaults(fn=cmd_papers)
    s = sub.add_parser("validate", help="validate the run config (config/config.yaml + key=value overrides)")
    s.add_argument("config", nargs="*", help="overrides, e.g. paper=entropy_mechanism tier=smoke")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("pretrain", help="pre-train the smoke tier's tiny model (models/<key>/spec.json or a job.json)")
    s.add_argument("--spec", "--job", dest="spec", required=True,
                   help="the model's spec (model, pretrain, data: rule model_spec) or a resolved job")
    s.add_argument("--out", required=True); s.add_argument("--threads", type=int, default=2)
    s.add_argument("--pinned-root", default=None, help="results folder: restore its pinned base model of the same "
                   "key (models/<key>/, files checked against its MANIFEST.json) instead of pre-training")
    s.set_defaults(fn=cmd_pretrain)
    s = sub.add_parser("task-report", help="what a smoke task offers RL, measured on a job's base model (lengths, "
                       "forks, phases, redundancy, truncation, tool use, accuracy): JSON + plot")
    s.add_argument("--job", required=True, help="a resolved smoke job (job.json)")
    s.add_argument("--model-dir", required=True); s.add_argument("--out-dir", required=True)
    s.add_argument("--k", type=int, default=4, help="samples per held-out problem (default 4)")
    s.add_argument("--n", type=int, default=None, help="first n held-out problems (default: the tier's eval n_val)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_task_report)
    s = sub.add_parser("settings", help="every tier setting of a card: default, unit, source (harness/config/tiers.py)")
    s.set_defaults(fn=cmd_settings)
    s = sub.add_parser("job", help="resolve one (paper, tier, method, seed) into a job file (what the DAG writes)")
    for k in ("paper", "tier", "method", "out"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.set_defaults(fn=cmd_job)
    s = sub.add_parser("train", help="run one resolved training job (job.json, written by the DAG or `harness job`)")
    for k in ("job", "model-dir", "out"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--data-dir", default="../shared/data")
    s.add_argument("--mlflow-uri", default=None)
    _timeout_arg(s)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--upstream", nargs="*", default=[], metavar="NAME=PATH",
                   help="paths of the job's upstream inputs (default: found from the job file's place in the work dir)")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("rank", help="rank a ranking run's training examples by their accuracy history (1-shot RLVR "
                       "data selection: std, lim, random)")
    s.add_argument("--history", required=True, help="train_history.json of a job that recorded it")
    s.add_argument("--rule", required=True, choices=("std", "lim", "random"))
    s.add_argument("--seed", type=int, default=0, help="seed of the random rule")
    s.add_argument("--out", required=True); s.add_argument("--show", type=int, default=3, help="examples printed")
    s.set_defaults(fn=cmd_rank)
    s = sub.add_parser("eval-heldout", help="evaluate a checkpoint on the tier's held-out set (k samples + greedy)")
    s.add_argument("--model-dir", required=True); s.add_argument("--out", required=True)
    s.add_argument("--job", default=None, help="resolved job (job.json): its model, data and eval settings")
    s.add_argument("--source", default=None, help="with --job, what the checkpoint is: method=M[,seed=S,tier=T,"
                   "job_key=K,paper=P] (absent: the base model)")
    s.add_argument("--paper", default=None, help="without --job: resolve the job from this card")
    s.add_argument("--tier", default=None, help="without --job: the card's tier")
    s.add_argument("--method", default=None, help="without --job: method that trained the checkpoint (default "
                   "'base': the base model)")
    s.add_argument("--train-seed", type=int, default=None, help="without --job: training seed of the checkpoint")
    s.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation (part of the protocol)")
    s.add_argument("--k", type=int, default=None,
                   help=f"samples per problem (default: the job's eval.final_k, default {EvalSpec().final_k})")
    s.add_argument("--data-dir", default="../shared/data")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_eval_heldout)
    s = sub.add_parser("leaderboard", help="leaderboard.md, leaderboard.json and the HTML report from result files")
    s.add_argument("--results-dir", default="results", help="pinned results or a DAG work dir (default results)")
    s.add_argument("--out-dir", default=None, help="where to write (default: the results dir)")
    s.add_argument("--mlflow-ui", default=None, help="link runs to this MLflow UI (a report built next to its store, e.g. http://127.0.0.1:5000); default: link the result files and their hashes")
    s.add_argument("--manifest", action="store_true", help="also rebuild the results manifest (pinned results)")
    s.set_defaults(fn=cmd_leaderboard)
    s = sub.add_parser("verdict", help="claims, law fits, plots and the reproducibility check of a replication")
    s.add_argument("--paper", required=True); s.add_argument("--tier", required=True)
    s.add_argument("--out-dir", required=True); s.add_argument("--pinned-root", default="results",
                                                       help="the pinned results folder (the card's pinned verdict names the runs to compare with)")
    s.add_argument("--mlflow-uri", default=None)
    _timeout_arg(s)
    s.add_argument("--task-report", default=None, help="the base model's task report (smoke tasks other than "
                   "addition): its hash and checks go into the verdict, and `harness pin` pins it")
    s.add_argument("--evals", nargs="*", default=[], help="eval_result files of the checkpoints (held-out set, "
                   "benchmarks) of this replication")
    s.add_argument("--analyses", nargs="*", default=[], help="analysis_result files of this replication "
                   "(rules/analyze.smk: WORK/analysis/<paper>/<tier>/<name>.json), read by the claims that name them")
    s.add_argument("results", nargs="+", help="result.json files of the runs")
    s.set_defaults(fn=cmd_verdict)
    s = sub.add_parser("pin", help="copy checked replications into results/ (verdicts, plots, the runs they judged)")
    s.add_argument("--paper", required=True, help="a paper id, a comma-separated list, or all")
    s.add_argument("--tier", required=True)
    s.add_argument("--work-dir", default="work"); s.add_argument("--results-dir", default="results")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--rerun", action="store_true", help="pin nothing: judge the work dir's fresh rerun of the pinned "
                   "replication against it and record the result in results/<paper>/<tier>/rerun.json")
    how.add_argument("--use-pinned", action="store_true", help="pin nothing: where the work dir retrained a run or "
                   "evaluation that is pinned (same path, same job and numbers, another hash), put the pinned record "
                   "in its place (the retrained kept as <file>.retrained), so the re-judged verdict lists the pinned "
                   "files and pinning orphans no other card's verdict")
    s.set_defaults(fn=cmd_pin)
    s = sub.add_parser("prepare-model", help="resolve a job's real (hub) base model to a local directory")
    s.add_argument("--spec", "--job", dest="spec", required=True, help="the model's spec.json or a resolved job")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_prepare_model)
    s = sub.add_parser("cold-start", help="fine-tune a job's hub base model on its model.cold_start chat rows (the "
                       "SFT stage before RL; harness.train.cold_start)")
    s.add_argument("--spec", "--job", dest="spec", required=True, help="the model's spec.json or a resolved job")
    s.add_argument("--out", required=True)
    s.add_argument("--data-dir", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_cold_start)
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
    s.add_argument("--results-dir", default="results", help="pinned results or a work dir (every verdict in it)")
    s.add_argument("--tier", default=None, help="only this tier's replications")
    s.add_argument("--out-dir", default="results")
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
    except BrokenPipeError:  # the reader went away (`harness cite ... | head`): not an error of ours
        try:  # Python flushes stdout at exit: point it at /dev/null (the recipe of Python's signal docs)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
