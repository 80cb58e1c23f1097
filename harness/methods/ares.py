"""ARES / AEPO (arXiv 2510.08457), text part only: window-entropy (HWE) tokens, difficulty bins from online group
accuracy, a hierarchical high-entropy-token-count reward. The multimodal part and the AdaCS cold start are out of scope.

Two methods, both a ``rollout_func`` (sampling plus per-token entropies, as the authors' vLLM rollout computes them)
and a ``reward`` (the shaping term, added to the task's 0/1 accuracy: R = R_acc + shaping):

``ares``: the authors' release shawn0728/ARES @ 146620e3 (EasyR1 fork), as the code does it:

1. Rollout (``vllm_rollout_spmd.py``): G independent samples per prompt (no branching in the code). Per response:
   ``p95`` = 95th percentile of the window means ``mean(H_{i+1..i+w})`` (w = 4; positions without a full window get
   the running mean; ``get_window_average_entropy_percentile_threshold_list``), and N_HE = the number of trigger
   tokens (a word list) whose next w tokens have mean entropy >= tau (``compute_reasoning_token_window_entropy``).
2. tau (``ray_trainer.py`` fit): EMA 0.99 of the batch median of ``p95``; a rollout counts with the previous tau.
3. Difficulty (``update_difficulty_and_skip_gid_set``): group accuracy >= 2/3 easy, >= 1/3 medium, else hard;
   target_d = round(mean over the bin's prompts of their mean N_HE); alpha_d += 0.05 (mean - target) (hard: target -
   mean), clipped to [0, 2], initial 0.5 (dual ascent; mean - round(mean) is in [-0.5, 0.5]: alpha barely moves).
4. Reward (``examples/reward_function/aepo.py`` ``compute_score``): Huber penalties and sigmoid bonuses on
   delta = N_HE - target with margins per bin; correct easy/medium responses are penalised for extra (easy) or
   deviating (medium) HWE tokens, correct hard ones get a bonus; wrong responses get a bonus for HWE tokens above the
   margin (all bins). No ``lambda`` in the code: alpha caps the term.

``ares_paper``: the paper / reference card (hand-derived; no code for it): HWE branching and the closed-form lambda.

1. Rollout: ``roots_per_group`` roots per prompt; Hw_t = mean(H_t .. H_{t+w-1}); tau = batch mean of the roots'
   ``p95`` (the code's first threshold, ray_trainer.py:483-484); fork points Hw_t > tau, t >= 1, highest first, one per window
   (no two forks within w tokens), at most ``max_forks_per_root``; the group's G - roots places go to the highest
   fork points of its roots (places left: fresh samples). A branch re-samples from ``prompt + root[:t]``; its
   completion is ``root[:t] + continuation`` with ``env_mask`` 0 on the prefix (no loss, no length); all G members
   are consecutive in the group, so TRL's advantages are over every branch.
2. N_HE = #{t : Hw_t > tau} over the whole response. Bins as in the code; E_d, Var_d over the bin's responses;
   target_d = min + c_d (max - min) of the batch's N_HE, c = 0.35 / 0.5 / 0.65 (the code computes this in
   ``_validate``, ray_trainer.py:506-512, and never uses it). Delta = N_HE - E_d; g_easy = max(0, Delta),
   g_medium = |Delta|, g_hard = max(0, -Delta).
3. lambda_d = clip(s_d (E_d - target_d) / (Var_d + eps), 0, lambda_max), s = +1 easy/medium, -1 hard (the code's
   dual-ascent signs). Closed form: tilting the bin's N_HE distribution by exp(-lambda N) moves its mean by about
   -lambda Var (first cumulant), so this lambda puts the tilted mean at the target in one step.
4. R = R_acc - 1[acc = 0] lambda_d g_d(Delta): only wrong responses are shaped.

Not here (shared code, see the card): the per-bucket dynamic KL (dp_actor.py: beta_d starts at 1 and is updated every
100 updates only), the DAPO group filter of the authors' config, the prefix KV cache (HF generate re-encodes it).
"""
from __future__ import annotations

