"""ETTRL: entropy mechanism for test-time RL (arXiv 2508.11356, Kuaishou): ETMR (entropy-fork tree majority rollout)
and EAR (entropy-based advantage reshaping) on top of TTRL (majority-vote pseudo-labels, no ground truth).

No code is released and the paper's formulas were not available to us (reference card ../shared/papers/ettrl.md:
abstract only). Everything below is the HARNESS'S DESIGN, stated as such; the golden test is hand-derived.

ETMR (``rollout``, kind ``rollout_func``), per prompt group of G leaves (training only; evaluation samples flat):

1. sample ``n_trunks`` = M chains from the prompt;
2. ``iterations`` = L times: score every position t of every leaf's OWN tokens (a trunk: t >= 1; a branch forked at
   s: t > s; a position forked before is not forked again) by the policy's entropy of the distribution that drew
   token t (``RolloutContext.token_stats``, run temperature); take the N highest (ties: earlier leaf, earlier t)
   with N = (G - M) / (L T); from each, sample ``branches_per_fork`` = T continuations of ``prompt + leaf[:t]``
   (token t itself is re-sampled) with at most ``max_completion_length - t`` new tokens, so every leaf path fits the
   flat-sampling length limit. Each leaf is marginally a policy sample (prefix and continuation both are).
   A group with fewer candidate positions than N forks at t = 0 instead (a fresh chain; ``ettrl/fallback_forks``).
3. every leaf is returned as its full path ``leaf[:t] + continuation`` with ``env_mask`` 0 on the shared prefix:
   the trainer's loss mask (TRL ``tool_mask``) trains each token once, in the leaf that sampled it, and entropy,
   cov(logp, A) and lengths are over trained tokens only; the group's G consecutive rows hold the whole tree.
   ``fork_select="random"`` draws the N positions uniformly (ablation of the entropy criterion).

Tokens: ``ettrl/tokens_generated`` counts every sampled completion token of the call (trunks and continuations; one
HF ``generate`` call serves all branches of a round, each row stopped at its own budget by :class:`RowBudget`; tokens
a backend samples past a budget are cut and counted, ``ettrl/tokens_overflow``, 0 with HF). ``ettrl/tokens_flat_equiv`` is what flat sampling of the same G leaves costs:
the sum of the leaf path lengths (unbiased for flat sampling's cost, each leaf being a policy sample);
``ettrl/token_ratio`` = generated / flat-equivalent. HF ``generate`` re-encodes the prompt + prefix on every branch
(prefill; no KV reuse; vLLM's automatic prefix caching would reuse it at GPU tiers).

Reward (label-free, TTRL): the majority answer over the group's G leaves is the pseudo-label; reward 1 for a leaf
whose answer equals it, else 0 (no answer: 0; no answered leaf: all 0). Ties: the answer seen first
(``Counter.most_common``). Answers: ``boxed`` = last ``\\boxed{}`` (:func:`harness.verify.extract_answer`),
``plain`` = the stripped completion (addition smoke task); integers compare by value, others as stripped strings.

EAR (``advantage``): GRPO's group-normalised advantage A_i, times w_i = clip((H_i / mean_g H)^(alpha sign A_i),
clip_low, clip_high), H_i the mean token entropy over the leaf's trained tokens, mean_g over the leaf's group:
over-confident (low-entropy) majority leaves get less credit, confident minority leaves a larger penalty, so the
update leans against early entropy collapse. alpha = 0 (or ``ear="none"``) is GRPO.

Audit (``audit_every`` > 0, training): every that many steps the rollout also samples two flat groups per prompt
(never trained) and logs ``ettrl/audit_label_agreement`` (the rollout's majority equals flat group 1's),
``ettrl/audit_flat_agreement`` (flat group 2's equals flat group 1's: the agreement of two equal-size flat
votes), their difference ``ettrl/audit_agreement_gap`` and ``ettrl/audit_token_ratio`` (rollout tokens / flat
group 1's measured tokens).

Variant ``ettrl_ttrl``: the TTRL baseline (flat rollout, same majority reward, GRPO advantage).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from harness.methods.context import AdvantageContext, RewardContext, RolloutContext
from harness.methods.registry import HParam, register_advantage, register_reward, register_rollout

PAPER = "ettrl"
SOURCE = "no code released; hand-derived harness design (shared/papers/ettrl.md: abstract only)"
ROLLOUTS, FORK_SELECT, ANSWER_MODES, EAR_MODES = ("tree", "flat"), ("entropy", "random"), ("boxed", "plain"), \
    ("ratio", "none")
PREFIX = "ettrl"
_INT = re.compile(r"[+-]?\d+")
_D = "[design] harness choice, the paper's value not found"

HPARAMS = {
    "rollout": HParam("tree", " | ".join(ROLLOUTS), "tree: ETMR; flat: G independent samples (TTRL)",
                      "abstract (ETMR) [design]"),
    "n_trunks": HParam(2, "chains per prompt (M)", "independent chains the tree starts from", _D),
    "branches_per_fork": HParam(2, "continuations per fork (T)", "continuations sampled at each fork position", _D),
    "iterations": HParam(1, "fork rounds (L)", "rounds of forking; N = (G - M) / (L T) forks per round", _D),
    "fork_select": HParam("entropy", " | ".join(FORK_SELECT), "entropy: the N highest-entropy positions; random: "
                          "N uniform positions (ablation)", "abstract: 'branch at high-entropy tokens' [design]"),
    "answer_mode": HParam("boxed", " | ".join(ANSWER_MODES), "final answer: boxed = last \\boxed{}; plain = the "
                          "stripped completion", "TTRL majority vote over extracted answers [design]"),
    "ear": HParam("ratio", " | ".join(EAR_MODES), "ratio: A * clip((H_i / mean H)^(alpha sign A)); none: GRPO",
                  "abstract (EAR) [design]"),
    "ear_alpha": HParam(1.0, "exponent", "strength of the entropy reshaping (0: GRPO)", _D),
    "ear_clip_low": HParam(0.5, "factor on A", "smallest reshaping factor", _D),
    "ear_clip_high": HParam(1.5, "factor on A", "largest reshaping factor", _D),
    "audit_every": HParam(0, "training steps", "every k steps also sample two flat groups per prompt (not "
                          "trained) to compare majority labels and tokens; 0: never", "card claim 2 [design]"),
}
TTRL_HPARAMS = {**HPARAMS,
                "rollout": HParam("flat", *[getattr(HPARAMS["rollout"], k) for k in ("unit", "help", "source")]),
                "ear": HParam("none", *[getattr(HPARAMS["ear"], k) for k in ("unit", "help", "source")])}


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"ettrl: unknown {name} {value!r}; valid: {', '.join(valid)}")


def check(hp: dict, group_size: int | None = None) -> int:
    """Validate the settings; with a group size, return N, the forks per round."""
    for k, valid in (("rollout", ROLLOUTS), ("fork_select", FORK_SELECT), ("answer_mode", ANSWER_MODES),
                     ("ear", EAR_MODES)):
        _choice(k, hp[k], valid)
    for k in ("n_trunks", "branches_per_fork", "iterations"):
        if hp[k] < 1:
            raise ValueError(f"ettrl: {k} must be >= 1, got {hp[k]!r}")
    if not 0 < hp["ear_clip_low"] <= 1 <= hp["ear_clip_high"] or hp["ear_alpha"] < 0 or hp["audit_every"] < 0:
        raise ValueError("ettrl: need 0 < ear_clip_low <= 1 <= ear_clip_high, ear_alpha >= 0, audit_every >= 0")
    if group_size is None or hp["rollout"] == "flat":
        return 0
    m, t, l = hp["n_trunks"], hp["branches_per_fork"], hp["iterations"]
    if m > group_size or (group_size - m) % (t * l):
        raise ValueError(f"ettrl: the tree must have G = {group_size} leaves = n_trunks + iterations * N * "
                         f"branches_per_fork; n_trunks={m}, iterations={l}, branches_per_fork={t} do not fit")
    return (group_size - m) // (t * l)


# ------------------------------------------------------------------------------------------------ answers, vote
def extract(text, answer_mode: str) -> str | None:
    """A completion's answer, normalised (integers by value), or None."""
    if isinstance(text, list):
        text = text[-1]["content"] if text else ""
    if answer_mode == "plain":
        a = text.strip()
    else:
        from harness.verify import extract_answer

        a = (extract_answer(text) or "").strip()
    if not a:
        return None
    return str(int(a)) if _INT.fullmatch(a) else a


