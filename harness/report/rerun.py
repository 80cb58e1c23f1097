"""``harness pin --rerun``: record that a fresh rerun reproduced a pinned replication, without replacing what is pinned.

A rerun trains every job of the card again in a fresh work dir (``snakemake --config paper=<id> tier=<tier>
work_dir=<new dir>``). Its runs get new content hashes (a hash covers the creation and wall times), so pinning them
would orphan every other verdict that lists the shared runs. Instead the rerun is judged here, with this code,
against the pinned files: the runs, evaluations and analyses its verdict lists (found in the work dir by content
hash) are compared with the pinned ones (:func:`harness.claims.verdict.reproducibility`), and the claims of the two
verdicts with each other (their numbers without the content hashes of the analyses they read). The record goes to ``results/<paper>/<tier>/rerun.json`` (hashed, in the card's
``MANIFEST.json``); the README's status table shows "rerun identical" when it holds for the pinned verdict. Pinning
the card again replaces its folder, and with it a record that no longer speaks of the pinned verdict.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness.config import ConfigError
from harness.report.status import RERUN_RECORD as NAME
from harness.results import atomic_write_json, compare_results, file_sha256, provenance



def _read_verdict(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} is missing ({what})")
    return json.loads(path.read_text())


#: a claim's prose: the card may reword it (e.g. to say its DAG is now built) without changing what it checks
PROSE_KEYS = ("statement",)


def compare_claims(pinned: list[dict], fresh: list[dict]) -> tuple[list[str], list[str]]:
    """(fields that differ between two verdicts' claims: verdicts, numbers, checks, parameters; the ids of claims
    whose prose alone was edited). Content-hash references to the analyses a claim read are not compared."""
    from harness.claims.verdict import without_references

    def checked(claims):
        return without_references([{k: v for k, v in c.items() if k not in PROSE_KEYS} for c in claims])

    edited = sorted({a["id"] for a, b in zip(pinned, fresh)
                     if a.get("id") == b.get("id") and any(a.get(k) != b.get(k) for k in PROSE_KEYS)})
    return compare_results(checked(pinned), checked(fresh)), edited


def judge_rerun(paper: str, tier: str, work_dir: Path, results_dir: Path) -> dict:
    """The rerun record of the work dir's verdict of ``paper`` [``tier``] against the pinned one in ``results_dir``."""
    from harness.claims.verdict import reproducibility
    from harness.report.pin import analysis_files
    from harness.results.store import result_files

    pinned = _read_verdict(results_dir / paper / tier / "verdict.json",
                           f"no pinned verdict of {paper} [{tier}] to compare a rerun with; pin one first")
    fresh = _read_verdict(work_dir / "verdicts" / paper / tier / "verdict.json",
                          f"run `snakemake --config paper={paper} tier={tier} work_dir={work_dir}` first")
    reused = sorted(set(fresh.get("inputs", [])) & set(pinned.get("inputs", [])))
    if reused:
        kept = sorted(Path(work_dir).rglob("*.retrained"))
        hint = (f"; {len(kept)} retrained file(s) there were set aside by `harness pin --use-pinned` (e.g. {kept[0]}): "
                f"put each back in place of its pinned copy and run snakemake again to judge them") if kept else ""
        raise ConfigError(f"the verdict in {work_dir} judged {len(reused)} pinned run(s) (e.g. {reused[0][:12]}), not "
                          f"retrained ones: a rerun trains every job again in a fresh work dir{hint}")
    by_hash = {r["content_hash"]: r for _, r in result_files(work_dir) if r.get("content_hash")}
    wanted = [*fresh.get("inputs", []), *fresh.get("eval_inputs", [])]
    missing = [h for h in wanted if h not in by_hash]
    if missing:
        raise ConfigError(f"the verdict in {work_dir} lists results not found there: {missing[:3]}")
    runs = [by_hash[h] for h in fresh.get("inputs", [])]
    evals = [by_hash[h] for h in fresh.get("eval_inputs", [])]
    analyses = [json.loads(p.read_text()) for p in analysis_files(fresh, work_dir).values()]
    rep = reproducibility(paper, tier, runs, results_dir, evals, analyses)
    rep["pinned_dir"] = f"{paper}/{tier}"  # relative to the results folder it sits in
    claims, edited = compare_claims(pinned["claims"], fresh["claims"])
    return {
        "kind": "rerun_record", "schema_version": 1, "paper": paper, "tier": tier,
        "pinned_verdict_hash": pinned["content_hash"], "rerun_verdict_hash": fresh["content_hash"],
        "status": rep["status"], "claims_identical": not claims, "claims_differing": claims[:50],
        "statements_edited": edited,
        "verdicts": {"pinned": {c["id"]: c["verdict"] for c in pinned["claims"]},
                     "rerun": {c["id"]: c["verdict"] for c in fresh["claims"]}},
        "rerun_hardware": fresh.get("hardware"), "reproducibility": rep,
        **provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def record_rerun(paper: str, tier: str, work_dir: Path, results_dir: Path) -> tuple[Path, dict]:
    """Write the rerun record next to the pinned verdict and list it in the card's ``MANIFEST.json``."""
    record = judge_rerun(paper, tier, Path(work_dir), Path(results_dir))
    card_dir = Path(results_dir) / paper / tier
    path = atomic_write_json(card_dir / NAME, record, hashed=True)
    record = json.loads(path.read_text())  # with its content hash
    man_path = card_dir / "MANIFEST.json"
    if man_path.is_file():
        man = json.loads(man_path.read_text())
        atomic_write_json(man_path, {**man, "files": {**man.get("files", {}), NAME: file_sha256(path)}})
    return path, record
