"""pass@k curves of every leaderboard row, from the samples its held-out evaluation already drew.

Every sampled evaluation records, per problem, ``n_correct`` of its ``k`` samples (the held-out protocol: ``k``
samples at the tier's temperature; :mod:`harness.evaluate.heldout`). With ``n = k`` samples per problem the unbiased
estimator (:mod:`harness.results.estimators`) gives pass@k for every k <= n, so each row's curve costs no extra
generation: k = 1, 2, 4, ... n, each point the mean over training seeds and problems with the stratified two-level
bootstrap CI of the leaderboard's cells (:func:`harness.claims.stats.cell`). The protocol is the column's own
(same hash). Curves beyond the held-out n (k up to 256) come from the dedicated pass@k evaluation
(``rules/passk.smk``) of the checkpoints a card's claims name.

A card with support claims (the pass@k boundary papers) has a support analysis (:mod:`harness.analyze.support`):
:func:`support_plots` draws its curves (base model and every checkpoint group, the analysis's CIs) and a bar chart
of the shares of problems solved by the base model only and by the checkpoint only, for the card's report page.
"""
from __future__ import annotations

import base64
import io

import numpy as np

from harness.claims import stats
from harness.results.estimators import pass_at_k, powers_of_two

#: the benchmark whose samples give each row's curve
BENCHMARK = "heldout"


def curve(evals: list[dict], method: str, benchmark: str = BENCHMARK, *, iters: int = 1000) -> dict | None:
    """``method``'s pass@k curve on ``benchmark`` from its evaluations' per-problem counts; None without a sampled
    evaluation (or with one sample per problem: no curve)."""
    sm = stats.score_matrix(evals, method, benchmark)
    if sm is None:
        return None
    n = int(sm["protocol"].get("k") or 0)
    if n < 2:
        return None
    counts = np.rint(sm["matrix"] * n).astype(int)  # score_matrix gives n_correct / k
    ks = powers_of_two(n)
    per = np.stack([np.array([pass_at_k(n, c, k) for c in range(n + 1)])[counts] for k in ks])  # (K, seeds, P)
    # stats.cell's bootstrap (same seed, same draws) for every k at once
    S, P = counts.shape
    rng = np.random.default_rng(0)
    si, pi = rng.integers(0, S, size=(iters, S)), rng.integers(0, P, size=(iters, P))
    draws = np.array([per[:, si[b]][:, :, pi[b]].mean(axis=(1, 2)) for b in range(iters)])  # (iters, K)
    lo, hi = np.quantile(draws, [stats.ALPHA / 2, 1 - stats.ALPHA / 2], axis=0)
    points = [{"k": k, "mean": float(per[j].mean()), "ci": [float(lo[j]), float(hi[j])]} for j, k in enumerate(ks)]
    return {"benchmark": benchmark, "n": n, "protocol_hash": sm["protocol_hash"], "seeds": sm["seeds"],
            "points": points}


