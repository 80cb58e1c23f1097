"""AEPO: Arbitrary Entropy Policy Optimization (arXiv 2510.08141), entropy control by temperature-adjusted REINFORCE.

Ported from the authors' EasyR1 fork 597358816/AEPO @ b353a054, ``verl/trainer/ray_trainer.py`` ``fit`` branch
``alg == "AEPO"`` (lines 784-812) with ``_select_by_advantage`` (166-177); settings ``verl/trainer/config.py``
``TrainerConfig`` (84-88). Per training step, as the code does it:

1. GRPO rollout and advantages of the batch (``batch``).
2. ``T = temperature_high`` if the last measured entropy ``<= entropy_base`` else ``temperature_low`` (``entropy``
   starts at 0, so step 1 samples hot). The measure is the actor's ``actor/entropy_loss`` of the previous update,
   ``-masked_mean(log_probs, response_mask)`` at temperature 1: the mean negative log-likelihood of the sampled
   tokens (a Monte-Carlo entropy estimate), not the full-distribution entropy.
3. The first quarter of the prompts (``gen_batch[:len // 4]``) is generated again, n samples each, at T, rewarded,
   and given GRPO advantages within those groups.
4. Positives ``A > 0.05`` are kept and their advantage set to 1 (one-sided REINFORCE; the PPO ratio is 1, old
   log-probs at temperature 1: no correction for sampling at T).
5. ``sample_num = min(reinforce_sample_num, #positives)``, halved (``// 2``) above the target; the training batch is
   ``positives[:sample_num] + batch[sample_num:]``: the first rows of the batch are replaced; the rest keep their
   GRPO advantages (computed with the replaced rows in their groups).

Here, through the extension points (the trainer is unchanged): a batch has room for as many completions as it has
places, so the ``data`` hook's "prompts" stage lays each process's batch out as ``k`` re-generated prompts followed
by the main prompts, ``k = floor(B * share / (1 + share))`` (share 1/4: B = 5k places hold k tempered + 4k main
groups, the code's proportion; the last k dataset prompts of the batch wait for a later batch). The ``rollout``
(``kind="rollout_func"``) samples the main groups at the run's temperature and the first k at T, measures the
entropy of the main completions (kept for the next step: the code's one-step lag), and tags every row. TRL rewards
all rows and gives GRPO advantages per group, so the tempered groups get theirs among themselves as in the code;
the ``data`` hook's "scored" stage then keeps ``positives[:s]`` with advantage 1 (weight 1/A) and drops the other
tempered rows and the first ``s`` main rows. Trainer changes that would make this exact are in the card header.

Variant ``aepo_entropy_paper`` (README / paper formula): ``grad J_GRPO + alpha E_{o~pi^T}[grad log pi(o|q) R]`` with
``T = T_high`` iff ``H < H_target`` (strict); no row of the batch is replaced and every tempered positive joins
with advantage ``alpha`` (positives as the code selects them: ``A > 0.05``; a group whose samples are all correct
has A = 0 and cannot be scaled to alpha by a data hook, so it is left out).
"""
from __future__ import annotations

import math

import torch

from harness.methods.context import BatchContext, BatchDecision, RolloutContext
from harness.methods.registry import HParam, MethodState, register_data, register_rollout

REPO = "597358816/AEPO"
COMMIT = "b353a05441e9cedaed154d29aa75bcae472a6a27"
CODE = f"{REPO}@{COMMIT[:8]}"
TRAINER = f"{CODE} verl/trainer/ray_trainer.py"
PAPER = "AEPO (arXiv 2510.08141)"
VARIANTS = ("code", "paper")
MEASURES = ("nll", "entropy")
PREFIX = "aepo_entropy"
ROLE, BELOW = "aepo_role", "aepo_below_target"

