"""CURE: Critical-Token-Guided Re-Concatenation for Entropy-Collapse Prevention (arXiv 2508.11016).

Ported from the authors' release bytedance/CURE @ c904b389, a verl DAPO recipe: ``recipe/CURE_First_Stage/
dapo_ray_trainer.py`` (``get_critic_key_token_mask`` lines 50-113, the branching in ``fit`` lines 189-244, dynamic
sampling 308-366) and ``run_cure_stage_1.sh`` / ``recipe/CURE_Second_Stage/run_cure_stage_2.sh``. Per prompt, stage 1:

1. sample ``n1`` responses; per-token entropies of them under the current policy;
2. per response, walk its positions by entropy (descending), skipping position 0, special tokens and tokens whose
   decoded text stripped has at most one character; the first ``critical_top_k`` that pass are the candidates and
   one of them, drawn uniformly, is the critical position ``t*`` (no candidate: ``t* = 0``, an empty prefix);
3. new prompt = prompt + response[:t*] (cut to ``max_prompt_length`` tokens from the start, as the code writes it
   into its fixed prompt buffer); sample ``n2`` continuations from it;
4. the group is the ``n1`` originals then the ``n1 * n2`` continuations (response-major), one uid: GRPO advantages
   over all ``G = n1 (1 + n2)`` members; a continuation's prefix is part of its prompt, so the loss, the reward (the
   code scores ``response_str`` only) and the lengths cover the continuation tokens only.

Stage 2 (``stage1_steps``): from that step on the rollout samples ``G`` responses per prompt (vanilla DAPO on the
stage-1 policy; the authors start a new run from the stage-1 step-300 checkpoint). ``filter_groups``: DAPO dynamic
sampling as the code (groups whose rewards all agree are dropped and refilled from extra generation batches).

Variant ``cure_random`` (the code's ``critical_token_type='random'`` ablation): positions walked in a random
permutation of the padded response width instead of by entropy; same skip rules, same draw.

Through the extension points: ``rollout`` (``kind="rollout_func"``) does 1-4 with ``RolloutContext.generate`` /
``token_stats``; TRL's own group advantages (eps 1e-4, verl 1e-6) run over the G consecutive rows; ``data`` does
the filtering. HF ``generate`` re-encodes each branch prefix (prefill): no KV-cache reuse (vLLM's automatic prefix
caching would reuse it at GPU tiers). Random draws use the run's seeded generator in the code's order (per row one
``randint``; random mode: all ``randperm`` first), so a seed reproduces the authors' choices exactly (golden test).
"""
from __future__ import annotations

import torch

from harness.methods.context import BatchContext, BatchDecision, RolloutContext
from harness.methods.registry import HParam, register_data, register_rollout

REPO = "bytedance/CURE"
COMMIT = "c904b38914faf6354f8ae1033850d7b9ca8183b4"
CODE = f"{REPO}@{COMMIT[:8]}"
TRAINER = f"{CODE} recipe/CURE_First_Stage/dapo_ray_trainer.py"
SCRIPT = f"{CODE} recipe/CURE_First_Stage/run_cure_stage_1.sh"
PAPER = "CURE (arXiv 2508.11016)"
MODES = ("entropy", "random")
PREFIX = "cure"
ROLE = "cure_role"

HPARAMS = {
    "n1": HParam(4, "responses per prompt", "first sampling: responses drawn from the prompt",
                 f"{SCRIPT}:54 n1=4; {TRAINER}:195"),
    "n2": HParam(3, "continuations per critical prefix", "second sampling: continuations from each prefix",
                 f"{SCRIPT}:55 n2=3; {TRAINER}:231"),
    "critical_top_k": HParam(20, "candidate positions", "candidates: the first k valid positions by entropy",
                             f"{SCRIPT}:57 critical_top_k=20; {TRAINER}:70-86"),
    "critical_token_type": HParam("entropy", " | ".join(MODES), "order of the walk: entropy (descending) or a "
                                  "random permutation (ablation)", f"{SCRIPT}:56; {TRAINER}:52-59"),
    "max_prompt_length": HParam(None, "tokens (prompt + prefix)", "a branch prompt longer than this keeps its first "
                                "tokens (the code's prompt buffer); null: no cap", f"{SCRIPT}:18 max_prompt_length="
                                f"1500; {TRAINER}:219-220", type=int | None),
    "stage1_steps": HParam(None, "optimizer steps (trainer global step)", "stage 2 (flat G samples, vanilla DAPO) "
                           "from this step on; null: stage 1 throughout", f"{CODE} recipe/CURE_Second_Stage/"
                           "run_cure_stage_2.sh:39 MODEL_PATH=CURE-Stage-1/global_step_300_", type=int | None),
    "filter_groups": HParam(True, "bool", "DAPO dynamic sampling: drop groups with reward std 0, refill them",
                            f"{SCRIPT}:26-27 enable_filter_groups=True, metric acc; {TRAINER}:308-366"),
    "max_num_gen_batches": HParam(10, "generation batches per step", "refill limit (the first batch included)",
                                  f"{SCRIPT}:28; {TRAINER}:352-362"),
}
RANDOM_HPARAMS = {**HPARAMS, "critical_token_type": HParam("random", *[getattr(HPARAMS["critical_token_type"], k)
                                                                       for k in ("unit", "help", "source")])}


