"""transformer_lib: the Transformer, built step by step in the notebooks of the course.

Every module but this one is generated from a notebook (see the header of each file). This file is written by
hand and lists the public API, chapter by chapter, in the order the course builds it.
"""

# Chapter 1: from text to vectors
from transformer_lib.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    Vocabulary,
    WordTokenizer,
    pad_batch,
    split_words,
)

__all__ = [
    # Chapter 1: from text to vectors
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "SPECIAL_TOKENS",
    "Vocabulary",
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "BPETokenizer",
    "split_words",
    "pad_batch",
]
