"""Support analysis of the pass@k boundary papers (``invisible_leash``, arXiv 2507.14843; ``rlvr_boundary``, arXiv
2510.04028): a card's pass@k evaluations (:mod:`harness.evaluate.passk`, recorded with ``--answers``) of the base
model and of RL checkpoints, collected into one ``analysis_result`` that the claims read.

Checkpoints are grouped by (method, training length): the evaluation's ``source.method`` and ``train_steps`` (the
job's ``trl.max_steps``), one evaluation per training seed; the base model is the one evaluation of ``method: base``.
All evaluations must share one protocol (same held-out problems, sampling, n, verifier). Per group:

- ``curve``: pass@k for every k of ``ks`` (unbiased estimator from the per-problem ``n_correct``,
  :mod:`harness.results.estimators`), the mean over seeds and problems with a 95 % CI from the stratified two-level
  bootstrap of the leaderboard's cells (seeds and problems resampled independently, :func:`bootstrap_means`);
- ``support`` (against the base model): a problem is *solved at k* when its pass@k estimate is at least
  ``threshold`` (the invisible_leash card's pitfall: support at a threshold depends on k, so both are settings and
  hashed into the protocol). With k = n/2 and threshold 0.5 this is "some sample of n is correct"
  (``1 - C(n-1, n/2) / C(n, n/2) = 1/2`` for one correct sample). Each problem is ``both`` (preserved),
  ``base_only`` (shrunk: the base model solves it, the checkpoint does not), ``rl_only`` (expanded) or ``neither``;
  the shares per seed, their mean and CI;
- ``answer_entropy`` (nats; entropy of the samples' canonical answers per problem) and ``token_entropy``
  (nats/token) as recorded by the evaluation, mean with CI;
- ``per_seed``: the per-problem ``n_correct``, ``answer_entropy``, ``token_entropy`` and (checkpoints) ``support``
  (the class, an index into ``classes``) of each seed, problems in ``problem_ids`` order: the claim checks compute
  their paired differences from these.

Command line (rules/passk.smk, rule ``analyze_support``)::

    python -m harness.analyze.support PASSK.json... --out WORK/analysis/<paper>/<tier>/support.json \\
        [--settings '{"ks": [1, 2, 4], "k": 32, "threshold": 0.5}'] [--source paper=P,tier=T]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import numpy as np

ANALYSIS = "support"
VERSION = 1
ITERS, SEED, ALPHA = 2000, 0, 0.05
SETTINGS = ("ks", "k", "threshold")
CLASSES = ("both", "base_only", "rl_only", "neither")


def bootstrap_means(values, *, iters: int = ITERS, seed: int = SEED, alpha: float = ALPHA):
    """Means over (seeds, problems) of a (S, P, K) array and their percentile CIs: per draw, seeds and problems
    resampled with replacement, independently (the draws of :func:`harness.claims.stats.cell`, for K columns at
    once). Returns (mean (K,), lo (K,), hi (K,))."""
    v = np.asarray(values, float)
    S, P, _ = v.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, size=(iters, S))
    pi = rng.integers(0, P, size=(iters, P))
    ws = np.stack([np.bincount(r, minlength=S) for r in si]) / S   # (iters, S): weight of each seed in the draw
    wp = np.stack([np.bincount(r, minlength=P) for r in pi]) / P   # (iters, P)
    draws = np.einsum("bs,spk,bp->bk", ws, v, wp)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return v.mean(axis=(0, 1)), lo, hi


def _cells(values) -> list[dict]:
    mean, lo, hi = bootstrap_means(values)
    return [{"mean": float(m), "ci": [float(a), float(b)]} for m, a, b in zip(mean, lo, hi)]


def pass_matrix(counts, n: int, ks: Sequence[int]) -> np.ndarray:
    """(S, P, K) per-problem unbiased pass@k of a (S, P) matrix of correct-sample counts."""
    from harness.results.estimators import pass_at_k

    table = np.array([[pass_at_k(n, c, k) for k in ks] for c in range(n + 1)])  # (n + 1, K)
    return table[np.asarray(counts, int)]


def parse_settings(settings: dict | None, n: int, eval_ks: Sequence[int]) -> dict:
    """The analysis settings with defaults (ks: the evaluations'; k: the largest of ks; threshold 0.5), checked."""
    from harness.config import ConfigError
    from harness.results.estimators import check_ks

    s = dict(settings or {})
    bad = sorted(set(s) - set(SETTINGS))
    if bad:
        raise ConfigError(f"support analysis: unknown setting {bad[0]!r}; valid: {', '.join(SETTINGS)}")
    try:
        ks = check_ks(s.get("ks") or eval_ks, n)
        k = int(s.get("k") or ks[-1])
        check_ks([k], n)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"support analysis: {e}") from None
    thr = s.get("threshold", 0.5)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 < thr <= 1:
        raise ConfigError(f"support analysis: threshold must be a number in (0, 1], got {thr!r}")
    return {"ks": ks, "k": k, "threshold": float(thr)}


