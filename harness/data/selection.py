"""Data selection by historical variance (1-shot RLVR, arXiv 2504.20571): a full-set GRPO run records each training
example's accuracy every time it is sampled (one entry per visit, i.e. per epoch), a scoring rule turns that history
into a ranking, and the one-shot run trains on the top example duplicated to fill the batch.

Ported from ypwang61/One-Shot-RLVR @ 21ed529e:

* the history: ``verl/trainer/ppo/ray_trainer.py`` ``_log_scores_to_wandb``: per training batch, every sampled
  example ``index`` (``extra_info.index``) gets ``accuracy = (int(total score) // (count / n)) / n`` appended to
  ``history_accuracy[index]`` (``count``: its responses in the batch, ``n``: rollouts per prompt; an example sampled
  once is the share of its n responses that scored 1). :class:`HistoryRecorder` does the same per generation batch.
* the rules: ``data/data_selection.py`` ``acc_score`` (``std``: ``np.std`` of the example's whole history;
  ``random``: a random score, the paper's random-example control) and ``lim`` (``1 - sum_e (a_i(e) - abar(e))^2 /
  sum_e (1 - abar(e))^2`` over the first ``min_length`` epochs, ``abar(e)`` the mean over all examples); the ranking
  is ``sorted(..., reverse=True)`` (ties keep the history's order). pi_k is rank k - 1 (``data_selection.sh``).
  Deviation: ``random`` draws from ``random.Random(seed)`` (the authors: the unseeded global generator).

History file (``train_history.json``, written by a job that records it): ``{"kind": "train_history", "n": G,
"history": {index: [acc, ...]}, "rows": {index: training row}}``; ranking file (``ranking.json``, ``harness rank``):
``{"kind": "ranking", "rule", "seed", "ranking": [{"index", "score", "visits", "row"}, ...]}`` best first.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

RULES = ("std", "lim", "random")
SOURCE = "ypwang61/One-Shot-RLVR@21ed529e"


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; valid: {', '.join(RULES)}")


def std_scores(history: dict) -> dict:
    """``np.std`` (population) of each example's accuracy history (``acc_score(method='std')``)."""
    return {k: float(np.std(v)) for k, v in history.items()}


def lim_scores(history: dict) -> dict:
    """The authors' ``lim``: over the first ``min_length`` visits (the shortest history), ``1 - sum_e (a_i(e) -
    abar(e))^2 / sum_e (1 - abar(e))^2``, ``abar(e)`` the mean accuracy of all examples at visit e."""
    if not history or any(len(v) == 0 for v in history.values()):
        raise ValueError("lim needs a non-empty history for every example")
    m = min(len(v) for v in history.values())
    a = np.array([list(v[:m]) for v in history.values()], dtype=np.float64)
    abar = a.sum(0) / len(history)
    denom = float(((1 - abar) ** 2).sum())
    if denom == 0:
        raise ValueError("lim is undefined when every example is always solved (sum_e (1 - abar(e))^2 = 0)")
    return {k: float(1 - ((a[i] - abar) ** 2).sum() / denom) for i, k in enumerate(history)}


def random_scores(history: dict, seed: int) -> dict:
    """One uniform draw per example, in history order, from ``random.Random(seed)`` (the paper's random control)."""
    rng = random.Random(seed)
    return {k: rng.random() for k in history}


def scores(history: dict, rule: str, seed: int = 0) -> dict:
    _check_rule(rule)
    if rule == "std":
        return std_scores(history)
    if rule == "lim":
        return lim_scores(history)
    return random_scores(history, seed)


def ranking(history: dict, rule: str, seed: int = 0) -> list[tuple[str, float]]:
    """(index, score), best first; ties keep the history's order (Python's sort is stable, as the authors')."""
    return sorted(scores(history, rule, seed).items(), key=lambda kv: kv[1], reverse=True)


class HistoryRecorder:
    """Per-example training accuracy per visit, recorded from each training generation batch (rows in group order,
    each carrying its dataset ``row_index``; ``correct``: one 0/1 task score per completion)."""

    def __init__(self, group_size: int):
        self.n = int(group_size)
        self.history: dict[str, list[float]] = {}
        self.rows: dict[str, dict] = {}

    def record(self, rows: list[dict], correct) -> None:
        correct = [float(c) for c in correct]
        if len(rows) != len(correct):
            raise ValueError(f"history: {len(rows)} rows for {len(correct)} scores")
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        for row, c in zip(rows, correct):
            if "row_index" not in row:
                raise ValueError("history: training rows carry no row_index (the job adds it when it records)")
            k = str(int(row["row_index"]))
            total[k] = total.get(k, 0.0) + (0.0 if c != c else c)  # NaN (unscorable): 0, as a failed answer
            count[k] = count.get(k, 0) + 1
            self.rows.setdefault(k, {c_: v for c_, v in row.items() if c_ != "row_index"})
        for k in total:  # ray_trainer.py _log_scores_to_wandb: int(total) // (count / n) / n
            self.history.setdefault(k, []).append(int(total[k]) // (count[k] / self.n) / self.n)

    def to_dict(self) -> dict:
        return {"kind": "train_history", "schema_version": 1, "source": SOURCE, "n": self.n,
                "history": self.history, "rows": self.rows}


def read_json(path: str | Path, kind: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {kind} file {path}: {e}") from None
    if data.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} file (kind {data.get('kind')!r})")
    return data


def rank_history(history_file: dict, rule: str, seed: int = 0) -> dict:
    """The ranking file's content from a history file's content."""
    hist = history_file["history"]
    out = [{"index": int(k), "score": s, "visits": len(hist[k]), "row": history_file["rows"][k]}
           for k, s in ranking(hist, rule, seed)]
    return {"kind": "ranking", "schema_version": 1, "source": SOURCE, "rule": rule, "seed": int(seed),
            "n_examples": len(out), "ranking": out}
