"""GAIA records: the gated hub dataset ``gaia-benchmark/GAIA`` or a local folder in the same format, validated.

The dataset's terms forbid resharing the questions or answers outside a gated repository, so nothing of GAIA is
stored by the project: :func:`load_hub` downloads through ``huggingface_hub`` with the user's token (argument,
``HF_TOKEN`` or ``huggingface-cli login``; never written anywhere by us) into the hub's own cache, and the tests use
invented records in the same format (``tests/fixtures/gaia``).

Format (``../shared/notes/gaia.md``): a split folder (``2023/validation``, ``2023/test``) holds ``metadata.jsonl``
(one record per line) or, since October 2025, ``metadata.parquet`` (same columns plus ``file_path``, relative to the
repository root), and the attachments. A record: ``task_id``, ``Question``, ``Level`` (1-3), ``Final answer``
(``"?"`` on test), ``file_name`` (``""`` when there is no attachment), ``Annotator Metadata`` (strings; withheld on
test). Every record is checked; the first bad one raises :class:`GaiaFormatError` naming the file and the line
(jsonl) or row (parquet), so a truncated download or a hand-edited file never loads silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import ConfigError

HUB_REPO = "gaia-benchmark/GAIA"
#: hub config -> level it keeps (None: all)
CONFIGS: dict[str, int | None] = {"2023_all": None, "2023_level1": 1, "2023_level2": 2, "2023_level3": 3}
SPLITS = ("validation", "test")
LEVELS = (1, 2, 3)
REQUIRED = ("task_id", "Question", "Level", "Final answer", "file_name")
METADATA_FILES = ("metadata.jsonl", "metadata.parquet")


class GaiaFormatError(ConfigError):
    """A malformed GAIA record or folder; the message names the file and the line or row."""


@dataclass(frozen=True)
class GaiaRecord:
    """One GAIA task. ``file_path``: the attachment's absolute path (None without one); ``source``: where the
    record was read (``file:line`` or ``file:row N``). The truth is withheld on the test split (``"?"``)."""
    task_id: str
    question: str
    level: int
    final_answer: str
    file_name: str = ""
    file_path: Path | None = None
    annotator_metadata: dict[str, str] = field(default_factory=dict, hash=False)
    source: str = field(default="", compare=False)

    @property
    def has_truth(self) -> bool:
        return self.final_answer != "?"


def _level(value, where: str) -> int:
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    elif hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar from parquet
        value = value.item()
    if not isinstance(value, int) or value not in LEVELS:
        raise GaiaFormatError(f"{where}: Level is {value!r}; valid: 1, 2, 3")
    return value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_record(raw: dict, where: str, folder: Path, repo_root: Path | None = None) -> GaiaRecord:
    """Validate one raw record (a jsonl line's object or a parquet row) and resolve its attachment."""
    if not isinstance(raw, dict):
        raise GaiaFormatError(f"{where}: a record must be a JSON object, got {type(raw).__name__}")
    if "file_name" in raw and _missing(raw["file_name"]):
        raw = {**raw, "file_name": ""}  # a parquet row may hold None when there is no attachment
    missing = [k for k in REQUIRED if k not in raw or _missing(raw[k])]
    if missing:
        raise GaiaFormatError(f"{where}: missing field(s) {', '.join(missing)}; every record needs "
                              f"{', '.join(REQUIRED)}")
    for key in ("task_id", "Question", "Final answer", "file_name"):
        if not isinstance(raw[key], str):
            raise GaiaFormatError(f"{where}: {key} must be a string, got {type(raw[key]).__name__}")
    task_id = raw["task_id"].strip()
    if not task_id or not raw["Question"].strip():
        raise GaiaFormatError(f"{where}: empty {'task_id' if not task_id else 'Question'}")
    meta = raw.get("Annotator Metadata")
    if _missing(meta):
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                             for k, v in meta.items()):
        raise GaiaFormatError(f"{where}: Annotator Metadata must be an object of strings, got {meta!r:.80}")
    file_name = raw["file_name"].strip()
    path = None
    if file_name:
        if Path(file_name).name != file_name:
            raise GaiaFormatError(f"{where}: file_name {file_name!r} must be a bare file name (no folders)")
        candidates = [folder / file_name]
        rel = raw.get("file_path")
        if isinstance(rel, str) and rel.strip() and repo_root is not None:
            candidates.append(repo_root / rel.strip())
        path = next((p.resolve() for p in candidates if p.is_file()), None)
        if path is None:
            raise GaiaFormatError(f"{where}: attachment {file_name!r} of task {task_id} not found (looked for "
                                  f"{', '.join(map(str, candidates))})")
    return GaiaRecord(task_id=task_id, question=raw["Question"], level=_level(raw["Level"], where),
                      final_answer=raw["Final answer"], file_name=file_name, file_path=path,
                      annotator_metadata={k: ("" if v is None else v) for k, v in meta.items()}, source=where)