def _load(paths) -> list[tuple[str, dict, str]]:
    """(path, eval_result, benchmark) of each pass@k evaluation with answer statistics."""
    from harness.config import ConfigError
    from harness.results import content_hash
    from harness.results.packing import read_result

    out = []
    for p in paths:
        r = read_result(p, ConfigError)  # a pinned (packed) evaluation reads as the plain one
        if not isinstance(r, dict) or r.get("kind") != "eval_result" or r.get("content_hash") != content_hash(r):
            raise ConfigError(f"{p}: not an intact eval_result")
        names = [b for b in r["benchmarks"] if b.endswith("_passk")]
        if len(names) != 1:
            raise ConfigError(f"{p}: not a pass@k evaluation (benchmarks {sorted(r['benchmarks'])})")
        pp = r["benchmarks"][names[0]]["per_problem"]
        if any("answer_entropy" not in x for x in pp):
            raise ConfigError(f"{p}: no answer statistics (evaluated without --answers); rerun its pass@k rule")
        if any(x.get("token_entropy") is None for x in pp):
            raise ConfigError(f"{p}: a problem without sampled tokens (max_new_tokens 0?): no token entropy")
        out.append((str(p), r, names[0]))
    if not out:
        raise ConfigError("support analysis: no pass@k evaluations given")
    return out


def _group_stats(rows: list[tuple[str, dict, str]], ids: list, n: int, st: dict) -> dict:
    """curve, entropies and per-seed arrays of one group's evaluations (sorted by seed)."""
    def matrix(field):
        out = []
        for _, r, b in rows:
            by_id = {x["id"]: x[field] for x in r["benchmarks"][b]["per_problem"]}
            out.append([by_id[i] for i in ids])
        return np.array(out, float)

    counts = matrix("n_correct").astype(int)
    curve = [{"k": k, **c} for k, c in zip(st["ks"], _cells(pass_matrix(counts, n, st["ks"])))]
    ans, tok = matrix("answer_entropy"), matrix("token_entropy")
    a_cell, t_cell = _cells(np.stack([ans, tok], axis=2))
    return {"seeds": [(r.get("source") or {}).get("seed") for _, r, _ in rows],
            "job_keys": [(r.get("source") or {}).get("job_key") for _, r, _ in rows],
            "evals": [r["content_hash"] for _, r, _ in rows], "curve": curve,
            "answer_entropy": a_cell, "token_entropy": t_cell,
            "per_seed": {"n_correct": counts.tolist(), "answer_entropy": ans.tolist(), "token_entropy": tok.tolist()}}


def support_classes(base_counts, counts, n: int, k: int, threshold: float) -> dict[str, np.ndarray]:
    """(S, P) 0/1 matrices of the four classes of each problem for each checkpoint seed against the base model."""
    base = pass_matrix(np.asarray(base_counts, int)[None, :], n, [k])[0, :, 0] >= threshold  # (P,)
    rl = pass_matrix(counts, n, [k])[:, :, 0] >= threshold                                  # (S, P)
    return {"both": rl & base, "base_only": ~rl & base, "rl_only": rl & ~base, "neither": ~rl & ~base}