import copy
import re

import numpy as np

from harness.methods.context import RewardContext, RolloutContext
from harness.methods.registry import HParam, MethodState, register_reward, register_rollout

REPO = "shawn0728/ARES"
COMMIT = "146620e3d7166281ffb14634c580c6dcd3a5943d"
CODE = f"{REPO}@{COMMIT[:8]}"
ROLLOUT, TRAINER = f"{CODE} verl/workers/rollout/vllm_rollout_spmd.py", f"{CODE} verl/trainer/ray_trainer.py"
REWARD = f"{CODE} examples/reward_function/aepo.py"
PAPER = "ARES (arXiv 2510.08457)"
PREFIX = "ares"
BINS = ("easy", "medium", "hard")
TRIGGERS = ("planning", "all")
ANSWER_MODES = ("boxed", "plain")
PLANNING = ("then", "check", "so")  # harness.data.reasoning.PLANNING_WORDS, normalised as the code does
# the code's reward tables (aepo.py:77-80) and the unused validation targets (ray_trainer.py:509)
MARGIN_FRAC = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
KAPPA = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
TEMP = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
CAP_SCALE = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
TARGET_COEF = {"easy": 0.35, "medium": 0.5, "hard": 0.65}

COMMON = {
    "window_size": HParam(4, "tokens", "w of the window entropy", f"{CODE} experiments/AEPO/config.yaml worker.rollout"
                          ".window_size: 4"),
    "percentile": HParam(95.0, "percentile", "per-response percentile of the window means", f"{ROLLOUT}:351-355"),
    "answer_mode": HParam("boxed", " | ".join(ANSWER_MODES), "how correctness (acc) is read: last \\boxed{} or the "
                          "whole completion", f"{TRAINER}:761-773 compute_batch_accuracy (extract_boxed_content)"),
}
HPARAMS = {
    **COMMON,
    "trigger_words": HParam("planning", " | ".join(TRIGGERS), "tokens whose next window is tested: the task's planning"
                            " words (the code: its 174-word list) or every token", f"{ROLLOUT}:102-156, 209-213; "
                            "data/crucial_token_final_version.json"),
    "threshold_ema": HParam(0.99, "EMA decay per step", "tau <- d tau + (1 - d) median(p95)", f"{TRAINER}:894-901"),
    "alpha_init": HParam(0.5, "reward units", "initial cap alpha_d of the entropy term", f"{TRAINER}:202-206"),
    "alpha_lr": HParam(0.05, "reward units per HWE token", "dual-ascent step of alpha_d", f"{TRAINER}:199, 812-824"),
    "alpha_max": HParam(2.0, "reward units", "alpha_d clipped to [0, alpha_max]", f"{TRAINER}:200-201"),
}
PAPER_HPARAMS = {
    **COMMON,
    "roots_per_group": HParam(4, "samples per prompt", "independent roots; the other G - roots places are branches "
                              "[harness choice: half of G]", "paper Sec. AEPO (HWE as exploration trigger) [secondary]"),
    "max_forks_per_root": HParam(2, "branches", "cap on forks per root (one per window)", "reference card "
                                 "(one per window, capped) [secondary; value: harness choice]"),
    "lambda_eps": HParam(1e-6, "HWE tokens^2", "eps in lambda_d = (E - target) / (Var + eps)", "reference card "
                         "[secondary]"),
    "lambda_max": HParam(2.0, "reward units per HWE token", "lambda_d clipped to [0, lambda_max] (the code's alpha cap)",
                         f"{TRAINER}:201 alpha_entropy_max"),
}

#: per trainer (its seeded generator object): tau, alpha_d, target_d carried between steps, as the code's trainer does
_STATE: dict[int, tuple] = {}


