"""Plots of analysis curve files for the HTML report, drawn from the files themselves (no training outputs needed):
the reward-vs-KL picture of ``reward_kl`` (checkpoints, best-of-N, the KL-optimal frontier, the ``log N - (N-1)/N``
reference), the per-token curves of ``bon_toy`` and the drift-vs-DID-entropy trajectories of ``did_drift``.

:func:`plots_for` finds a paper's analysis files at a tier, pinned (``<root>/<paper>/<tier>/analysis/*.json``) or in a
work dir (``<root>/analysis/<paper>/<tier>/*.json``), and returns one ``{"name", "src", "tier", "alt"}`` per plot, the
form :func:`harness.report.html._plots_for` gives the template (``src`` a ``data:image/png`` URI; deterministic
bytes for the same file).
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def reward_kl_plot(a: dict, title: str) -> str:
    """Reward against KL(policy || base): best-of-N (exact, binary reward; named N marked), the KL-optimal frontier,
    best-of-N placed at ``log N - (N-1)/N`` (the reference: an upper bound of its KL here), each checkpoint with its
    CIs, the base model at KL 0."""
    r = a["result"]
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ax.plot(r["tilt"]["kl"], r["tilt"]["reward"], "k--", lw=1.2, label="KL-optimal (tilted base)")
    ax.plot(r["bon_dense"]["kl"], r["bon_dense"]["reward"], color="C0", lw=1.6, label="best-of-N (exact)")
    b = r["bon"]
    ax.scatter(b["kl"], b["reward"], color="C0", s=14, zorder=3)
    for n, x, y in zip(b["n"], b["kl"], b["reward"]):
        ax.annotate(f"N={n}", (x, y), textcoords="offset points", xytext=(3, -9), fontsize=6, color="C0")
    ax.plot(b["kl_formula"], b["reward"], color="0.55", ls=":", marker=".", lw=1,
            label="best-of-N at log N - (N-1)/N (reference)")
    ax.scatter([0.0], [r["base"]["reward"]], marker="s", color="k", s=22, zorder=4, label="base model")
    methods = sorted({v["method"] for v in r["runs"].values()},
                     key=lambda m: (r["by_method"].get(m, {}).get("beta") or 0.0, m))
    for i, m in enumerate(methods):
        pts = [v for v in r["runs"].values() if v["method"] == m]
        xs, ys = [v["kl"] for v in pts], [v["reward"] for v in pts]
        xerr = [[max(0.0, v["kl"] - v["kl_ci"][0]) for v in pts], [max(0.0, v["kl_ci"][1] - v["kl"]) for v in pts]]
        yerr = [[max(0.0, v["reward"] - v["reward_ci"][0]) for v in pts],
                [max(0.0, v["reward_ci"][1] - v["reward"]) for v in pts]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", ms=4, color=f"C{(i + 1) % 10}", capsize=2, lw=0.8,
                    label=f"{m} (beta {pts[0]['beta']})")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("KL(policy || base), nats per response (symlog)")
    ax.set_ylabel("held-out reward (accuracy)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    return _uri(fig)


def bon_toy_plot(a: dict, title: str) -> str:
    """Per-token reward against per-token KL for each length (best-of-N) and the tilt (one curve for all lengths);
    right: the largest gap in the KL window against the length."""
    r, s = a["result"], a["settings"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    first = r["lengths"][str(r["length_order"][0])]
    order = sorted(range(len(first["kl_rate"])), key=lambda i: first["kl_rate"][i])
    for i, L in enumerate(r["length_order"]):
        c = r["lengths"][str(L)]
        ax.plot(c["kl_rate"], c["bon_reward_rate"], color=f"C{i}", lw=1.3, label=f"best-of-N, L = {L}")
    ax.plot([first["kl_rate"][i] for i in order], [first["tilt_reward_rate"][i] for i in order], "k--", lw=1.2,
            label="KL-optimal tilt (every L)")
    ax.axvspan(s["kl_rate_min"], s["kl_rate_max"], color="0.9", zorder=0, label="gap window")
    ax.set_xlim(0, s["kl_rate_max"] * 1.5)
    ax.set_xlabel("KL per token (nats)")
    ax.set_ylabel("reward per token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)
    bx.plot(r["length_order"], r["max_gap_by_length"], "o-", color="C3")
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xlabel("sequence length L")
    bx.set_ylabel("max gap per token (tilt - BoN)")
    bx.yaxis.set_label_coords(-0.2, 0.5)
    bx.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _uri(fig)


def did_drift_plot(a: dict, title: str) -> str:
    """Left: chosen log-likelihood drift against the step per run; right: the same drift against the normalised DID
    entropy (each run's trajectory from (1, 0) at step 0; the final point marked)."""
    r = a["result"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    methods = sorted({v["method"] for v in r["runs"].values()})
    seeds = sorted({v["seed"] for v in r["runs"].values()})
    styles = ["-", "--", ":", "-."]
    for key, v in r["runs"].items():
        color = f"C{methods.index(v['method']) % 10}"
        ls = styles[seeds.index(v["seed"]) % len(styles)]
        st = [p for p in v["steps"] if p.get("chosen_drift") is not None]
        label = f"{v['method']} (seed {v['seed']})"
        ax.plot([p["step"] for p in st], [p["chosen_drift"] for p in st], color=color, ls=ls, lw=1.2, label=label)
        bx.plot([p["did_entropy_norm"] for p in st], [p["chosen_drift"] for p in st], color=color, ls=ls, lw=1.0)
        bx.scatter([st[-1]["did_entropy_norm"]], [st[-1]["chosen_drift"]], color=color, s=18, zorder=3)
    for x in (ax, bx):
        x.axhline(0, color="0.5", lw=0.8)
        x.grid(alpha=0.3)
    ax.set_xlabel("DPO step")
    ax.set_ylabel("chosen drift: log pi - log pi_base (nats)")
    ax.legend(fontsize=6)
    bx.set_xlabel("normalised DID entropy h (1 = uniform over candidates)")
    bx.set_ylabel("chosen drift (nats)")
    bx.invert_xaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _uri(fig)


PLOTTERS = {"reward_kl": reward_kl_plot, "bon_toy": bon_toy_plot, "did_drift": did_drift_plot}


def _safe(s: str) -> bool:
    return bool(s) and s not in (".", "..") and "/" not in s and "\\" not in s and "\x00" not in s


def plots_for(root: str | Path, paper: str, tier: str) -> list[dict]:
    """The plots of ``paper``'s analysis files at ``tier`` under ``root`` (pinned results or a work dir), in name
    order; files that are not analysis results of a plotted kind are skipped."""
    if not (_safe(paper) and _safe(tier)):
        return []
    root = Path(root)
    out = []
    for d in (root / paper / tier / "analysis", root / "analysis" / paper / tier):
        for f in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                a = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            name = a.get("analysis") if isinstance(a, dict) and a.get("kind") == "analysis_result" else None
            if name in PLOTTERS:
                alt = f"{paper} {tier}: {name.replace('_', ' ')}"
                out.append({"name": name, "src": PLOTTERS[name](a, alt), "tier": tier, "alt": alt})
        if out:
            return out
    return out