def majority(answers: list) -> str | None:
    """The most frequent answer (ties: the first seen); None when no answer."""
    c = Counter(a for a in answers if a is not None)
    return c.most_common(1)[0][0] if c else None


def vote_rewards(answers: list) -> list[float]:
    maj = majority(answers)
    return [1.0 if a is not None and a == maj else 0.0 for a in answers]


# ------------------------------------------------------------------------------------------------ ETMR
@dataclass
class Leaf:
    seq: list[int]           # the full path (completion tokens)
    start: int = 0           # first token this leaf sampled itself (the fork position; 0 for a trunk)
    parent: int = -1         # index of the leaf it was forked from, within its group
    ent: list[float] | None = None
    forked: set[int] = field(default_factory=set)


def choose_forks(leaves: list[Leaf], n: int, mode: str, generator: torch.Generator | None = None):
    """[(leaf index, position)] of the n fork points: positions t of a leaf's own tokens (t > start, t >= 1) not
    forked before; ``entropy`` takes the highest entropies (ties: earlier leaf, earlier t), ``random`` uniform ones.
    Fewer candidates than n: the rest fork at (-1, 0), a fresh chain from the prompt."""
    cands = [(i, t) for i, leaf in enumerate(leaves) for t in range(max(leaf.start + 1, 1), len(leaf.seq))
             if t not in leaf.forked]
    if mode == "entropy":
        cands.sort(key=lambda c: (-leaves[c[0]].ent[c[1]], c[0], c[1]))
        picked = cands[:n]
    else:
        order = torch.randperm(len(cands), generator=generator).tolist()
        picked = sorted(cands[j] for j in order[:n])
    return picked + [(-1, 0)] * (n - len(picked))