def _state_dict(gen) -> dict:
    prev = _STATE.get(id(gen))
    return copy.deepcopy(prev[1]) if prev is not None and prev[0] is gen else {}


def _load_state(gen, state: dict) -> None:
    _STATE[id(gen)] = (gen, copy.deepcopy(state))


#: tau, alpha_d and target_d in checkpoints (harness.train.resume)
STATE = MethodState(_state_dict, _load_state, keys=("tau", "alpha", "target"))


def _state(gen, alpha_init: float = 0.5) -> dict:
    prev = _STATE.get(id(gen))
    if prev is None or prev[0] is not gen:
        prev = (gen, {"tau": None, "alpha": {d: float(alpha_init) for d in BINS}, "target": {}})
        _STATE[id(gen)] = prev
    return prev[1]


def _check(hp: dict) -> None:
    if hp["answer_mode"] not in ANSWER_MODES:
        raise ValueError(f"ares: answer_mode must be one of {', '.join(ANSWER_MODES)}, got {hp['answer_mode']!r}")
    if "trigger_words" in hp and hp["trigger_words"] not in TRIGGERS:
        raise ValueError(f"ares: trigger_words must be one of {', '.join(TRIGGERS)}, got {hp['trigger_words']!r}")
    if hp["window_size"] < 1 or not 0 <= hp["percentile"] <= 100:
        raise ValueError("ares: window_size must be >= 1 and percentile in [0, 100]")


# ------------------------------------------------------------------------------------------------ window entropy
def window_p95(ent, w: int = 4, pct: float = 95.0) -> float:
    """Percentile of the following-window means (the code's threshold helper, one response)."""
    h = [float(x) for x in ent]
    means: list[float] = []
    for i in range(len(h)):
        if len(h) - i - 1 >= w:
            means.append(float(np.mean(h[i + 1:i + 1 + w])))
        else:
            means.append(float(np.mean(means)) if means else h[i])
    return float(np.percentile(means, pct)) if means else 0.0


def count_triggered(ent, trigger, w: int, tau: float) -> tuple[int, int, float]:
    """(valid, invalid, soft cost): trigger tokens whose next w tokens have mean entropy >= tau / < tau."""
    h = [float(x) for x in ent]
    valid = invalid = 0
    soft = 0.0
    for i, is_trigger in enumerate(trigger):
        if is_trigger and len(h) - i - 1 >= w:
            m = float(np.mean(h[i + 1:i + 1 + w]))
            soft += max(0.0, m - tau)
            valid, invalid = (valid + 1, invalid) if m >= tau else (valid, invalid + 1)
    return valid, invalid, soft


def hw(ent, w: int) -> list[float]:
    """Hw_t = mean(H_t .. H_{t+w-1}) for every t with a full window (the paper's window entropy)."""
    h = [float(x) for x in ent]
    return [float(np.mean(h[t:t + w])) for t in range(len(h) - w + 1)]


def fork_points(ent, w: int, tau: float, cap: int) -> list[tuple[float, int]]:
    """(Hw_t, t) with Hw_t > tau and t >= 1, highest first, no two within w tokens (one per window), at most cap."""
    picks: list[tuple[float, int]] = []
    for v, t in sorted(((v, t) for t, v in enumerate(hw(ent, w)) if t >= 1 and v > tau), key=lambda x: (-x[0], x[1])):
        if len(picks) >= max(cap, 0):
            break
        if all(abs(t - u) >= w for _, u in picks):
            picks.append((v, t))
    return picks


def normalize_token(s: str) -> str:
    return re.sub(r"^[▁Ġ]+", "", s).strip().lower()


# ------------------------------------------------------------------------------------------------ difficulty, reward
def difficulty(acc_rate: float) -> str:
    return "easy" if acc_rate >= 2 / 3 else "medium" if acc_rate >= 1 / 3 else "hard"


