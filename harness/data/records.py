"""Reading record files line by line (the dataset loaders' shared helper)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: Path, error: type[Exception]) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` per non-empty line of a JSON-lines file, ``where`` = ``path:line``; a line that is not
    JSON raises ``error`` naming the file, line and column."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{i}", json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{i}: not JSON ({e.msg} at column {e.colno})") from None