def _check(hp: dict) -> None:
    if hp["critical_token_type"] not in MODES:
        raise ValueError(f"cure: critical_token_type must be one of {', '.join(MODES)}, "
                         f"got {hp['critical_token_type']!r}")
    for k in ("n1", "n2", "critical_top_k", "max_num_gen_batches"):
        if hp[k] < 1:
            raise ValueError(f"cure: {k} must be >= 1, got {hp[k]!r}")
    for k in ("max_prompt_length", "stage1_steps"):
        if hp[k] is not None and hp[k] < 0:
            raise ValueError(f"cure: {k} must be >= 0 or null, got {hp[k]!r}")


class TokenFilter:
    """The code's skip rule for one token id: not a special token and ``len(decode(id).strip()) > 1`` (cached)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = {int(x) for x in getattr(tokenizer, "all_special_ids", ())}
        self._cache: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        tid = int(token_id)
        if tid not in self._cache:
            self._cache[tid] = tid not in self.special and len(self.tokenizer.decode(tid).strip()) > 1
        return self._cache[tid]


def choose_critical(completions: list[list[int]], entropies: list[torch.Tensor] | None, valid, top_k: int,
                    mode: str = "entropy", width: int | None = None, generator: torch.Generator | None = None):
    """(positions, candidates): the critical position t* of each completion and its candidate list, as
    ``get_critic_key_token_mask`` (dapo_ray_trainer.py:50-97). ``valid(token_id)`` is the skip rule
    (:class:`TokenFilter`); ``width``: the padded response width the random mode permutes (the code's
    ``response_length``; default the longest completion)."""
    if mode not in MODES:
        raise ValueError(f"cure: critical_token_type must be one of {', '.join(MODES)}, got {mode!r}")
    n = len(completions)
    if mode == "random":
        w = max([width or 0] + [len(c) for c in completions])
        orders = [torch.randperm(w, generator=generator).tolist() for _ in range(n)]  # all rows first, as the code
    else:
        orders = [torch.argsort(e.float(), descending=True, stable=True).tolist() for e in entropies]
    positions, candidates = [], []
    for c, order in zip(completions, orders):
        cand = []
        for idx in order:
            if idx == 0 or idx >= len(c):  # position 0; past the end: the code's pad (a special token)
                continue
            if len(cand) >= top_k:
                break
            if valid(c[idx]):
                cand.append(idx)
        t = cand[int(torch.randint(0, len(cand), (1,), generator=generator))] if cand else 0
        positions.append(t)
        candidates.append(cand)
    return positions, candidates


def branch_prompt(prompt_ids: list[int], completion: list[int], t: int, max_prompt_length: int | None = None):
    """prompt + completion[:t], its first ``max_prompt_length`` tokens when longer (dapo_ray_trainer.py:219-220)."""
    ids = list(prompt_ids) + list(completion[:t])
    return ids if max_prompt_length is None else ids[:max(max_prompt_length, len(prompt_ids))]


def _log(rctx: RolloutContext, metrics: dict) -> None:
    if rctx.log_metric is not None:
        for k, v in metrics.items():
            rctx.log_metric(f"{PREFIX}/{k}", float(v))


def _flat(ids: list, rctx: RolloutContext, stage: int | None) -> dict:
    comps = rctx.generate(ids)
    if stage is not None:
        n = sum(len(c) for c in comps)
        _log(rctx, {"stage": stage, "tokens_generated": n, "tokens_generated_flat": n, "tokens_ratio": 1.0})
    return {"prompt_ids": ids, "completion_ids": comps, "logprobs": None}


def cure_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """Stage 1: n1 originals, a critical prefix each, n2 continuations per prefix; group = originals + branches."""
    _check(hp)
    g = rctx.group_size
    if not rctx.training:
        return _flat(rctx.tokenize(prompts), rctx, None)
    if hp["stage1_steps"] is not None and rctx.step >= hp["stage1_steps"]:
        return _flat(rctx.tokenize(prompts), rctx, 2)
    n1, n2 = hp["n1"], hp["n2"]
    if g != n1 * (1 + n2):
        raise ValueError(f"cure: num_generations ({g}) must equal n1 * (1 + n2) = {n1} * (1 + {n2}) = "
                         f"{n1 * (1 + n2)} (the originals and their branches form one group)")
    if len(prompts) % g or any(prompts[i] != prompts[i - i % g] for i in range(len(prompts))):
        raise ValueError("cure: the rollout needs whole groups (each prompt repeated num_generations times)")
    p_ids = rctx.tokenize(prompts[::g])
    orig_in = [p for p in p_ids for _ in range(n1)]
    originals = rctx.generate(orig_in)
    _, ents = rctx.token_stats(orig_in, originals)
    valid = TokenFilter(rctx.tokenizer)
    t, cands = choose_critical(originals, ents, valid, hp["critical_top_k"], hp["critical_token_type"],
                               rctx.max_completion_length, rctx.generator)
    prefixes = [branch_prompt(p, c, ti, hp["max_prompt_length"]) for p, c, ti in zip(orig_in, originals, t)]
    branch_in = [b for b in prefixes for _ in range(n2)]
    conts = rctx.generate(branch_in)
    prompt_ids, completion_ids, role = [], [], []
    for j in range(len(p_ids)):  # per prompt: its n1 originals, then their n1 * n2 continuations (the code's chunks)
        o, b = slice(j * n1, (j + 1) * n1), slice(j * n1 * n2, (j + 1) * n1 * n2)
        prompt_ids += orig_in[o] + branch_in[b]
        completion_ids += originals[o] + conts[b]
        role += ["original"] * n1 + ["branch"] * (n1 * n2)
    hit = [i for i, c in enumerate(cands) if c]
    ent_all = torch.cat([e.float() for e in ents]) if ents else torch.zeros(0)
    crit = torch.stack([ents[i][t[i]].float() for i in hit]) if hit else torch.zeros(0)
    len_orig = sum(len(c) for c in originals)
    metrics = {
        "stage": 1,
        "tokens_generated": len_orig + sum(len(c) for c in conts),
        "tokens_generated_flat": len_orig * g / n1,  # G full responses at the originals' mean length
        # response tokens re-encoded (prefilled) in front of every continuation: no KV-cache reuse under HF generate
        "prefix_tokens": n2 * sum(len(b) - len(p) for b, p in zip(prefixes, orig_in)),
        "fallback_frac": 1.0 - len(hit) / max(len(originals), 1),
        "candidates": sum(len(c) for c in cands) / max(len(cands), 1),
        "critical_rel_pos": sum(t[i] / len(originals[i]) for i in hit) / max(len(hit), 1),
        "response_entropy": float(ent_all.mean()) if ent_all.numel() else 0.0,
    }
    metrics["tokens_ratio"] = metrics["tokens_generated"] / max(metrics["tokens_generated_flat"], 1.0)
    if hit:
        metrics["critical_entropy"] = float(crit.mean())
        metrics["critical_entropy_excess"] = float(crit.mean()) - float(torch.stack(
            [ents[i].float().mean() for i in hit]).mean())
    _log(rctx, metrics)
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, ROLE: role}


def filter_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) bool: rows of groups whose rewards are not all equal (the code keeps ``np.std(vals) > 0`` or a group of
    one, dapo_ray_trainer.py:324-338); NaN rewards count as 0."""
    g = torch.nan_to_num(rewards.double(), nan=0.0).view(-1, group_size)
    keep = (g.max(dim=1).values > g.min(dim=1).values) | torch.tensor(group_size == 1)
    return keep.repeat_interleave(group_size)


def cure_data(bctx: BatchContext, **hp) -> BatchDecision | None:
    """Stage "scored": DAPO dynamic sampling (drop uniform groups, refill from at most max_num_gen_batches - 1
    extra generation batches)."""
    _check(hp)
    if bctx.stage != "scored" or not hp["filter_groups"]:
        return None
    keep = filter_groups(bctx.rewards.float().cpu(), bctx.group_size)
    return BatchDecision(keep=keep, resample=True, resample_max_rounds=hp["max_num_gen_batches"] - 1,
                         metrics={f"{PREFIX}/kept_group_frac": float(keep.float().mean())})


for _name, _hp, _desc in (
        ("cure", HPARAMS, "CURE: branch at a high-entropy critical token, continuations join the group"),
        ("cure_random", RANDOM_HPARAMS, "CURE ablation: the critical token at a random valid position")):
    register_rollout(_name, kind="rollout_func", paper=PAPER, source=CODE, hparams=_hp, description=_desc)(cure_rollout)
    register_data(_name, paper=PAPER, source=CODE, hparams=_hp, description=_desc)(cure_data)
