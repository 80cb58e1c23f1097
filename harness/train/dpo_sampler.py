"""The DPO paths' trace sampler on an HF model (:class:`Sampler`): ``generate`` / ``token_stats`` for Tool-Light's
tree sampling (:func:`harness.methods.tool_light.sample_tree`) and the pair rules' plain sampling
(:mod:`harness.train.dpo_pairs`), running the task's tool inside generation and marking its tokens."""
from __future__ import annotations

from collections import defaultdict

import torch


class Sampler:
    """``generate`` / ``token_stats`` for :func:`harness.methods.tool_light.sample_tree` on an HF model, running the
    task's tool (a fresh environment per call) and marking its tokens (:meth:`env_mask`)."""

    def __init__(self, model, tok, *, environment, temperature: float, max_new_tokens: int, batch_size: int = 256):
        self.model, self.tok, self.environment = model, tok, environment
        self.temperature, self.max_new_tokens, self.batch_size = temperature, max_new_tokens, batch_size
        self.eos, self.pad = tok.eos_token_id, tok.pad_token_id
        vocab = tok.get_vocab()
        self.open_id, self.close_id = vocab.get("<calc>"), vocab.get("</calc>")

    def _env_start(self, ids: list[int]) -> int:
        """Where the environment must start reading: at an unanswered call still open, or just closed, at the end of
        the input (a branch prefix), else after the input."""
        if self.environment is None or self.open_id is None:
            return len(ids)
        last_open = max((i for i, t in enumerate(ids) if t == self.open_id), default=-1)
        closes = [i for i, t in enumerate(ids) if t == self.close_id and i > last_open]
        if last_open >= 0 and (not closes or closes[-1] == len(ids) - 1):
            return last_open
        return len(ids)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], **kw) -> list[list[int]]:
        from transformers import LogitsProcessorList

        unknown = sorted(set(kw) - {"max_new_tokens", "top_p", "top_k", "repetition_penalty"})
        if unknown:
            raise ValueError(f"unknown generation setting(s) {unknown}; valid: max_new_tokens, top_p, top_k, "
                             "repetition_penalty")
        # the sampler's own settings, overridden per call (a branch's remaining budget, the sampler's top-p/top-k)
        gen = {"max_new_tokens": self.max_new_tokens, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, **kw}
        out: list[list[int] | None] = [None] * len(prompts)
        groups = defaultdict(list)  # same length and same environment start: one call, no padding issue
        for i, p in enumerate(prompts):
            groups[(len(p), len(p) - self._env_start(p))].append(i)
        was = self.model.training
        self.model.eval()
        for (n, back), rows in sorted(groups.items()):
            for s in range(0, len(rows), self.batch_size):
                part = rows[s:s + self.batch_size]
                x = torch.tensor([prompts[i] for i in part])
                extra = {}
                if self.environment is not None:
                    extra["logits_processor"] = LogitsProcessorList([self.environment(self.tok, prompt_len=n - back)])
                g = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                                        temperature=self.temperature, **gen, pad_token_id=self.pad,
                                        eos_token_id=self.eos, **extra)
                for i, row in zip(part, g[:, n:].tolist()):
                    cut = row.index(self.eos) + 1 if self.eos in row else len(row)
                    out[i] = [t for t in row[:cut] if t != self.pad or t == self.eos] or [self.eos]
        self.model.train(was)
        return out

    @torch.no_grad()
    def token_stats(self, prompts, completions):
        logps, ents = [], []
        for p, c in zip(prompts, completions):
            x = torch.tensor([p + c])
            logits = self.model(input_ids=x, use_cache=False).logits[0, len(p) - 1:-1].float() / self.temperature
            lp = torch.log_softmax(logits, -1)
            logps.append(lp.gather(-1, torch.tensor(c)[:, None]).squeeze(-1))
            ents.append(-(lp.exp() * lp).sum(-1))
        return logps, ents

    def env_mask(self, ids: list[int]) -> list[int]:
        """0 on the tokens the calculator wrote: the result after each ``</calc>`` (recomputed: it is a pure
        function of the call)."""
        if self.environment is None or self.close_id is None:
            return [1] * len(ids)
        from harness.data.reasoning import calc

        mask = [1] * len(ids)
        for i, t in enumerate(ids):
            if t == self.close_id:
                start = max((j for j in range(i) if ids[j] == self.open_id), default=None)
                res = calc(self.tok.decode(ids[start + 1:i])) if start is not None else "?"
                n = len(self.tok(res, add_special_tokens=False)["input_ids"])
                for j in range(i + 1, min(i + 1 + n, len(ids))):
                    mask[j] = 0
        return mask
