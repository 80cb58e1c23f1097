"""Atlas classification on synthetic trajectories: beats / along / below the baseline curve."""
import numpy as np
import pytest

from harness.report.atlas import atlas_for
from harness.claims.law import law


def _run(method, seed, offset, rng, h0=0.6, h1=0.35):
    h = np.linspace(h0, h1, 20)
    acc = law(h, 0.5, 1.2) + offset + rng.normal(0, 0.004, h.size)
    return {"job": {"method": method, "seed": seed},
            "heldout": [{"step": 10 * i, "entropy": float(a), "sampled_acc": float(b)} for i, (a, b) in enumerate(zip(h, acc))]}


@pytest.mark.parametrize("offset,expected", [(0.05, "beats_curve"), (0.0, "along_curve"), (-0.05, "below_curve")])
def test_classification(offset, expected):
    rng = np.random.default_rng(0)
    runs = [_run("grpo", s, 0.0, rng) for s in (1, 2, 3)]
    runs += [_run("m", s, offset, rng, h0=0.6, h1=0.45) for s in (1, 2, 3)]   # the method keeps entropy higher
    page = atlas_for(runs, "grpo")
    assert page["methods"]["m"]["verdict"] == expected, page["methods"]["m"]
    assert page["baseline_fit"]["r2"] > 0.95


def test_atlas_png_is_a_palette_png_with_one_panel_per_page(tmp_path):
    """The atlas figure (rewritten by every pin) is stored as a 256-colour PNG; one panel per (paper, tier)."""
    from PIL import Image

    from harness.report.plots import atlas_plot

    rng = np.random.default_rng(0)
    runs = [_run("grpo", s, 0.0, rng) for s in (1, 2)] + [_run("m", s, 0.02, rng) for s in (1, 2)]
    pages = {f"p{i}/smoke": {**atlas_for(runs, "grpo"), "baseline": "grpo", "runs": runs} for i in range(4)}
    atlas_plot(pages, tmp_path / "atlas.png")
    with Image.open(tmp_path / "atlas.png") as im:
        assert im.mode == "P" and im.size[0] > 1.5 * im.size[1]  # 4 pages: 3 columns by 2 rows
    assert not list(tmp_path.glob(".*"))  # no temp file left
