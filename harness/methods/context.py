"""The context objects the trainer hands to methods: one per extension point (see :mod:`harness.methods.registry`).

Methods see these objects only, never the trainer: :class:`TokenContext` (loss), :class:`AdvantageContext`
(advantage), :class:`RolloutContext` (rollout), :class:`RewardContext` (reward), :class:`BatchContext` and
:class:`BatchDecision` (data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


@dataclass
class TokenContext:
    """Per-token tensors of one micro-batch, all of shape (B, T) over completion tokens.

    ``logps`` carries gradients; ``old_logps`` and ``advantages`` do not. ``mask`` is 1.0 on valid
    completion tokens. ``generator`` is a seeded CPU generator for methods that select at random, so
    runs are repeatable (the authors' code uses the unseeded global RNG).
    """

    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropies: torch.Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1
    #: (B, T, V) temperature-scaled logits of the current policy (with gradients), when ``needs`` has "logits"
    logits: torch.Tensor | None = None
    #: (B, T, V) logits of the policy that generated the batch (no gradients), when ``needs`` has "old_logits"
    old_logits: torch.Tensor | None = None
    #: issue 14: per-token fields of the rollout, name -> (B, T) tensor over this micro-batch's completion tokens
    #: (every ``rollout_func`` field with one number per completion token, e.g. an episode's ``turn_ids``: the model
    #: turn, i.e. environment step, of each token); -1 past a completion's end. Empty for single-turn rollouts
    token_columns: dict[str, torch.Tensor] = field(default_factory=dict)
    #: issue 14: ``score(prompts_ids, completions_ids) -> (logps, entropies)``: per-token log-probs and entropies of
    #: GIVEN sequences (lists of token-id lists) under the policy being trained, with gradients, the run's
    #: temperature, (B, T) right-padded to the longest completion; for loss terms over sequences outside the
    #: micro-batch (SPEAR's replayed trajectories). None outside training
    score: Callable[[list, list], tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def build(cls, logps, old_logps, advantages, mask, **kw) -> "TokenContext":
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        advantages = advantages.expand_as(logps)
        return cls(logps=logps, old_logps=old_logps.detach(), advantages=advantages.detach(),
                   mask=mask.to(logps.dtype), **kw)

    @property
    def ratio(self) -> torch.Tensor:
        return torch.exp(self.logps - self.old_logps)

    @property
    def n_valid(self) -> int:
        return int(self.mask.sum().item())

    def token_cov(self) -> torch.Tensor:
        """c_i = (logp_i - mean logp) * (A_i - mean A) over valid tokens (Entropy Mechanism, Eq. for Cov;
        authors' ``core_algos.py`` clip_cov/kl_cov). Detached; invalid tokens are 0."""
        with torch.no_grad():
            lp = self.logps.detach()
            c = (lp - masked_mean(lp, self.mask)) * (self.advantages - masked_mean(self.advantages, self.mask))
            return c * self.mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x * mask).sum() / mask.sum(), as verl's ``masked_mean``."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def ppo_clipped_loss(ctx: TokenContext, eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate ``max(-A r, -A clip(r, 1-eps_low, 1+eps_high))`` and the bool mask of tokens
    where the clipped branch is taken (strictly larger), as in verl ``compute_policy_loss``."""
    r = ctx.ratio
    l1 = -ctx.advantages * r
    l2 = -ctx.advantages * torch.clamp(r, 1 - eps_low, 1 + eps_high)
    return torch.maximum(l1, l2), (l2 > l1) & (ctx.mask > 0)


def dual_clip_ppo(ctx: TokenContext, eps_low: float, eps_high: float, clip_ratio_c: float | None):
    """verl ``compute_policy_loss``: the clipped surrogate (:func:`ppo_clipped_loss`), then for A < 0 capped at
    -A * clip_ratio_c (dual clip; None disables it). Returns the per-token loss and the PPO-clipped bool mask."""
    loss, clipped = ppo_clipped_loss(ctx, eps_low, eps_high)
    if clip_ratio_c is not None:
        loss = torch.where(ctx.advantages < 0, torch.minimum(loss, -ctx.advantages * clip_ratio_c), loss)
    return loss, clipped


@dataclass
class AdvantageContext:
    """What an advantage method sees, for the whole generation batch (all processes), in group order.

    ``rewards`` (N,) are the weighted sums of the reward functions (NaN: unscorable); each group of
    ``group_size`` consecutive rows answers one prompt. ``mask``/``completion_ids`` are (N, T). ``logps`` and
    ``entropies`` (N, T) are filled when the method declares ``needs=("adv_token_stats",)``; ``hidden_states``
    (N, T, d) when it declares ``needs=("adv_hidden_states",)``.
    """

    rewards: torch.Tensor
    group_size: int
    mask: torch.Tensor
    completion_ids: torch.Tensor
    scale_rewards: str = "group"
    logps: torch.Tensor | None = None
    entropies: torch.Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1
    #: the completions' texts (N,), group order, all processes (e.g. COPO's final-answer agreement)
    completions: list[str] | None = None
    #: (N,) bool: completions cut at ``max_completion_length`` (no EOS; TRL's ``completions/clipped_ratio``)
    truncated: torch.Tensor | None = None
    #: (N, T, d) the policy's last hidden states (after the final norm: what the LM head scores) at the positions
    #: that predict each completion token, no gradients, in the forward's dtype; rows past ``mask`` are padding.
    #: Filled when the method declares ``needs=("adv_hidden_states",)``
    hidden_states: torch.Tensor | None = None
    #: the batch's dataset columns and a ``rollout_func``'s extra fields (an episode's ``turn_ids`` per token,
    #: ``won``, ``task_type``, ``episode_reward``, ...: harness.evaluate.episodes), name -> one value per
    #: completion, all processes, group order; the prompt column is left out
    columns: dict[str, list] | None = None
    #: issue 14: (N, P) prompt token ids, left-padded, with their (N, P) attention mask, and (N, T) TRL's
    #: completion mask (1 up to each completion's end, environment tokens included: what the policy conditions on;
    #: ``mask`` is it times the tool mask), for methods that keep trajectories across steps (SPEAR's replay buffer)
    prompt_ids: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    completion_mask: torch.Tensor | None = None

    @property
    def seq_len(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (N / G, G, ...)."""
        return x.view(-1, self.group_size, *x.shape[1:])

    def grpo_advantages(self) -> torch.Tensor:
        """TRL 1.16's group-normalised advantages (``scale_rewards`` group/batch/none; eps 1e-4; NaN -> 0)."""
        r = self.rewards
        g = self.grouped(r)
        mean = torch.nanmean(g, dim=1, keepdim=True).expand_as(g).reshape(-1)
        adv = r - mean
        if self.scale_rewards == "group":
            std = _nanstd(g, dim=1).repeat_interleave(self.group_size)
            adv = adv / (std + 1e-4)
        elif self.scale_rewards == "batch":
            adv = adv / (_nanstd(r, dim=0) + 1e-4)
        return torch.nan_to_num(adv, nan=0.0)


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unbiased std ignoring NaN (as TRL's ``nanstd``)."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    n = (~torch.isnan(x)).sum(dim=dim)
    return torch.sqrt(var * n / (n - 1).clamp(min=1))


@dataclass
class RolloutContext:
    """What a ``rollout`` hook sees (built by the trainer for each call; never the trainer itself).

    ``group_size`` is G for this rollout (``num_generations`` in training, ``num_generations_eval`` otherwise);
    prompts arrive already repeated G times in consecutive groups. ``temperature`` and ``max_completion_length``
    are the run's sampling settings (TRL's ``GRPOConfig``).

    Callables (token ids are plain ``list[int]``, one list per sequence):

    - ``tokenize(prompts) -> list[list[int]]``: TRL's prompt tokenisation (chat template applied for
      conversational prompts), i.e. the ``prompt_ids`` TRL's own rollout would use.
    - ``generate(prompts_ids, **gen_kwargs) -> list[list[int]]``: one sampled completion per input sequence with
      the current policy (the run's generation config; no gradients). An input may end inside a completion
      (branching from a token position: pass ``prompt_ids + completion_ids[:t]``). Completions are cut after the
      first EOS, and after a stop string when ``stop_strings=[...]`` is given. ``gen_kwargs`` override fields of
      the run's ``transformers.GenerationConfig`` for this call (``max_new_tokens``, ``temperature``, ``top_p``,
      ``do_sample``, ...); ``logits_processor`` and ``stopping_criteria`` lists are passed to ``generate``.
      ``None`` in a logits-processor hook (those run inside generation).
    - ``token_stats(prompts_ids, completions_ids) -> (logps, entropies)``: per-token log-probabilities of the given
      completion tokens and entropies of the next-token distribution, under the current policy with the run's
      temperature (as in the loss), no gradients; lists of 1-D float tensors, one per completion, of its length.
    - ``log_metric(name, value)``: a scalar metric, averaged over the logging step.
    """

    generator: torch.Generator | None
    step: int
    max_steps: int
    group_size: int
    processing_class: Any
    training: bool = True
    temperature: float = 1.0
    max_completion_length: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    tokenize: Callable[[list], list[list[int]]] | None = None
    generate: Callable[..., list[list[int]]] | None = None
    token_stats: Callable[[list, list], tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None
    log_metric: Callable[[str, float], None] | None = None

    @property
    def tokenizer(self):
        """The text tokenizer (the processing class itself, or a multimodal processor's ``tokenizer``)."""
        return getattr(self.processing_class, "tokenizer", self.processing_class)


@dataclass
class RewardContext:
    """What a ``reward`` hook sees: one row per completion of this process's batch, in group order (each prompt
    repeated ``group_size`` times consecutively).

    ``prompts``/``completions`` are TRL's (strings, or message lists for conversational data); ``completion_ids``
    the sampled token ids. ``answers`` is the dataset's ``answer`` column (None without one); ``columns`` every
    other dataset column and ``rollout_func`` extra field, as lists aligned with the completions.
    ``entropies`` and ``logps`` (one 1-D tensor per completion, its length, current policy at the run's temperature,
    no gradients) are filled when the method declares ``needs=("reward_token_stats",)``. ``phases`` is a per-token
    phase id list per completion (task-defined, e.g. 0 = reasoning, 1 = answer) when the task provides one: the
    trainer's ``phase_fn`` or a ``phases`` field returned by the rollout; otherwise None. ``log_metric(name, value)``
    logs a scalar averaged over the logging step.
    """

    prompts: list
    completions: list
    completion_ids: list[list[int]]
    group_size: int
    answers: list | None = None
    columns: dict[str, list] = field(default_factory=dict)
    entropies: list[torch.Tensor] | None = None
    logps: list[torch.Tensor] | None = None
    phases: list[list[int]] | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1
    training: bool = True
    log_metric: Callable[[str, float], None] | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)


@dataclass
class BatchContext:
    """What a ``data`` hook sees, at two stages of every training generation batch (``stage``):

    - ``"prompts"``, before generation: ``rows`` holds one dataset row (dict) per group of this process's
      generation batch (the prompt that will be sampled ``group_size`` times); ``dataset`` is the training dataset
      (``len`` and integer indexing give rows), to draw replacement prompts from with ``generator``.
    - ``"scored"``, after rewards and advantages: the whole generation batch over all processes, in group order:
      ``rows`` (N dicts, each prompt repeated G times), ``rewards`` (N,) weighted reward sums (NaN: unscorable),
      ``advantages`` (N,) or (N, T) as the loss will see them, ``mask`` and ``completion_ids`` (N, T) (``mask``
      excludes tool/environment tokens), ``truncated`` (N,) bool (completions cut at ``max_completion_length``, no
      EOS).
    """

    stage: str
    group_size: int
    rows: list[dict] | None = None
    dataset: Sequence[dict] | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    completion_ids: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    generator: torch.Generator | None = None
    step: int = 0
    max_steps: int = 1


@dataclass
class BatchDecision:
    """A ``data`` hook's answer (every field optional; return None for "no change").

    - stage ``"prompts"``: ``rows``, a list of the same length as ``BatchContext.rows`` (one row per group),
      replaces the prompts to sample (re-sample, curriculum, replay).
    - stage ``"scored"``: ``keep`` (N,) bool drops samples from the loss (their tokens leave the mask and the
      token-count normaliser; dropping whole groups is ``keep`` False on G consecutive rows); ``weights`` (N,)
      float >= 0 scales each sample's loss (applied to its advantage, which scales the PPO-clip surrogate exactly;
      KL and entropy-bonus terms are not scaled).
    - stage ``"scored"``, ``resample=True`` with ``keep`` dropping whole groups: dynamic sampling (DAPO). Before the
      loss, the trainer refills the dropped places: it generates and scores further batches of the same size for
      fresh prompts (random dataset rows, through stage "prompts"), asks the hook (stage "scored") about each, and
      puts their kept groups in the dropped places, in order, until all are filled or
      ``resample_max_rounds`` extra batches ran (None: no limit); places still empty get their dropped group back
      and train on it (the batch keeps its size). Every sample keeps its own batch's ``weights``; rewards, the
      token normaliser and the advantages (advantage hook) are recomputed over the merged batch. Logged every
      step the hook asks: ``<method>/resample_rounds`` (extra batches), ``<method>/extra_generations``
      (completions generated beyond the batch), ``<method>/unfilled_frac`` (share of places left unfilled).
    - ``metrics``: scalars logged with the step (``method/frac_tokens_touched`` feeds the contract metric).
    """

    rows: list[dict] | None = None
    keep: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    resample: bool = False
    resample_max_rounds: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