def _raw_jsonl(path: Path):
    from harness.results import jsonl_file

    return jsonl_file(path, GaiaFormatError)


def _raw_parquet(path: Path):
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise GaiaFormatError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for i, row in enumerate(frame.to_dict(orient="records")):
        yield f"{path}:row {i}", row


def load_local(folder: str | Path, *, level: int | None = None, repo_root: str | Path | None = None,
               metadata: str | Path | None = None) -> list[GaiaRecord]:
    """All records of a split folder, in file order. ``metadata``: the metadata file (default: the folder's
    ``metadata.jsonl`` or ``metadata.parquet``, exactly one of them); ``level``: keep only that level;
    ``repo_root``: where parquet ``file_path`` values are relative to (default: two folders up, the hub layout
    ``<root>/2023/<split>``). Duplicate task ids are an error."""
    folder = Path(folder)
    if level is not None and level not in LEVELS:
        raise ConfigError(f"level {level!r}; valid: 1, 2, 3 or None (all)")
    if metadata is None:
        found = [folder / n for n in METADATA_FILES if (folder / n).is_file()]
        if len(found) != 1:
            raise GaiaFormatError(f"{folder}: expected exactly one of {', '.join(METADATA_FILES)}, found "
                                  f"{[p.name for p in found] or 'none'}")
        metadata = found[0]
    metadata = Path(metadata)
    if not metadata.is_file():
        raise GaiaFormatError(f"{metadata}: no such metadata file")
    root = Path(repo_root) if repo_root is not None else folder.resolve().parents[1]
    rows = _raw_parquet(metadata) if metadata.suffix == ".parquet" else _raw_jsonl(metadata)
    records, seen = [], {}
    for where, raw in rows:
        rec = parse_record(raw, where, folder, root)
        if rec.task_id in seen:
            raise GaiaFormatError(f"{where}: duplicate task_id {rec.task_id} (first at {seen[rec.task_id]})")
        seen[rec.task_id] = where
        if level is None or rec.level == level:
            records.append(rec)
    if not seen:
        raise GaiaFormatError(f"{metadata}: no records")
    return records


def _check(config: str, split: str) -> int | None:
    if config not in CONFIGS:
        raise ConfigError(f"unknown GAIA config {config!r}; valid: {', '.join(CONFIGS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown GAIA split {split!r}; valid: {', '.join(SPLITS)}")
    return CONFIGS[config]


def load_split(root: str | Path, split: str = "validation", config: str = "2023_all") -> list[GaiaRecord]:
    """A split from a local copy of the hub repository's layout (``<root>/2023/<split>/``)."""
    level = _check(config, split)
    return load_local(Path(root) / "2023" / split, level=level, repo_root=root)


def load_hub(config: str = "2023_all", split: str = "validation", *, token: str | bool | None = None,
             revision: str | None = None, cache_dir: str | Path | None = None) -> list[GaiaRecord]:
    """Download ``2023/<split>/`` of the gated dataset (metadata and attachments) with the user's token and load
    it. ``revision``: a commit of the dataset repository, to pin what was evaluated; ``cache_dir``: the hub
    cache (default: the hub's own, outside the repository)."""
    level = _check(config, split)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                       LocalTokenNotFoundError, OfflineModeIsEnabled)

    try:
        root = snapshot_download(repo_id=HUB_REPO, repo_type="dataset", revision=revision, token=token,
                                 cache_dir=cache_dir, allow_patterns=[f"2023/{split}/*"])
    except (GatedRepoError, LocalTokenNotFoundError) as e:
        raise ConfigError(f"{HUB_REPO} is gated: accept its terms on the hub, then pass a token (token=, HF_TOKEN "
                          f"or `huggingface-cli login`) ({type(e).__name__})") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise ConfigError(f"{HUB_REPO} {split} is not in the hub cache and the hub is offline (HF_HUB_OFFLINE): "
                          f"download it once online, or use load_split() on a local copy ({type(e).__name__})"
                          ) from None
    except HfHubHTTPError as e:
        raise ConfigError(f"could not download {HUB_REPO} ({type(e).__name__}: {e})") from None
    folder = Path(root) / "2023" / split
    metadata = None
    if (folder / "metadata.jsonl").is_file() and (folder / "metadata.parquet").is_file():
        metadata = folder / "metadata.parquet"  # the current hub format wins if a snapshot has both
    return load_local(folder, level=level, repo_root=root, metadata=metadata)
