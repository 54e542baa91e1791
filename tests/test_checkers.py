"""The exercise checkers of the notebooks tell the truth, and a learner can import every one of them.

The checkers are imported the way a learner imports them, from `transformer_lib.exercises` (tools/export.py
writes them there from each notebook's cells tagged `exercise-checker`), then fed typical wrong answers, each
of which must get the diagnosis of its own mistake, and one correct answer written differently from the
notebook's solution, which must pass.
"""

import ast
import functools
import importlib
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import transformer_lib.exercises
from transformer_lib.tokenizer import pad_batch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _module(stem: str) -> str:
    metadata = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["metadata"]
    return metadata["transformer_lib"]["module"]


def load(stem: str) -> dict:
    """The checkers of notebook `stem`, as `from transformer_lib.exercises import ...` gives them."""
    chapter = importlib.import_module(f"transformer_lib.exercises.{_module(stem)}")
    return {name: getattr(transformer_lib.exercises, name) for name in chapter.__all__}


def _notebook_checkers(path: Path) -> list[str]:
    """The `check_*` functions that a notebook's cells define (outside the chapter's own module)."""
    notebook = json.loads(path.read_text())
    names = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code" or "export" in cell["metadata"].get("tags", []):
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:  # an IPython magic
            continue
        names += [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("check_")]
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_checker_is_importable_from_one_place(path):
    names = _notebook_checkers(path)
    chapter = importlib.import_module(f"transformer_lib.exercises.{_module(path.stem)}") if names else None
    for name in names:
        assert name in transformer_lib.exercises.__all__, f"{name} ({path.name}) is not importable"
        assert getattr(transformer_lib.exercises, name) is getattr(chapter, name)


def test_a_checker_that_needs_the_notebooks_model_says_so():
    with pytest.raises(ValueError, match="needs the trained model"):
        transformer_lib.exercises.check_cached_greedy(lambda *args: None)


def run(checker, *answers, capsys) -> str:
    """What the checker prints for the given answer(s)."""
    torch.manual_seed(0)
    checker(*answers)
    return capsys.readouterr().out


def not_attempted(*args, **kwargs):
    raise NotImplementedError("Write your solution here.")


def crashes(*args, **kwargs):
    raise IndexError("index 7 is out of bounds")


# Chapter 1 ----------------------------------------------------------------------------------------

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
    (lambda w: (lambda c: max(c, key=c.get) if c else None)(Counter(
        {pair: count for symbols, count in w.items() for pair in zip(symbols, symbols[1:], strict=False)})),
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


# Chapter 2 ----------------------------------------------------------------------------------------

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
    (lambda q, k, v, m=None: _attention(q, k, v, m)[0], "Return a pair (output, weights)"),
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


# Chapter 3 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch3():
    return load("03_multi_head_attention")


def _split(x, num_heads):
    B, T, d_model = x.shape
    return x.view(B, T, num_heads, d_model // num_heads).permute(0, 2, 1, 3)


def _merge(x):
    B, H, T, d_head = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, H * d_head)


@pytest.mark.parametrize("split, merge, diagnosis", [
    (not_attempted, _merge, "Not attempted yet"),
    (crashes, _merge, "my_split_heads raised IndexError"),
    (lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), _merge, "reshapes (B, T, d_model) straight"),
    (lambda x, h: x.reshape(x.shape[0], x.shape[1], h, -1), _merge, "should be (B, num_heads, T, d_head)"),
    (_split, lambda x: x.reshape(x.shape[0], x.shape[2], -1), "reshapes (B, H, T, d_head) straight"),
    (_split, lambda x: x.sum(dim=1), "should be (B, T, d_model)"),  # heads added, not concatenated
    (_split, lambda x: x.transpose(1, 2), "should be (B, T, d_model)"),
])
def test_check_split_merge(ch3, capsys, split, merge, diagnosis):
    assert diagnosis in run(ch3["check_split_merge"], split, merge, capsys=capsys)