class RowBudget:
    """HF stopping criterion: row i is done once it has generated ``budgets[i]`` tokens (later tokens of a done row
    are padding, not samples); the rollout cuts each row to its budget."""

    def __init__(self, budgets: list[int]):
        self.budgets, self.first_len = torch.tensor(budgets), None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.first_len is None:  # first call: one generated token appended to the (padded) prompt
            self.first_len = input_ids.size(1)
        n = input_ids.size(1) - self.first_len + 1
        return (n >= self.budgets).to(input_ids.device)


def tree_rollout(prompt_ids: list[list[int]], rctx: RolloutContext, hp: dict) -> tuple[list[list[Leaf]], dict]:
    """The ETMR forest: one list of G leaves per group (``prompt_ids`` = one entry per group) and token counts."""
    n_forks = check(hp, rctx.group_size)
    m, t_br, limit = hp["n_trunks"], hp["branches_per_fork"], rctx.max_completion_length
    trunks = rctx.generate([p for p in prompt_ids for _ in range(m)])
    forest = [[Leaf(list(s)) for s in trunks[k * m:(k + 1) * m]] for k in range(len(prompt_ids))]
    stats = {"tokens_generated": sum(map(len, trunks)), "tokens_overflow": 0, "fallback_forks": 0}
    for _ in range(hp["iterations"] if n_forks else 0):
        need = [(k, leaf) for k, leaves in enumerate(forest) for leaf in leaves if leaf.ent is None]
        if hp["fork_select"] == "entropy" and need:
            _, ents = rctx.token_stats([prompt_ids[k] for k, _ in need], [leaf.seq for _, leaf in need])
            for (_, leaf), e in zip(need, ents):
                leaf.ent = e.tolist()
        inputs, meta = [], []
        for k, leaves in enumerate(forest):
            for i, t in choose_forks(leaves, n_forks, hp["fork_select"], rctx.generator):
                if i >= 0:
                    leaves[i].forked.add(t)
                stats["fallback_forks"] += i < 0
                prefix = leaves[i].seq[:t] if i >= 0 else []
                inputs += [prompt_ids[k] + prefix] * t_br
                meta += [(k, i, t, prefix)] * t_br
        kw = {}
        if limit is not None:  # one call for all branches; each row stops at its own budget limit - t
            kw = {"max_new_tokens": limit - min(t for _, _, t, _ in meta),
                  "stopping_criteria": [RowBudget([limit - t for _, _, t, _ in meta])]}
        conts = rctx.generate(inputs, **kw)
        for (k, i, t, prefix), c in zip(meta, conts):
            keep = len(c) if limit is None else min(len(c), limit - t)
            over = sum(x != rctx.pad_token_id for x in c[keep:])  # a stopped row's padding is no sample
            stats["tokens_generated"] += keep + over
            stats["tokens_overflow"] += over
            forest[k].append(Leaf(prefix + list(c[:keep]), start=t, parent=i))
    stats["tokens_flat_equiv"] = sum(len(leaf.seq) for leaves in forest for leaf in leaves)
    return forest, stats


