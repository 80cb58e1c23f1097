"""Plots of a replication: entropy vs step per method, reward vs entropy with the fitted law."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.law import law  # noqa: E402


def _save(fig, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


def entropy_vs_step(results: list[dict], path: Path, title: str):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    methods = sorted({r["job"]["method"] for r in results})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for r in sorted(results, key=lambda r: (r["job"]["method"], r["job"]["seed"])):
        ev = r["heldout"]
        ax.plot([e["step"] for e in ev], [e["entropy"] for e in ev], color=colors[r["job"]["method"]],
                alpha=0.85, lw=1.4, label=f"{r['job']['method']} (seed {r['job']['seed']})",
                ls="-" if r["job"]["seed"] == min(x["job"]["seed"] for x in results) else "--")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out sampling entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def reward_vs_entropy(results: list[dict], fits: dict, path: Path, title: str):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    methods = sorted({r["job"]["method"] for r in results})
    hs = []
    for i, m in enumerate(methods):
        h = [e["entropy"] for r in results if r["job"]["method"] == m for e in r["heldout"]]
        a = [e["sampled_acc"] for r in results if r["job"]["method"] == m for e in r["heldout"]]
        ax.scatter(h, a, s=12, alpha=0.7, color=f"C{i}", label=m)
        hs += h
    grid = np.linspace(min(hs), max(hs), 100)
    for (name, f), ls in zip(fits.items(), ["-", "--", ":"]):
        ax.plot(grid, law(grid, f["a"], f["b"]), "k", ls=ls, lw=1.2,
                label=f"{name}: R=-{f['a']:.3f}e^H+{f['b']:.3f} (R²={f['r2']:.2f})")
    ax.set_xlabel("held-out entropy H (nats/token)")
    ax.set_ylabel("held-out sampled accuracy R")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
