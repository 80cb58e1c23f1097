"""Sampling one model turn for every live episode (:mod:`harness.evaluate.episodes`): one HF ``generate`` call over
the left-padded contexts, stopped at EOS, the template's single-token stops (extra EOS ids) or its multi-token stop
strings (a text stopping criterion), with each token's sampling log-probability."""
from __future__ import annotations

from typing import Callable

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList


class _StopText(StoppingCriteria):
    """Marks a row finished once the text of its newest tokens contains one of ``stops`` (multi-token stops)."""

    def __init__(self, tok, start: int, stops: tuple[str, ...]):
        self.tok, self.start, self.stops = tok, start, stops
        self.span = max(len(x) for x in stops) + 2

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tails = self.tok.batch_decode(input_ids[:, max(self.start, input_ids.size(1) - self.span):])
        return torch.tensor([any(x in t for x in self.stops) for t in tails], dtype=torch.bool,
                            device=input_ids.device)


def turn_length(ids: list[int], ends: set[int], tok, text_stops: tuple[str, ...]) -> int:
    """A turn's tokens: through the first EOS/stop token or the token completing a multi-token stop
    (``text_stops``), else all (a row that never finished has no padding)."""
    span = max((len(x) for x in text_stops), default=0) + 1
    for i, t in enumerate(ids):
        if t in ends:
            return i + 1
        if text_stops:
            tail = tok.decode(ids[max(0, i - span):i + 1])
            if any(x in tail for x in text_stops):
                return i + 1
    return len(ids)


def stopped(ids: list[int], ends: set[int], tok, text_stops: tuple[str, ...]) -> bool:
    """Whether a turn (as :func:`turn_length` cut it) ended on EOS, a stop token or a multi-token stop, rather than
    being cut by the token cap."""
    if not ids:
        return False
    span = max((len(x) for x in text_stops), default=0) + 1
    return ids[-1] in ends or bool(text_stops) and any(x in tok.decode(ids[-span:]) for x in text_stops)


SampledTurn = tuple[list[int], list[float], list]
"""One row of :func:`sample_turn`: the turn's token ids, their sampling log-probabilities, the recorded entries."""


def sample_turn(model, tok, contexts: list[list[int]], gen: GenerationConfig, text_stops: tuple[str, ...] = (), *,
                window: int = 0, record: Callable[[torch.Tensor, torch.Tensor], list] | None = None
                ) -> list[SampledTurn]:
    """One ``generate`` call over the live episodes' contexts (left-padded): per row, the turn's token ids, their
    sampling log-probabilities (log-softmax of the processed scores: temperature and filters applied) and, for each
    of the turn's first ``window`` tokens, the row's entry of ``record(log-probs (rows, V), sampled ids)`` (both on
    the CPU; the branching player's scheduler records, :mod:`harness.evaluate.branching`; empty without ``record``).
    Log-probabilities are taken a step at a time, so only the recorded steps' full rows leave the device."""
    device = getattr(model, "device", None) or torch.device("cpu")
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, c in enumerate(contexts):
        ids[i, width - len(c):] = torch.tensor(c, dtype=torch.long)
        att[i, width - len(c):] = 1
    criteria = StoppingCriteriaList([_StopText(tok, width, text_stops)] if text_stops else [])
    out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gen,
                         stopping_criteria=criteria)
    new = out.sequences[:, width:]
    logps, rec = [], []
    for t, s in enumerate(out.scores):
        lsm = s.float().log_softmax(-1)
        logps.append(lsm.gather(-1, new[:, t:t + 1]))
        if record is not None and t < window:
            rec.append(record(lsm.cpu(), new[:, t].cpu()))
    ends, rows = set(gen.eos_token_id), []
    for i, (row, lp) in enumerate(zip(new.tolist(), torch.cat(logps, 1).cpu().tolist())):
        n = turn_length(row, ends, tok, text_stops)
        rows.append((row[:n], lp[:n], [r[i] for r in rec[:n]]))
    return rows


def generation_config(tok, temperature: float, max_new_tokens: int, kwargs: dict | None,
                      stop_ids: tuple[int, ...]) -> GenerationConfig:
    """The run's sampling settings for one turn: ``max_new_tokens``, EOS plus the single-token stops
    (``stop_ids``), scores returned (the turn's log-probabilities)."""
    kw = dict(kwargs or {})
    eos = kw.pop("eos_token_id", tok.eos_token_id)
    eos = [e for e in dict.fromkeys([*(eos if isinstance(eos, (list, tuple)) else [eos]), *stop_ids])
           if e is not None]
    kw.update(do_sample=temperature > 0, **({"temperature": temperature} if temperature > 0 else {}))
    return GenerationConfig(**kw, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=eos,
                            return_dict_in_generate=True, output_scores=True, disable_compile=True)
