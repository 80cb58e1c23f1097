"""Reported-value verdicts of released checkpoints (tier ``released``): does our evaluation of the checkpoint the
authors released give the number their paper prints? Reads ``eval_result`` files (written by
:mod:`harness.evaluate.released`) and the card's ``released`` block (:mod:`harness.config.released`) only.

For each number a card reports (checkpoint x benchmark x metric, in percent):

- measured: the metric of our evaluation (same scale, converted to percent);
- interval: what our evaluation can tell apart from the printed number. On the whole benchmark (no ``limit``) the
  problems are the paper's, so only our sampling varies: avg@k / pass@1 and pass@k get a percentile bootstrap over
  each problem's k samples (its correct count redrawn as Binomial(k, c/k)), and greedy accuracy (and maj@k, whose
  vote keys the result does not keep) is a point. On a subset (``limit``) the result's own CI, which resamples
  problems too, stands in for the whole benchmark;
- verdict: ``reproduced`` when the reported value lies within the interval widened by the entry's tolerance (points;
  engine and precision differences), ``not_reproduced`` when it lies outside, ``inconclusive`` when it lies inside
  but only a subset was evaluated (a subset cannot confirm a full-benchmark number);
- a checkpoint evaluated from an offline stand-in (``model_source`` is not the hub at the card's revision) is not the
  released checkpoint: its verdicts are ``not_run``, with the verdict the numbers would give as ``stand_in_verdict``.

CLI (rules/released.smk): ``python -m harness.claims.released --paper P --out verdict.json EVAL.json ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import numpy as np

from harness.config import ConfigError, load_card
from harness.config.released import RELEASED_TIER, Checkpoint, Reported, released_of
from harness.results import atomic_write_json, provenance
from harness.results.packing import read_result

KIND = "released_verdict"
ITERS = 2000
LEVEL = 0.95


def sampling_interval(per_problem: list[dict], k: int, metric: str, *, iters: int = ITERS, seed: int = 0,
                      level: float = LEVEL) -> tuple[list[float], str]:
    """Percentile interval of a metric (fraction) over our own sampling only, problems fixed: each problem's correct
    count is redrawn as Binomial(k, c/k). Greedy accuracy and maj@k: the point itself (no sampling to redraw)."""
    c = np.array([p["n_correct"] for p in per_problem], dtype=float)
    if metric == "maj@k":  # per-problem majority verdicts, no vote keys: nothing to redraw
        v = float(np.mean([bool(p["maj_correct"]) for p in per_problem]))
        return [v, v], "point (maj@k: the result keeps no vote keys to redraw)"
    if metric == "greedy_acc" or k < 2:
        v = float(c.mean() / k)
        return [v, v], "point (no sampling to redraw)"
    rng = np.random.default_rng(seed)
    draws = rng.binomial(k, c / k, size=(iters, len(c)))
    stat = (draws > 0).mean(axis=1) if metric == "pass@k" else (draws / k).mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(stat, [a, 1 - a])
    return [float(lo), float(hi)], f"bootstrap over each problem's {k} samples (problems fixed), {iters} draws"


def judge(reported: Reported, entry: dict, *, full_set: bool, seed: int = 0) -> dict:
    """One reported number against one benchmark entry of an eval_result (module docstring)."""
    m = entry["metrics"].get(reported.metric)
    if m is None:
        return {"verdict": "not_run", "reason": f"the evaluation has no metric {reported.metric!r} (has "
                                                f"{', '.join(entry['metrics'])})"}
    if full_set:
        ci, how = sampling_interval(entry["per_problem"], int(entry["k"]), reported.metric, seed=seed)
    else:
        ci, how = list(m["ci"]), f"{m.get('ci_method', 'bootstrap')} (a subset: problems resampled too)"
    tol = reported.tolerance / 100
    low, high = ci[0] - tol, ci[1] + tol
    inside = low <= reported.percent / 100 <= high
    out = {"measured_percent": 100 * m["value"], "interval_percent": [100 * ci[0], 100 * ci[1]],
           "interval_method": how, "band_percent": [100 * low, 100 * high]}
    if not inside:
        side = "above" if reported.percent / 100 > high else "below"
        return {**out, "verdict": "not_reproduced",
                "reason": f"reported {reported.percent:g} % lies {side} the band [{100 * low:.2f}, {100 * high:.2f}] "
                          f"(our interval +- {reported.tolerance:g} points)"}
    if not full_set:
        return {**out, "verdict": "inconclusive",
                "reason": f"reported value inside the band, but only {entry['n_problems']} problems (a limit) were "
                          "evaluated: a subset cannot confirm a full-benchmark number"}
    return {**out, "verdict": "reproduced", "reason": "reported value inside our interval +- the tolerance"}


def _is_exact(ckpt: Checkpoint, source: dict | None) -> bool:
    return isinstance(source, dict) and source.get("hub") == ckpt.hub and source.get("revision") == ckpt.revision


def _index(evals: list[dict], paths: list[str]) -> dict:
    """(checkpoint key, benchmark) -> eval_result, each checked to be a released evaluation."""
    out = {}
    for e, p in zip(evals, paths):
        rel = e.get("released") if isinstance(e, dict) else None
        if not isinstance(e, dict) or e.get("kind") != "eval_result" or not rel:
            raise ConfigError(f"{p}: not a released checkpoint's eval_result (harness.evaluate.released)")
        for b in e["benchmarks"]:
            key = (rel["checkpoint"]["key"], b)
            if key in out:
                raise ConfigError(f"{p}: a second evaluation of checkpoint {key[0]} on {b}")
            out[key] = e
    return out


def released_verdict(card: dict, evals: list[dict], paths: Sequence[str] | None = None) -> dict:
    """The verdict of a card's released checkpoints from their eval_results (one per checkpoint x benchmark)."""
    rel = released_of(card)
    index = _index(evals, list(paths or [f"eval #{i}" for i in range(len(evals))]))
    claims, checkpoints, used = [], {}, []
    for ck in rel.checkpoints:
        sources = []
        for rep in ck.reported:
            e = index.get((ck.key, rep.benchmark))
            base = {"id": f"{ck.name}/{rep.benchmark}", "checkpoint": ck.name, "benchmark": rep.benchmark,
                    "metric": rep.metric, "reported_percent": rep.percent, "source": rep.source,
                    "tolerance_points": rep.tolerance}
            if e is None:
                claims.append({**base, "verdict": "not_run", "reason": "no evaluation of this checkpoint here"})
                continue
            if e["released"]["protocol"] != rel.benchmarks[rep.benchmark]:
                raise ConfigError(f"evaluation {e.get('content_hash', '')[:12]} of {ck.name} on {rep.benchmark} ran "
                                  f"protocol {e['released']['protocol']}, the card states {rel.benchmarks[rep.benchmark]}")
            entry = e["benchmarks"][rep.benchmark]
            full = e["protocol"]["benchmarks"][rep.benchmark]["problems"]["limit"] is None  # the whole benchmark
            j = judge(rep, entry, full_set=full)
            src = e["released"].get("model_source")
            sources.append(src)
            c = {**base, **j, "n_problems": entry["n_problems"], "k": entry["k"], "full_set": bool(full),
                 "eval_hash": e.get("content_hash"), "protocol_hash": entry["protocol_hash"]}
            if not _is_exact(ck, src):
                c.update(verdict="not_run", stand_in_verdict=j["verdict"],
                         reason=f"evaluated a stand-in ({json.dumps(src, sort_keys=True)}), not {ck.hub}@"
                                f"{ck.revision[:12]}: the numbers are not the released checkpoint's")
            claims.append(c)
            used.append(e.get("content_hash"))
        checkpoints[ck.name] = {"hub": ck.hub, "revision": ck.revision, "key": ck.key, "method": ck.method,
                                "evaluated": sources[0] if sources else None,
                                "exact": bool(sources) and all(_is_exact(ck, s) for s in sources)}
    counts = {v: sum(c["verdict"] == v for c in claims)
              for v in ("reproduced", "not_reproduced", "inconclusive", "not_run")}
    return {"kind": KIND, "schema_version": 1, "paper": card["id"], "tier": RELEASED_TIER,
            "checkpoints": checkpoints, "claims": claims, "counts": counts,
            "eval_inputs": sorted(h for h in set(used) if h), "protocols": rel.benchmarks,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "provenance": provenance()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.claims.released",
                                description="Reported-value verdicts of a card's released checkpoints.")
    p.add_argument("--paper", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("evals", nargs="*", help="eval_result files of the released checkpoints")
    a = p.parse_args(argv)
    try:
        evals = []
        for path in a.evals:
            evals.append(read_result(path, ConfigError))  # a pinned (packed) evaluation reads as the plain one
        v = released_verdict(load_card(a.paper), evals, a.evals)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(a.out, v, hashed=True)
    for c in v["claims"]:
        extra = f" (stand-in: {c['stand_in_verdict']})" if "stand_in_verdict" in c else ""
        measured = f"{c['measured_percent']:.1f}" if "measured_percent" in c else "-"
        print(f"{c['verdict']:<15} {c['id']:<40} reported {c['reported_percent']:g} measured {measured}{extra}")
    print(f"wrote {a.out}: {v['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
