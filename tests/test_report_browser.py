"""The static HTML leaderboard report (harness.report.html): rendered from a synthetic leaderboard dict, checked as text
and in headless Chromium (a screenshot that is not blank, and the DOM after the URL-preset filters ran)."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from harness.report.html import to_html, write_report

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EVIL = 'evil<script>alert("x")</script>&co'
GREEN, RED, AMBER, GREY = (0x2D, 0xA4, 0x4E), (0xCF, 0x22, 0x2E), (0xE3, 0xA0, 0x08), (0x8C, 0x95, 0x9F)
MAGENTA = (0xFF, 0x00, 0xFF)  # the fill of the synthetic plots


# ---------------------------------------------------------------------------
# fixture: a synthetic leaderboard and a pinned-layout results folder with real PNGs
# ---------------------------------------------------------------------------

def _protocol(bench: str, n: int, sampling: str) -> dict:
    return {"protocol_hash": f"{bench[:2]}" + "ab12cd34ef56" * 5,
            "protocol": {"benchmark": bench, "data_sha256": "d1g357" + bench[:6], "n_problems": n,
                         "sampling": sampling, "k": 1 if sampling == "greedy" else 4, "max_tokens": 64,
                         "template": "rows as trained", "verifier": "harness.verify 1",
                         "seeds": {"bootstrap": 0, "numpy": 0}}}


def _cell(mean: float, half: float, cols: dict, bench: str, seeds=(1, 2, 3)) -> dict:
    return {"mean": mean, "ci": [mean - half, mean + half], "n_seeds": len(seeds), "n_problems": 64,
            "seeds": list(seeds), "protocol_hash": cols[bench]["protocol_hash"]}


def _row(paper, tier, method, role, cells, verdict=None, runs=(), **extra) -> dict:
    r = {"paper": paper, "tier": tier, "method": method, "model": f"{tier} model", "role": role, "cells": cells,
         "reported": None, "runs": [{"seed": s, "result_hash": "ab" * 32, "mlflow_run_id": rid,
                                     "mlflow_experiment_id": "7",
                                     "file": f"jobs/{tier}/{method}/0123456789ab/seed{s}/result.json"}
                                    for s, rid in runs],
         "eval_hashes": []}
    if verdict is not None:
        r["verdict"] = verdict
    r.update(extra)
    return r


def synthetic_lb() -> dict:
    sc = {"heldout": _protocol("heldout", 64, "T=1.0, top_p=1.0"), "heldout_greedy": _protocol("heldout_greedy", 64,
                                                                                                 "greedy")}
    cc = {"math500": _protocol("math500", 50, "greedy")}
    iqm = {"value": 0.51, "ci": [0.49, 0.53], "benchmarks": ["heldout", "heldout_greedy"]}
    smoke_rows = [
        _row("entropy_mechanism", "smoke", "grpo", "baseline",
             {b: _cell(0.45, 0.02, sc, b) for b in sc}, runs=[(1, "aaaaaaaa1111"), (2, "aaaaaaaa2222")], iqm=iqm),
        _row("entropy_mechanism", "smoke", "clip_cov", "method",
             {b: _cell(0.512, 0.03, sc, b) for b in sc},
             {"verdict": "reproduced", "diff": 0.062, "ci": [0.02, 0.1], "benchmark": "heldout",
              "kind": "direction vs grpo"},
             runs=[(1, "bbbbbbbb1111")], iqm=iqm, poi={"value": 0.81, "ci": [0.6, 0.95], "baseline": "grpo"},
             reported={"model": "Qwen2.5-7B", "values": {"AIME24": 22.1, "MATH500": 80.4}, "claimed_sign": 1,
                       "direction_source": "x", "source": "shared/papers/entropy_mechanism.md"}),
        _row("entropy_mechanism", "smoke", "kl_cov", "method",
             {b: _cell(0.40, 0.02, sc, b) for b in sc},
             {"verdict": "not_reproduced", "diff": -0.05, "ci": [-0.08, -0.02], "benchmark": "heldout"}, iqm=iqm),
        _row("bapo", "smoke", "bapo", "method", {"heldout": _cell(0.46, 0.05, sc, "heldout", seeds=(1,))},
             {"verdict": "inconclusive", "more_seeds": 3, "seeds_needed": 4, "benchmark": "heldout",
              "reason": "1 seed: seed-to-seed variance is unknown"}),
    ]
    cpu_rows = [_row("entropy_mechanism", "cpu-real", "clip_cov", "method",
                     {"math500": _cell(0.1, 0.05, cc, "math500", seeds=(0,))},
                     {"verdict": "not_run", "reason": "no math500 evaluation of grpo"})]
    not_run = [{"paper": EVIL, "tier": "paper", "method": "grpo", "model": "Qwen2.5-7B", "role": "baseline",
                "reported": {"model": "Qwen2.5-7B", "values": {"AIME24": 21.2}, "claimed_sign": None,
                             "direction_source": "baseline", "source": "s"},
                "verdict": {"verdict": "not_run", "reason": "the paper tier needs a GPU cluster"}}]
    claims = {
        "entropy_mechanism/smoke": {"counts": {"reproduced": 1, "inconclusive": 1},
                                    "claims": [{"id": "C1", "verdict": "reproduced",
                                                "statement": "entropy collapses under GRPO"},
                                               {"id": "C2", "verdict": "inconclusive",
                                                "statement": "R = -a exp(H) + b fits"}]},
        "bapo/smoke": {"counts": {"not_reproduced": 1},
                       "claims": [{"id": "B1", "verdict": "not_reproduced", "statement": "keeps entropy up"}]},
        "entropy_mechanism/cpu-real": {"counts": {}, "claims": []},  # no plots on disk: skipped silently
    }
    return {"kind": "leaderboard", "schema_version": 1,
            "tables": [{"id": "smoke-1", "tier": "smoke", "benchmarks": ["heldout", "heldout_greedy"],
                        "columns": sc, "rows": smoke_rows},
                       {"id": "cpu-real-2", "tier": "cpu-real", "benchmarks": ["math500"], "columns": cc,
                        "rows": cpu_rows}],
            "not_run": not_run, "papers": ["bapo", "entropy_mechanism", EVIL], "claims": claims}


def _png(path: Path, seed: int, size=(3.0, 1.6)) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=size, dpi=60)
    x = np.arange(20)
    ax.fill_between(x, 0, rng.uniform(0.5, 1.0, x.size), color="#ff00ff")
    ax.plot(x, rng.uniform(0, 0.5, x.size), color="#1f77b4")
    ax.set_title(path.stem, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for i, (paper, tier) in enumerate([("entropy_mechanism", "smoke"), ("bapo", "smoke")]):
        _png(root / paper / tier / "entropy_vs_step.png", 2 * i)
        _png(root / paper / tier / "reward_vs_entropy.png", 2 * i + 1)
    _png(root / "entropy_atlas.png", 99, size=(5.0, 2.0))
    lb = synthetic_lb()
    out = write_report(lb, root, root / "site" / "leaderboard.html", mlflow_ui="http://127.0.0.1:5000")
    return {"root": root, "lb": lb, "path": out, "html": out.read_text()}


# ---------------------------------------------------------------------------
# text checks
# ---------------------------------------------------------------------------

def test_deterministic_and_self_contained(report):
    html = report["html"]
    ui = "http://127.0.0.1:5000"
    assert to_html(report["lb"], report["root"], mlflow_ui=ui) == html == to_html(synthetic_lb(), report["root"],
                                                                                   mlflow_ui=ui)
    assert "harness leaderboard" in html and "result files" in html
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", html), "no timestamps"
    # nothing fetched from outside the file
    assert not re.search(r"<link\b|<script[^>]*\bsrc=|@import|url\(\s*['\"]?https?:", html)
    assert not re.search(r"\bsrc=\"(?!data:)", html)
    assert not list(report["path"].parent.glob(".*.tmp")), "atomic write leaves no temporary file"


def test_tables_filters_and_protocol(report):
    html = report["html"]
    assert len(re.findall(r'<table class="leaderboard" data-tier="smoke"', html)) == 1
    assert len(re.findall(r'<table class="leaderboard" data-tier="cpu-real"', html)) == 1
    assert '<table class="not-run">' in html and "Not run (paper tier)" in html
    tiers = re.search(r'<select id="tier-filter">(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="([^"]+)"', tiers) == ["all", "smoke", "cpu-real", "paper"]
    benches = re.search(r'<select id="bench-filter">(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="([^"]+)"', benches) == ["all", "heldout", "heldout_greedy", "math500"]
    # each column's protocol in the caption: hash prefix, data digest, problems, sampling, k, tokens, template, verifier
    cap = re.search(r'data-tier="smoke".*?<caption>(.*?)</caption>', html, re.S).group(1)
    for s in ("<code>heab12cd34ef</code>", "d1g357heldou", "64 problems", "T=1.0, top_p=1.0", "greedy", "k=4", "k=1",
              "max tokens 64", "rows as trained", "harness.verify 1"):
        assert s in cap, s
    # cells, IQM, P(improve), paper reports, MLflow links
    assert "0.512 [0.482, 0.542]" in html
    assert "0.510 [0.490, 0.530]" in html and "0.81 [0.60, 0.95]" in html
    assert "Qwen2.5-7B: AIME24 22.1, MATH500 80.4" in html
    assert 'href="http://127.0.0.1:5000/#/experiments/7/runs/bbbbbbbb1111">seed1:bbbbbbbb</a>' in html
    assert "inconclusive (~3 more seeds)" in html
    # per-paper sections and the nav linking to them
    for p in ("bapo", "entropy_mechanism"):
        assert f'<section class="paper" id="paper-{p}"' in html and f'href="#paper-{p}"' in html
    assert 'id="atlas"' in html and "C1" in html and "entropy collapses under GRPO" in html


def test_verdict_classes(report):
    html = report["html"]
    for v in ("reproduced", "not_reproduced", "inconclusive", "not_run"):
        assert re.search(rf'<td class="verdict verdict-{v}"', html), v
        assert f".verdict-{v} {{" in html
    assert re.search(r'<span class="verdict verdict-reproduced">reproduced</span>\s*<code>C1</code>', html)


def test_images_embedded_as_base64(report):
    html, root = report["html"], report["root"]
    srcs = re.findall(r'<img class="plot[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(srcs) == 5  # 2 papers x 2 plots + the atlas; cpu-real has no plots and is skipped silently
    on_disk = {p.read_bytes() for p in root.rglob("*.png")}
    assert {base64.b64decode(s) for s in srcs} == on_disk


def test_html_escaping(report):
    html = report["html"]
    assert EVIL not in html and 'alert("x")</script>' not in html
    assert "evil&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;co" in html
    assert html.count("<script") == 1  # only the page's own filter script


def test_work_layout_and_missing_files(tmp_path):
    """DAG work dir: plots under verdicts/<paper>/<tier>/, atlases under atlas/<tier>/; an empty root renders."""
    _png(tmp_path / "verdicts" / "bapo" / "smoke" / "entropy_vs_step.png", 1)
    _png(tmp_path / "atlas" / "smoke" / "entropy_atlas.png", 2)
    html = to_html(synthetic_lb(), tmp_path)
    assert html.count("data:image/png;base64,") == 2
    assert re.search(r'<figure data-tier="smoke">\s*<img class="plot atlas"', html)
    bare = to_html(synthetic_lb(), tmp_path / "nothing-here")
    assert "data:image/png" not in bare and 'id="atlas"' not in bare
    # without a tracking UI (the committed report) runs link their result files by hash, never a dead MLflow URL
    assert 'href="jobs/smoke/grpo/0123456789ab/seed1/result.json">seed1:abababababab</a>' in html
    assert "#/experiments/" not in html and "runs (result file: hash)" in html


# ---------------------------------------------------------------------------
# headless Chromium
# ---------------------------------------------------------------------------

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium not found (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _near(img: np.ndarray, rgb, tol: int = 12) -> int:
    return int((np.abs(img.astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def test_screenshot_not_blank(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars",
                  report["path"].as_uri())
    assert shot.is_file() and shot.stat().st_size > 0
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report_screenshot.png")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1400)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100, "the page rendered (text, tables, plots)"
    counts = {name: _near(img, rgb) for name, rgb in
              {"green": GREEN, "red": RED, "amber": AMBER, "grey": GREY, "plot": MAGENTA}.items()}
    assert counts["green"] > 300, counts  # the 'reproduced' cell(s)
    assert counts["red"] > 300, counts
    assert counts["amber"] > 300, counts
    assert counts["grey"] > 300, counts
    assert counts["plot"] > 2000, counts  # the embedded plots were decoded and painted


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.els: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.els.append((tag, {k: (v or "") for k, v in attrs}))


def _dom(report, tmp_path, fragment: str) -> list[tuple[str, dict]]:
    p = _run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", report["path"].as_uri() + fragment)
    parser = _Elements()
    parser.feed(p.stdout)
    return parser.els


def _hidden(attrs: dict) -> bool:
    return "display: none" in attrs.get("style", "") or "hidden" in attrs


def test_dom_tier_filter_from_url(report, tmp_path):
    els = _dom(report, tmp_path, "#tier=cpu-real")
    body = next(a for t, a in els if t == "body")
    assert body.get("data-ready") == "1" and body.get("data-tier-filter") == "cpu-real", body
    rows = [a for t, a in els if t == "tr" and "data-tier" in a]
    smoke = [a for a in rows if a["data-tier"] == "smoke"]
    cpu = [a for a in rows if a["data-tier"] == "cpu-real"]
    assert len(smoke) >= 4 and all(_hidden(a) for a in smoke), smoke
    assert cpu and not any(_hidden(a) for a in cpu), cpu
    assert all(_hidden(a) for a in rows if a["data-tier"] == "paper")
    tables = {a["data-tier"]: a for t, a in els if t == "section" and "lb-table" in a.get("class", "")}
    assert _hidden(tables["smoke"]) and not _hidden(tables["cpu-real"])
    imgs = [a for t, a in els if t == "img"]
    assert len(imgs) == 5 and all(a.get("data-loaded") == "1" for a in imgs), [a.get("alt") for a in imgs]


def test_dom_bench_filter_from_url(report, tmp_path):
    els = _dom(report, tmp_path, "#bench=heldout_greedy")
    body = next(a for t, a in els if t == "body")
    assert body.get("data-ready") == "1" and body.get("data-bench-filter") == "heldout_greedy"
    cols = [a for t, a in els if t in ("th", "td", "li") and "data-bench" in a]
    assert cols and all(_hidden(a) == (a["data-bench"] != "heldout_greedy") for a in cols)
    tables = {a["data-tier"]: a for t, a in els if t == "section" and "lb-table" in a.get("class", "")}
    assert not _hidden(tables["smoke"]) and _hidden(tables["cpu-real"])  # cpu-real has no heldout_greedy column
    assert not any(_hidden(a) for t, a in els if t == "tr" and a.get("data-tier") == "smoke")