HPARAMS = {
    "entropy_base": HParam(
        0.5, "nats (mean per-token)", "target entropy H; the code's default 0.5, the README's best run H = 0.75",
        f"{CODE} verl/trainer/config.py:87 entropy_base: 0.5; examples/qwen-math-7b-AEPO.sh trainer.entropy_base=0.5; "
        "README table AEPO (H=0.75)"),
    "temperature_high": HParam(1.2, "sampling temperature", "T when the entropy is at or below the target",
                               f"{CODE} verl/trainer/config.py:85"),
    "temperature_low": HParam(0.8, "sampling temperature", "T when the entropy is above the target",
                              f"{CODE} verl/trainer/config.py:86"),
    "reinforce_sample_num": HParam(
        60, "rows of the training batch", "most rows replaced by tempered positives (halved above the target)",
        f"{CODE} verl/trainer/config.py:88; ray_trainer.py:804-808"),
    "positive_threshold": HParam(0.05, "advantage (group-normalised)", "tempered samples with A > this are positives",
                                 f"{TRAINER}:802 _select_by_advantage(batch_bak, threshold=0.05, absolute=False)"),
    "resample_share": HParam(0.25, "fraction of the main prompts", "share of the prompts re-generated at T (the first)",
                             f"{TRAINER}:791 gen_batch_bak[:len(gen_batch_bak) // 4]"),
    "entropy_measure": HParam(
        "nll", " | ".join(MEASURES), "nll: mean -log p of the sampled tokens (the code's actor/entropy_loss); "
        "entropy: mean full-distribution token entropy", f"{CODE} verl/workers/actor/dp_actor.py:322; "
        f"{TRAINER}:730, 845 entropy = metrics['actor/entropy_loss']"),
    "variant": HParam("code", " | ".join(VARIANTS), "code: replace rows, A = 1, T_high iff H <= target; paper: add "
                      "positives with A = alpha, T_high iff H < target", f"{TRAINER}:784-812; README Method Overview"),
    "alpha": HParam(1.0, "advantage of a tempered positive (paper variant)", "REINFORCE weight alpha of the paper "
                    "formula; the code has none (A = 1 on replaced rows)", "README Method Overview [unverified value]"),
}
PAPER_HPARAMS = {**HPARAMS, "variant": HParam("paper", HPARAMS["variant"].unit, HPARAMS["variant"].help,
                                              HPARAMS["variant"].source)}

#: per trainer (its seeded generator object): the entropy measured at the previous training rollout
_LAST: dict[int, tuple[torch.Generator | None, float]] = {}


def _last_state(gen) -> dict:
    prev = _LAST.get(id(gen))
    return {"last_entropy": prev[1]} if prev is not None and prev[0] is gen else {}


def _load_last(gen, state: dict) -> None:
    if "last_entropy" in state:
        _LAST[id(gen)] = (gen, float(state["last_entropy"]))


#: the previous rollout's entropy in checkpoints (harness.train.resume)
STATE = MethodState(_last_state, _load_last, keys=("last_entropy",))


def _check(hp: dict) -> None:
    if hp["variant"] not in VARIANTS:
        raise ValueError(f"aepo_entropy: variant must be one of {', '.join(VARIANTS)}, got {hp['variant']!r}")
    if hp["entropy_measure"] not in MEASURES:
        raise ValueError(f"aepo_entropy: entropy_measure must be one of {', '.join(MEASURES)}, "
                         f"got {hp['entropy_measure']!r}")
    for k in ("temperature_high", "temperature_low"):
        if not hp[k] > 0:
            raise ValueError(f"aepo_entropy: {k} must be > 0, got {hp[k]!r}")
    if hp["reinforce_sample_num"] < 0 or hp["alpha"] < 0 or not 0 <= hp["resample_share"] <= 1:
        raise ValueError("aepo_entropy: reinforce_sample_num and alpha must be >= 0, resample_share in [0, 1]")


def choose_temperature(entropy: float, target: float, t_high: float, t_low: float, variant: str = "code"):
    """(T, below): the code samples hot when ``entropy <= target`` (ray_trainer.py:787), the README when ``<``."""
    below = entropy <= target if variant == "code" else entropy < target
    return (t_high if below else t_low), bool(below)


def n_tempered(n_groups: int, share: float) -> int:
    """Re-generated groups among ``n_groups`` places: k = floor(n_main * share) with n_main = n_groups - k."""
    return int(math.floor(n_groups * share / (1.0 + share) + 1e-9))


def select(main_adv: torch.Tensor, temp_adv: torch.Tensor, below: bool, *, reinforce_sample_num: int,
           positive_threshold: float, variant: str = "code", alpha: float = 1.0):
    """Which rows train and the tempered rows' advantages (ray_trainer.py:802-809). Inputs are per-row advantages
    of the main batch and of the tempered batch, each in batch order. Returns (keep_main, keep_temp, temp_adv_new,
    sample_num)."""
    pos = (temp_adv > positive_threshold).nonzero().flatten()
    keep_main = torch.ones(main_adv.numel(), dtype=torch.bool)
    keep_temp = torch.zeros(temp_adv.numel(), dtype=torch.bool)
    new = temp_adv.clone()
    if variant == "code":
        s = min(reinforce_sample_num, pos.numel(), main_adv.numel())  # the code errors with no positive at all
        if not below:
            s //= 2
        keep_temp[pos[:s]] = True
        new[pos[:s]] = 1.0
        keep_main[:s] = False
    else:
        s = pos.numel() if alpha > 0 else 0
        keep_temp[pos[:s]] = True
        new[pos[:s]] = alpha
    return keep_main, keep_temp, new, int(s)


def _measure(stats: list[torch.Tensor]) -> float:
    x = torch.cat([t.float() for t in stats]) if stats else torch.zeros(0)
    return float(x.mean()) if x.numel() else 0.0