def test_check_split_merge_accepts_a_different_correct_answer(ch3, capsys):
    assert run(ch3["check_split_merge"], _split, _merge, capsys=capsys).startswith("Correct")


def _tril(real):
    T = real.shape[1]
    return torch.ones(T, T, dtype=torch.bool).tril()


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda r: ~(_tril(r) & r[:, None, None, :]), "The polarity is reversed"),
    (lambda r: _tril(r) & r[:, None, :, None], "masked the padded *queries* (rows) instead of the padded"),
    (lambda r: _tril(r) & r[:, None, None, :] & r[:, None, :, None], "you hid the padded *queries*"),
    (lambda r: _tril(r).T & r[:, None, None, :], "Use tril, not triu"),
    (lambda r: _tril(r).tril(-1) & r[:, None, None, :], "The diagonal must be True"),
    (lambda r: _tril(r).expand(len(r), 1, -1, -1), "Only the causal rule"),
    (lambda r: r[:, None, None, :].expand(-1, 1, r.shape[1], -1), "Only the padding rule"),
    (lambda r: (_tril(r) & r[:, None, :]), "should have shape (B, 1, T, T)"),
    (lambda r: (_tril(r) & r[:, None, None, :]).int(), "must be a bool tensor"),
])
def test_check_decoder_mask(ch3, capsys, answer, diagnosis):
    assert diagnosis in run(ch3["check_decoder_mask"], answer, capsys=capsys)


def test_check_decoder_mask_accepts_a_different_correct_answer(ch3, capsys):
    def answer(real):
        positions = torch.arange(real.shape[1])
        allowed = positions[None, :] <= positions[:, None]  # (T, T)
        return torch.logical_and(allowed[None, None], real.unsqueeze(1).unsqueeze(1))

    assert run(ch3["check_decoder_mask"], answer, capsys=capsys).startswith("Correct")


# Chapter 4 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch4():
    return load("04_positional_encoding")


def _sinusoids(max_len, d_model, exponent=lambda two_i, d: two_i / d, swap=False, first=0):
    position = torch.arange(first, first + max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,)
    angle = position * 10000.0 ** -exponent(two_i, d_model)  # (max_len, d_model / 2)
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = (angle.cos(), angle.sin()) if swap else (angle.sin(), angle.cos())
    return table.float()


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda n, d: _sinusoids(n, d, swap=True), "sin and cos are swapped"),
    (lambda n, d: _sinusoids(n, d, exponent=lambda two_i, d: two_i / 2 / d), "i / d_model instead of 2i"),
    (lambda n, d: _sinusoids(n, d, exponent=lambda two_i, d: two_i // d), "every pair turns at the same"),
    (lambda n, d: _sinusoids(n, d, exponent=lambda two_i, d: -two_i / d), "your angles grow with i"),
    (lambda n, d: _sinusoids(n, d, first=1), "your positions start at 1"),
    (lambda n, d: _sinusoids(n, d).T, "Expected shape (max_len, d_model)"),
    (lambda n, d: _sinusoids(50, 16), "do you use d_model and max_len everywhere"),
])
def test_check_sinusoidal_encoding(ch4, capsys, answer, diagnosis):
    assert diagnosis in run(ch4["check_sinusoidal_encoding"], answer, capsys=capsys)


def test_check_sinusoidal_encoding_accepts_a_different_correct_answer(ch4, capsys):
    assert run(ch4["check_sinusoidal_encoding"], _sinusoids, capsys=capsys).startswith("Correct")


