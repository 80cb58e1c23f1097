"""The task report of a task that plays episodes (``harness task-report`` on the smoke household game): what the
base model offers RL, measured rather than assumed.

``k`` sampled episodes per held-out game at the tier's evaluation temperature, plus one greedy episode per game:
success overall and per task type (room for RL), turns, untagged and unknown actions, model and environment tokens
against the episode budget, the share truncated (the game's step budget or the token budget reached first), the
token entropy (mean negative log-probability of the sampled model tokens: an unbiased estimate at the temperature)
and the share of games won by some but not all of their ``k`` episodes (groups with a learning signal for GRPO).
Each property is compared with the range in :data:`EXPECTED` and the result stated in ``checks``.
"""
from __future__ import annotations

from pathlib import Path

#: property -> (low, high) a smoke agent task should show on its base model (None: unbounded)
EXPECTED = {
    "success/sampled": (0.15, 0.7),             # room for RL, and something to reinforce
    "mixed_group_frac": (0.3, None),            # games whose k episodes disagree: GRPO has a signal there
    "invalid_per_episode": (None, 1.0),         # the action format is learnt
    "turns/mean": (3.0, None),                  # multi-step: step-level methods have steps to work on
    "tokens/max_over_budget": (None, 1.0),      # no episode needs more context than the model has
    "entropy/mean": (0.05, None),               # sampling entropy to lose
}


def episode_report(model, tok, spec, game_ids: list[str], *, k: int, temperature: float, seed: int
                   ) -> tuple[dict, list[dict]]:
    """(report, per-episode records) of ``model`` on ``game_ids`` of ``spec.heldout_split`` (``spec``: the task's
    :class:`harness.envs.agent.EpisodeSpec`)."""
    import torch

    from harness.envs.agent import TEMPLATES
    from harness.evaluate.episodes import run_episodes

    kw = dict(max_turns=spec.max_turns, max_new_tokens_per_turn=spec.max_new_tokens_per_turn,
              invalid_penalty=spec.invalid_penalty, template=TEMPLATES[spec.template],
              max_episode_tokens=spec.max_episode_tokens, seed=seed)
    factory = lambda: spec.env(spec.heldout_split, game_ids)  # noqa: E731
    model.eval()
    with torch.no_grad():
        sampled = run_episodes(model, tok, factory, game_ids, num_generations=k, temperature=temperature, **kw)
        greedy = run_episodes(model, tok, factory, game_ids, num_generations=1, temperature=0.0, **kw)
    recs = [{"game_id": e.game_id, "task_type": e.task_type, "won": e.won, "turns": e.turns,
             "invalid": e.invalid_actions, "unknown": e.unknown_actions, "truncated": e.truncated,
             "model_tokens": sum(e.env_mask), "tokens": len(e.prompt_ids) + len(e.completion_ids),
             "nll": -sum(lp for lp, m in zip(e.logprobs, e.env_mask) if m)} for e in sampled.episodes]
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    wins = [sum(r["won"] for r in recs[g * k:(g + 1) * k]) for g in range(len(game_ids))]
    types = sorted({r["task_type"] for r in recs})
    n_tok = sum(r["model_tokens"] for r in recs)
    report = {
        "success/sampled": mean([r["won"] for r in recs]),
        "success/greedy": mean([e.won for e in greedy.episodes]),
        "success/by_type": {t: mean([r["won"] for r in recs if r["task_type"] == t]) for t in types},
        "mixed_group_frac": mean([0 < w < k for w in wins]),
        "invalid_per_episode": mean([r["invalid"] for r in recs]),
        "unknown_per_episode": mean([r["unknown"] for r in recs]),
        "turns/mean": mean([r["turns"] for r in recs]),
        "turns/won_mean": mean([r["turns"] for r in recs if r["won"]]) if any(r["won"] for r in recs) else None,
        "truncated_frac": mean([r["truncated"] for r in recs]),
        "tokens/model_mean": n_tok / max(len(recs), 1),
        "tokens/max_over_budget": (max(r["tokens"] for r in recs) / spec.max_episode_tokens
                                   if spec.max_episode_tokens else None),
        "entropy/mean": sum(r["nll"] for r in recs) / max(n_tok, 1),
        "settings": {"k": k, "temperature": temperature, "seed": seed, "split": spec.heldout_split,
                     "n_problems": len(game_ids), "max_turns": spec.max_turns,
                     "max_episode_tokens": spec.max_episode_tokens, "template": spec.template},
    }
    report["checks"] = {name: _check(report.get(name), lo, hi) for name, (lo, hi) in EXPECTED.items()}
    return report, recs


def _check(value, lo, hi) -> dict:
    ok = value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)
    return {"value": value, "low": lo, "high": hi, "ok": bool(ok)}


def plot(report: dict, recs: list[dict], path: Path) -> None:
    """Success per task type (sampled) and the distribution of turns per episode, won vs lost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    by = report["success/by_type"]
    a.barh([t.replace("_", " ") for t in by], list(by.values()), color="#4c72b0")
    a.set_xlim(0, 1)
    a.set_xlabel("sampled success rate")
    a.set_title(f"base model, {report['settings']['split']} split (k = {report['settings']['k']})")
    bins = range(1, report["settings"]["max_turns"] + 2)
    b.hist([[r["turns"] for r in recs if r["won"]], [r["turns"] for r in recs if not r["won"]]], bins=bins,
           label=["won", "not won"], color=["#55a868", "#c44e52"], stacked=True)
    b.set_xlabel("model turns per episode")
    b.set_ylabel("episodes")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
