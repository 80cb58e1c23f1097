"""``harness pin``: copy a checked run's artifacts into ``results/<paper>/<tier>/`` (committed, citable)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config import ConfigError
from harness.results import atomic_dir, atomic_write_json, file_sha256


def pin(paper: str, tier: str, work_dir: Path, results_dir: Path) -> Path:
    vdir = work_dir / "verdicts" / paper / tier
    vpath = vdir / "verdict.json"
    if not vpath.exists():
        raise ConfigError(f"nothing to pin: {vpath} is missing (run `snakemake --config paper={paper} tier={tier}`)")
    verdict = json.loads(vpath.read_text())
    runs = sorted((work_dir / "runs" / paper / tier).glob("*/seed*/result.json"))
    wanted = set(verdict["inputs"])
    dest = results_dir / paper / tier
    with atomic_dir(dest) as tmp:
        (tmp / "runs").mkdir()
        found = set()
        for r in runs:
            res = json.loads(r.read_text())
            if res["content_hash"] in wanted:
                j = res["job"]
                shutil.copy2(r, tmp / "runs" / f"{j['method']}-seed{j['seed']}.json")
                found.add(res["content_hash"])
        missing = wanted - found
        if missing:
            raise ConfigError(f"verdict {vpath} refers to results not found under {work_dir}/runs: "
                              f"{sorted(missing)[:3]}")
        shutil.copy2(vpath, tmp / "verdict.json")
        for ev in sorted((work_dir / "evals" / paper / tier).glob("**/*.json")):  # lm-eval benchmark results
            target = tmp / "evals" / ev.relative_to(work_dir / "evals" / paper / tier)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ev, target)
        for png in vdir.glob("*.png"):
            shutil.copy2(png, tmp / png.name)
        manifest = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_json(tmp / "MANIFEST.json", {"paper": paper, "tier": tier, "verdict_hash": verdict["content_hash"],
                                                 "files": manifest})
    from harness.report.artifacts import build_manifest
    from harness.report.atlas import build_atlas, pinned_runs

    from harness.report.leaderboard import write as write_leaderboard

    build_atlas(pinned_runs(results_dir), results_dir / "atlas.json", results_dir / "entropy_atlas.png")
    write_leaderboard(results_dir)  # leaderboard.md/.json and report.html follow the pinned results
    build_manifest(results_dir)
    return dest