def _rope(x, sign=1.0, first=0, halves=False, exponent=2.0):
    T, d = x.shape
    theta = 10000.0 ** (-exponent * torch.arange(d // 2, dtype=torch.float64) / d)  # (d / 2,)
    angle = sign * torch.arange(first, first + T, dtype=torch.float64)[:, None] * theta  # (T, d / 2)
    if halves:
        pairs = torch.complex(x[:, : d // 2].double(), x[:, d // 2:].double())
        turned = pairs * torch.exp(1j * angle)
        return torch.cat([turned.real, turned.imag], dim=-1).to(x.dtype)
    pairs = torch.complex(x[:, 0::2].double(), x[:, 1::2].double())  # (T, d / 2)
    turned = pairs * torch.exp(1j * angle)
    return torch.stack([turned.real, turned.imag], dim=-1).reshape(T, d).to(x.dtype)


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda x: torch.view_as_complex(x.reshape(x.shape[0], 2, -1).transpose(1, 2)), "stride 1"),
    (lambda x: _rope(x, sign=-1.0), "you rotate the wrong way"),
    (lambda x: _rope(x, halves=True), "you paired feature i with feature i + d_head / 2"),
    (lambda x: _rope(x, first=1), "your positions start at 1"),
    (lambda x: _rope(x, exponent=1.0), "with 2i (the even feature of pair i), not i"),
    (lambda x: torch.view_as_complex(x.reshape(x.shape[0], -1, 2).contiguous()), "Return a real tensor"),
    (lambda x: _rope(x) if x.shape == (12, 8) else x, "Right for x of shape (12, 8) but not"),
])
def test_check_rotary(ch4, capsys, answer, diagnosis):
    assert diagnosis in run(ch4["check_rotary"], answer, capsys=capsys)


def test_check_rotary_accepts_a_different_correct_answer(ch4, capsys):
    assert run(ch4["check_rotary"], _rope, capsys=capsys).startswith("Correct")


# Chapter 5 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch5():
    return load("05_feed_forward_and_layer_norm")


def _norm(x, gain, bias, eps, dims=-1, correction=0, eps_inside=True):
    centred = x - x.mean(dim=dims, keepdim=True)
    if eps_inside:
        return gain * centred / (x.var(dim=dims, correction=correction, keepdim=True) + eps).sqrt() + bias
    return gain * centred / (x.std(dim=dims, correction=correction, keepdim=True) + eps) + bias


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (lambda x, g, b, e: (x - x.mean(-1)) / x.std(-1), "keepdim=True"),
    (lambda x, g, b, e: _norm(x, g, b, e, correction=1), "You divide by d - 1"),
    (lambda x, g, b, e: _norm(x, g, b, e, eps_inside=False), "eps is outside the square root"),
    (lambda x, g, b, e: _norm(x, g, b, e, correction=1, eps_inside=False), "Two mistakes"),
    (lambda x, g, b, e: _norm(x, g, b, e, dims=0), "You normalize over the batch (dim 0)"),
    (lambda x, g, b, e: _norm(x, g, b, e, dims=(0, 1)), "that is batch normalization"),
    (lambda x, g, b, e: _norm(x, g, b, e, dims=(0, 1, 2)), "over the whole tensor"),
    (lambda x, g, b, e: _norm(x, torch.ones_like(g), torch.zeros_like(b), e), "gain and bias are missing"),
    (lambda x, g, b, e: _norm(x, b, g, e), "gain and bias are swapped"),
    (lambda x, g, b, e: _norm(x, g, b, 0.0), "Your output contains NaN"),
    (lambda x, g, b, e: _norm(x, g, b, e)[..., :-1], "Expected a tensor of shape"),
])
def test_check_layer_norm(ch5, capsys, answer, diagnosis):
    assert diagnosis in run(ch5["check_layer_norm"], answer, capsys=capsys)


def test_check_layer_norm_accepts_a_different_correct_answer(ch5, capsys):
    def answer(x, gain, bias, eps=1e-5):
        mean = x.sum(-1, keepdim=True) / x.shape[-1]
        var = ((x - mean) ** 2).sum(-1, keepdim=True) / x.shape[-1]
        return torch.addcmul(bias, gain, (x - mean) * torch.rsqrt(var + eps))

    assert run(ch5["check_layer_norm"], answer, capsys=capsys).startswith("Correct")


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda d, f: 2 * d * f, "no biases"),
    (lambda d, f: 2 * d * f + f, "linear2's bias (d_model numbers) is missing"),
    (lambda d, f: 2 * d * f + d, "linear1's bias (d_ff numbers) is missing"),
    (lambda d, f: d * f + d + f, "you counted one"),
    (lambda d, f: 2 * d * f + 2 * f, "Count linear1 (weight and bias) and linear2"),
])
def test_check_ffn_num_parameters(ch5, capsys, answer, diagnosis):
    assert diagnosis in run(ch5["check_ffn_num_parameters"], answer, capsys=capsys)


