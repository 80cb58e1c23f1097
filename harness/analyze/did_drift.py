"""The Differential-Information probes of a card's DPO runs, collected into one curve file (``did_drift``; diff_info,
arXiv 2505.23761): per run, the DID entropy and the chosen/rejected log-likelihood drift at every probe step
(written by :mod:`harness.train.dpo_pairs` into ``result.json`` under ``diff_info.probe``), its final values, its
pair and DPO-fit summaries; the result files' content hashes are the record's ``inputs``. The claims
(:mod:`harness.claims.papers.diff_info`) and the report's drift-vs-entropy plot read this file.

Settings (the card's ``tiers.<tier>.analysis.did_drift`` block): ``methods``, the DPO methods whose runs are
collected (every run of them among the given files; other files are ignored). All runs must share one probe protocol
(the probe settings), else the file is refused: their entropies would not be comparable.

Command line (the DAG's ``rules/analyze.smk``)::

    python -m harness.analyze.did_drift --settings diff_info:smoke-reasoning JOB/result.json ... \\
        --source paper=diff_info,tier=smoke-reasoning --out WORK/analysis/diff_info/smoke-reasoning/did_drift.json
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.analyze.cardargs import check_keys
from harness.analyze.record import analysis_record, write_analysis
from harness.results import content_hash
from harness.results.packing import read_result

NAME = "did_drift"
PROBE_KEY = "diff_info"  # harness.methods.diff_info.PREFIX: where a run keeps its probe record
FINAL_KEYS = ("did_entropy", "did_entropy_norm", "chosen_drift", "rejected_drift", "chosen_drift_per_token",
              "rejected_drift_per_token", "margin_drift")


def parse_settings(raw: dict | None) -> dict:
    m = check_keys(raw, ["methods"], NAME).get("methods")
    if not isinstance(m, list) or not m or not all(isinstance(x, str) and x for x in m):
        raise ValueError(f"did_drift settings: methods must be a non-empty list of method names, got {m!r}")
    return {"methods": sorted(set(m))}


def collect(results: list[dict], settings: dict) -> dict:
    """The curve file's ``result`` from train results (dicts as written, with their content hashes)."""
    runs, protocol = {}, None
    for r in results:
        job = r.get("job") or {}
        if job.get("method") not in settings["methods"]:
            continue
        rec = r.get(PROBE_KEY)
        if not isinstance(rec, dict) or not (rec.get("probe") or {}).get("steps"):
            raise ValueError(f"run {job.get('method')}/seed{job.get('seed')} has no DID probe record "
                             f"(result['{PROBE_KEY}']['probe']['steps']): not a run of harness/train/dpo_pairs.py")
        probe = rec["probe"]
        if protocol is None:
            protocol = probe["settings"]
        elif probe["settings"] != protocol:
            raise ValueError(f"runs under different probe protocols: {protocol} and {probe['settings']} "
                             f"({job['method']}/seed{job['seed']})")
        key = f"{job['method']}/seed{job['seed']}"
        if key in runs:
            raise ValueError(f"two runs of {key} among the inputs")
        steps = sorted(probe["steps"], key=lambda p: p["step"])
        runs[key] = {"method": job["method"], "seed": int(job["seed"]), "job_key": job.get("job_key"),
                     "result_hash": r.get("content_hash"), "rule": rec.get("rule"), "pairs": rec.get("pairs"),
                     "dpo": rec.get("dpo"), "final_step": steps[-1]["step"],
                     "final": {k: steps[-1].get(k) for k in FINAL_KEYS},
                     "candidates_mean": probe.get("candidates_mean"),
                     "probe_prompts_used": probe.get("probe_prompts_used"), "steps": steps}
    missing = [m for m in settings["methods"] if not any(v["method"] == m for v in runs.values())]
    by_method = {}
    for m in settings["methods"]:
        mine = [v for v in runs.values() if v["method"] == m]
        if mine:
            by_method[m] = {"seeds": sorted(v["seed"] for v in mine),
                            **{k: sum(v["final"][k] for v in mine) / len(mine) for k in FINAL_KEYS
                               if all(v["final"].get(k) is not None for v in mine)}}
    return {"runs": dict(sorted(runs.items())), "by_method": by_method, "probe_settings": protocol,
            "methods_without_runs": missing}


def run(settings: dict | None, paths: list[str | Path], out: str | Path, source: dict | None = None) -> dict:
    """Read the result files, collect, write the analysis result; returns the record as written."""
    t0 = time.time()
    s = parse_settings(settings)
    results = []
    for p in paths:
        r = read_result(p)  # a pinned (packed) train result reads as the plain one
        if not isinstance(r, dict) or r.get("kind") != "train_result":
            raise ValueError(f"{p}: not a train result (kind {r.get('kind') if isinstance(r, dict) else None!r})")
        if content_hash(r) != r.get("content_hash"):
            raise ValueError(f"{p}: content_hash does not match its content")
        results.append(r)
    result = collect(results, s)
    inputs = [v["result_hash"] for v in result["runs"].values()]
    return write_analysis(analysis_record(NAME, s, result, inputs=inputs, source=source,
                                          wall_seconds=time.time() - t0), out)


def _summary(r: dict) -> list[str]:
    return [f"{key}: step {v['final_step']}, DID entropy (normalised) {v['final']['did_entropy_norm']:.4f}, chosen "
            f"drift {v['final']['chosen_drift']:+.3f} nats, rejected drift {v['final']['rejected_drift']:+.3f} nats"
            for key, v in r["result"]["runs"].items()]


def main(argv=None) -> int:
    from harness.analyze.cardargs import card_command

    return card_command(NAME, __doc__, argv,
                        lambda settings, source, a: run(settings, a.results, a.out, source=source), _summary,
                        settings_default=None, results_help="result.json files of training jobs (other methods' "
                                                            "are ignored)")


if __name__ == "__main__":
    sys.exit(main())
