"""TRL's ``rollout_func`` for multi-turn text games (:class:`harness.envs.base.TextEnv`): GRPO rollouts of one
completion per episode, the environment's tokens masked (``env_mask`` 0).

The episode player itself (:class:`Episode`, :class:`EpisodeBatch`, :func:`run_episodes`: token layout, stopping
rules, environment workers) lives in :mod:`harness.evaluate.episodes`, where the agent evaluation
(:mod:`harness.evaluate.agent`) reaches it too (evaluate may not import train); it is re-exported here for the
training code and tests that import it from this module.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from harness.envs.agent import COMPACT, Template
from harness.envs.base import TextEnv
from harness.evaluate.episodes import Episode, EpisodeBatch, run_episodes

__all__ = ["Episode", "EpisodeBatch", "run_episodes", "make_rollout_func"]


def make_rollout_func(env_factory: Callable[[], TextEnv], *, max_turns: int, max_new_tokens_per_turn: int,
                      invalid_penalty: float = 0.0, template: Template | str = COMPACT,
                      max_episode_tokens: int | None = None, metric_prefix: str = "episodes", workers: int = 0
                      ) -> Callable[[list, Any], dict]:
    """TRL's ``rollout_func(prompts, trainer) -> dict``: one episode per prompt entry, each prompt a game id (the
    dataset's ``prompt`` column; TRL passes it ``num_generations`` times in a row, so a group plays one game). The
    trainer's policy, unwrapped as TRL unwraps it, generates with the trainer's sampling settings (temperature,
    top_p/k, min_p, repetition penalty, ``generation_kwargs``, EOS ids), by HF ``generate`` even under vLLM; the
    batch metrics (:meth:`EpisodeBatch.metrics`) join the trainer's logs. For ``GRPOTrainer(rollout_func=...)`` and
    ``HarnessGRPOTrainer(rollout_func=...)`` (passed through to TRL); reward with
    :func:`harness.envs.agent.agent_reward`. ``workers``: environment worker processes per rollout
    (:func:`run_episodes`; 0: in this process)."""
    from trl.models.utils import unwrap_model_for_generation

    def rollout_func(prompts: list, trainer) -> dict:
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"agent rollouts take game ids as prompts (str), got {type(bad[0]).__name__}: "
                            f"{str(bad[0])[:80]!r}")
        tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        kw = {k: getattr(trainer, k) for k in ("top_p", "top_k", "min_p", "repetition_penalty")
              if getattr(trainer, k, None) is not None}
        kw.update(trainer.args.generation_kwargs or {})
        kw["eos_token_id"] = list(trainer.eos_token_ids)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                         gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
                                         ) as model, torch.no_grad():
            batch = run_episodes(model, tok, env_factory, list(prompts), num_generations=1, max_turns=max_turns,
                                 max_new_tokens_per_turn=max_new_tokens_per_turn, temperature=trainer.temperature,
                                 invalid_penalty=invalid_penalty, template=template,
                                 max_episode_tokens=max_episode_tokens, generation_kwargs=kw,
                                 workers=workers)
        mode = "train" if trainer.model.training else "eval"
        for name, value in batch.metrics(metric_prefix).items():
            trainer._metrics[mode][name].append(value)
        return batch.rollout()

    return rollout_func