def test_check_ffn_num_parameters_accepts_a_different_correct_answer(ch5, capsys):
    answer = lambda d_model, d_ff: (d_model + 1) * d_ff + (d_ff + 1) * d_model  # noqa: E731
    assert run(ch5["check_ffn_num_parameters"], answer, capsys=capsys).startswith("Correct")


# Chapter 6 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch6():
    return load("06_encoder")


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), "NaN in the output"),
    (lambda h, m: h.mean(dim=1), "plain mean over all S positions"),
    (lambda h, m: (h * m[..., None]).sum(1) / h.shape[1], "divided by S"),
    (lambda h, m: (h * ~m[..., None]).sum(1) / (~m).sum(1, keepdim=True).clamp(min=1),
     "the padding positions"),
    (lambda h, m: (h * m[..., None]).mean(dim=0), "Expected a tensor of shape (B, d_model)"),
])
def test_check_masked_mean(ch6, capsys, answer, diagnosis):
    assert diagnosis in run(ch6["check_masked_mean"], answer, capsys=capsys)


def test_check_masked_mean_accepts_a_different_correct_answer(ch6, capsys):
    def answer(h, mask):
        rows = [h[b, mask[b]].mean(0) if mask[b].any() else h.new_zeros(h.shape[-1]) for b in range(len(h))]
        return torch.stack(rows)

    assert run(ch6["check_masked_mean"], answer, capsys=capsys).startswith("Correct")


def _encoder_layer(layer, x, mask, placement=None, mask_of=lambda m: m, residual=1.0, swap=False,
                   ff_first=False):
    norm_first = layer.norm_first if placement is None else placement
    norms = [layer.attn_residual.norm, layer.ff_residual.norm]
    if swap:
        norms.reverse()
    sublayers = [lambda h: layer.self_attn(h, h, h, key_padding_mask=mask_of(mask))[0], layer.feed_forward]
    pairs = list(zip(norms, sublayers, strict=True))
    for norm, sublayer in (pairs[::-1] if ff_first else pairs):
        x = residual * x + sublayer(norm(x)) if norm_first else norm(residual * x + sublayer(x))
    return x


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda layer, x, m: layer.self_attn(x, x, x, key_padding_mask=m), "keep the output, `[0]`"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, mask_of=lambda m: ~m), "the padding mask is inverted"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, placement=not layer.norm_first), "other placement"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, placement=False), "pre-LN (norm_first=True): your"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, mask_of=lambda m: None), "ignores the padding mask"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, residual=0.0), "no residual connections"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, swap=True), "the two norms are swapped"),
    (lambda layer, x, m: _encoder_layer(layer, x, m, ff_first=True), "runs before the attention block"),
    (lambda layer, x, m: 2 * _encoder_layer(layer, x, m), "none of the usual mistakes"),
])
def test_check_encoder_layer(ch6, capsys, answer, diagnosis):
    assert diagnosis in run(ch6["check_encoder_layer"], answer, capsys=capsys)


def test_check_encoder_layer_accepts_a_different_correct_answer(ch6, capsys):
    assert run(ch6["check_encoder_layer"], _encoder_layer, capsys=capsys).startswith("Correct")


# Chapter 7 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch7():
    return load("07_decoder")