def _decode_answers(rctx: RolloutContext, seqs: list[list[int]], answer_mode: str) -> list:
    return [extract(rctx.tokenizer.decode(s, skip_special_tokens=True), answer_mode) for s in seqs]


def _group_majorities(answers: list, g: int) -> list:
    return [majority(answers[s:s + g]) for s in range(0, len(answers), g)]


def ettrl_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """ETMR (training; ``rollout="tree"``) or flat sampling; evaluation always samples flat."""
    check(hp)
    ids = rctx.tokenize(prompts)
    if not rctx.training:
        return {"prompt_ids": ids, "completion_ids": rctx.generate(ids), "logprobs": None}
    g = rctx.group_size
    if len(ids) % g:
        raise ValueError(f"ettrl: {len(ids)} prompt entries are not whole groups of {g}")
    heads = ids[::g]
    if hp["rollout"] == "flat":
        comps = [list(c) for c in rctx.generate(ids)]
        env_mask, parent, fork = None, [-1] * len(ids), [0] * len(ids)
        n = sum(map(len, comps))
        stats = {"tokens_generated": n, "tokens_flat_equiv": n, "tokens_overflow": 0, "fallback_forks": 0}
    else:
        forest, stats = tree_rollout(heads, rctx, hp)
        leaves = [leaf for group in forest for leaf in group]
        comps = [leaf.seq for leaf in leaves]
        env_mask = [[0] * leaf.start + [1] * (len(leaf.seq) - leaf.start) for leaf in leaves]
        parent, fork = [leaf.parent for leaf in leaves], [leaf.start for leaf in leaves]
    stats["token_ratio"] = stats["tokens_generated"] / max(stats["tokens_flat_equiv"], 1)
    if hp["audit_every"] and rctx.step % hp["audit_every"] == 0:
        stats.update(_audit(ids, comps, stats["tokens_generated"], rctx, hp["answer_mode"]))
    for name, v in stats.items():
        if rctx.log_metric is not None:
            rctx.log_metric(f"{PREFIX}/{name}", float(v))
    out = {"prompt_ids": ids, "completion_ids": comps, "logprobs": None, "ettrl_parent": parent,
           "ettrl_fork_pos": fork}
    if env_mask is not None:
        out["env_mask"] = env_mask
    return out


def _audit(ids, comps, tokens, rctx: RolloutContext, answer_mode: str) -> dict:
    """Two flat groups per prompt (not trained): majority-label agreement of the rollout and of a flat vote with
    flat group 1, and the rollout's tokens over flat group 1's."""
    g = rctx.group_size
    flat1, flat2 = rctx.generate(ids), rctx.generate(ids)
    maj = [_group_majorities(_decode_answers(rctx, s, answer_mode), g) for s in (comps, flat1, flat2)]
    tree_agree = sum(a == b for a, b in zip(maj[0], maj[1])) / len(maj[1])
    flat_agree = sum(a == b for a, b in zip(maj[2], maj[1])) / len(maj[1])
    return {"audit_label_agreement": tree_agree, "audit_flat_agreement": flat_agree,
            "audit_agreement_gap": tree_agree - flat_agree,
            "audit_token_ratio": tokens / max(sum(map(len, flat1)), 1)}