def markdown(rows: list[dict]) -> list[str]:
    """The pass@k lines of one leaderboard table (rows with a ``passk`` curve), or none."""
    rows = [r for r in rows if r.get("passk")]
    if not rows:
        return []
    ks = [p["k"] for p in rows[0]["passk"]["points"]]
    n = rows[0]["passk"]["n"]
    out = [f"pass@k from the same held-out samples (unbiased estimator, n = {n} samples per problem; mean over seeds "
           "and problems, 95 % CI from the stratified bootstrap):", "",
           "| paper | method | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for r in rows:
        pts = {p["k"]: p for p in r["passk"]["points"]}
        cells = [f"{pts[k]['mean']:.3f} [{pts[k]['ci'][0]:.3f}, {pts[k]['ci'][1]:.3f}]" if k in pts else "—"
                 for k in ks]
        out.append(f"| {r['paper']} | {r['method']} | " + " | ".join(cells) + " |")
    return out + [""]


def plot_uri(rows: list[dict], title: str) -> str | None:
    """A pass@k plot of ``rows`` (one line per row, its CI as a band; log2 k axis) as a ``data:image/png`` URI."""
    rows = [r for r in rows if r.get("passk")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, r in enumerate(rows):
        pts = r["passk"]["points"]
        ks = [p["k"] for p in pts]
        role = {"baseline": " (baseline)", "base model": " (before RL)"}.get(r.get("role"), "")
        ax.plot(ks, [p["mean"] for p in pts], marker="o", ms=3, color=f"C{i % 10}",
                ls="-" if i < 10 else "--", label=r["method"] + role)
        ax.fill_between(ks, [p["ci"][0] for p in pts], [p["ci"][1] for p in pts], color=f"C{i % 10}", alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"k (of n = {rows[0]['passk']['n']} held-out samples per problem)")
    ax.set_ylabel("pass@k")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------- support analysis ------
#: where a card's support analysis lies under a results root: pinned (results/) and in a work dir
SUPPORT_PATHS = ("{paper}/{tier}/analysis/support.json", "analysis/{paper}/{tier}/support.json")


def support_rows(res: dict) -> list[dict]:
    """The curves of a support analysis's ``result`` (:mod:`harness.analyze.support`) as :func:`plot_uri` rows:
    the base model first, then each (method, training length) group."""
    def row(label, role, g):
        return {"method": label, "role": role, "passk": {"n": res["n"], "points": g["curve"]}}

    return [row("base", "base model", res["base"])] + [
        row(f"{g['method']} @ {g['train_steps']} steps", "method", g) for g in res["checkpoints"]]


def support_plot_uri(res: dict, title: str) -> str | None:
    """Bar chart of a support analysis: per checkpoint group, the share of problems solved by the base model only
    (shrunk support) and by the checkpoint only (expanded), with 95 % CIs (the rest are solved by both or neither;
    the share solved by both is in the label). A ``data:image/png`` URI; None without checkpoints."""
    groups = res.get("checkpoints") or []
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 2), 4))
    x = np.arange(len(groups))
    for off, cls, color, name in ((-0.2, "base_only", "C3", "base only (shrunk)"),
                                  (0.2, "rl_only", "C2", "RL only (expanded)")):
        cells = [g["support"]["shares"][cls] for g in groups]
        means = np.array([c["mean"] for c in cells])
        err = np.array([[m - c["ci"][0], c["ci"][1] - m] for m, c in zip(means, cells)]).T
        ax.bar(x + off, means, width=0.4, color=color, label=name, yerr=err, capsize=3)
    ax.set_xticks(x, [f"{g['method']}\n@{g['train_steps']}\nboth {g['support']['shares']['both']['mean']:.3f}"
                      for g in groups], fontsize=7)
    ax.set_ylabel(f"share of problems (solved: pass@{res['support_k']} >= {res['threshold']:g})")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def support_plots(root, paper: str, tier: str) -> list[dict]:
    """The HTML report's plots of a card's support analysis under ``root`` (pinned or in a work dir): its pass@k
    curves with CIs (base model and every checkpoint group) and its support bar chart; none without the file."""
    import json
    from pathlib import Path

    for rel in SUPPORT_PATHS:
        path = Path(root) / rel.format(paper=paper, tier=tier)
        try:
            a = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(a, dict) or a.get("kind") != "analysis_result" or a.get("analysis") != "support":
            continue
        res, out = a["result"], []
        for name, alt, uri in (
                ("passk_support", f"{paper} {tier}: pass@k of the base model and the checkpoints",
                 plot_uri(support_rows(res), f"{paper} {tier}: pass@k (n = {res['n']}, {res['benchmark']})")),
                ("support", f"{paper} {tier}: support at pass@{res['support_k']}",
                 support_plot_uri(res, f"{paper} {tier}: support vs the base model"))):
            if uri:
                out.append({"name": name, "src": uri, "tier": tier, "alt": alt})
        return out
    return []