def _decoder_layer(layer, x, memory, mask, placement=None, mask_of=lambda m: m, kv_from_memory=True,
                   residual=1.0, cross_first=False):
    norm_first = layer.norm_first if placement is None else placement
    norms = [layer.self_attn_residual.norm, layer.cross_attn_residual.norm, layer.ff_residual.norm]
    source = memory if kv_from_memory else None
    attentions = [
        (norms[0], lambda h: layer.self_attn(h, h, h, attn_mask=mask_of(mask))[0]),
        (norms[1], lambda h: layer.cross_attn(h, h if source is None else source, h if source is None
                                              else source)[0]),
    ]
    blocks = (attentions[::-1] if cross_first else attentions) + [(norms[2], layer.feed_forward)]
    for norm, sublayer in blocks:
        x = residual * x + sublayer(norm(x)) if norm_first else norm(residual * x + sublayer(x))
    return x


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, mask_of=lambda c: ~c), "causal mask is inverted"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, mask_of=lambda c: c.T), "mask is transposed"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, mask_of=lambda c: None), "ignored self_attn_mask"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, placement=not layer.norm_first),
     "The other norm placement"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, kv_from_memory=False), "must come from memory"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, residual=0.0), "residual connection"),
    (lambda layer, x, m, k: _decoder_layer(layer, x, m, k, cross_first=True), "wrong order"),
    (lambda layer, x, m, mask: layer.cross_attn(x, m, m), "keep only the output"),
    (lambda layer, x, m, mask: layer.cross_attn(m, x, x)[0], "The length is the source length S"),
    (lambda layer, x, m, mask: 2 * _decoder_layer(layer, x, m, mask), "none of the usual mistakes"),
])
def test_check_decoder_layer_forward(ch7, capsys, answer, diagnosis):
    assert diagnosis in run(ch7["check_decoder_layer_forward"], answer, capsys=capsys)


def test_check_decoder_layer_forward_accepts_a_different_correct_answer(ch7, capsys):
    assert run(ch7["check_decoder_layer_forward"], _decoder_layer, capsys=capsys).startswith("Correct")


def _decoder_params(d, f, cross, attention_bias=True, ffn_bias=True, norms=True, extra_attention=0):
    attention = 4 * d * d + (4 * d if attention_bias else 0)
    ffn = 2 * d * f + (d + f if ffn_bias else 0)
    num_attentions = (2 if cross else 1) + extra_attention
    return num_attentions * attention + ffn + ((num_attentions + 1) * 2 * d if norms else 0)


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda d, f, c: _decoder_params(d, f, True), "One attention sub-layer too many"),
    (lambda d, f, c: _decoder_params(d, f, False), "One attention sub-layer (and its layer norm) is missing"),
    (lambda d, f, c: _decoder_params(d, f, c, attention_bias=False), "Attention biases"),
    (lambda d, f, c: _decoder_params(d, f, c, ffn_bias=False), "Feed-forward biases"),
    (lambda d, f, c: _decoder_params(d, f, c, norms=False), "Layer norms"),
    (lambda d, f, c: _decoder_params(d, f, c) + 7, "Count each module"),
])
def test_check_decoder_param_count(ch7, capsys, answer, diagnosis):
    assert diagnosis in run(ch7["check_decoder_param_count"], answer, capsys=capsys)


def test_check_decoder_param_count_accepts_a_different_correct_answer(ch7, capsys):
    answer = lambda d, f, c: (3 if c else 2) * 2 * d + (2 if c else 1) * 4 * (d + 1) * d + 2 * d * f + d + f  # noqa: E731
    assert run(ch7["check_decoder_param_count"], answer, capsys=capsys).startswith("Correct")


# Chapter 8 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch8():
    return load("08_transformer")


def _transformer_params(c, biases=True, norms=True, final_norms=True, tied_once=True, output=True, cross=True,
                        third_norm=True, output_bias=False):
    d, f = c.d_model, c.d_ff
    attention = 4 * d * (d + (1 if biases else 0))
    ffn = 2 * d * f + (d + f if biases else 0)
    norm = 2 * d if norms else 0
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = (2 if cross else 1) * attention + ffn + (3 if cross and third_norm else 2) * norm
    if c.tie_embeddings:
        tables = c.src_vocab_size * d * (1 if tied_once else 3)
    else:
        tables = (c.src_vocab_size + c.tgt_vocab_size * (2 if output else 1)) * d
    return (tables + c.num_encoder_layers * encoder_layer + c.num_decoder_layers * decoder_layer
            + (2 * norm if final_norms else 0) + (c.tgt_vocab_size if output_bias else 0))


