"""ARPO's RL reasoning set: the 10K questions ARPO's and AEPO's released reasoning runs train on, with tools.

Where it comes from: ``ARPO/rl_datasets/train_10k.parquet`` of RUC-NLPIR/ARPO (read as the fork
multi-agent-deep-research/ARPO at ``ff66660``; sha256 in :data:`AUTHORS_FILES`), the ``TRAIN_FILES`` of
``ARPO/scripts/ARPO_7B_Reasoning_1node.sh`` and of ``AEPO/scripts/AEPO_Qwen25_7B_DeepResearch.sh``; the README
publishes it on the hub as :data:`HUB_ID` (that copy's layout was not checked here: the hub is unreachable from this
machine; it is read with the same validation). ``valid.parquet`` (180 rows) is their ``VALID_FILES``.

Layout (verl RL rows, the authors' columns; every row of both files checked): ``data_source`` (``"DR_grpo_mix"``),
``prompt`` (``[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": <question>}]``),
``ability`` (``"math"`` or ``"qa"``, 5,000 each in train), ``reward_model`` (``{"ground_truth": <str>, "style":
"rule"}``), ``extra_info`` (``{"index": <row number>, "need_tools_kwargs": True, "question": <question>, "split":
"train"|"valid"}``), ``metadata`` (None). :func:`load` returns one row per record, in file order::

    {"id": "<split>-<index>", "question": <the user message>, "answer": <reward_model.ground_truth>,
     "source": <ability, else data_source>, "data_source": ..., "system": <the system message or None>,
     "index": <extra_info.index, else the row number>}

``answer`` is what :func:`harness.verify.arpo_reward.score` takes as the ground truth (a string; a list of strings
is accepted too). Bad input raises :class:`ArpoDataError` (a :class:`~harness.config.ConfigError`) naming the file
and the row (parquet: ``file:row N``, 0-based) or line (jsonl: ``file:N``, 1-based) and what is missing.

Where a local copy is looked for: ``<data_dir>/arpo_reasoning/train_10k.parquet`` (or ``.jsonl``: one JSON object
per line in the same layout), ``data_dir`` defaulting to ``RLVR_DATA_DIR`` or ``<repo>/../shared/data``.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.config import ConfigError
# the rows' system prompt, its digest and the rows' digest live with the environment that renders and records them
from harness.envs.toolqa import SYSTEM_PROMPT, SYSTEM_PROMPT_SHA256, rows_digest  # noqa: F401

#: the hub copy named in the ARPO README ("10K Agentic Reasoning RL Data")
HUB_ID = "dongguanting/ARPO-RL-Reasoning-10K"
COMMIT = "ff6666069e6c28375ed63336c14cb456d172fe06"
#: the authors' files at COMMIT (ARPO/rl_datasets/), by name: sha256 of the bytes and row count
AUTHORS_FILES = {
    "train_10k.parquet": {"sha256": "d1268cd800b821d7fa2913766beb81db342e4b839cbb6ba50a6549d5d8d1851b", "rows": 10000},
    "valid.parquet": {"sha256": "128ec75560f5d40affe1b20ad7a5a82486dec7e338730969fd5cdab61affc733", "rows": 180},
}
#: where :func:`load` looks under the data directory, in this order
LOCAL_FILES = ("arpo_reasoning/train_10k.parquet", "arpo_reasoning/train_10k.jsonl")
REQUIRED = ("prompt", "reward_model")
COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info", "metadata")



class ArpoDataError(ConfigError):
    """A malformed ARPO reasoning file or row; the message names the file and the row or line."""


def default_data_dir() -> Path:
    """``RLVR_DATA_DIR`` or ``<repo root>/../shared/data`` (as the evaluation tasks resolve it)."""
    env = os.environ.get("RLVR_DATA_DIR")
    if env:
        return Path(env)
    from harness.config import REPO_ROOT

    return REPO_ROOT.parent / "shared" / "data"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v):
    """numpy arrays and scalars (pandas / datasets rows) as Python lists and scalars."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return v.tolist()
    return v


