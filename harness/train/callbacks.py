"""Trainer callbacks: the per-step metrics record, and the periodic held-out evaluation that gives every run its
entropy/accuracy curve."""
from __future__ import annotations

import time
from typing import Callable

from transformers import TrainerCallback

from harness.evaluate.heldout import evaluate_policy


class MetricsRecorder(TrainerCallback):
    """Appends every training log (a dict with ``loss``) to ``rows`` as ``{"step": offset + step, **extra,
    <numeric fields>}``: the rows of a job's ``metrics.jsonl`` (``offset``/``extra``: a later stage of a job that
    trains in stages, e.g. Tool-Light's second DPO stage)."""

    def __init__(self, rows: list[dict], offset: int = 0, extra: dict | None = None):
        self.rows, self.offset, self.extra = rows, int(offset), dict(extra or {})

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.rows.append({"step": self.offset + state.global_step, **self.extra,
                              **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    def state_dict(self) -> dict:
        """The rows so far, for a checkpoint (:mod:`harness.train.resume`)."""
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        """A resumed job continues the rows of the checkpoint (``rows`` is the job's list, refilled in place)."""
        self.rows[:] = [dict(r) for r in state["rows"]]


class PeriodicEval(TrainerCallback):
    """Runs :func:`evaluate_policy` at step 0, every ``every_steps`` steps and at the end. Every record goes to
    ``sink`` and is kept (``records``) for checkpoints: a resumed job gets them back through ``sink``, and the steps
    already evaluated are not evaluated again (:meth:`load_state_dict`)."""

    def __init__(self, tok, prompts, answers, *, score, every_steps: int, temperature: float,
                 max_new_tokens: int, seed: int, sink: Callable[[dict], None], environment=None):
        self.tok, self.prompts, self.answers, self.score = tok, prompts, answers, score
        self.every, self.temperature, self.max_new_tokens, self.seed = every_steps, temperature, max_new_tokens, seed
        self.environment = environment
        self.records: list[dict] = []
        self.sink = self._keeping(sink)
        self.done: set[int] = set()

    def _keeping(self, sink: Callable[[dict], None]) -> Callable[[dict], None]:
        def keep(record: dict) -> None:
            self.records.append(record)
            sink(record)
        return keep

    def state_dict(self) -> dict:
        """The steps evaluated and their records, for a checkpoint (:mod:`harness.train.resume`)."""
        return {"done": sorted(self.done), "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        self.records, self.done = [], set(state["done"])
        for r in state["records"]:
            self.sink(dict(r))

    def _run(self, model, step: int):
        if step in self.done:
            return
        self.done.add(step)
        t0 = time.time()
        r = evaluate_policy(model, self.tok, self.prompts, self.answers, score=self.score,
                            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                            seed=self.seed * 100003 + step, environment=self.environment)
        self.sink({"step": step, **r, "seconds": round(time.time() - t0, 3)})

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._run(model, 0)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0:
            self._run(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kw):
        self._run(model, state.global_step)


class EpisodeEval(PeriodicEval):
    """:class:`PeriodicEval` for a task that plays episodes (``spec``: its :class:`harness.envs.agent.EpisodeSpec`;
    ``game_ids``: held-out games of ``spec.heldout_split``): one greedy and one sampled episode per game. Same record
    fields: ``greedy_acc``/``sampled_acc`` are success rates, ``mean_length`` the model's tokens per sampled
    episode, ``entropy`` the mean negative log-probability of the sampled model tokens (nats/token: an unbiased
    estimate of the token entropy at the temperature; the single-turn evaluation computes it exactly), plus the
    sampled success rate per task type (``success/<type>``) and invalid turns per episode."""

    def __init__(self, tok, spec, game_ids: list[str], *, every_steps: int, temperature: float, seed: int,
                 sink: Callable[[dict], None]):
        super().__init__(tok, game_ids, [""] * len(game_ids), score=None, every_steps=every_steps,
                         temperature=temperature, max_new_tokens=spec.max_new_tokens_per_turn, seed=seed, sink=sink)
        self.spec = spec

    def _run(self, model, step: int):
        if step in self.done:
            return
        self.done.add(step)
        from harness.envs.agent import TEMPLATES
        from harness.train.episodes import run_episodes

        t0, spec, was_training = time.time(), self.spec, model.training
        model.eval()
        kw = dict(num_generations=1, max_turns=spec.max_turns, max_new_tokens_per_turn=spec.max_new_tokens_per_turn,
                  invalid_penalty=spec.invalid_penalty, template=TEMPLATES[spec.template],
                  max_episode_tokens=spec.max_episode_tokens, seed=self.seed * 100003 + step)
        factory = lambda: spec.env(spec.heldout_split, self.prompts)  # noqa: E731
        try:
            import torch

            with torch.no_grad():
                greedy = run_episodes(model, self.tok, factory, self.prompts, temperature=0.0, **kw).episodes
                sampled = run_episodes(model, self.tok, factory, self.prompts, temperature=self.temperature, **kw)
        finally:
            model.train(was_training)
        eps = sampled.episodes
        n_tok = sum(sum(e.env_mask) for e in eps)
        nll = -sum(lp for e in eps for lp, m in zip(e.logprobs, e.env_mask) if m)
        by_type = {k.rsplit("/", 1)[1]: v for k, v in sampled.metrics("m").items() if k.startswith("m/success/")}
        self.sink({"step": step, "greedy_acc": sum(e.won for e in greedy) / len(greedy),
                   "sampled_acc": sum(e.won for e in eps) / len(eps), "entropy": nll / max(n_tok, 1),
                   "mean_length": n_tok / len(eps), "invalid_per_episode": sum(e.invalid_actions for e in eps) / len(eps),
                   **{f"success/{t}": v for t, v in by_type.items()}, "seconds": round(time.time() - t0, 3)})