def analyze(paths, *, settings: dict | None = None, source: dict | None = None) -> dict:
    """The support analysis record of these pass@k evaluations (not yet written)."""
    from harness.analyze.record import analysis_record
    from harness.config import ConfigError
    from harness.results.protocol import ProtocolMismatch, assert_same_protocol

    t0 = time.time()
    loaded = _load(paths)
    views = [{"protocol": r["protocol"]["benchmarks"][b], "protocol_hash": r["benchmarks"][b]["protocol_hash"]}
             for _, r, b in loaded]
    try:
        proto_hash = assert_same_protocol(views)
    except ProtocolMismatch as e:
        raise ConfigError(f"support analysis: the evaluations differ in protocol: {e}") from None
    _, first, bench = loaded[0]
    n = int(first["benchmarks"][bench]["k"])
    ids = [x["id"] for x in first["benchmarks"][bench]["per_problem"]]
    for p, r, b in loaded:
        if sorted(x["id"] for x in r["benchmarks"][b]["per_problem"]) != sorted(ids):
            raise ConfigError(f"{p}: other held-out problems than {loaded[0][0]}")
    st = parse_settings(settings, n, first["benchmarks"][bench]["ks"])

    groups: dict[tuple, list] = {}
    for row in loaded:
        src = row[1].get("source") or {}
        steps = 0 if src.get("method") == "base" else row[1].get("train_steps")
        groups.setdefault((str(src.get("method")), steps), []).append(row)
    base_rows = [rows for (m, _), rows in groups.items() if m == "base"]
    if len(base_rows) != 1 or len(base_rows[0]) != 1:
        raise ConfigError(f"support analysis: needs exactly one base-model evaluation, got "
                          f"{sum(len(r) for r in base_rows)}")
    base = _group_stats(base_rows[0], ids, n, st)
    checkpoints = []
    for (method, steps), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if method == "base":
            continue
        rows.sort(key=lambda row: int((row[1].get("source") or {}).get("seed") or 0))
        seeds = [(r.get("source") or {}).get("seed") for _, r, _ in rows]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"support analysis: two evaluations of {method} seed {seeds} at {steps} steps "
                              f"({', '.join(p for p, _, _ in rows)})")
        g = {"method": method, "train_steps": steps, **_group_stats(rows, ids, n, st)}
        cls = support_classes(base["per_seed"]["n_correct"][0], np.array(g["per_seed"]["n_correct"]), n, st["k"],
                              st["threshold"])
        shares = _cells(np.stack([cls[c].astype(float) for c in CLASSES], axis=2))
        g["support"] = {"shares": dict(zip(CLASSES, shares)),
                        "counts": {c: cls[c].sum(axis=1).astype(int).tolist() for c in CLASSES}}
        g["per_seed"]["support"] = sum(i * cls[c].astype(int) for i, c in enumerate(CLASSES)).tolist()
        checkpoints.append(g)
    result = {"benchmark": bench, "n": n, "ks": st["ks"], "n_problems": len(ids), "problem_ids": ids,
              "eval_protocol_hash": proto_hash, "support_k": st["k"], "threshold": st["threshold"],
              "classes": list(CLASSES),
              "base": {"method": "base", "train_steps": 0, **base,
                       "solved": int(sum(pass_matrix([base["per_seed"]["n_correct"][0]], n, [st["k"]])[0, :, 0]
                                         >= st["threshold"]))},
              "checkpoints": checkpoints}
    protocol = {**st, "version": VERSION, "bootstrap": {"iters": ITERS, "seed": SEED, "alpha": ALPHA,
                                                        "method": "stratified two-level (seeds, problems)"},
                "solved_at_k": "per-problem unbiased pass@k >= threshold", "groups": "(source.method, train_steps)"}
    return analysis_record(ANALYSIS, protocol, result, inputs=[r["content_hash"] for _, r, _ in loaded],
                           source=source or {}, wall_seconds=round(time.time() - t0, 2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.analyze.support", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="pass@k evaluations (eval_result, recorded with --answers)")
    p.add_argument("--out", required=True, help="the analysis_result to write")
    p.add_argument("--settings", default="{}", help=f"JSON object with keys among {', '.join(SETTINGS)}")
    p.add_argument("--source", default=None, help="paper=P,tier=T")
    a = p.parse_args(argv)
    from harness.analyze.record import parse_source, write_analysis
    from harness.config import ConfigError

    try:
        settings = json.loads(a.settings)
        if not isinstance(settings, dict):
            raise ValueError(f"--settings must be a JSON object, got {a.settings!r}")
        r = write_analysis(analyze(a.inputs, settings=settings, source=parse_source(a.source)), a.out)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = r["result"]
    for g in res["checkpoints"]:
        s = g["support"]["shares"]
        print(f"{g['method']} @ {g['train_steps']} steps: pass@{res['ks'][-1]} {g['curve'][-1]['mean']:.3f} vs base "
              f"{res['base']['curve'][-1]['mean']:.3f}; base-only {s['base_only']['mean']:.3f}, "
              f"RL-only {s['rl_only']['mean']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
