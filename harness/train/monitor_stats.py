"""The training monitors' measurements (:mod:`harness.train.monitors` runs them): pure functions of logits, hidden
states and token lists, with the definitions the monitors' docstring states (top-k entropy and mass; the steps of a
reasoning chain and the teacher-forced entropy of the gold answer after each prefix of steps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

#: tokens of the LM head per projection chunk (bounds the (positions, vocabulary) float32 block to ~256 MB)
HEAD_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class StepProtocol:
    """How a task's completions split into reasoning steps and how the gold answer is appended (module docstring)."""

    step_starts: frozenset[int]         # token ids that open a step (planning words)
    connector: tuple[int, ...]          # between the reasoning prefix and the gold answer; its first token, when it
                                        # ends the reasoning, is the connector and not a step
    answer_open: int                    # the answer phase starts at this token's last occurrence
    drop: frozenset[int]                # tokens left out of the reasoning (EOS, pad)
    encode: Callable[[str], list[int]]  # gold answer -> token ids
    is_correct: Callable[[str, str], bool]  # (completion text, gold answer) -> correct?


def reasoning_protocol(tok) -> StepProtocol:
    """The reasoning smoke tasks' protocol: planning words open steps; `` so \\boxed{`` + the answer's digits."""
    from harness.data import reasoning as R

    tid = tok.convert_tokens_to_ids
    return StepProtocol(step_starts=frozenset(tid(w) for w in R.PLANNING_WORDS),
                        connector=(tid(" so "), tid("\\boxed{")), answer_open=tid("\\boxed{"),
                        drop=frozenset(x for x in (tok.eos_token_id, tok.pad_token_id) if x is not None),
                        encode=lambda a: list(tok(a, add_special_tokens=False)["input_ids"]), is_correct=R.is_correct)


# ------------------------------------------------------------------------------------------- top-k indicators --
def topk_stats(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``logits`` (..., V): (top-k entropy of the renormalised k largest probabilities, top-k mass,
    full entropy), in nats, float32."""
    logp = logits.float().log_softmax(-1)
    top = logp.topk(k, dim=-1).values
    lse = top.logsumexp(-1)
    logq = top - lse.unsqueeze(-1)
    return -(logq.exp() * logq).sum(-1), lse.exp(), torch.special.entr(logp.exp()).sum(-1)


def _logit_scale(cfg) -> float:
    """The multiplier TRL's fused head applies before soft-capping (``trl.trainer.utils.add_fused_lm_head``)."""
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(cfg, name, None) is not None:
            return float(getattr(cfg, name))
    scaling = getattr(cfg, "logits_scaling", None)
    if scaling is not None:
        return float(scaling) if cfg.model_type == "hyperclovax" else 1.0 / float(scaling)
    return 1.0


def head_logits(model, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, V) float32 logits of the LM head on final hidden states (N, d), transformed as TRL's fused head."""
    cfg = model.config.get_text_config()
    head = model.get_output_embeddings()
    w, b = (x.full_tensor() if hasattr(x, "full_tensor") else x for x in (head.weight, head.bias))  # FSDP2: gathered
    z = F.linear(hidden.to(w.dtype), w, b).float() * _logit_scale(cfg)
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        z = cap * torch.tanh(z / cap)
    return z / temperature


@torch.no_grad()
def topk_from_hidden(model, hidden: torch.Tensor, mask: torch.Tensor, k: int, temperature: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H_k, P_k, full entropy) at the positions where ``mask`` (B, T) > 0 of hidden states (B, T, d), in chunks."""
    h = hidden[mask > 0]
    v = model.get_output_embeddings().weight.shape[0]
    step = max(1, HEAD_CHUNK_ELEMENTS // v)
    parts = [topk_stats(head_logits(model, h[s:s + step], temperature), k) for s in range(0, h.size(0), step)]
    return tuple(torch.cat([p[i] for p in parts]) if parts else h.new_zeros(0) for i in range(3))


# ------------------------------------------------------------------------------------------ reasoning utility --
def steps_of(completion: Sequence[int], p: StepProtocol) -> tuple[list[int], list[int]]:
    """(reasoning tokens R, ends): ``R[:ends[k]]`` is Z_<=k for k = 0..n (``ends[0] = 0``, ``ends[n] = len(R)``)."""
    ids = [int(t) for t in completion]
    last = max((i for i, t in enumerate(ids) if t == p.answer_open), default=len(ids))
    r = [t for t in ids[:last] if t not in p.drop]
    if r and r[-1] == p.connector[0]:
        r = r[:-1]
    if not r:
        return r, [0]
    return r, [0, *(i for i, t in enumerate(r) if i > 0 and t in p.step_starts), len(r)]


@torch.no_grad()
def answer_scores(model, seqs: list[list[int]], n_answer: list[int], *, temperature: float, pad_id: int,
                  batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per teacher-forced sequence whose last ``n_answer[i]`` tokens are the gold answer: (mean entropy, mean negative
    log-likelihood of the gold tokens) over the positions that predict them, nats, at ``temperature``. Sequences are
    left-padded in length order with position ids from the attention mask, so a value does not depend on the batch."""
    dev = next(model.parameters()).device
    ent, nll = torch.zeros(len(seqs)), torch.zeros(len(seqs))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        length, m = max(len(seqs[i]) for i in idx), max(n_answer[i] for i in idx)
        ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            ids[j, length - len(seqs[i]):] = torch.tensor(seqs[i], dtype=torch.long)
            att[j, length - len(seqs[i]):] = 1
        pos = (att.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev),
                       logits_to_keep=m + 1, use_cache=False).logits[:, :-1].float() / temperature
        logp = logits.log_softmax(-1)                                   # (b, m): position j predicts ids[:, -m + j]
        g = torch.tensor([n_answer[i] for i in idx])
        keep = (torch.arange(m).unsqueeze(0) >= (m - g).unsqueeze(1)).float()
        e = torch.special.entr(logp.exp()).sum(-1).cpu()
        n = -logp.gather(-1, ids[:, -m:].to(dev).unsqueeze(-1)).squeeze(-1).cpu()
        ent[idx], nll[idx] = (e * keep).sum(1) / g, (n * keep).sum(1) / g
    return ent, nll


