"""Training rows of the real tiers (harness.data.realdata.read_rows): stored files with nested fields, and the hub
path (what users with the hub run), exercised here on a local folder that ``datasets.load_dataset`` reads the same
way as a hub id."""
import json

import pytest

from harness.config import ConfigError
from harness.data import realdata
from harness.data.realdata import read_rows

from conftest import ROOT

DATA = ROOT.parent / "shared" / "data"


def test_one_shot_sets_read_their_nested_verl_fields():
    if not (DATA / "train_one_shot_rlvr").is_dir():
        pytest.skip("no ../shared/data here")
    pi1 = read_rows(DATA, "pi1_r128")
    assert len(pi1) == 128 and {r["answer"] for r in pi1} == {"12.8"}  # PROVENANCE: pi1 = index 124, 12.8
    assert pi1[0]["problem"].startswith("The pressure") and pi1[0]["problem"].endswith("\\boxed{}.")
    assert {r["answer"] for r in read_rows(DATA, "pi13_r128")} == {"\\frac{4}{3}"}


@pytest.fixture
def hub_set(tmp_path, monkeypatch):
    """A GSM8K-shaped set in a local folder, registered as a hub dataset of the manifest."""
    folder = tmp_path / "gsm8k_like"
    folder.mkdir()
    recs = [{"question": "2 apples and 3 apples?", "answer": "2 + 3 = 5\n#### 5"},
            {"question": "Half of 10?", "answer": "10 / 2 = 5 so\n#### 5.0 "},
            {"question": "no final line", "answer": "just prose"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    spec = dict(realdata.manifest()["gsm8k"], hub=str(folder), config=None)
    monkeypatch.setattr(realdata, "manifest", lambda: {"gsm8k": spec})
    return spec


def test_hub_sets_load_through_datasets_and_take_the_answer_by_regex(hub_set, tmp_path):
    rows = read_rows(tmp_path / "unused", "gsm8k")
    assert [(r["problem"], r["answer"]) for r in rows] == [("2 apples and 3 apples?", "5"), ("Half of 10?", "5.0")]
    assert [r["id"] for r in rows] == ["gsm8k/1", "gsm8k/2"]


def test_an_unreachable_hub_set_names_the_dataset_and_the_id(hub_set, tmp_path):
    hub_set["hub"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"cannot load dataset 'gsm8k' from the hub \(.*nowhere"):
        read_rows(tmp_path, "gsm8k")


def test_unknown_dataset_names_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; valid: .*gsm8k"):
        read_rows(tmp_path, "nope")
