"""Tokenizers for a world model, trained with the `tokenizers` library.

``word`` (the default): one token per word or punctuation mark. A synthetic world has a small,
closed vocabulary, so a word-level tokenizer gives exact, short sequences: every entity name is
one token, an answer's tokens are the same wherever it appears, and ``" " + answer`` after a
prompt tokenizes exactly as inside a corpus line. Spaces are kept as a ``▁`` word prefix (as in
SentencePiece's Metaspace), so decoding is lossless. ``bpe``: byte-level BPE (GPT-2 style),
for comparison and for worlds with open vocabularies.

Both put ``<bos>`` in front of every encoded text and use ``<eos>`` to end a training line, so
generation stops at the end of an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = [PAD, UNK, BOS, EOS]


def _word_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def train_tokenizer(
    texts: Iterable[str], kind: Literal["word", "bpe"] = "word", vocab_size: int = 4096
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts`; the result has pad/unk/bos/eos and saves to a HF folder."""
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = _word_pre_tokenizer()
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        raise ValueError(kind)
    # Sorted, de-duplicated input keeps the vocabulary ids independent of corpus order.
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=1_000_000,
    )