# ------------------------------------------------------------------------------------------------ reward, EAR
def ettrl_reward(rctx: RewardContext, *, answer_mode: str, **_) -> list[float]:
    """TTRL: 1 when the leaf's answer is the group's majority answer (the pseudo-label), else 0."""
    _choice("answer_mode", answer_mode, ANSWER_MODES)
    g = rctx.group_size
    if len(rctx) % g:
        raise ValueError(f"ettrl: {len(rctx)} completions are not whole groups of {g}")
    answers = [extract(c, answer_mode) for c in rctx.completions]
    out = []
    for s in range(0, len(answers), g):
        out += vote_rewards(answers[s:s + g])
    if rctx.log_metric is not None and answers:
        rctx.log_metric(f"{PREFIX}/majority_ratio", sum(out) / len(out))
        rctx.log_metric(f"{PREFIX}/frac_no_answer", sum(a is None for a in answers) / len(answers))
    return out


def ear_weights(h: torch.Tensor, adv: torch.Tensor, n_tok: torch.Tensor, g: int, alpha: float, lo: float,
                hi: float) -> torch.Tensor:
    """w_i = clip((H_i / mean_g H)^(alpha sign A_i), lo, hi) (lo <= 1 <= hi); 1 where A_i = 0, where the leaf has no
    trained token or where its group's mean entropy is 0. mean_g is over the group's leaves with trained tokens."""
    has = (n_tok > 0).view(-1, g)
    hg = h.double().view(-1, g)
    mean = (hg * has).sum(1, keepdim=True) / has.sum(1, keepdim=True).clamp(min=1)
    ratio = torch.where(has & (mean > 0), hg / mean.clamp(min=1e-12), torch.ones_like(hg)).view(-1)
    return torch.clamp(ratio.clamp(min=1e-12) ** (alpha * torch.sign(adv.double())), lo, hi).to(adv.dtype)


def ettrl_advantage(actx: AdvantageContext, *, ear: str, ear_alpha: float, ear_clip_low: float,
                    ear_clip_high: float, **_) -> tuple[torch.Tensor, dict]:
    """EAR: GRPO's advantage reshaped by the leaf's mean token entropy relative to its group (harness design)."""
    _choice("ear", ear, EAR_MODES)
    adv = actx.grpo_advantages()
    if ear == "none" or ear_alpha == 0:
        return adv, {"method/frac_tokens_touched": 0.0}
    if actx.entropies is None:
        raise ValueError("ettrl: ear='ratio' needs token entropies (registered with needs=('adv_token_stats',) "
                         "only under the name 'ettrl')")
    m = actx.mask.float()
    n_tok = m.sum(1)
    h = (actx.entropies.float() * m).sum(1) / n_tok.clamp(min=1)
    w = ear_weights(h, adv, n_tok, actx.group_size, ear_alpha, ear_clip_low, ear_clip_high)
    pos, neg, touched = adv > 0, adv < 0, w != 1
    metrics = {f"{PREFIX}/response_entropy": float(h[n_tok > 0].mean()) if bool((n_tok > 0).any()) else 0.0,
               f"{PREFIX}/ear_weight_pos": float(w[pos].mean()) if bool(pos.any()) else 1.0,
               f"{PREFIX}/ear_weight_neg": float(w[neg].mean()) if bool(neg.any()) else 1.0,
               "method/frac_tokens_touched": float(n_tok[touched].sum() / n_tok.sum().clamp(min=1))}
    return adv * w, metrics


for _name, _hp, _needs, _desc in (
        ("ettrl", HPARAMS, ("adv_token_stats",), "ETTRL: entropy-fork tree majority rollout + entropy advantage "
                                                "reshaping (harness design; label-free)"),
        ("ettrl_ttrl", TTRL_HPARAMS, (), "TTRL baseline of ETTRL: flat sampling, majority-vote reward, GRPO")):
    register_rollout(_name, kind="rollout_func", paper=PAPER, source=SOURCE, hparams=_hp, description=_desc,
                     )(ettrl_rollout)
    register_reward(_name, task_reward_weight=0.0, label_free=True, paper=PAPER, source=SOURCE)(ettrl_reward)
    register_advantage(_name, paper=PAPER, source=SOURCE, needs=_needs)(ettrl_advantage)
