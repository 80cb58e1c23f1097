"""T1: "Advancing Language Model Reasoning through Reinforcement Learning and Inference Scaling" (Hou et al.,
arXiv 2501.11651; ICML 2025). No RL code is released: THUDM/T1 @ 5dfb8fff holds a README and two figures; the
method is hand-derived from the abstract (v1) and the RL overview figure ``figures/rl_overview.svg`` @ 5dfb8fff
(diverse responses "K >= 64" per prompt; reward + "KL w/ norm" (d_i - mean d) + "no garbage?" penalty 0 / -1;
objective "- sum r(x, y) - beta H(pi(.|x))": an entropy bonus). Three parts, one name ``t1``:

1. Oversampling (advantage + data hooks). TRL generates ``num_generations`` = K completions per prompt; the update
   keeps ``n_keep`` of each group. The paper's selection rule could not be read (abstract, README and figure only
   say "more, and more diverse, responses"), so the rule is stated here, not the paper's:
   - ``max_variance`` (default): the n-subset of largest reward variance, PODS's max-variance down-sampling
     (Xu et al., arXiv 2504.13818): the top-i and bottom-(n-i) rewards of the group for the i in 0..n of largest
     population variance (smallest i on ties); ties in reward are ranked by position in the group.
   - ``random``: the first ``n_keep`` completions of each group. A group's completions are i.i.d. samples, so
     position carries no information and this is a uniform random subset (and both hooks agree on it without
     sharing random state).
   Ranking treats an unscorable (NaN) reward as 0. ``advantage_over``: ``kept`` (default) computes TRL's GRPO
   advantage (group mean, ``scale_rewards`` std, eps 1e-4) over the kept n of each group only, as if only they
   had been generated; ``all`` keeps TRL's advantage over all K. Dropped completions get advantage 0 and leave the
   loss mask and the token normaliser (``BatchDecision.keep``). ``n_keep == K``: no oversampling, exactly GRPO.
2. Entropy bonus, ``loss -= c * H``: TRL's ``entropy_coef`` (mean token entropy over the same, kept, mask;
   differentiable). A ``loss`` hook is not used: the trainer forbids ``beta > 0`` with one, and part 3 needs it.
3. Dynamic anchor: TRL's k3 KL to a reference model (``beta > 0``) whose weights are replaced by the policy's every
   ``ref_model_sync_steps`` optimizer steps (``sync_ref_model``, ``ref_model_mixup_alpha`` 1.0 = hard copy;
   TRL's ``SyncRefModelCallback`` at ``global_step % N == 0``).
Parts 2 and 3 are TRL settings (hyperparameters with ``trl=True``: the plan moves them into the job's TRL settings,
so a tier may state them): the paper gives no coefficient, so c, beta and N are the harness's (the card says so). Deviations: the figure puts the KL into the reward, group-normalised
(d_i - mean d); TRL puts a per-token KL into the loss. The "no garbage" penalty, high temperature and overlong /
repetition penalties are not implemented (the task reward stands).
"""
from __future__ import annotations

import torch

from harness.methods.context import AdvantageContext, BatchContext, BatchDecision
from harness.methods.registry import HParam, register_advantage, register_data

REPO = "THUDM/T1"
COMMIT = "5dfb8fff7e3bc013f7c48a6be176b2d34d6b1d75"
CODE = f"{REPO}@{COMMIT[:8]}"
SELECTIONS = ("max_variance", "random")
ADVANTAGE_SETS = ("kept", "all")

HPARAMS = {
    "n_keep": HParam(
        4, "completions per prompt", "completions of each group the update keeps (2 <= n_keep <= num_generations; "
        "num_generations = K is how many are generated). The paper generates K >= 64 and does not say how many it "
        "keeps: harness choice (half of the smoke tiers' 8)",
        f"{CODE} figures/rl_overview.svg ('diverse responses K >= 64'); arXiv 2501.11651 abstract (oversampling)"),
    "selection": HParam(
        "max_variance", " | ".join(SELECTIONS), "which n_keep of the K stay: max_variance = the subset of largest "
        "reward variance (PODS); random = the first n_keep (i.i.d. samples: a uniform subset)",
        "not stated in the readable sources (abstract, README, figure): harness choice; max_variance from PODS, "
        "arXiv 2504.13818 (max-variance down-sampling)"),
    "advantage_over": HParam(
        "kept", " | ".join(ADVANTAGE_SETS), "the completions the GRPO group statistics (mean, std) run over: the "
        "kept subset, or all K generated", "not stated in the paper: harness choice (PODS normalises over the kept "
        "subset)"),
}
#: parts 2 and 3: TRL's entropy bonus and TR-DPO-style reference syncing (TRL settings a tier may state; values of
#: the harness: the paper gives none)
_NO_VALUE = "not given in the readable sources (abstract, README, figure): harness choice"
HPARAMS.update({
    "entropy_coef": HParam(0.01, "coefficient", "c in loss -= c * H (TRL entropy_coef: mean token entropy over the "
                           "kept mask)", f"{CODE} figures/rl_overview.svg (-beta H term, no value); {_NO_VALUE}",
                           trl=True),
    "beta": HParam(0.04, "coefficient", "KL weight to the anchor (TRL beta, k3 estimator)",
                   f"{_NO_VALUE}: DeepSeekMath GRPO's 0.04", trl=True),
    "sync_ref_model": HParam(True, "flag", "dynamic anchor on: the KL reference is refreshed from the policy",
                             "arXiv 2501.11651 abstract (dynamic anchor)", trl=True),
    "ref_model_sync_steps": HParam(20, "optimizer steps", "N: the anchor is refreshed every N optimizer steps",
                                   _NO_VALUE, trl=True),
    "ref_model_mixup_alpha": HParam(1.0, "fraction", "anchor <- alpha * policy + (1 - alpha) * anchor (1 = hard "
                                    "copy)", _NO_VALUE, trl=True),
})