def pack_chain(prompt: list[int], r: list[int], ends: list[int], suffix: list[int]
               ) -> tuple[list[int], list[int], torch.Tensor]:
    """One row holding every teacher-forced sequence of a chain: ``prompt + R`` then one copy of ``suffix`` (connector
    + gold answer) per prefix k. Returns (tokens, position ids, allowed (L, L) bool): prompt and R attend causally;
    copy k attends to ``prompt + R[:ends[k]]`` and causally to itself, at the positions it would have after that
    prefix. So copy k sees exactly ``prompt + Z_<=k + suffix``, one forward for all k."""
    base, q = len(prompt) + len(r), len(suffix)
    tokens = prompt + r + suffix * len(ends)
    pos = list(range(base)) + [len(prompt) + e + t for e in ends for t in range(q)]
    allowed = torch.zeros(len(tokens), len(tokens), dtype=torch.bool)
    allowed[:base, :base] = torch.tril(torch.ones(base, base, dtype=torch.bool))
    for k, e in enumerate(ends):
        a = base + k * q
        allowed[a:a + q, :len(prompt) + e] = True
        allowed[a:a + q, a:a + q] = torch.tril(torch.ones(q, q, dtype=torch.bool))
    return tokens, pos, allowed


@torch.no_grad()
def chain_scores(model, chains: list[tuple[list[int], list[int], list[int], list[int], int]], *, temperature: float,
                 pad_id: int, batch_size: int = 16) -> list[tuple[list[float], list[float]]]:
    """Per chain ``(prompt, R, ends, suffix, g)`` (the last ``g`` tokens of ``suffix`` are the gold answer, at least one
    connector token before them): ([H_0..H_n], [NLL_0..NLL_n]), the mean entropy and negative log-likelihood (nats, at
    ``temperature``) at the positions predicting the gold tokens after each prefix, from one packed row per chain
    (:func:`pack_chain`; rows left-padded, a padding position attends to itself only)."""
    dev = next(model.parameters()).device
    packed = [pack_chain(pr, r, ends, sfx) for pr, r, ends, sfx, _ in chains]
    out: list = [None] * len(chains)
    order = sorted(range(len(chains)), key=lambda i: len(packed[i][0]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        length = max(len(packed[i][0]) for i in idx)
        keep = max(len(chains[i][3]) * len(chains[i][2]) for i in idx)  # the suffix copies end every row
        ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
        pos = torch.zeros_like(ids)
        att = torch.eye(length, dtype=torch.bool).repeat(len(idx), 1, 1, 1)
        for j, i in enumerate(idx):
            tokens, p, allowed = packed[i]
            o = length - len(tokens)
            ids[j, o:], pos[j, o:], att[j, 0, o:, o:] = torch.tensor(tokens), torch.tensor(p), allowed
        logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev),
                       logits_to_keep=keep, use_cache=False).logits.float() / temperature
        logp = logits.log_softmax(-1).cpu()
        ent = torch.special.entr(logp.exp()).sum(-1)                      # (b, keep): kept position x = length-keep+x
        for j, i in enumerate(idx):
            _, _, ends, sfx, g = chains[i]
            q, h, nll = len(sfx), [], []
            for k in range(len(ends)):
                start = keep - (len(ends) - k) * q                         # copy k's first token, in kept positions
                at = list(range(start + q - g - 1, start + q - 1))         # positions predicting the g gold tokens
                h.append(float(ent[j, at].mean()))
                nll.append(float(-logp[j, at, sfx[q - g:]].mean()))
            out[i] = (h, nll)
    return out