@pytest.mark.parametrize("mistake, diagnosis", [
    (dict(biases=False), "You left out the biases"),
    (dict(norms=False), "You left out the layer norms"),
    (dict(final_norms=False), "you forgot the final layer norm"),
    (dict(tied_once=False), "count vocab_size * d_model once"),
    (dict(output=False), "the output layer is a separate"),
    (dict(cross=False), "A decoder layer is not an encoder layer"),
    (dict(third_norm=False), "three layer norms"),
    (dict(output_bias=True), "The output layer has no bias here"),
])
def test_check_num_parameters(ch8, capsys, mistake, diagnosis):
    assert diagnosis in run(ch8["check_num_parameters"], lambda c: _transformer_params(c, **mistake),
                            capsys=capsys)


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda c: _transformer_params(c) + 1, "Compare part by part"),
])
def test_check_num_parameters_other_answers(ch8, capsys, answer, diagnosis):
    assert diagnosis in run(ch8["check_num_parameters"], answer, capsys=capsys)


def test_check_num_parameters_accepts_a_different_correct_answer(ch8, capsys):
    assert run(ch8["check_num_parameters"], _transformer_params, capsys=capsys).startswith("Correct")


# Chapter 9 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch9():
    return load("09_training")


def _smoothed(logits, target, eps, pad_id, uniform_over=None, skip_pad_class=False, mean_over_all=False,
              count_all=False, summed_uniform=False):
    n = logits.shape[-1]
    log_p = logits.log_softmax(-1)
    one_hot = F.one_hot(target, n).double()
    if summed_uniform:
        per_token = -((1 - eps) * one_hot * log_p).sum(-1) - eps * log_p.sum(-1)
    elif skip_pad_class:
        others = (1 - one_hot) * (torch.arange(n) != pad_id)
        per_token = -(((1 - eps) * one_hot + eps / (n - 2) * others) * log_p).sum(-1)
    elif uniform_over == "wrong":
        per_token = -(((1 - eps) * one_hot + eps / (n - 1) * (1 - one_hot)) * log_p).sum(-1)
    else:
        per_token = -(((1 - eps) * one_hot + eps / n) * log_p).sum(-1)
    real = target != pad_id
    if mean_over_all:
        return per_token.mean()
    return per_token[real].sum() / (real.numel() if count_all else real.sum())


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p, uniform_over="wrong"), "over the V - 1 wrong tokens"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p, skip_pad_class=True), "as the Annotated Transformer does"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p, mean_over_all=True), "padding included"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p, count_all=True), "divide by the number of real"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, 0.0 * p), "smoothing=0.2, pad_id=5"),
    (lambda lg, t, e, p: _smoothed(lg, t, 0.0, p), "the loss without smoothing"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p, summed_uniform=True), "not the sum"),
    (lambda lg, t, e, p: _smoothed(lg, t, e, p).reshape(1), None),
    (lambda lg, t, e, p: (lg.log_softmax(-1) * 0).sum(-1), "Expected one number"),
])
def test_check_smoothed_loss(ch9, capsys, answer, diagnosis):
    out = run(ch9["check_smoothed_loss"], answer, capsys=capsys)
    assert out.startswith("Correct") if diagnosis is None else diagnosis in out, out


def test_check_smoothed_loss_accepts_a_different_correct_answer(ch9, capsys):
    def answer(logits, target, smoothing, pad_id):
        keep = target != pad_id
        log_p = logits[keep].log_softmax(-1)  # (N, V): the real positions only
        nll = -log_p.gather(-1, target[keep][:, None]).squeeze(-1)
        return ((1 - smoothing) * nll - smoothing * log_p.mean(-1)).mean()

    assert run(ch9["check_smoothed_loss"], answer, capsys=capsys).startswith("Correct")


