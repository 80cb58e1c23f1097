"""Smoke tier: the tiny causal LM, pre-trained from scratch inside the DAG on the smoke task (no download).

The base model is pre-trained on targets of which a share is deliberately wrong, so it starts with room for RL and
with sampling entropy to lose (shared notes: smoke-tier-feasibility.md).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.data.smoke import VOCAB, build_tokenizer, prompt_of, split_pairs


def build_model(cfg: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"], max_position_embeddings=32, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(conf)


def _corrupt(target: int, rng: random.Random) -> int:
    # plausible wrong answers: off by one digit in the units or the tens place
    delta = rng.choice([-10, -1, 1, 10, rng.randint(-9, 9) or 2])
    return max(0, target + delta)


def pretrain(out_dir: str | Path, cfg: dict, split_seed: int, n_val: int, log=print) -> dict:
    """Pre-train the tiny model on noisy addition; save model + tokenizer to ``out_dir`` (atomically)."""
    from harness.results import atomic_dir

    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    tok = build_tokenizer()
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    train_pairs, _ = split_pairs(n_val, split_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    steps, bs = cfg["steps"], cfg["batch_size"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    t0 = time.time()
    losses = []
    for step in tqdm(range(steps), desc="pretrain", mininterval=5):
        batch = [train_pairs[rng.randrange(len(train_pairs))] for _ in range(bs)]
        ids, labels = [], []
        for a, b in batch:
            tgt = a + b if rng.random() >= cfg["noise"] else _corrupt(a + b, rng)
            p = tok(prompt_of(a, b), add_special_tokens=False)["input_ids"]
            t = tok(str(tgt), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids.append(p + t)
            labels.append([-100] * len(p) + t)
        width = max(map(len, ids))
        x = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
        y = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        att = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in ids])[:, None]).long()
        loss = model(input_ids=x, attention_mask=att, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    info = {"n_params": n_params, "steps": steps, "final_loss": sum(losses[-20:]) / 20,
            "seconds": round(time.time() - t0, 1)}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (Path(tmp) / "pretrain.json").write_text(json.dumps({**info, "config": cfg}, indent=1))
    log(f"pretrained {n_params} params in {info['seconds']} s, final loss {info['final_loss']:.3f}")
    return info
