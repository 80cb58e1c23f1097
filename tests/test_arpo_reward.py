"""ARPO's reward (harness/verify/arpo_reward.py) against golden values of the authors' ``compute_score``
(ARPO/verl_arpo_entropy/verl/utils/reward_score/deep_research.py at multi-agent-deep-research/ARPO@ff66660).

tests/fixtures/arpo_reward_golden.json: hand-written responses (inputs written by us, each with a note on the branch
it takes); ``expected`` recomputed by tests/fixtures/generators/arpo_reward.py from the authors' function, loaded
from a checkout or mirror of their repository at run time (nothing of it is stored here)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.verify import arpo_reward as R

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "arpo_reward_golden.json").read_text())
CASES = FIXTURE["cases"]
THINK = "<think> r </think>"


def test_fixture_comes_from_the_pinned_authors_file_and_covers_every_branch():
    src = FIXTURE["source"]
    assert (src["commit"], src["file"], src["blob"]) == (R.SOURCE["commit"], R.SOURCE["file"], R.SOURCE["blob"])
    assert len(CASES) >= 30 and len({c["name"] for c in CASES}) == len(CASES)
    reasons = {c["expected"]["reason"].split(":")[0] for c in CASES}
    fmt = {c["expected"]["reason"] for c in CASES if c["expected"]["reason"].startswith("bad format")}
    assert {"find box error", "wrong answer but good format", "correct answer, get f1 score",
            "correct answer and calling search and python at the same time, get score"} <= reasons
    for why in ("<think> </think> not paired", "<think> or </think> not found", "<answer> or </answer> not found",
                "search/result tags are incomplete", "search/result tags are nested in the wrong order",
                "python/result tags are incomplete", "python/result tags are nested in the wrong order",
                "<answer> must be before </answer>", "answer is missing \\boxed{} format"):
        assert f"bad format: {why}" in fmt, why
    scores = {c["expected"]["score"] for c in CASES}
    assert {-1, 0, 1.0, 1.1} <= scores and any(0 < s < 1 for s in scores)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_compute_score_equals_the_authors(case):
    got, exp = R.compute_score(case["solution_str"], case["ground_truth"]), case["expected"]
    assert got["score"] == pytest.approx(exp["score"], abs=1e-12)
    assert got["f1_score"] == pytest.approx(exp["f1_score"], abs=1e-12)
    assert got["answer"] == exp["answer"]
    if exp["reason"].startswith("find box error"):  # the exception's wording is the interpreter's
        assert got["reason"].startswith("find box error")
    else:
        assert got["reason"] == exp["reason"]
    assert R.score(case["solution_str"], case["ground_truth"]) == pytest.approx(exp["score"], abs=1e-12)
    assert isinstance(R.score(case["solution_str"], case["ground_truth"]), float)


def test_a_whole_trajectory_with_both_tools_gets_the_bonus():
    text = (f"{THINK}<python>print(6*7)</python> <result>\n42\n</result>{THINK}<search> q </search> <result>\n"
            f"Page 1: x\n</result>{THINK}<answer> \\boxed{{42}} </answer>")
    assert R.score(text, "42") == pytest.approx(1.1)
    assert R.score(text, "41") == 0.0
    assert R.score(text.replace("<answer>", ""), "42") == -1.0
    # the pairing is loose: a call's result may be any later <result> (here the search's), as the authors check it
    assert R.score(text.replace(" <result>\n42\n</result>", ""), "42") == pytest.approx(1.1)
    assert R.score(text.split("<think> r </think><answer>")[0], "42") == -1.0  # ends on a call: no answer


def test_ground_truth_forms():
    text = f"{THINK}<answer> \\boxed{{New York City}} </answer>"
    assert R.score(text, np.array(["NYC", "new york city"], dtype=object)) == 1.0  # parquet rows hold numpy arrays
    assert R.score(text, ("New York",)) == pytest.approx(0.8)
    for bad in (12, None, ["New York", 3], b"NYC"):
        with pytest.raises(TypeError, match="ground truth"):
            R.score(text, bad)


def test_helpers():
    assert R.last_boxed_only_string("a \\boxed{x{y}} b \\boxed{z}") == "\\boxed{z}"
    assert R.last_boxed_only_string("\\boxed{x") is None
    assert R.remove_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    with pytest.raises(AssertionError):
        R.remove_boxed("\\fbox{x}")
    assert R.normalize_answer("  The  Eiffel, TOWER! ") == "eiffel tower"
    assert R.get_f1_score("paris france", "Paris") == pytest.approx(2 / 3)
    assert R.extract_answer("x <answer>a</answer> <answer>b</answer>") == "a"