def aepo_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """Main groups at the run's temperature, the first k groups (a copy of the first main prompts) at T."""
    _check(hp)
    ids = rctx.tokenize(prompts)
    if not rctx.training:
        return {"prompt_ids": ids, "completion_ids": rctx.generate(ids), "logprobs": None}
    g = rctx.group_size
    k = n_tempered(len(prompts) // g, hp["resample_share"])
    if any(prompts[i * g] != prompts[(k + i) * g] for i in range(k)):
        k = 0  # not laid out by the prompts stage (e.g. an extra generation round): plain GRPO rows
    key = id(rctx.generator)
    prev = _LAST.get(key, (None, 0.0))
    last = prev[1] if prev[0] is rctx.generator else 0.0  # the code's `entropy = 0` before the first step
    t, below = choose_temperature(last, hp["entropy_base"], hp["temperature_high"], hp["temperature_low"],
                                  hp["variant"])
    nt = k * g
    temp = rctx.generate(ids[:nt], temperature=t) if nt else []
    main = rctx.generate(ids[nt:])
    logps, ents = rctx.token_stats(ids, temp + main)
    now = -_measure(logps[nt:]) if hp["entropy_measure"] == "nll" else _measure(ents[nt:])
    _LAST[key] = (rctx.generator, now)
    metrics = {"entropy": last, "entropy_target": hp["entropy_base"], "entropy_gap": last - hp["entropy_base"],
               "entropy_now": now, "temperature": t if nt else 1.0, "below_target": float(below),
               "tempered_rows": float(nt)}
    if nt:  # tempered samples scored at the run's temperature: how unlikely they are under it (no correction)
        metrics["tempered_nll"] = -_measure(logps[:nt])
        metrics["main_nll"] = -_measure(logps[nt:])
    for name, v in metrics.items():
        if rctx.log_metric is not None:
            rctx.log_metric(f"{PREFIX}/{name}", v)
    n = len(prompts)
    return {"prompt_ids": ids, "completion_ids": temp + main, "logprobs": None,
            ROLE: ["tempered"] * nt + ["main"] * (n - nt), BELOW: [below] * n}


def aepo_data(bctx: BatchContext, **hp) -> BatchDecision | None:
    """Stage "prompts": k copies of the first prompts go first. Stage "scored": positives replace the first rows."""
    _check(hp)
    rows = bctx.rows or []
    if bctx.stage == "prompts":
        k = n_tempered(len(rows), hp["resample_share"])
        if k == 0:
            return None
        return BatchDecision(rows=rows[:k] + rows[:len(rows) - k], metrics={f"{PREFIX}/tempered_prompts": float(k)})
    role = [r.get(ROLE) for r in rows]
    temp = [i for i, x in enumerate(role) if x == "tempered"]
    main = [i for i, x in enumerate(role) if x == "main"]
    if not temp:
        return None
    adv = bctx.advantages if bctx.advantages.dim() == 1 else bctx.advantages[:, 0]  # the code reads token 0
    adv = adv.detach().float().cpu()
    below = bool(rows[temp[0]][BELOW])  # one process's measure (single process: the batch's)
    keep_main, keep_temp, new, s = select(adv[main], adv[temp], below, reinforce_sample_num=hp["reinforce_sample_num"],
                                          positive_threshold=hp["positive_threshold"], variant=hp["variant"],
                                          alpha=hp["alpha"])
    keep = torch.zeros(adv.numel(), dtype=torch.bool)
    weights = torch.ones(adv.numel())
    keep[main] = keep_main
    keep[temp] = keep_temp
    t_idx = torch.tensor(temp)[keep_temp]
    weights[t_idx] = new[keep_temp] / adv[t_idx]  # A * (1 / A) = 1: the trainer scales advantages by the weights
    rewards = bctx.rewards.float().cpu()
    n_pos = int((adv[temp] > hp["positive_threshold"]).sum())
    metrics = {f"{PREFIX}/positives": float(n_pos), f"{PREFIX}/replaced_rows": float(s),
               f"{PREFIX}/main_rows_dropped": float((~keep_main).sum()),
               f"{PREFIX}/tempered_reward": float(torch.nanmean(rewards[temp])),
               f"{PREFIX}/main_reward": float(torch.nanmean(rewards[main]))}
    return BatchDecision(keep=keep, weights=weights, metrics=metrics)


for _name, _hp, _desc in (
        ("aepo_entropy", HPARAMS, "AEPO as released: tempered positives (A = 1) replace the first rows"),
        ("aepo_entropy_paper", PAPER_HPARAMS, "AEPO per the README formula: tempered positives added with A = alpha")):
    register_rollout(_name, kind="rollout_func", paper=PAPER, source=CODE, hparams=_hp, description=_desc,
                     state=STATE)(aepo_rollout)
    register_data(_name, paper=PAPER, source=CODE, hparams=_hp, description=_desc)(aepo_data)
