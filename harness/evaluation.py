"""Held-out evaluation during training (the seam the lm-eval layer plugs into for real benchmarks).

Every ``every_steps`` optimizer steps the policy answers the held-out prompts greedily and by sampling at
the training temperature; we record greedy accuracy, sampled accuracy and the mean token entropy of the
sampled completions (nats/token, temperature-scaled like TRL's training entropy).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import TrainerCallback


@torch.no_grad()
def evaluate_policy(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    temperature: float = 1.0, max_new_tokens: int = 4, seed: int = 0,
                    batch_size: int = 512) -> dict:
    was_training = model.training
    model.eval()
    out = {"greedy_acc": 0.0, "sampled_acc": 0.0, "entropy": 0.0, "mean_length": 0.0}
    n_tok = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            p, a = prompts[i:i + batch_size], answers[i:i + batch_size]
            enc = tok(p, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            common = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            g = model.generate(**enc, do_sample=False, **common)
            texts = tok.batch_decode(g[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out["greedy_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
            s = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                               output_logits=True, return_dict_in_generate=True, **common)
            comp = s.sequences[:, enc["input_ids"].shape[1]:]
            texts = tok.batch_decode(comp, skip_special_tokens=True)
            out["sampled_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
            logits = torch.stack(s.logits, dim=1).float() / temperature        # (B, T, V)
            logp = torch.log_softmax(logits, dim=-1)
            ent = -(logp.exp() * logp).sum(-1)                                 # (B, T)
            # valid = generated tokens up to and including the first eos
            is_eos = comp == tok.eos_token_id
            after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
            valid = (~after_eos) & (comp != tok.pad_token_id) | is_eos & ~after_eos
            out["entropy"] += float((ent * valid).sum())
            out["mean_length"] += float(valid.sum())
            n_tok += int(valid.sum())
    n = len(prompts)
    model.train(was_training)
    return {"greedy_acc": out["greedy_acc"] / n, "sampled_acc": out["sampled_acc"] / n,
            "entropy": out["entropy"] / max(n_tok, 1), "mean_length": out["mean_length"] / n}


class PeriodicEval(TrainerCallback):
    """Runs :func:`evaluate_policy` at step 0, every ``every_steps`` steps and at the end."""

    def __init__(self, tok, prompts, answers, *, score, every_steps: int, temperature: float,
                 max_new_tokens: int, seed: int, sink: Callable[[dict], None]):
        self.tok, self.prompts, self.answers, self.score = tok, prompts, answers, score
        self.every, self.temperature, self.max_new_tokens, self.seed = every_steps, temperature, max_new_tokens, seed
        self.sink = sink
        self.done: set[int] = set()

    def _run(self, model, step: int):
        if step in self.done:
            return
        self.done.add(step)
        t0 = time.time()
        r = evaluate_policy(model, self.tok, self.prompts, self.answers, score=self.score,
                            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                            seed=self.seed * 100003 + step)
        self.sink({"step": step, **r, "seconds": round(time.time() - t0, 3)})

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._run(model, 0)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0:
            self._run(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kw):
        self._run(model, state.global_step)
