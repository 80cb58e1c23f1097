"""Plots of a replication: entropy vs step per method, reward vs entropy with the fitted law."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.claims.law import law  # noqa: E402


def _save(fig, path: Path, *, palette: bool = False):
    """Write ``fig`` atomically. ``palette``: as a 256-colour PNG (line plots lose nothing visible; a many-panel
    figure rewritten by every pin shrinks about 4x)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    if palette:
        from PIL import Image

        with Image.open(tmp) as im:
            q = im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        q.save(tmp, format="PNG", optimize=True)
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


def atlas_plot(pages: dict, path: Path):
    """One panel per (paper, tier): each method's held-out (entropy, reward) trajectory and the baseline curve."""
    n = max(1, len(pages))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    for ax, (name, page) in zip(axes.flat, pages.items()):
        methods = sorted({r["job"]["method"] for r in page["runs"]})
        hs = []
        for i, m in enumerate(methods):
            for r in page["runs"]:
                if r["job"]["method"] == m:
                    h = [e["entropy"] for e in r["heldout"]]
                    a = [e["sampled_acc"] for e in r["heldout"]]
                    hs += h
                    cls = page["methods"].get(m, {}).get("verdict", "baseline")
                    ax.plot(h, a, color=f"C{i}", alpha=0.7, lw=1,
                            label=f"{m} ({cls})" if r is next(x for x in page["runs"] if x["job"]["method"] == m) else None)
        f = page["baseline_fit"]
        grid = np.linspace(min(hs), max(hs), 100)
        ax.plot(grid, law(grid, f["a"], f["b"]), "k--", lw=1.2, label=f"{page['baseline']} law fit (R²={f['r2']:.2f})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("held-out entropy (nats/token)")
        ax.set_ylabel("held-out sampled accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(pages):]:
        ax.axis("off")
    _save(fig, path, palette=True)


def verdict_plots(results, fits, out_dir, title) -> None:
    """The verdict's two plots: held-out entropy vs step, and held-out reward vs entropy with the fitted laws."""
    out_dir = Path(out_dir)
    entropy_vs_step(results, out_dir / "entropy_vs_step.png", title)
    reward_vs_entropy(results, fits, out_dir / "reward_vs_entropy.png", title)
