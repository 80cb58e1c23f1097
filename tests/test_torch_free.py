"""Claims and reports read result files only: `harness leaderboard` and `harness verdict` run where torch, TRL,
transformers and lm-eval cannot be imported (a subprocess whose import system refuses them)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

BLOCK = textwrap.dedent("""
    import sys
    BLOCKED = {"torch", "trl", "transformers", "lm_eval", "accelerate", "datasets"}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not importable in this test (torch-free run)")
            return None

    sys.meta_path.insert(0, Refuse())
    from harness.face.cli import main
    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    sys.exit(code)
""")


def _harness_without_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLVR_HARNESS_ROOT": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_blocker_really_blocks(tmp_path):
    r = _harness_without_torch(["methods"], tmp_path)  # the method registry needs torch
    assert r.returncode != 0 and "not importable in this test" in r.stderr


def test_leaderboard_rebuilds_byte_identically_without_torch(tmp_path):
    """A copy of results/ rebuilt in place (run links are relative to the leaderboard's folder)."""
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)
    # report.html is generated and untracked: a clean clone has none, a working copy may have one
    for name in ("leaderboard.md", "leaderboard.json", "report.html"):
        (copy / name).unlink(missing_ok=True)
    r = _harness_without_torch(["leaderboard", "--results-dir", str(copy)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("leaderboard.md", "leaderboard.json"):
        assert (copy / name).read_bytes() == (RESULTS / name).read_bytes(), name
    assert (copy / "report.html").stat().st_size > 0


def _close(a, b, rel: float = 1e-6) -> bool:
    """Equal structure and values, floats to ``rel`` (ints, strings and bools exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-12)
    return type(a) is type(b) and a == b


def test_verdict_rebuilds_without_torch(tmp_path):
    """A pinned replication's verdict, recomputed from its pinned runs and evaluations: same claims and numbers."""
    from harness.results.store import replications

    rep = replications(RESULTS)[("entropy_mechanism", "smoke")]
    files = []
    for kind in ("train", "evals"):
        for i, r in enumerate(rep[kind]):
            p = tmp_path / "in" / f"{kind}{i}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            # the pinned file, byte for byte (store.replications adds bookkeeping fields in memory only)
            shutil.copy2(RESULTS / r["_file"], p)
            files.append(str(p))
    runs = [f for f in files if "/train" in f]
    evals = [f for f in files if "/evals" in f]
    out = tmp_path / "verdict"
    r = _harness_without_torch(["verdict", "--paper", "entropy_mechanism", "--tier", "smoke", "--out-dir", str(out),
                                "--pinned-root", str(RESULTS), *runs, "--evals", *evals], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    fresh = json.loads((out / "verdict.json").read_text())
    pinned = json.loads((RESULTS / "entropy_mechanism" / "smoke" / "verdict.json").read_text())
    assert [(c["id"], c["verdict"]) for c in fresh["claims"]] == [(c["id"], c["verdict"]) for c in pinned["claims"]]
    for a, b in zip(fresh["claims"], pinned["claims"]):
        # same numbers; least-squares law fits on the short early window are not bit-portable across CPUs (AMD vs
        # Intel BLAS/libm: relative differences ~1e-8 measured), so floats compare to 1e-6
        assert _close(a["numbers"], b["numbers"]), (a["id"], a["numbers"], b["numbers"])
    assert fresh["reproducibility"]["status"] == "identical"
    assert sorted(p.name for p in out.glob("*.png")) == ["entropy_vs_step.png", "reward_vs_entropy.png"]
