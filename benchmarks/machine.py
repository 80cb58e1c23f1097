"""What the benchmark scripts record about where and from what they measured: the machine and the git commit.

Kept here, beside the scripts, rather than in ``harness``: ``bench_overhead.py`` also measures older checkouts of the
package (issue 9), which would lack a helper added there."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def machine() -> dict:
    """CPU model (``/proc/cpuinfo``), cores, platform, Python, torch and TRL versions, device."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch
    import trl

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "trl": trl.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def git_commit(cwd: Path) -> str | None:
    """HEAD of the checkout at ``cwd``, ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
