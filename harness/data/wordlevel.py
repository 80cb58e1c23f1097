"""The smoke tasks' tokenizer: a fixed word-level vocabulary where every listed word (planning words, constraint
keywords, attribute names) is one token and everything else is split into single characters."""
from __future__ import annotations

import re


def word_level_tokenizer(vocab: list[str], words: list[str]):
    """A left-padding ``PreTrainedTokenizerFast`` over ``vocab`` (ids in list order; ``<pad> <bos> <eos> <unk>``
    among them); ``words`` are matched longest first, any other character is a token of its own."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    token_re = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + "|."
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(token_re), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")