def update_bins(st: dict, accs, nhe, g: int, *, lr: float, alpha_max: float) -> list[str]:
    """The code's per-batch update: bins per group, target_d = round(mean of group means), alpha_d dual ascent."""
    diffs, bucket = [], {}
    for s in range(0, len(accs), g):
        d = difficulty(float(np.mean(accs[s:s + g])))
        diffs += [d] * g
        bucket.setdefault(d, []).append(float(np.mean(nhe[s:s + g])))
    for d, vals in bucket.items():
        st["target"][d] = round(1.0 * float(np.mean(vals)))
    for d, vals in bucket.items():
        mean, target = float(np.mean(vals)), float(st["target"][d])
        delta = mean - target if d in ("easy", "medium") else target - mean
        st["alpha"][d] = float(np.clip(st["alpha"][d] + lr * delta, 0.0, alpha_max))
    return diffs


def _huber(x, kappa):
    x = max(float(x), 0.0)
    return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa


def _sig(x, temp):
    return 1.0 / (1.0 + np.exp(-x / max(float(temp), 1e-6)))


def code_entropy_score(acc: float, diff: str, n: float, target: float, alpha: float) -> float:
    """The entropy term of the code's ``compute_score`` (R = acc + this)."""
    delta = float(n) - float(target)
    margin = max(1.0, MARGIN_FRAC[diff] * max(float(target), 1.0))
    kappa, temp, cap = KAPPA[diff], TEMP[diff], alpha * CAP_SCALE[diff]
    if acc != 1.0:
        return float(_sig(max(delta - margin, 0.0), temp) * cap * {"easy": 0.6, "medium": 0.8, "hard": 1.0}[diff])
    if diff == "easy":
        return -min(cap, _huber(max(delta - margin, 0.0), kappa) / (margin + kappa) * cap)
    if diff == "medium":
        return -min(cap, _huber(max(abs(delta) - margin, 0.0), kappa) / (margin + kappa) * cap)
    if delta >= -margin:
        return float(_sig(delta + margin, temp) * cap)
    return -min(cap, 0.5 * _huber(-delta - margin, kappa) / (margin + kappa) * cap)


def paper_shaping(accs, nhe, diffs, *, eps: float, lam_max: float) -> tuple[list[float], dict]:
    """R - R_acc = -1[acc = 0] lambda_d g_d(N_HE - E_d), lambda_d in closed form (module docstring)."""
    n = np.asarray(nhe, dtype=float)
    lo, hi = (float(n.min()), float(n.max())) if n.size else (0.0, 0.0)
    lam, mean = {}, {}
    for d in BINS:
        sel = n[[x == d for x in diffs]]
        if not sel.size:
            continue
        mean[d], target = float(sel.mean()), lo + TARGET_COEF[d] * (hi - lo)
        sign = -1.0 if d == "hard" else 1.0
        lam[d] = float(np.clip(sign * (mean[d] - target) / (float(sel.var()) + eps), 0.0, lam_max))
    out = []
    for a, k, d in zip(accs, n, diffs):
        delta = k - mean[d]
        g = max(0.0, delta) if d == "easy" else abs(delta) if d == "medium" else max(0.0, -delta)
        out.append(0.0 if a else -lam[d] * g)
    return out, lam


# ------------------------------------------------------------------------------------------------ hooks
def _log(ctx, name: str, value: float) -> None:
    if ctx.log_metric is not None:
        ctx.log_metric(f"{PREFIX}/{name}", float(value))


def _trigger_flags(rctx: RolloutContext, ids: list[int], mode: str) -> list[bool]:
    if mode == "all":
        return [True] * len(ids)
    tok = rctx.tokenizer
    return [normalize_token(tok.decode([t])) in PLANNING for t in ids]


