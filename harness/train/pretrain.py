"""Smoke tier: the tiny causal LM, pre-trained from scratch inside the DAG on the job's smoke task (no download).

The base model is pre-trained on targets of which a share is deliberately wrong, so it starts with room for RL and
with sampling entropy to lose (shared notes: smoke-tier-feasibility.md). The task
(:mod:`harness.data.smoke_tasks`) gives the tokenizer, the context size and the pre-training examples; tokens an
environment writes (the calculator's results) are not trained on, as in RL.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.config.tiers import DataSpec, PretrainSpec, parse as parse_setting
from harness.data.smoke_tasks import smoke_task


def build_model(cfg: dict, task: str = "addition"):
    from transformers import LlamaConfig, LlamaForCausalLM

    t = smoke_task(task)
    conf = LlamaConfig(
        vocab_size=len(t.vocab), hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"], max_position_embeddings=t.max_positions, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(conf)


def _encode(tok, prompt: str, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: the prompt and environment-written pieces are not trained on."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    labels = [-100] * len(ids)
    for text, by_env in pieces:
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids += t
        labels += [-100] * len(t) if by_env else t
    return ids + [tok.eos_token_id], labels + [tok.eos_token_id]


def pretrain(out_dir: str | Path, model_cfg: dict, pretrain_cfg: dict, data_cfg: dict, log=print) -> dict:
    """Pre-train the tiny model on the job's noisy smoke task; save model + tokenizer to ``out_dir`` (atomically)."""
    from harness.results import atomic_dir

    pre = parse_setting(PretrainSpec, pretrain_cfg, "pretrain")
    data = parse_setting(DataSpec, data_cfg, "data")
    task = smoke_task(data.task)
    torch.manual_seed(pre.seed)
    rng = random.Random(pre.seed)
    tok = task.build_tokenizer()
    model = build_model(model_cfg, data.task)
    n_params = sum(p.numel() for p in model.parameters())
    train_rows, _ = task.splits(data)
    opt = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=0.01)
    steps, bs = pre.steps, pre.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    t0 = time.time()
    losses = []
    for step in tqdm(range(steps), desc="pretrain", mininterval=5):
        encoded = [_encode(tok, p, pieces) for p, pieces in task.pretrain_batch(rng, train_rows, pre, bs)]
        width = max(len(ids) for ids, _ in encoded)
        x = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in encoded])
        y = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
        att = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in encoded])[:, None]).long()
        loss = model(input_ids=x, attention_mask=att, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    info = {"n_params": n_params, "steps": steps, "final_loss": sum(losses[-20:]) / 20,
            "seconds": round(time.time() - t0, 1), "task": data.task}
    cfg = {**model_cfg, **pretrain_cfg}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (Path(tmp) / "pretrain.json").write_text(json.dumps({**info, "config": cfg}, indent=1))
    log(f"pretrained {n_params} params on {data.task} in {info['seconds']} s, final loss {info['final_loss']:.3f}")
    return info


def restore_pinned(job: dict, out_dir: Path, pinned_root: Path) -> Path | None:
    """Copy the pinned base model of ``job`` (``<pinned_root>/models/<key>/``) to ``out_dir`` when it exists and
    every file matches its ``MANIFEST.json``; None when there is none. A pinned model whose files do not match is an
    error naming the file (never silently used, never silently replaced)."""
    import shutil

    from harness.config import ConfigError
    from harness.results import atomic_dir, file_sha256
    from harness.results.store import base_model_key

    src = Path(pinned_root) / "models" / base_model_key(job)
    manifest = src / "MANIFEST.json"
    if not manifest.exists():
        return None
    files = json.loads(manifest.read_text())["files"]
    for name, sha in sorted(files.items()):
        if not (src / name).is_file() or file_sha256(src / name) != sha:
            raise ConfigError(f"pinned base model file {src / name} is missing or does not match {manifest}; "
                              "restore it with git, or delete the folder to pre-train again")
    with atomic_dir(out_dir) as tmp:
        for name in files:
            shutil.copy2(src / name, Path(tmp) / name)
    return src
