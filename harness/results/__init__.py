"""Result files: atomic writes, content hashes, provenance, pinning and reproducibility checks."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

KEY_PACKAGES = ("torch", "transformers", "trl", "accelerate", "snakemake", "mlflow", "math-verify", "lm_eval",
                "numpy", "scipy")
#: fields of a result that legitimately differ between two runs of the same job
VOLATILE_KEYS = {"created", "wall_seconds", "mlflow_run_id", "mlflow_experiment_id", "git_commit", "git_dirty", "hostname",
                 "hardware", "peak_rss_mb", "content_hash", "step_time", "seconds", "train_runtime",
                 "train_samples_per_second", "train_steps_per_second", "profiling", "pinned_from", "model_dir", "provenance",
                 "task_yaml", "timing"}


def is_volatile(key: str) -> bool:
    """Fields that differ between identical reruns: provenance (:data:`VOLATILE_KEYS`) and every timing, i.e. a key
    named ``*_seconds`` or ``*_per_second`` (``sampling_seconds``, ``generation_seconds``, ...) and an agent
    evaluation's ``timing`` block (seconds spent resetting, stepping, generating; episodes per hour)."""
    return key in VOLATILE_KEYS or key.endswith(("_seconds", "_per_second"))


def jsonl_records(lines, path, error: type[Exception] = ValueError):
    """(line number, record) of each non-blank line of a JSONL file; a malformed line raises ``error`` naming the
    file and line."""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
        yield i, rec


def jsonl_file(path, error: type[Exception] = ValueError):
    """``(where, record)`` per non-blank line of the JSON-lines file ``path``, ``where`` = ``path:line``."""
    with open(path, encoding="utf-8") as f:
        for i, rec in jsonl_records(f, path, error):
            yield f"{path}:{i}", rec


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` without its own ``content_hash`` field."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "content_hash"}
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:16]


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, *, hashed: bool = False) -> Path:
    obj = _finite(obj)  # hash exactly what is stored (NaN/inf become null)
    if hashed:
        obj["content_hash"] = content_hash(obj)
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _finite(obj):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}  # JSON keys are strings: hash them as stored
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling directory; on success it replaces ``path``; on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_info(root: str | Path | None = None) -> dict:
    root = root or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for p in KEY_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _cpu_kernels() -> str | None:
    """The CPU kernels torch dispatches to (``AVX2``, ``AVX512``, ...; harness.config.numerics), when this process has
    imported torch (never imported here: results stay torch-free)."""
    torch = sys.modules.get("torch")
    try:
        return torch.backends.cpu.get_cpu_capability() if torch is not None else None
    except (AttributeError, RuntimeError):
        return None


def _numpy_kernels() -> str | None:
    """The widest SIMD group NumPy's loops dispatch to (``X86_V4`` is AVX-512, ``X86_V3`` AVX2; harness.config.numerics
    holds it at ``X86_V3``), when this process has imported NumPy."""
    np = sys.modules.get("numpy")
    try:
        found = np._core._multiarray_umath.__cpu_features__ if np is not None else None
    except AttributeError:
        return None
    return next((g for g in ("X86_V4", "X86_V3", "X86_V2") if found and found.get(g)), None)


def provenance() -> dict:
    return {**git_info(), "versions": package_versions(),
            "hardware": {"machine": platform.machine(), "processor": platform.processor() or None,
                         "cpu_count": os.cpu_count(), "cpu_kernels": _cpu_kernels(), "numpy_kernels": _numpy_kernels()}}


def compare_results(pinned: Any, fresh: Any, *, rtol: float = 0.0, atol: float = 0.0, prefix: str = "") -> list[str]:
    """Fields whose values differ between two result objects (volatile fields ignored)."""
    diffs: list[str] = []
    if isinstance(pinned, dict) and isinstance(fresh, dict):
        for k in sorted(set(pinned) | set(fresh)):
            if is_volatile(k):
                continue
            name = f"{prefix}.{k}" if prefix else k
            if k not in pinned or k not in fresh:
                diffs.append(name)
            else:
                diffs += compare_results(pinned[k], fresh[k], rtol=rtol, atol=atol, prefix=name)
    elif isinstance(pinned, list) and isinstance(fresh, list):
        if len(pinned) != len(fresh):
            diffs.append(f"{prefix}[len {len(pinned)} != {len(fresh)}]")
        else:
            for i, (a, b) in enumerate(zip(pinned, fresh)):
                diffs += compare_results(a, b, rtol=rtol, atol=atol, prefix=f"{prefix}[{i}]")
    elif isinstance(pinned, (int, float)) and isinstance(fresh, (int, float)) and not isinstance(pinned, bool):
        if not math.isclose(pinned, fresh, rel_tol=rtol, abs_tol=atol):
            diffs.append(prefix)
    elif pinned != fresh:
        diffs.append(prefix)
    return diffs