def _shift(targets, bos, eos, pad, pad_left=False, no_eos=False, no_bos=False):
    T = max(map(len, targets)) + 1
    rows_in, rows_out = [], []
    for y in targets:
        row_in, row_out = ([] if no_bos else [bos]) + y, y + ([] if no_eos else [eos])
        fill_in, fill_out = [pad] * (T - len(row_in)), [pad] * (T - len(row_out))
        rows_in.append(fill_in + row_in if pad_left else row_in + fill_in)
        rows_out.append(fill_out + row_out if pad_left else row_out + fill_out)
    return torch.tensor(rows_in), torch.tensor(rows_out)


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda y, b, e, p: tuple(reversed(_shift(y, b, e, p))), "tgt_in and tgt_out are swapped"),
    (lambda y, b, e, p: (_shift(y, b, e, p)[1], _shift(y, b, e, p)[1]), "tgt_in equals tgt_out"),
    (lambda y, b, e, p: _shift(y, b, e, p, pad_left=True), "must start with bos_id"),
    (lambda y, b, e, p: _shift(y, b, e, p, no_eos=True), "exactly one eos_id"),
    (lambda y, b, e, p: _shift(y, b, e, p, no_bos=True), "must start with bos_id"),
    (lambda y, b, e, p: tuple(t[:, :-1] for t in _shift(y, b, e, p)), "longest target + 1"),
    (lambda y, b, e, p: (lambda a, o: (a, o.masked_fill(o == p, 9)))(*_shift(y, b, e, p)), "Not quite"),
    (lambda y, b, e, p: [t.tolist() for t in _shift(y, b, e, p)], "Return a pair of tensors"),
    (lambda y, b, e, p: torch.stack([torch.tensor([b, *t]) for t in y]), "raised RuntimeError"),
])
def test_check_shift(ch9, capsys, answer, diagnosis):
    assert diagnosis in run(ch9["check_shift"], answer, capsys=capsys)


def test_check_shift_accepts_a_different_correct_answer(ch9, capsys):
    def answer(targets, bos_id, eos_id, pad_id):
        ids, _ = pad_batch([[bos_id, *t, eos_id] for t in targets], pad_id)  # (B, T + 1)
        return ids[:, :-1].masked_fill(ids[:, :-1] == eos_id, pad_id), ids[:, 1:]

    assert run(ch9["check_shift"], answer, capsys=capsys).startswith("Correct")


# Chapter 10 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ch10():
    from transformer_lib.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    config = TransformerConfig(src_vocab_size=14, tgt_vocab_size=14, d_model=16, num_heads=2,
                               num_encoder_layers=1, num_decoder_layers=2, d_ff=32, dropout=0.0, max_len=24)
    model = Transformer(config).eval()
    lengths = torch.tensor([6, 3, 5, 1, 6, 2, 4, 6])
    src = torch.randint(4, 14, (8, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(6) < lengths[:, None]  # (8, 6): most sources are padded
    checkers = load("10_decoding")
    checkers["check_cached_greedy"] = functools.partial(
        checkers["check_cached_greedy"], model=model, src=src.masked_fill(~mask, 0), src_padding_mask=mask,
        bos_id=1,
    )
    return checkers


def _nucleus(probs, p, keep_if=lambda before, running, p: before < p, sort=True, renormalize=True):
    if sort:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
    else:
        sorted_probs, order = probs, torch.arange(probs.shape[-1]).expand_as(probs)
    running = sorted_probs.cumsum(-1)
    kept = sorted_probs * keep_if(running - sorted_probs, running, p)
    kept = torch.zeros_like(probs).scatter(-1, order, kept)
    return kept / kept.sum(-1, keepdim=True) if renormalize else kept


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda probs, p: probs, "nothing was filtered out"),
    (lambda probs, p: _nucleus(probs, p, keep_if=lambda b, r, p: r <= p), "stays within p"),
    (lambda probs, p: _nucleus(probs, p, keep_if=lambda b, r, p: r < p), "stops one token early"),
    (lambda probs, p: _nucleus(probs, p, renormalize=False), "does not sum to 1"),
    (lambda probs, p: _nucleus(probs, p, sort=False), "sorted by probability"),
    (lambda probs, p: _nucleus(probs, p).sort(dim=-1, descending=True).values, "in sorted order"),
    (lambda probs, p: _nucleus(probs, p)[..., :-1], "expected a tensor of shape"),
])
def test_check_top_p(ch10, capsys, answer, diagnosis):
    assert diagnosis in run(ch10["check_top_p"], answer, capsys=capsys)


