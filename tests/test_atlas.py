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