def _check(n_keep: int, selection: str, advantage_over: str, group_size: int) -> None:
    if selection not in SELECTIONS:
        raise ValueError(f"t1: unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if advantage_over not in ADVANTAGE_SETS:
        raise ValueError(f"t1: unknown advantage_over {advantage_over!r}; valid: {', '.join(ADVANTAGE_SETS)}")
    if not 2 <= n_keep <= group_size:
        raise ValueError(f"t1: n_keep must be between 2 and num_generations ({group_size}), got {n_keep}")


def _ranking_rewards(rewards: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(rewards.detach().double().cpu(), nan=0.0)


def max_variance_subset(r: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (sorted) of the n-subset of ``r`` (one group, 1-D) with the largest population variance: the top-i
    and bottom-(n-i) rewards for the i in 0..n that maximises it (the smallest such i); equal rewards ranked by
    position (PODS's max-variance down-sampling)."""
    order = torch.sort(r, descending=True, stable=True).indices
    k = r.numel()
    best, best_var = None, -1.0
    for i in range(n + 1):
        idx = torch.cat([order[:i], order[k - (n - i):]]) if n - i > 0 else order[:i]
        var = float(r[idx].var(unbiased=False))
        if var > best_var + 1e-12:
            best, best_var = idx, var
    return torch.sort(best).values


def kept_rows(rewards: torch.Tensor, group_size: int, *, n_keep: int, selection: str, advantage_over: str = "kept"
              ) -> torch.Tensor:
    """(N,) bool: the completions the update keeps, n_keep per group of ``group_size`` (group order)."""
    _check(n_keep, selection, advantage_over, group_size)
    g = _ranking_rewards(rewards).view(-1, group_size)
    keep = torch.zeros_like(g, dtype=torch.bool)
    for p, row in enumerate(g):
        idx = max_variance_subset(row, n_keep) if selection == "max_variance" else torch.arange(n_keep)
        keep[p, idx] = True
    return keep.reshape(-1)


def _group_std(values: torch.Tensor) -> float:
    """Mean over groups (rows) of the population std of each row."""
    return float(values.std(dim=1, unbiased=False).mean()) if values.numel() else 0.0


@register_advantage(
    "t1", paper="t1", hparams=HPARAMS,
    source=f"arXiv 2501.11651 (abstract: oversampling, entropy bonus, dynamic anchor); {CODE} README, "
           "figures/rl_overview.svg; no RL code released (hand-derived); PODS arXiv 2504.13818 (selection rule)")
def t1_advantage(actx: AdvantageContext, *, n_keep: int, selection: str, advantage_over: str):
    """T1 oversampling: GRPO advantages over the kept subset of each oversampled group (0 for dropped ones)."""
    keep = kept_rows(actx.rewards, actx.group_size, n_keep=n_keep, selection=selection, advantage_over=advantage_over)
    r = actx.rewards.detach().double().cpu()
    adv = torch.zeros_like(r)
    if advantage_over == "all":
        adv[keep] = actx.grpo_advantages().detach().double().cpu()[keep]
    else:
        sub = AdvantageContext(rewards=r[keep], group_size=n_keep, mask=actx.mask[keep.to(actx.mask.device)],
                               completion_ids=actx.completion_ids[keep.to(actx.completion_ids.device)],
                               scale_rewards=actx.scale_rewards)
        adv[keep] = sub.grpo_advantages()
    ranked = _ranking_rewards(actx.rewards)
    kept_std = _group_std(ranked[keep].view(-1, n_keep))
    all_std = _group_std(ranked.view(-1, actx.group_size))
    metrics = {
        "t1/kept_reward_std": kept_std,
        "t1/all_reward_std": all_std,
        "t1/reward_std_gain": kept_std - all_std,
        "t1/kept_reward_mean": float(ranked[keep].mean()),
        "t1/all_reward_mean": float(ranked.mean()),
        "t1/kept_frac": float(keep.double().mean()),
    }
    return adv.to(actx.rewards.device, actx.rewards.dtype), metrics


@register_data("t1", paper="t1", source="harness: oversampling keeps n_keep of the num_generations completions of "
                                        "each group (selection rule in harness/methods/t1.py)")
def t1_data(bctx: BatchContext, *, n_keep: int, selection: str, advantage_over: str):
    """T1 oversampling: drop the completions outside each group's kept subset from the loss."""
    if bctx.stage != "scored":
        return None
    keep = kept_rows(bctx.rewards, bctx.group_size, n_keep=n_keep, selection=selection, advantage_over=advantage_over)
    if bool(keep.all()):  # n_keep == K: no oversampling, the batch is GRPO's
        return None
    return BatchDecision(keep=keep)