def ares_rollout(prompts: list, rctx: RolloutContext, **hp) -> dict:
    """``ares``: G flat samples with the code's per-response statistics; ``ares_paper``: HWE branching."""
    _check(hp)
    ids = rctx.tokenize(prompts)
    if not rctx.training:
        return {"prompt_ids": ids, "completion_ids": rctx.generate(ids), "logprobs": None}
    w, pct, g = hp["window_size"], hp["percentile"], rctx.group_size
    if "roots_per_group" in hp:
        return _branch_rollout(ids, rctx, w, pct, g, hp)
    st = _state(rctx.generator, hp["alpha_init"])
    comp = rctx.generate(ids)
    _, ents = rctx.token_stats(ids, comp)
    p95 = [window_p95(e, w, pct) for e in ents]
    tau = st["tau"] if st["tau"] is not None else float(np.mean(p95))  # the code: mean p95 of its validation run
    counts = [count_triggered(e, _trigger_flags(rctx, c, hp["trigger_words"]), w, tau) for e, c in zip(ents, comp)]
    n_tok = sum(map(len, comp))
    for name, v in {"tokens_generated": n_tok, "tokens_flat_equivalent": n_tok, "tokens_saved_frac": 0.0, "threshold": tau,
                    "nhe_mean": np.mean([c[0] for c in counts]), "invalid_mean": np.mean([c[1] for c in counts])}.items():
        _log(rctx, name, v)
    return {"prompt_ids": ids, "completion_ids": comp, "logprobs": None, "ares_nhe": [c[0] for c in counts],
            "ares_p95": p95}


def _branch_rollout(ids, rctx: RolloutContext, w, pct, g, hp) -> dict:
    r = min(max(int(hp["roots_per_group"]), 1), g)
    groups = range(0, len(ids), g)
    root_in = [ids[s] for s in groups for _ in range(r)]
    roots = rctx.generate(root_in)
    _, root_ents = rctx.token_stats(root_in, roots)
    tau = float(np.mean([window_p95(e, w, pct) for e in root_ents]))
    jobs, rows = [], []  # rows: (source, root index, fork position); source "root" | "branch" | "fill"
    for k, s in enumerate(groups):
        cands = [(v, t, k * r + j) for j in range(r) for v, t in
                 fork_points(root_ents[k * r + j], w, tau, hp["max_forks_per_root"])]
        cands.sort(key=lambda x: (-x[0], x[2], x[1]))
        picks = cands[:g - r]
        rows += [("root", k * r + j, 0) for j in range(r)] + [("branch", i, t) for _, t, i in picks]
        rows += [("fill", -1, 0)] * (g - r - len(picks))
        jobs += [(s, i, t) for _, t, i in picks] + [(s, -1, 0)] * (g - r - len(picks))
    limit = rctx.max_completion_length
    new_in = [ids[s] + (roots[i][:t] if i >= 0 else []) for s, i, t in jobs]
    by_len: dict[int, list[int]] = {}  # one generate call per remaining budget (branches must fit the length cap)
    for j, (_, i, t) in enumerate(jobs):
        by_len.setdefault(t, []).append(j)
    cont: list[list[int]] = [[] for _ in jobs]
    for t, js in by_len.items():
        kw = {"max_new_tokens": limit - t} if limit and t else {}
        for j, c in zip(js, rctx.generate([new_in[j] for j in js], **kw)):
            cont[j] = list(c)
    comp, mask, it = [], [], iter(cont)
    for src, i, t in rows:
        if src == "root":
            comp.append(list(roots[i]))
            mask.append([1] * len(roots[i]))
        else:
            c = next(it)
            prefix = list(roots[i][:t]) if src == "branch" else []
            comp.append(prefix + c)
            mask.append([0] * len(prefix) + [1] * len(c))
    new_rows = [j for j, (src, _, _) in enumerate(rows) if src != "root"]
    _, new_ents = rctx.token_stats([ids[j] for j in new_rows], [comp[j] for j in new_rows]) if new_rows else ([], [])
    ents, it_r, it_n = [], iter(root_ents), iter(new_ents)
    for src, _, _ in rows:
        ents.append(next(it_r) if src == "root" else next(it_n))
    nhe = [sum(v > tau for v in hw(e, w)) for e in ents]
    n_gen = sum(map(len, roots)) + sum(map(len, cont))
    n_branch = sum(src == "branch" for src, _, _ in rows)
    n_flat = sum(map(len, comp))  # flat sampling of the same G responses
    for name, v in {"tokens_generated": n_gen, "tokens_flat_equivalent": n_flat, "tokens_saved_frac": 1 - n_gen / n_flat,
                    "threshold": tau,
                    "branches": n_branch, "fill_rows": sum(src == "fill" for src, _, _ in rows),
                    "forks_per_root": n_branch / max(len(roots), 1), "nhe_mean": np.mean(nhe)}.items():
        _log(rctx, name, v)
    return {"prompt_ids": ids, "completion_ids": comp, "logprobs": None, "env_mask": mask, "ares_nhe": nhe,
            "ares_role": [src for src, _, _ in rows], "ares_fork_at": [t if src == "branch" else -1 for src, _, t in rows]}


