"""Smoke tier: a synthetic verifiable task, its tokenizer and its data (the tiny model is pre-trained on it by
:mod:`harness.train.pretrain`, inside the DAG).

Task: two-digit addition, prompt ``ab+cd=``, answer the sum then ``<eos>``; reward 1 for an exact
match. The base model is pre-trained on targets of which a share is deliberately wrong, so it starts
with room for RL and with sampling entropy to lose (shared notes: smoke-tier-feasibility.md).
No download of any kind: the tokenizer and the model are built here.
"""
from __future__ import annotations

import random

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list("0123456789+= ")
VOCAB = SPECIALS + CHARS  # 17 tokens


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")
    return fast


def all_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(10, 100) for b in range(10, 100)]


def split_pairs(n_val: int, seed: int) -> tuple[list, list]:
    """Fixed held-out split: ``n_val`` pairs for evaluation, the rest for (pre-)training."""
    pairs = all_pairs()
    random.Random(seed).shuffle(pairs)
    return pairs[n_val:], pairs[:n_val]


def prompt_of(a: int, b: int) -> str:
    return f"{a}+{b}="


def rows(pairs) -> list[dict]:
    return [{"prompt": prompt_of(a, b), "answer": str(a + b)} for a, b in pairs]


def corrupt(target: int, rng: random.Random) -> int:
    """A plausible wrong answer for pre-training: off by one digit in the units or the tens place."""
    delta = rng.choice([-10, -1, 1, 10, rng.randint(-9, 9) or 2])
    return max(0, target + delta)


def exact_match_reward(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when the completion (special tokens stripped) is exactly the sum."""
    return [1.0 if c.strip() == str(a) else 0.0 for c, a in zip(completions, answer)]
