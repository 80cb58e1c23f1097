"""A Hugging Face causal LM as a GAIA agent policy (:class:`harness.envs.gaia_agent.Policy`), and the token view of
an episode a trainer needs (prompt ids, completion ids, environment mask).

Each turn renders the conversation with the tokenizer's chat template (or a plain fallback for a tokenizer without
one), samples at most ``max_new_tokens`` and stops at the end of a tool call (:data:`STOP_STRINGS`: one call per
turn) or at EOS. The turn's seed is derived from (seed, task id, attempt, step), so an episode's text does not
depend on which tasks ran before it. A conversation that no longer fits ``max_context_tokens`` with room for a full
turn raises :class:`~harness.envs.gaia_agent.ContextLimit`: the episode ends, as an agent with a bounded context ends.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from harness.envs.gaia_agent import STOP_STRINGS, ContextLimit, completion_spans


def turn_seed(seed: int, task_id: str, attempt: int, step: int) -> int:
    """A 31-bit seed for one turn, independent of evaluation order."""
    return int(hashlib.sha256(f"{seed}:{task_id}:{attempt}:{step}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def plain_render(messages: list[dict], add_generation_prompt: bool) -> str:
    """The conversation as ``role: content`` blocks (tokenizers without a chat template)."""
    text = "".join(f"{m['role']}: {m['content']}\n\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


class LMPolicy:
    """Sampling (``temperature`` > 0, nucleus ``top_p``) or greedy (``temperature`` = 0) turns of a causal LM."""

    name = "lm"

    def __init__(self, model, tok, *, temperature: float = 0.7, top_p: float = 1.0, max_new_tokens: int = 256,
                 max_context_tokens: int = 2048, seed: int = 0):
        if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1 or max_context_tokens <= max_new_tokens:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1 and max_context_tokens > "
                             f"max_new_tokens; got {temperature}, {top_p}, {max_new_tokens}, {max_context_tokens}")
        self.model, self.tok = model.eval(), tok
        self.temperature, self.top_p, self.max_new_tokens = float(temperature), float(top_p), int(max_new_tokens)
        self.max_context_tokens, self.seed = int(max_context_tokens), int(seed)
        self.chat_template = getattr(tok, "chat_template", None) or None
        self.turns = self.generated_tokens = 0
        self.generate_seconds = 0.0
        self.turn_ids: dict[tuple[str, int, int], list[int]] = {}  # (task, attempt, step) -> the turn's token ids

    @classmethod
    def from_dir(cls, model_dir: str | Path, **kw) -> LMPolicy:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return cls(AutoModelForCausalLM.from_pretrained(model_dir), tok, **kw)

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if self.chat_template is None:
            return plain_render(messages, add_generation_prompt)
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    @torch.no_grad()
    def __call__(self, messages: list[dict], *, task_id: str, attempt: int, step: int) -> str:
        enc = self.tok(self.render(messages, True), return_tensors="pt", add_special_tokens=False)
        n = enc["input_ids"].shape[1]
        if n + self.max_new_tokens > self.max_context_tokens:
            raise ContextLimit(f"{n} prompt tokens + {self.max_new_tokens} > {self.max_context_tokens}")
        sampling = ({"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
                    if self.temperature > 0 else {"do_sample": False})
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(turn_seed(self.seed, task_id, attempt, step))
            out = self.model.generate(**enc, **sampling, max_new_tokens=self.max_new_tokens,
                                      stop_strings=list(STOP_STRINGS), tokenizer=self.tok,
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        self.generate_seconds += time.perf_counter() - t0
        ids = out[0, n:].tolist()
        self.turns += 1
        self.generated_tokens += len(ids)
        self.turn_ids[(task_id, attempt, step)] = ids
        return self.tok.decode(ids, skip_special_tokens=True)

    def stats(self) -> dict:
        return {"turns": self.turns, "generated_tokens": self.generated_tokens,
                "seconds": round(self.generate_seconds, 2)}


def rollout_tokens(tok, render, messages: list[dict], n_prompt: int = 2) -> tuple[list[int], list[int], list[int]]:
    """``(prompt_ids, completion_ids, env_mask)`` of an episode, what TRL's ``rollout_func`` returns: the spans of
    :func:`harness.envs.gaia_agent.completion_spans` tokenised one by one, policy spans with mask 1, environment
    spans (tool replies, reminders, template glue) with mask 0."""
    prompt, spans = completion_spans(render, messages, n_prompt)
    ids, mask = [], []
    for text, policy in spans:
        part = tok(text, add_special_tokens=False)["input_ids"]
        ids += part
        mask += [int(policy)] * len(part)
    return tok(prompt, add_special_tokens=False)["input_ids"], ids, mask