def test_check_top_p_accepts_a_different_correct_answer(ch10, capsys):
    def answer(probs, p):
        out = torch.zeros_like(probs)
        rows = probs.reshape(-1, probs.shape[-1])
        for row, result in zip(rows, out.view(-1, probs.shape[-1]), strict=True):
            total = 0.0
            for index in sorted(range(len(row)), key=lambda i: -row[i].item()):
                if total >= p:
                    break
                result[index], total = row[index], total + row[index].item()
            result /= result.sum()
        return out

    assert run(ch10["check_top_p"], answer, capsys=capsys).startswith("Correct")


def _cached_greedy(model, src, mask, steps, bos_id, mask_in_encode=True, mask_in_decode=True, start=None,
                   use_cache=True, argmax_dim=-1, keep_bos=False):
    memory = model.encode(src, mask if mask_in_encode else None)
    cache = model.new_cache() if use_cache else None
    tokens = torch.full((len(src), 1), bos_id)
    for t in range(steps):
        fed = tokens[:, -1:] if use_cache else tokens
        logits = model.decode(fed, memory, mask if mask_in_decode else None, cache=cache,
                              start=(t if start is None else start) if use_cache else 0)
        scores = logits[:, -1]
        token = scores.argmax(dim=argmax_dim) if argmax_dim == -1 else scores.argmax(dim=0)[: len(src)]
        tokens = torch.cat([tokens, token[:, None]], dim=1)
    return tokens if keep_bos else tokens[:, 1:]


@pytest.mark.filterwarnings("ignore:src holds pad_id")
@pytest.mark.parametrize("kwargs, diagnosis", [
    (dict(mask_in_encode=False), "You called encode without src_padding_mask"),
    (dict(mask_in_decode=False), "You called decode without src_padding_mask"),
    (dict(start=0), "decode raised ValueError"),
    (dict(use_cache=False), "decode ran without a cache"),
    (dict(keep_bos=True), "return them without the <bos>"),
])
def test_check_cached_greedy(ch10, capsys, kwargs, diagnosis):
    answer = lambda *args: _cached_greedy(*args, **kwargs)  # noqa: E731
    assert diagnosis in run(ch10["check_cached_greedy"], answer, capsys=capsys)


@pytest.mark.parametrize("answer, diagnosis", [
    (not_attempted, "Not attempted yet"),
    (crashes, "raised IndexError"),
    (lambda model, src, mask, steps, bos: _cached_greedy(model, src, mask, steps, bos)[:, :-1],
     "Expected tokens"),
    (lambda model, src, mask, steps, bos: _cached_greedy(model, src, mask, steps, bos).flip(0),
     "The tokens differ from greedy decoding, though every call"),
])
def test_check_cached_greedy_other_answers(ch10, capsys, answer, diagnosis):
    assert diagnosis in run(ch10["check_cached_greedy"], answer, capsys=capsys)


def test_check_cached_greedy_accepts_a_different_correct_answer(ch10, capsys):
    def answer(model, src, src_padding_mask, max_new_tokens, bos_id):
        memory, cache = model.encode(src, src_padding_mask), model.new_cache()
        last, out = torch.full((src.shape[0], 1), bos_id), []
        for position in range(max_new_tokens):
            last = model.decode(last, memory, src_padding_mask, None, cache, position).argmax(-1)  # (B, 1)
            out.append(last)
        return torch.cat(out, dim=1)

    assert run(ch10["check_cached_greedy"], answer, capsys=capsys).startswith("Correct")
