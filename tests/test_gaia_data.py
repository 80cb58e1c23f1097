"""GAIA loader (harness/data/gaia.py) on the project's invented fixtures in GAIA's format (tests/fixtures/gaia: NOT
GAIA content), the parquet variant, the hub path (snapshot_download replaced: no network), and malformed records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.data import gaia as D

ROOT = Path(__file__).parent / "fixtures" / "gaia"
VAL = ROOT / "2023" / "validation"


def test_local_jsonl_split_loads_every_field():
    recs = D.load_split(ROOT, "validation")
    assert [r.level for r in recs] == [1, 1, 2, 2, 3]
    assert len({r.task_id for r in recs}) == 5
    first, csv = recs[0], recs[1]
    assert first.question.startswith("What is the sum") and first.final_answer == "55"
    assert first.file_name == "" and first.file_path is None
    assert first.annotator_metadata["Number of steps"] == "1"
    assert set(first.annotator_metadata) == {"Steps", "Number of steps", "How long did this take?", "Tools",
                                             "Number of tools"}
    assert csv.file_path == (VAL / csv.file_name).resolve() and csv.file_path.is_file()
    assert first.source == f"{VAL / 'metadata.jsonl'}:1" and recs[4].source.endswith(":5")


def test_configs_select_levels_and_test_split_withholds_truth():
    assert [r.level for r in D.load_split(ROOT, "validation", "2023_level2")] == [2, 2]
    assert [r.level for r in D.load_split(ROOT, "validation", "2023_level3")] == [3]
    test = D.load_split(ROOT, "test")
    assert [r.final_answer for r in test] == ["?", "?"] and not any(r.has_truth for r in test)
    assert all(r.annotator_metadata == {} for r in test)  # withheld on test
    assert test[1].file_path.name == test[1].file_name


@pytest.mark.parametrize("kwargs, match", [
    ({"config": "2023_level4"}, "valid: 2023_all, 2023_level1, 2023_level2, 2023_level3"),
    ({"split": "train"}, "valid: validation, test"),
])
def test_unknown_config_or_split_names_the_valid_choices(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        D.load_split(ROOT, **kwargs)


def _copy_split(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "2023", root / "2023")
    return root


def test_parquet_layout_gives_the_same_records(tmp_path):
    pd = pytest.importorskip("pandas")
    root = _copy_split(tmp_path)
    folder = root / "2023" / "validation"
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / "metadata.jsonl").unlink()
    # the hub's parquet: file_path relative to the repo root; attachments elsewhere than the split folder work too
    (root / "files").mkdir()
    for r in rows:
        r["file_path"] = f"files/{r['file_name']}" if r["file_name"] else ""
        if r["file_name"]:
            shutil.move(folder / r["file_name"], root / "files" / r["file_name"])
    pd.DataFrame(rows).to_parquet(folder / "metadata.parquet")
    got = D.load_split(root, "validation")
    want = D.load_split(ROOT, "validation")
    assert [(r.task_id, r.question, r.level, r.final_answer, r.file_name, r.annotator_metadata) for r in got] == \
           [(r.task_id, r.question, r.level, r.final_answer, r.file_name, r.annotator_metadata) for r in want]
    assert got[1].file_path == (root / "files" / got[1].file_name).resolve()
    assert got[0].source.endswith("metadata.parquet:row 0")


def test_hub_loader_downloads_the_split_with_the_token_and_loads_it(tmp_path, monkeypatch):
    import huggingface_hub

    root = _copy_split(tmp_path)
    calls = []

    def fake_snapshot_download(**kw):
        calls.append(kw)
        return str(root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    recs = D.load_hub("2023_level1", "validation", token="hf_dummy", revision="abc123")
    assert [r.level for r in recs] == [1, 1]
    assert calls == [{"repo_id": "gaia-benchmark/GAIA", "repo_type": "dataset", "revision": "abc123",
                      "token": "hf_dummy", "cache_dir": None, "allow_patterns": ["2023/validation/*"]}]


def test_hub_loader_turns_gated_and_offline_errors_into_clear_messages(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, LocalTokenNotFoundError

    for exc, match in [(LocalTokenNotFoundError("no token"), "is gated: accept its terms"),
                       (LocalEntryNotFoundError("offline"), "not in the hub cache and the hub is offline")]:
        def boom(**kw):
            raise exc
        monkeypatch.setattr(huggingface_hub, "snapshot_download", boom)
        with pytest.raises(ConfigError, match=match):
            D.load_hub()


GOOD = {"task_id": "t-1", "Question": "Q?", "Level": 1, "Final answer": "A", "file_name": "",
        "Annotator Metadata": {"Steps": "1. x"}}


def _folder_with(tmp_path: Path, lines: list) -> Path:
    folder = tmp_path / "split"
    folder.mkdir(parents=True)
    (folder / "metadata.jsonl").write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                                                   for line in lines))
    return folder


@pytest.mark.parametrize("bad, match", [
    ({k: v for k, v in GOOD.items() if k != "Question"}, r"metadata.jsonl:2: missing field\(s\) Question"),
    ({**GOOD, "Final answer": None}, r"metadata.jsonl:2: missing field\(s\) Final answer"),
    ({**GOOD, "Level": 4}, r"metadata.jsonl:2: Level is 4; valid: 1, 2, 3"),
    ({**GOOD, "Level": "hard"}, r"metadata.jsonl:2: Level is 'hard'; valid: 1, 2, 3"),
    ({**GOOD, "Level": True}, r"metadata.jsonl:2: Level is None; valid"),
    ({**GOOD, "file_name": "missing.pdf"}, r"metadata.jsonl:2: attachment 'missing.pdf' of task t-2 not found"),
    ({**GOOD, "file_name": "../escape.txt"}, r"metadata.jsonl:2: file_name '../escape.txt' must be a bare file name"),
    ({**GOOD, "Final answer": 42}, r"metadata.jsonl:2: Final answer must be a string, got int"),
    ({**GOOD, "Question": "   "}, r"metadata.jsonl:2: empty Question"),
    ({**GOOD, "Annotator Metadata": "steps"}, r"metadata.jsonl:2: Annotator Metadata must be an object of strings"),
    ('{"task_id": "t-2", "Question": ', r"metadata.jsonl:2: not valid JSON"),
    ("[1, 2]", r"metadata.jsonl:2: a record must be a JSON object, got list"),
])
def test_a_malformed_record_is_an_error_naming_file_and_line(tmp_path, bad, match):
    if isinstance(bad, dict):
        bad = {**bad, "task_id": "t-2"}
    folder = _folder_with(tmp_path, [GOOD, bad])
    with pytest.raises(D.GaiaFormatError, match=match):
        D.load_local(folder)


def test_duplicate_ids_empty_files_and_ambiguous_folders_are_errors(tmp_path):
    with pytest.raises(D.GaiaFormatError, match=r"metadata.jsonl:2: duplicate task_id t-1 \(first at .*:1\)"):
        D.load_local(_folder_with(tmp_path / "a", [GOOD, GOOD]))
    with pytest.raises(D.GaiaFormatError, match="no records"):
        D.load_local(_folder_with(tmp_path / "b", []))
    both = _folder_with(tmp_path / "c", [GOOD])
    (both / "metadata.parquet").write_bytes(b"not parquet")
    with pytest.raises(D.GaiaFormatError, match=r"expected exactly one of metadata.jsonl, metadata.parquet"):
        D.load_local(both)
    with pytest.raises(D.GaiaFormatError, match="not a readable parquet file"):
        D.load_local(both, metadata=both / "metadata.parquet")
    with pytest.raises(D.GaiaFormatError, match="found none"):
        D.load_local(tmp_path)
    with pytest.raises(ConfigError, match="level 0; valid: 1, 2, 3"):
        D.load_local(both, level=0)


def test_string_levels_and_null_file_names_from_parquet_rows_are_accepted(tmp_path):
    rec = D.parse_record({**GOOD, "Level": "2", "file_name": None, "Annotator Metadata": None}, "x:1", tmp_path)
    assert (rec.level, rec.file_name, rec.file_path, rec.annotator_metadata) == (2, "", None, {})