def parse_row(raw, where: str, position: int) -> dict:
    """One record in the authors' layout -> a row (module docstring); ``position``: its 0-based place in the file."""
    if not isinstance(raw, dict):
        raise ArpoDataError(f"{where}: a record must be an object with columns {', '.join(COLUMNS)}, got "
                            f"{type(raw).__name__}")
    missing = [c for c in REQUIRED if c not in raw or _missing(raw[c])]
    if missing:
        raise ArpoDataError(f"{where}: missing column(s) {', '.join(missing)}; a row needs {', '.join(REQUIRED)} "
                            f"(the authors' layout: {', '.join(COLUMNS)})")
    prompt = _plain(raw["prompt"])
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                               and isinstance(m.get("role"), str) for m in prompt):
        raise ArpoDataError(f"{where}: prompt must be a list of {{role, content}} messages, got {prompt!r:.100}")
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise ArpoDataError(f"{where}: prompt has no (non-empty) user message (roles: "
                            f"{', '.join(m['role'] for m in prompt) or 'none'})")
    systems = [m["content"] for m in prompt if m["role"] == "system"]
    reward = _plain(raw["reward_model"])
    if not isinstance(reward, dict) or "ground_truth" not in reward or _missing(reward["ground_truth"]):
        raise ArpoDataError(f"{where}: reward_model.ground_truth is missing (reward_model = {reward!r:.100})")
    truth = _plain(reward["ground_truth"])
    if isinstance(truth, list):
        if not truth or not all(isinstance(t, str) for t in truth):
            raise ArpoDataError(f"{where}: reward_model.ground_truth must be a string or a non-empty list of "
                                f"strings, got {truth!r:.100}")
    elif not isinstance(truth, str):
        raise ArpoDataError(f"{where}: reward_model.ground_truth must be a string, got {type(truth).__name__} "
                            f"{truth!r:.60}")
    extra = _plain(raw.get("extra_info"))
    extra = extra if isinstance(extra, dict) else {}
    index = _plain(extra.get("index", position))
    if isinstance(index, bool) or not isinstance(index, (int, float)) or int(index) != index:
        raise ArpoDataError(f"{where}: extra_info.index must be an integer, got {index!r:.40}")
    split = extra.get("split") if isinstance(extra.get("split"), str) and extra.get("split") else "train"
    ability, data_source = raw.get("ability"), raw.get("data_source")
    source = next((s for s in (ability, data_source) if isinstance(s, str) and s.strip()), "unknown")
    return {"id": f"{split}-{int(index)}", "question": users[-1], "answer": truth, "source": source,
            "data_source": data_source if isinstance(data_source, str) else None,
            "system": systems[0] if systems else None, "index": int(index)}


def rows_from_records(records: Iterable[tuple[str, dict]]) -> list[dict]:
    """Rows from ``(where, record)`` pairs, in order; duplicate ids are an error naming both places."""
    rows, seen = [], {}
    for position, (where, raw) in enumerate(records):
        row = parse_row(raw, where, position)
        if row["id"] in seen:
            raise ArpoDataError(f"{where}: duplicate id {row['id']!r} (extra_info split/index), first at "
                                f"{seen[row['id']]}")
        seen[row["id"]] = where
        rows.append(row)
    return rows


def _parquet(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"reading {path} needs pyarrow (pip install pyarrow), or give a .jsonl file") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # not parquet, truncated
        raise ArpoDataError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e)[:200]})") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ArpoDataError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(table.column_names)} "
                            f"(the authors' layout: {', '.join(COLUMNS)})")
    for i, rec in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", rec


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    from harness.results import jsonl_file

    return jsonl_file(path, ArpoDataError)


def read_file(path: str | os.PathLike) -> list[dict]:
    """The rows of a local ``.parquet`` or ``.jsonl`` file in the authors' layout."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no ARPO reasoning file {path}")
    if path.suffix == ".parquet":
        rows = rows_from_records(_parquet(path))
    elif path.suffix == ".jsonl":
        rows = rows_from_records(_jsonl(path))
    else:
        raise ConfigError(f"{path}: unknown file type {path.suffix!r}; valid: .parquet, .jsonl")
    if not rows:
        raise ArpoDataError(f"{path}: no rows")
    return rows


def load_hub(hub_id: str = HUB_ID, *, split: str = "train", revision: str | None = None) -> list[dict]:
    """The rows of the hub copy (users with the hub; ``datasets.load_dataset(hub_id, split=, revision=)``)."""
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as e:  # no hub here, a wrong id or split: say what was looked for
        raise ConfigError(f"cannot load {hub_id} (split {split}, revision {revision}) from the hub: "
                          f"{type(e).__name__}: {str(e)[:300]}") from None
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise ArpoDataError(f"{hub_id}[{split}]: missing column(s) {', '.join(missing)}; it has "
                            f"{', '.join(ds.column_names)}")
    return rows_from_records((f"{hub_id}[{split}] row {i}", rec) for i, rec in enumerate(ds))


def load(path: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None, hub: bool = False,
         hub_id: str = HUB_ID, split: str = "train", revision: str | None = None,
         limit: int | None = None) -> list[dict]:
    """The training rows, in file order: from ``path``; else from the hub when ``hub``; else from the first of
    :data:`LOCAL_FILES` under ``data_dir`` (default :func:`default_data_dir`). ``limit``: the first rows only."""
    if path is not None:
        rows = read_file(path)
    elif hub:
        rows = load_hub(hub_id, split=split, revision=revision)
    else:
        root = Path(data_dir) if data_dir not in (None, "") else default_data_dir()
        found = next((root / f for f in LOCAL_FILES if (root / f).is_file()), None)
        if found is None:
            raise ConfigError(f"no ARPO reasoning set under {root} (looked for {', '.join(LOCAL_FILES)}); copy the "
                              f"authors' ARPO/rl_datasets/train_10k.parquet (commit {COMMIT[:7]}) there, set "
                              f"data_dir, or load from the hub ({HUB_ID})")
        rows = read_file(found)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        rows = rows[:limit]
    return rows


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