def _accuracy(rctx: RewardContext, mode: str) -> list[float]:
    from harness.verify import answer_correct

    if rctx.answers is None:
        raise ValueError("ares: the reward needs the dataset's answer column (acc = 0/1 correctness)")
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in rctx.completions]
    return [1.0 if answer_correct(a, t, mode=mode) else 0.0 for a, t in zip(rctx.answers, texts)]


def ares_reward(rctx: RewardContext, **hp) -> list[float]:
    """The shaping term (the task's reward gives R_acc); 0 in evaluation."""
    _check(hp)
    if not rctx.training or "ares_nhe" not in rctx.columns:
        return [0.0] * len(rctx)
    accs, nhe, g = _accuracy(rctx, hp["answer_mode"]), [float(x) for x in rctx.columns["ares_nhe"]], rctx.group_size
    if "roots_per_group" in hp:
        diffs = [difficulty(float(np.mean(accs[s:s + g]))) for s in range(0, len(accs), g) for _ in range(g)]
        out, lam = paper_shaping(accs, nhe, diffs, eps=hp["lambda_eps"], lam_max=hp["lambda_max"])
        for d, v in lam.items():
            _log(rctx, f"lambda_{d}", v)
    else:
        st = _state(rctx.generator, hp["alpha_init"])
        med = float(np.median(rctx.columns["ares_p95"]))
        d_ = hp["threshold_ema"]
        st["tau"] = med if st["tau"] is None else d_ * st["tau"] + (1 - d_) * med
        diffs = update_bins(st, accs, nhe, g, lr=hp["alpha_lr"], alpha_max=hp["alpha_max"])
        out = [code_entropy_score(a, d, k, st["target"][d], st["alpha"][d]) for a, d, k in zip(accs, diffs, nhe)]
        for d in BINS:
            _log(rctx, f"alpha_{d}", st["alpha"][d])
    for d in BINS:
        _log(rctx, f"frac_{d}", np.mean([x == d for x in diffs]))
    for name, sel in (("shaping_correct", [a == 1.0 for a in accs]), ("shaping_wrong", [a != 1.0 for a in accs])):
        if any(sel):
            _log(rctx, name, np.mean([o for o, s in zip(out, sel) if s]))
    _log(rctx, "shaping_mean", np.mean(out))
    return out


for _name, _hp, _desc in (
        ("ares", HPARAMS, "ARES/AEPO as released: flat samples, trigger-word HWE count, Huber/sigmoid entropy reward"),
        ("ares_paper", PAPER_HPARAMS, "ARES/AEPO per the paper: HWE branching, closed-form lambda, wrong-only shaping")):
    register_rollout(_name, kind="rollout_func", paper=PAPER, source=CODE, hparams=_hp, description=_desc)(ares_rollout)
    register_reward(_name, paper=PAPER, source=CODE, hparams=_hp, description=_desc, state=STATE)(ares_reward)