def ols_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (needs at least two values)."""
    n = len(values)
    mk = (n - 1) / 2
    mv = sum(values) / n
    return sum((k - mk) * (v - mv) for k, v in enumerate(values)) / sum((k - mk) ** 2 for k in range(n))


def utility_metrics(records: list[dict]) -> dict[str, float]:
    """The logged reasoning-utility metrics (without the ``monitor/utility/`` prefix) of scored completions, each
    ``{"H": [H_0..H_n], "nll": [...], "correct": bool, "level": int | None}``; a metric of an empty group is left
    out. Slopes and "falling" count completions with at least one step."""
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    out: dict[str, float] = {"scored": float(len(records))}
    if not records:
        return out
    for key, f in (("h_start", lambda r: r["H"][0]), ("h_end", lambda r: r["H"][-1]),
                   ("nll_start", lambda r: r["nll"][0]), ("nll_end", lambda r: r["nll"][-1]),
                   ("reduction", lambda r: r["H"][0] - r["H"][-1]), ("steps", lambda r: len(r["H"]) - 1)):
        out[key] = mean([f(r) for r in records])
    out["correct_frac"] = mean([float(r["correct"]) for r in records])
    groups = {"": records, "_correct": [r for r in records if r["correct"]],
              "_incorrect": [r for r in records if not r["correct"]]}
    for suffix, rs in groups.items():
        stepped = [ols_slope(r["H"]) for r in rs if len(r["H"]) > 1]
        if stepped:
            out[f"slope{suffix}"] = mean(stepped)
            out[f"falling_frac{suffix}"] = mean([float(s < 0) for s in stepped])
        if rs and suffix:
            out[f"steps{suffix}"] = mean([len(r["H"]) - 1 for r in rs])
            out[f"reduction{suffix}"] = mean([r["H"][0] - r["H"][-1] for r in rs])
    if "falling_frac_correct" in out and "falling_frac_incorrect" in out:
        out["falling_frac_gap"] = out["falling_frac_correct"] - out["falling_frac_incorrect"]
    if "steps_correct" in out and "steps_incorrect" in out:
        out["steps_gap"] = out["steps_incorrect"] - out["steps_correct"]
    gaps = []
    for lv in sorted({r["level"] for r in records if r.get("level") is not None}):
        ok = [len(r["H"]) - 1 for r in records if r.get("level") == lv and r["correct"]]
        bad = [len(r["H"]) - 1 for r in records if r.get("level") == lv and not r["correct"]]
        if ok and bad:
            gaps.append(mean(bad) - mean(ok))
    if gaps:
        out["steps_gap_within_level"] = mean(gaps)
    return out

