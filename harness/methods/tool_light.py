"""Tool-Light (arXiv 2509.23285): entropy-guided sampling of tool-use traces, preference pairs by correctness and
tool economy, then two DPO stages (pre-aligned, then self-evolved on-policy) with TRL's ``DPOTrainer``.

Sampler ported from the authors' asilverlight/Tool-Light @ a432dd0d, ``entropy_guided_sample/entropy_guided_sample.py``
(``Inference.calculate_sequence_entropy`` 43-71, ``batch_generate_main_chains`` 139-317, ``select_rollout_positions``
319-329, ``batch_generate_branch_chains`` 331-485); DPO settings from ``LLaMA-Factory-main/examples/train_full/
step{1,2}_dpo.yaml``. What the code does, per question:

1. A main chain generated step by step: a step ends at a tool call's close tag (``</python>``, ``</search>``) or at
   the end (``</answer>``); the tool's result is written between steps and is not part of any step.
2. Each step's score: for n in ``windows`` (10, 20, 30, 40, 50 tokens) the mean token entropy of its first n tokens
   (all of them when the step is not longer than n), the maximum over n (first n on ties); the branch point is after
   those n tokens.
3. The ``max_rollout_steps`` = 3 highest-scored steps (stable sort: earlier steps first on ties) each get
   ``max_rollout_counts`` = 3 continuations sampled from the main chain's prefix up to the branch point.
4. Vanilla sampling (``vanilla_sample.py``, 10 rollouts) is run beside it; pairs are chosen from both ("exact
   criteria: not extracted": :func:`build_pair` is the harness's rule, the card says so).

Here the calculator of the ``reasoning_calc`` task is the tool (``<calc>a+b</calc>``, result written by the
environment), steps end at ``</calc>`` or at the end; entropies are the policy's exact full-vocabulary entropies at
the sampling temperature (the code: the top-50 log-probs vLLM returns, :func:`topk_entropy`; identical on the smoke
vocabulary of 24 tokens). DPO training (harness/train/dpo.py) runs instead of GRPO for this method
(registered with ``trainer="dpo"``: ``harness.train.job`` dispatches on :attr:`Method.trainer`); the ``rollout_func`` hook is the same sampler as a GRPO
rollout (a group = main chain + branches + vanilla fill; branch prefixes go into the prompt: no loss).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.methods.context import RolloutContext
from harness.methods.registry import HParam, register_rollout

REPO = "asilverlight/Tool-Light"
COMMIT = "a432dd0d5c5c36ca84d294857cdeb3107fcd93eb"
CODE = f"{REPO}@{COMMIT[:8]}"
SAMPLER = f"{CODE} entropy_guided_sample/entropy_guided_sample.py"
DPO_YAML = f"{CODE} LLaMA-Factory-main/examples/train_full/step1_dpo.yaml, step2_dpo.yaml"
PAPER = "Tool-Light (arXiv 2509.23285)"
PREFIX = "tool_light"
PAIR_RULES = ("economy", "correctness")

HPARAMS = {
    "windows": HParam([10, 20, 30, 40, 50], "tokens", "step score: max over n of the mean entropy of the step's "
                      "first n tokens", f"{SAMPLER}:43 n_tokens_list=[10, 20, 30, 40, 50]", type=list),
    "max_rollout_steps": HParam(3, "steps", "branch points per main chain (highest-scored steps)",
                                f"{SAMPLER}:34, 615-618; entropy_guided_sample.sh --max_rollout_steps 3"),
    "max_rollout_counts": HParam(3, "continuations", "continuations sampled from each branch point",
                                 f"{SAMPLER}:35; entropy_guided_sample.sh --max_rollout_counts 3 (argparse default 4)"),
    "vanilla_rollouts": HParam(10, "rollouts per question", "independent rollouts sampled beside the tree (pairs "
                               "come from both)", f"{CODE} entropy_guided_sample/vanilla_sample.sh --rollout_counts 10"),
    "top_p": HParam(0.8, "probability mass", "nucleus sampling of the sampler", f"{SAMPLER}:640"),
    "top_k": HParam(20, "tokens", "top-k sampling of the sampler (0: off)", f"{SAMPLER}:641"),
    "repetition_penalty": HParam(1.1, "factor", "repetition penalty of the sampler", f"{SAMPLER}:643"),
    "questions_per_stage": HParam(4000, "questions", "training questions sampled per DPO stage (the same questions "
                                  "in both stages)", "README 'Self-Evolved DPO Training' 3: the same 4000 data sources"),
    "pair_rule_stage1": HParam("economy", " | ".join(PAIR_RULES), "pre-aligned stage: rejected = a correct trace "
                               "with more tool calls first (redundant calls), else a wrong one",
                               "paper Sec. 3 (pre-aligned DPO reduces redundant calls) [harness rule: criteria not "
                               "released]"),
    "pair_rule_stage2": HParam("correctness", " | ".join(PAIR_RULES), "self-evolved stage: rejected = a wrong trace "
                               "first (fewest calls: under-calling), else a correct one with more calls",
                               "paper Sec. 3 (self-evolved DPO learns necessary calls) [harness rule]"),
    "format_pairs": HParam(False, "bool", "a question without a correct trace gives a pair (a trace that ends within "
                           "the length budget over a truncated one), so a stage with no correct trace still trains",
                           "harness choice (the code has no such pairs); on for the addition smoke tier only"),
    "beta": HParam(0.1, "DPO beta", "DPO inverse temperature (sigmoid loss)", f"{DPO_YAML}: pref_beta 0.1, "
                   "pref_loss sigmoid"),
    "learning_rate": HParam(7.0e-6, "learning rate", "DPO learning rate (both stages)", f"{DPO_YAML}: 7.0e-6"),
    "pairs_per_step": HParam(8, "pairs per optimizer step", "DPO batch", f"{DPO_YAML}: 1 x grad. acc. 4 x 2 GPUs "
                             "(CUDA_VISIBLE_DEVICES=0,1 in the README) [unverified GPU count]"),
    "stage1_fraction": HParam(0.5, "share of max_steps", "share of the job's optimizer steps (TRL max_steps) that "
                              "stage 1 trains; stage 2 the rest", "harness choice (the code: 3 epochs per stage "
                              "over data sets of unreported size)"),
    "warmup_ratio": HParam(0.1, "share of a stage's steps", "linear warm-up, then cosine decay, per stage",
                           f"{DPO_YAML}: warmup_ratio 0.1, lr_scheduler_type cosine"),
}


def _check(hp: dict) -> None:
    for k in ("pair_rule_stage1", "pair_rule_stage2"):
        if hp[k] not in PAIR_RULES:
            raise ValueError(f"tool_light: {k} must be one of {', '.join(PAIR_RULES)}, got {hp[k]!r}")
    w = hp["windows"]
    if not w or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in w):
        raise ValueError(f"tool_light: windows must be a non-empty list of token counts >= 0, got {w!r}")
    for k in ("max_rollout_steps", "max_rollout_counts", "vanilla_rollouts", "questions_per_stage",
              "pairs_per_step"):
        if hp[k] < (1 if k in ("questions_per_stage", "pairs_per_step") else 0):
            raise ValueError(f"tool_light: {k} must be >= {1 if k in ('questions_per_stage', 'pairs_per_step') else 0}"
                             f", got {hp[k]!r}")
    if not 0 < hp["stage1_fraction"] < 1 or hp["beta"] <= 0:
        raise ValueError("tool_light: stage1_fraction must be in (0, 1) and beta > 0")


# ---------------------------------------------------------------------------------- step scoring (golden) ----
def topk_entropy(logprobs: list[float]) -> float:
    """The code's token entropy: sum of -lp * exp(lp) over the log-probs vLLM returned (top-k, plus the sampled
    token when outside them): ``calculate_sequence_entropy`` lines 65-67."""
    import math

    return sum(-lp * math.exp(lp) for lp in logprobs)


def window_scores(entropies: list[float], windows: list[int]) -> list[tuple[float, int]]:
    """(mean entropy of the first n tokens, n) per window n; a step not longer than n (or n = 0) uses all its tokens;
    an empty step scores 0.0 (``calculate_sequence_entropy`` 46-70)."""
    out = []
    for n in windows:
        sub = entropies if (n == 0 or len(entropies) <= n) else entropies[:n]
        out.append((sum(sub) / len(sub) if sub else 0.0, n))
    return out


def step_score(entropies: list[float], windows: list[int]) -> tuple[float, int]:
    """(score, n): the maximum window mean and its window (first on ties, as Python's ``max``; line 210)."""
    return max(window_scores(entropies, windows), key=lambda x: x[0])


def select_steps(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` highest-scored steps, highest first, earlier steps first on ties (stable sort,
    ``select_rollout_positions``)."""
    return sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:max(k, 0)]


def split_steps(ids: list[int], env: list[int], close_id: int | None) -> list[tuple[int, int]]:
    """Steps of a completion as [start, end) token spans of model-written tokens: a step ends after the tool call's
    close token (or at the end); environment tokens (``env`` 0, the tool's result) lie between steps."""
    steps, start = [], None
    for i, (t, e) in enumerate(zip(ids, env)):
        if not e:  # the environment writes only after a call; an open step ends there all the same
            if start is not None:
                steps.append((start, i))
                start = None
            continue
        if start is None:
            start = i
        if close_id is not None and t == close_id:
            steps.append((start, i + 1))
            start = None
    if start is not None:
        steps.append((start, len(ids)))
    return steps


def branch_points(entropies: list[float], ids: list[int], env: list[int], close_id: int | None, windows: list[int],
                  k: int) -> list[tuple[int, float, int, int]]:
    """(position in the completion, score, window n, step index) of the branch points, highest score first: after
    the first min(n, step length) tokens of each of the k best steps (position as in lines 212-215)."""
    steps = split_steps(ids, env, close_id)
    scored = [step_score(entropies[a:b], windows) for a, b in steps]
    out = []
    for i in select_steps([s for s, _ in scored], k):
        a, b = steps[i]
        s, n = scored[i]
        out.append((a + (b - a if n == 0 else min(n, b - a)), s, n, i))
    return out


# ----------------------------------------------------------------------------------- traces and pairs ----
@dataclass
class Trace:
    """One sampled response to a question: completion ids (environment tokens included), ``env`` 0/1 per token,
    where it came from (``main``, ``branch``, ``vanilla``), its prefix length (branches: tokens copied from the main
    chain), correctness and tool calls."""

    ids: list[int]
    env: list[int]
    source: str
    prefix_len: int = 0
    correct: bool = False
    calls: int = 0
    truncated: bool = False
    extra: dict = field(default_factory=dict)


def build_pair(traces: list[Trace], rule: str, format_pairs: bool = False) -> tuple[Trace, Trace] | None:
    """(chosen, rejected) for one question, or None. Chosen: a correct trace with the fewest tool calls (then the
    shortest, then the first). Rejected, rule ``economy``: the correct trace with the most calls if it has more than
    the chosen one, else the wrong trace with the most calls; rule ``correctness``: the wrong trace with the fewest
    calls, else the correct trace with the most calls (if more than the chosen one). No correct trace: None, or with
    ``format_pairs`` the shortest finished trace over the first truncated one."""
    if rule not in PAIR_RULES:
        raise ValueError(f"tool_light: unknown pair rule {rule!r}; valid: {', '.join(PAIR_RULES)}")
    good = [t for t in traces if t.correct]
    if not good:
        done, cut = [t for t in traces if not t.truncated], [t for t in traces if t.truncated]
        return (min(done, key=lambda t: len(t.ids)), cut[0]) if format_pairs and done and cut else None
    chosen = min(good, key=lambda t: (t.calls, len(t.ids)))
    wasteful = [t for t in good if t.calls > chosen.calls]
    wrong = [t for t in traces if not t.correct]
    by_calls_desc = lambda ts: max(ts, key=lambda t: (t.calls, len(t.ids)))  # noqa: E731
    if rule == "economy":
        rejected = by_calls_desc(wasteful) if wasteful else (by_calls_desc(wrong) if wrong else None)
    else:
        rejected = min(wrong, key=lambda t: (t.calls, len(t.ids))) if wrong else (
            by_calls_desc(wasteful) if wasteful else None)
    return None if rejected is None else (chosen, rejected)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------------ the sampler ----
def sample_tree(prompt_ids: list[list[int]], rctx: RolloutContext, hp: dict, *, env_mask=None,
                close_id: int | None = None) -> list[list[Trace]]:
    """Entropy-guided trees for each prompt: the main chain, then ``max_rollout_counts`` continuations from each of
    the ``max_rollout_steps`` best branch points. ``rctx.generate`` samples (running the task's tool when the caller
    built it so), ``rctx.token_stats`` gives the entropies, ``env_mask(ids) -> list[int]`` marks the tool's tokens
    (None: no tool). Logs ``tool_light/tokens_generated`` (branch tokens only, prefixes excluded)."""
    gen_kw = _gen_kwargs(hp)
    mains = rctx.generate(prompt_ids, **gen_kw)
    mask = (lambda ids: env_mask(ids)) if env_mask is not None else (lambda ids: [1] * len(ids))
    _, ents = rctx.token_stats(prompt_ids, mains)
    trees, requests = [], []
    for q, (p, ids, e) in enumerate(zip(prompt_ids, mains, ents)):
        env = mask(ids)
        trees.append([Trace(list(ids), env, "main")])
        for pos, score, n, step in branch_points(e.tolist(), ids, env, close_id, hp["windows"],
                                                 hp["max_rollout_steps"]):
            requests += [(q, pos, step)] * hp["max_rollout_counts"]
    # branches: one generate call per (prompt length, branch position): equal lengths need no padding, and the
    # completion budget left is the same (prefix + continuation <= max_completion_length)
    by_len: dict[tuple[int, int], list[int]] = {}
    for r, (q, pos, _) in enumerate(requests):
        by_len.setdefault((len(prompt_ids[q]), pos), []).append(r)
    conts: dict[int, list[int]] = {}
    budget = rctx.max_completion_length
    for (_, pos), rs in sorted(by_len.items()):
        kw = dict(gen_kw, max_new_tokens=max(1, budget - pos)) if budget else gen_kw
        outs = rctx.generate([prompt_ids[requests[r][0]] + trees[requests[r][0]][0].ids[:pos] for r in rs], **kw)
        conts.update(zip(rs, outs))
    branch_tokens = 0
    for r, (q, pos, step) in enumerate(requests):
        main = trees[q][0]
        ids = main.ids[:pos] + list(conts[r])
        branch_tokens += len(conts[r])
        trees[q].append(Trace(ids, main.env[:pos] + mask(ids)[pos:], "branch", prefix_len=pos, extra={"step": step}))
    if rctx.log_metric is not None:
        rctx.log_metric(f"{PREFIX}/tokens_generated", float(sum(map(len, mains)) + branch_tokens))
        rctx.log_metric(f"{PREFIX}/branches", float(len(requests)))
    return trees


def _gen_kwargs(hp: dict) -> dict:
    kw = {"top_p": hp["top_p"], "top_k": hp["top_k"], "repetition_penalty": hp["repetition_penalty"]}
    return {k: v for k, v in kw.items() if v is not None}


def tool_light_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """The sampler as a GRPO rollout (tasks without a tool): per group of G, the main chain, the branches (their
    prefix joins the prompt: no loss on it) and vanilla samples filling the group up to G; every member of a branched
    prompt's group is in it, consecutively."""
    _check(hp)
    g = rctx.group_size
    ids = rctx.tokenize(prompts)
    if not rctx.training:
        return {"prompt_ids": ids, "completion_ids": rctx.generate(ids), "logprobs": None}
    firsts = ids[::g]
    trees = sample_tree(firsts, rctx, hp)
    prompt_ids, comps, fill = [], [], []
    for q, tree in enumerate(trees):
        tree = tree[:g]
        fill += [q] * (g - len(tree))
        for t in tree:
            prompt_ids.append(firsts[q] + t.ids[:t.prefix_len])
            comps.append(t.ids[t.prefix_len:])
    extra = rctx.generate([firsts[q] for q in fill], **_gen_kwargs(hp)) if fill else []
    out_p, out_c, k = [], [], 0
    for q, tree in enumerate(trees):  # keep each group consecutive: tree members, then its vanilla fill
        n = min(len(tree), g)
        out_p += prompt_ids[k:k + n]
        out_c += comps[k:k + n]
        k += n
        for j, fq in enumerate(fill):
            if fq == q:
                out_p.append(firsts[q])
                out_c.append(extra[j])
    if rctx.log_metric is not None:
        rctx.log_metric(f"{PREFIX}/flat_tokens_equivalent", float(sum(len(c) for c in out_c)))
    out_c = [c if c else [rctx.eos_token_ids[0] if rctx.eos_token_ids else 0] for c in out_c]
    return {"prompt_ids": out_p, "completion_ids": out_c, "logprobs": None}


register_rollout("tool_light", kind="rollout_func", trainer="dpo", paper=PAPER, source=CODE, hparams=HPARAMS,
                 description="entropy-guided tool-use trees, pairs by correctness and tool economy, 2-stage DPO "
                             "(TRL DPOTrainer; harness/train/dpo.py)")(tool_light_rollout)
