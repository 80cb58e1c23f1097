"""The ``--settings`` argument of an analysis command line: a JSON object, a JSON file, or ``<paper>:<tier>`` (the
card's ``tiers.<tier>.analysis.<name>`` block, with the card as the result's source): one reading for every
analysis command; :func:`check_keys`, the first check of any settings block; and :func:`card_command`, the whole
command line of an analysis that takes its settings so."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Iterable


def settings_arg(text: str, name: str) -> tuple[dict, dict]:
    """(settings, source) from ``--settings``; a bad value raises ValueError naming what is valid."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings: not valid JSON ({e.msg})") from None
    if Path(text).is_file():
        try:
            return json.loads(Path(text).read_text()), {}
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings {text}: not valid JSON ({e.msg})") from None
    paper, sep, tier = text.partition(":")
    if not sep:
        raise ValueError(f"--settings {text!r}: give a JSON object, a JSON file, or <paper>:<tier>")
    from harness.config import load_card

    card = load_card(paper)
    if tier not in card["tiers"]:
        raise ValueError(f"--settings: paper {paper!r} has no tier {tier!r}; valid: {', '.join(card['tiers'])}")
    block = card["tiers"][tier].get("analysis") or {}
    if name not in block:
        raise ValueError(f"--settings: replications/{paper}/card.yaml tiers/{tier} has no analysis.{name} block "
                         f"(analyses there: {', '.join(block) or 'none'})")
    return block[name], {"paper": paper, "tier": tier}


def collect_args(argv: list[str], name: str, inputs_help: str) -> tuple[argparse.Namespace, dict, dict]:
    """(args, settings, source) of ``python -m harness.analyze.<name> collect INPUTS... --settings S --out FILE
    [--source paper=P,tier=T]``: the command line of every per-checkpoint analysis's collector (``--source`` wins
    over the card's)."""
    from harness.analyze.record import parse_source

    c = argparse.ArgumentParser(prog=f"python -m harness.analyze.{name} collect")
    c.add_argument("inputs", nargs="+", help=inputs_help)
    c.add_argument("--settings", required=True, help="JSON object, JSON file, or <paper>:<tier>")
    c.add_argument("--out", required=True)
    c.add_argument("--source", default=None, help="paper=P,tier=T")
    a = c.parse_args(argv)
    raw, src = settings_arg(a.settings, name)
    return a, raw, parse_source(a.source) or src


def checkpoint_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The command line of a per-checkpoint analysis: ``--job``, ``--model-dir``, ``--source``, ``--data-dir``,
    ``--threads``, ``--out``; the analysis adds its own options."""
    p = argparse.ArgumentParser(prog=f"python -m harness.analyze.{name}", description=doc.split("\n\n")[0])
    p.add_argument("--job", required=True, help="a resolved job.json (or a base spec)")
    p.add_argument("--model-dir", required=True, help="the checkpoint")
    p.add_argument("--source", default=None, help="method=M[,seed=S,tier=T,job_key=K] (default: base)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    return p


def checkpoint_command(name: str, doc: str, argv: list[str] | None, *,
                       options: Callable[[argparse.ArgumentParser], None],
                       measure: Callable[[argparse.Namespace], tuple[dict, dict]],
                       report: Callable[[dict, dict], str], parse: Callable[[dict], dict],
                       collect: Callable[[list[dict], dict], dict], report_collected: Callable[[dict], Iterable[str]],
                       collect_help: str) -> int:
    """``python -m harness.analyze.<name> --job J --model-dir M [options] --out FILE`` (one checkpoint:
    ``measure(args)`` gives (settings, result); ``report(record, source)`` its line) and ``... collect INPUTS...
    --settings S --out FILE`` (the card's file: ``parse`` and ``collect`` through :func:`record.collect_files`;
    ``report_collected(record)`` its lines). Exit 2 with the error for a bad argument, setting or input."""
    import time

    from harness.analyze.record import analysis_record, collect_files, write_analysis
    from harness.config import ConfigError
    from harness.evaluate.record import parse_source

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["collect"]:
            a, raw, src = collect_args(argv[1:], name, collect_help)
            r = collect_files(name, a.inputs, raw, a.out, parse=parse, collect=collect, source=src)
            lines = [*report_collected(r), f"wrote {a.out} ({r['content_hash'][:12]})"]
        else:
            p = checkpoint_parser(name, doc)
            options(p)
            a = p.parse_args(argv)
            t0 = time.time()
            settings, result = measure(a)
            src = parse_source(a.source) or {"method": "base"}
            r = write_analysis(analysis_record(name, settings, result, source=src, wall_seconds=time.time() - t0),
                               a.out)
            lines = [f"{report(r, src)} -> {a.out}"]
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def check_keys(raw: dict | None, valid: Iterable[str], name: str) -> dict:
    """A copy of the settings block ``raw`` (None: empty) once every key is among ``valid``; else ValueError naming
    the first unknown key and the valid ones: one wording for every analysis's settings."""
    raw, valid = dict(raw or {}), list(valid)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"{name} settings: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    return raw


def card_command(name: str, doc: str, argv: list[str] | None, run: Callable[[dict, dict, argparse.Namespace], dict],
                 summary: Callable[[dict], Iterable[str]], *, settings_default: str | None = "{}",
                 results_help: str | None = None) -> int:
    """``python -m harness.analyze.<name> [RESULTS...] --settings S --out FILE [--source paper=P,tier=T]``: reads
    the settings (:func:`settings_arg`; ``settings_default`` None makes ``--settings`` required) and the source
    (``--source`` wins over the card's), calls ``run(settings, source, args)`` for the written record, prints its
    ``summary`` lines and the file written; exit 2 with the error for a bad setting, source or input. One home for
    what every card-driven analysis command does, so they fail and report alike."""
    from harness.analyze.record import parse_source
    from harness.config import ConfigError

    p = argparse.ArgumentParser(prog=f"python -m harness.analyze.{name}", description=doc.split("\n\n")[0])
    if results_help:
        p.add_argument("results", nargs="*", help=results_help)
    p.add_argument("--settings", default=settings_default, required=settings_default is None,
                   help="JSON object, JSON file, or <paper>:<tier> (the card's block)")
    p.add_argument("--out", required=True, help=f"the analysis result (WORK/analysis/<paper>/<tier>/{name}.json)")
    p.add_argument("--source", default=None, help="paper=P,tier=T: whose card gave the settings")
    a = p.parse_args(argv)
    try:
        settings, source = settings_arg(a.settings, name)
        r = run(settings, parse_source(a.source) or source, a)
    except (ConfigError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary(r):
        print(line)
    print(f"wrote {a.out} ({r['content_hash'][:12]})")
    return 0
