"""The exercise checkers of the notebooks tell the truth.

Each checker is loaded from its notebook without running the notebook (its imports and its top-level functions and
classes only), then fed typical wrong answers, each of which must get the diagnosis of its own mistake, and one
correct answer written differently from the notebook's solution, which must pass.
"""

import ast
import functools
import importlib
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _definitions(stem: str) -> tuple[str, list[str]]:
    """The module a notebook writes, and the source of its non-exported imports, functions and classes."""
    notebook = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    module, sources = None, []
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code":
            continue
        if source.startswith("#| default_exp"):
            module = source.split()[2]
            continue
        if source.startswith("#| export"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:  # an IPython magic
            continue
        kept = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef
                                                         | ast.ClassDef)]
        sources += [ast.get_source_segment(source, node, padded=True) for node in kept]
    assert module is not None, stem
    return module, sources


def load(stem: str, **globals_) -> dict:
    """A namespace holding the library module of notebook `stem`, then the notebook's own definitions."""
    module, sources = _definitions(stem)
    namespace = dict(vars(importlib.import_module(f"transformer_lib.{module}")))
    namespace.update(__name__=f"notebook_{stem}", **globals_)
    for source in sources:
        exec(compile(source, f"{stem}.ipynb", "exec"), namespace)
    return namespace


def run(checker, *answers, capsys) -> str:
    """What the checker prints for the given answer(s)."""
    torch.manual_seed(0)
    checker(*answers)
    return capsys.readouterr().out


def not_attempted(*args, **kwargs):
    raise NotImplementedError("Write your solution here.")


def crashes(*args, **kwargs):
    raise IndexError("index 7 is out of bounds")


# Chapter 1 -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch1():
    return load("01_tokens_and_embeddings")


def _pad_right(sequences, pad_id):
    if not sequences:
        raise ValueError("empty")
    longest = max(map(len, sequences))
    ids = torch.tensor([s + [pad_id] * (longest - len(s)) for s in sequences], dtype=torch.long).view(
        len(sequences), longest)
    return ids, ids.new_tensor([[True] * len(s) + [False] * (longest - len(s)) for s in sequences],
                               dtype=torch.bool).view(len(sequences), longest)


def _pad_left(sequences, pad_id):
    ids, mask = _pad_right(sequences, pad_id)
    shifts = (~mask).sum(1).tolist()
    return torch.stack([row.roll(n) for row, n in zip(ids, shifts, strict=True)]), mask


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda s, p: (_pad_right(s, p)[0], ~_pad_right(s, p)[1]), "the mask is inverted"),
    (_pad_left, "the padding is on the left"),
    (lambda s, p: (_pad_right(s, p)[0].int(), _pad_right(s, p)[1]), "must have dtype torch.long"),
    (lambda s, p: (_pad_right(s, 0)[0], _pad_right(s, p)[1]), "padding positions must hold pad_id=1"),
    (lambda s, p: _pad_right(s, p) if s else (torch.zeros(0, 0, dtype=torch.long),) * 2,
     "an empty list of sequences must raise a ValueError"),
    (lambda s, p: (_pad_right(s, p)[0].tolist(), _pad_right(s, p)[1]), "return tensors"),
])
def test_check_pad_batch(ch1, capsys, answer, diagnosis):
    assert diagnosis in run(ch1["check_pad_batch"], answer, capsys=capsys)


def test_check_pad_batch_accepts_a_different_correct_answer(ch1, capsys):
    assert run(ch1["check_pad_batch"], _pad_right, capsys=capsys).startswith("Correct")


def _pairs(words, weighted=True):
    counts = Counter()
    for symbols, count in words.items():
        for i in range(len(symbols) - 1):
            counts[symbols[i], symbols[i + 1]] += count if weighted else 1
    return counts


def _best_pair(words):
    counts = _pairs(words)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0] if counts else None


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda w: max(_pairs(w, weighted=False).items(), key=lambda i: (i[1], [-ord(c) for c in i[0][0]]),
                   default=(None,))[0], "every word counts once"),
    (lambda w: max(sorted(_pairs(w)), key=_pairs(w).get) if _pairs(w) else None, None),
    (lambda w: list(_best_pair(w)) if _best_pair(w) else None, "not a list"),
    (lambda w: (lambda c: max(c, key=lambda p: (c[p], p)) if c else None)(_pairs(w)), "break the tie"),
    (lambda w: (lambda c: max(c, key=c.get) if c else None)(
        Counter({pair: count for symbols, count in w.items() for pair in zip(symbols, symbols[1:])})),
     "Count every adjacent position"),
])
def test_check_most_frequent_pair(ch1, capsys, answer, diagnosis):
    out = run(ch1["check_most_frequent_pair"], answer, capsys=capsys)
    if diagnosis is None:  # max over the sorted pairs returns the first of the tied ones: correct
        assert out.startswith("Correct"), out
    else:
        assert diagnosis in out, out


def test_check_most_frequent_pair_accepts_a_different_correct_answer(ch1, capsys):
    assert run(ch1["check_most_frequent_pair"], _best_pair, capsys=capsys).startswith("Correct")


# Chapter 2 -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch2():
    return load("02_attention")


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda n: torch.ones(n, n).tril(), "dtype torch.float32"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(1), "True and False are swapped"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1), "The diagonal must be True"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(), "Use tril, not triu"),
    (lambda n: torch.ones(n, n, dtype=torch.bool), "expected"),
    (lambda n: [[s <= t for s in range(n)] for t in range(n)], "Return a torch.Tensor"),
])
def test_check_causal_mask(ch2, capsys, answer, diagnosis):
    assert diagnosis in run(ch2["check_causal_mask"], answer, capsys=capsys)


def test_check_causal_mask_accepts_a_different_correct_answer(ch2, capsys):
    answer = lambda n: torch.arange(n)[None, :] <= torch.arange(n)[:, None]  # noqa: E731
    assert run(ch2["check_causal_mask"], answer, capsys=capsys).startswith("Correct")


def _attention(q, k, v, mask=None, scale=None, dim=-1, transpose=lambda k: k.transpose(-2, -1),
               invert=False, fix_empty=True, zero_after=False):
    scores = q @ transpose(k) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None and invert:
        mask = ~mask
    if mask is not None and zero_after:
        weights = scores.softmax(dim) * mask
        return weights @ v, weights
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
        if fix_empty:
            scores = scores.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    weights = scores.softmax(dim)
    if mask is not None and fix_empty:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, scale=1.0), "divide q·k by sqrt(d_k)"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, scale=1 / q.shape[-1]), "divided the scores by d_k"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, dim=-2), "the softmax ran over the queries"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, transpose=lambda k: k.T), "key.transpose(-2, -1)"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, invert=True), "The mask is reversed"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, zero_after=True), "instead of masking the scores"),
    (lambda q, k, v, m=None: _attention(q, k, v, m, fix_empty=False), "gave NaN"),
])
@pytest.mark.filterwarnings("ignore:The use of `x.T`")
def test_check_attention(ch2, capsys, answer, diagnosis):
    assert diagnosis in run(ch2["check_attention"], answer, capsys=capsys)


def test_check_attention_accepts_a_different_correct_answer(ch2, capsys):
    def answer(q, k, v, mask=None):
        scores = torch.einsum("...td,...sd->...ts", q, k) / math.sqrt(k.shape[-1])
        if mask is None:
            mask = torch.ones_like(scores, dtype=torch.bool)
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
        weights = torch.where(mask, scores.softmax(-1), 0.0)
        return weights @ v, weights

    assert run(ch2["check_attention"], answer, capsys=capsys).startswith("Correct")
