"""Tests for transformer_lib.multihead: parity with torch.nn.MultiheadAttention (values and gradients), the
two paths agreeing, split/merge of heads, parameter count, the key/value cache, and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_lib.attention import causal_mask, lengths_to_mask
from transformer_lib.multihead import (
    KVCache,
    MultiHeadAttention,
    load_torch_multihead_attention,
    merge_heads,
    split_heads,
)
from transformer_lib.positional import RotaryEmbedding

D_MODEL, NUM_HEADS = 16, 4
B, T, S = 3, 5, 7


def _pair(bias: bool = True, dropout: float = 0.0) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    theirs = nn.MultiheadAttention(D_MODEL, NUM_HEADS, dropout=dropout, bias=bias, batch_first=True)
    ours = MultiHeadAttention(D_MODEL, NUM_HEADS, dropout=dropout, bias=bias)
    load_torch_multihead_attention(ours, theirs)
    return ours, theirs


def _inputs(kind: str, requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, key, value): one tensor for self-attention, a decoder query and an encoder memory for cross."""
    if kind == "self":
        x = torch.randn(B, T, D_MODEL, requires_grad=requires_grad)
        return x, x, x
    query = torch.randn(B, T, D_MODEL, requires_grad=requires_grad)
    memory = torch.randn(B, S, D_MODEL, requires_grad=requires_grad)
    return query, memory, memory


def _masks(kind: str, masks: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(key_padding_mask, attn_mask), True = may attend; no row is fully masked (PyTorch gives NaN there)."""
    keys = T if kind == "self" else S
    padding = lengths_to_mask(torch.tensor([keys, keys - 2, 3]), max_len=keys) if "padding" in masks else None
    causal = causal_mask(T) if "causal" in masks and kind == "self" else None
    if "causal" in masks and kind == "cross":
        causal = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)  # (T, S), aligned to the last key
    return padding, causal


def _twin(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Fresh leaf copies of the inputs that keep their aliasing (query is key is value stays true)."""
    copies: dict[int, torch.Tensor] = {}
    for t in inputs:
        copies.setdefault(id(t), t.detach().clone().requires_grad_())
    return tuple(copies[id(t)] for t in inputs)


# --- parity with torch.nn.MultiheadAttention ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("masks", ["none", "padding", "causal", "padding+causal"])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_matches_torch_outputs_and_gradients(kind, masks, need_weights, fused):
    torch.manual_seed(0)
    ours, theirs = _pair()
    ours.fused = fused  # False: the readable path even without need_weights
    padding, attn = _masks(kind, masks)
    ours_in = _inputs(kind, requires_grad=True)
    theirs_in = _twin(ours_in)

    out, weights = ours(*ours_in, key_padding_mask=padding, attn_mask=attn, need_weights=need_weights)
    expected, expected_weights = theirs(
        *theirs_in,
        key_padding_mask=None if padding is None else ~padding,
        attn_mask=None if attn is None else ~attn,
        need_weights=need_weights,
        average_attn_weights=False,
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    if need_weights:
        assert weights.shape == (B, NUM_HEADS, T, T if kind == "self" else S)
        torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=0)
    else:
        assert weights is None

    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for mine, its in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(mine.grad, its.grad, atol=1e-5, rtol=0)
    in_proj_grad = theirs.in_proj_weight.grad.chunk(3)
    in_bias_grad = theirs.in_proj_bias.grad.chunk(3)
    for i, projection in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
        torch.testing.assert_close(projection.weight.grad, in_proj_grad[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(projection.bias.grad, in_bias_grad[i], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.out_proj.weight.grad, theirs.out_proj.weight.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.out_proj.bias.grad, theirs.out_proj.bias.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_matches_torch_without_bias(kind):
    torch.manual_seed(0)
    ours, theirs = _pair(bias=False)
    inputs = _inputs(kind)
    padding, attn = _masks(kind, "padding+causal")
    expected, _ = theirs(*inputs, key_padding_mask=~padding, attn_mask=~attn, need_weights=False)
    out, _ = ours(*inputs, key_padding_mask=padding, attn_mask=attn)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_matches_torch_with_per_sequence_and_per_head_masks():
    torch.manual_seed(0)
    ours, theirs = _pair()
    query, key, value = _inputs("cross")
    per_head = torch.rand(B, NUM_HEADS, T, S) > 0.3
    per_head[..., 0] = True  # every query keeps a key, so PyTorch gives no NaN
    torch_mask = ~per_head.reshape(B * NUM_HEADS, T, S)  # PyTorch: (B * num_heads, T, S), True = ignore
    expected, _ = theirs(query, key, value, attn_mask=torch_mask, need_weights=False)
    out_4d, _ = ours(query, key, value, attn_mask=per_head)
    torch.testing.assert_close(out_4d, expected, atol=1e-5, rtol=0)
    per_sequence = per_head[:, 0]  # (B, T, S)
    expected, _ = theirs(
        query, key, value, attn_mask=~per_sequence.repeat_interleave(NUM_HEADS, dim=0), need_weights=False
    )
    out_3d, _ = ours(query, key, value, attn_mask=per_sequence)
    torch.testing.assert_close(out_3d, expected, atol=1e-5, rtol=0)


def test_load_copies_weights_into_the_right_projections():
    torch.manual_seed(0)
    ours, theirs = _pair()
    w_q, w_k, w_v = theirs.in_proj_weight.chunk(3)
    assert torch.equal(ours.q_proj.weight, w_q) and torch.equal(ours.k_proj.weight, w_k)
    assert torch.equal(ours.v_proj.weight, w_v) and torch.equal(ours.out_proj.weight, theirs.out_proj.weight)
    assert torch.equal(ours.v_proj.bias, theirs.in_proj_bias[2 * D_MODEL :])


# --- the two paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "random_2d", "random_3d", "random_4d", "all"])
def test_fast_and_readable_paths_agree(dtype, mask_kind):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS).to(dtype)
    query = torch.randn(B, T, D_MODEL, dtype=dtype, requires_grad=True)
    memory = torch.randn(B, S, D_MODEL, dtype=dtype, requires_grad=True)
    padding = lengths_to_mask(torch.tensor([S, 2, 0]), max_len=S)  # sequence 2 is all padding
    shapes = {"random_2d": (T, S), "random_3d": (B, T, S), "random_4d": (B, NUM_HEADS, T, S)}
    kwargs = {}
    if mask_kind in ("padding", "all"):
        kwargs["key_padding_mask"] = padding
    if mask_kind in shapes or mask_kind == "all":
        kwargs["attn_mask"] = torch.rand(shapes.get(mask_kind, (T, S))) > 0.5  # some rows fully masked
    results = []
    for need_weights in (True, False):
        out, _ = layer(query, memory, memory, need_weights=need_weights, **kwargs)
        grads = torch.autograd.grad(out.square().sum(), (query, memory, layer.q_proj.weight))
        results.append((out, *grads))
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    for readable, fast in zip(*results, strict=True):
        assert torch.isfinite(fast).all() and torch.isfinite(readable).all()
        torch.testing.assert_close(fast, readable, **tolerance)


@pytest.mark.parametrize("pattern", ["causal", "anti-causal", "strictly causal", "causal with a hole"])
def test_square_masks_on_both_paths(pattern, monkeypatch):
    """The fast path passes is_causal=True for exactly the causal mask, and the mask itself otherwise."""
    calls = []
    fused = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, T, D_MODEL)
    mask = causal_mask(T)
    if pattern == "anti-causal":
        mask = mask.T.contiguous()
    elif pattern == "strictly causal":
        mask = mask.tril(-1)  # the first query has no key: zeros
    elif pattern == "causal with a hole":
        mask = mask.clone()
        mask[3, 1] = False
    readable, _ = layer(x, x, x, attn_mask=mask, need_weights=True)
    assert calls == []  # the readable path does not use the fused function
    fast, _ = layer(x, x, x, attn_mask=mask)
    torch.testing.assert_close(fast, readable)
    assert len(calls) == 1
    if pattern == "causal":
        assert calls[0].get("is_causal") is True and calls[0].get("attn_mask") is None
    else:
        assert not calls[0].get("is_causal", False) and calls[0]["attn_mask"] is not None


def test_fully_masked_query_gives_zero_attention_output_on_both_paths():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(2, T, D_MODEL)
    padding = lengths_to_mask(torch.tensor([T, 0]), max_len=T)  # the second sequence has no real key
    for need_weights in (True, False):
        out, _ = layer(x, x, x, key_padding_mask=padding, need_weights=need_weights)
        torch.testing.assert_close(out[1], layer.out_proj.bias.expand(T, D_MODEL), atol=0, rtol=0)


def _sdpa_with_nan_rows(query, key, value, attn_mask=None, dropout_p=0.0):
    """Plain softmax attention: NaN for a fully masked row, as some fused kernels give."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, H, T, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ value  # (B, H, T, d_head)


def test_fast_path_gives_zeros_even_when_the_kernel_gives_nan(monkeypatch):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(2, T, D_MODEL, requires_grad=True)
    padding = lengths_to_mask(torch.tensor([T, 0]), max_len=T)
    empty = torch.zeros(1, 1, T, dtype=torch.bool)
    assert _sdpa_with_nan_rows(*torch.randn(3, 1, 1, T, 4), attn_mask=empty).isnan().all()  # NaN stand-in
    expected, _ = layer(x, x, x, key_padding_mask=padding, need_weights=True)
    monkeypatch.setattr(F, "scaled_dot_product_attention", _sdpa_with_nan_rows)
    out, _ = layer(x, x, x, key_padding_mask=padding)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("need_weights", [False, True])
def test_gradcheck_float64(need_weights):
    torch.manual_seed(0)
    layer = MultiHeadAttention(4, 2).double()
    query = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    padding = lengths_to_mask(torch.tensor([4, 2]), max_len=4)

    def f(q, m):
        return layer(q, m, m, key_padding_mask=padding, need_weights=need_weights)[0]

    assert torch.autograd.gradcheck(f, (query, memory))


def test_stacked_self_attention_projection_equals_separate_projections():
    torch.manual_seed(0)
    for bias in (True, False):
        layer = MultiHeadAttention(D_MODEL, NUM_HEADS, bias=bias)
        x = torch.randn(B, T, D_MODEL)
        stacked, _ = layer(x, x, x, attn_mask=causal_mask(T))  # query is key is value: one stacked product
        separate, _ = layer(x, x.clone(), x.clone(), attn_mask=causal_mask(T))  # three products
        torch.testing.assert_close(stacked, separate)


def test_weights_are_distributions_with_zero_on_masked_keys():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    query, key, value = _inputs("cross")
    padding, attn = _masks("cross", "padding+causal")
    _, weights = layer(query, key, value, key_padding_mask=padding, attn_mask=attn, need_weights=True)
    allowed = padding[:, None, None, :] & attn  # (B, 1, T, S)
    assert (weights.masked_select(~allowed.expand_as(weights)) == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, NUM_HEADS, T))


def test_self_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, T, D_MODEL)
    order = torch.randperm(T)
    out, _ = layer(x, x, x)
    permuted, _ = layer(x[:, order], x[:, order], x[:, order])
    torch.testing.assert_close(permuted, out[:, order])


def test_causal_mask_hides_the_future():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, T, D_MODEL)
    changed = x.clone()
    changed[:, -1] += 1.0  # change only the last position
    out, _ = layer(x, x, x, attn_mask=causal_mask(T))
    out_changed, _ = layer(changed, changed, changed, attn_mask=causal_mask(T))
    torch.testing.assert_close(out[:, :-1], out_changed[:, :-1])
    assert not torch.allclose(out[:, -1], out_changed[:, -1])


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS, dropout=0.5)
    reference = MultiHeadAttention(D_MODEL, NUM_HEADS)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, D_MODEL)
    layer.eval()
    for need_weights in (False, True):
        torch.testing.assert_close(layer(x, x, x, need_weights=need_weights)[0], reference(x, x, x)[0])
    layer.train()
    for need_weights in (False, True):
        first, _ = layer(x, x, x, need_weights=need_weights)
        second, _ = layer(x, x, x, need_weights=need_weights)
        assert not torch.allclose(first, second)


# --- parameters, heads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_model, num_heads", [(16, 1), (16, 4), (512, 8), (768, 12)])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count(d_model, num_heads, bias):
    layer = MultiHeadAttention(d_model, num_heads, bias=bias)
    expected = 4 * d_model**2 + (4 * d_model if bias else 0)
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert (layer.d_model, layer.num_heads, layer.d_head) == (d_model, num_heads, d_model // num_heads)
    theirs = nn.MultiheadAttention(d_model, num_heads, bias=bias)
    assert sum(p.numel() for p in theirs.parameters()) == expected


@pytest.mark.parametrize(
    "shape, num_heads", [((2, 5, 12), 3), ((1, 1, 8), 2), ((3, 4, 6), 1), ((2, 3, 8), 8)]
)
def test_split_and_merge_heads(shape, num_heads):
    torch.manual_seed(0)
    x = torch.randn(shape)
    heads = split_heads(x, num_heads)
    B_, T_, d_model = shape
    d_head = d_model // num_heads
    assert heads.shape == (B_, num_heads, T_, d_head)
    for h in range(num_heads):  # head h holds features h * d_head ... (h + 1) * d_head - 1 of every position
        assert torch.equal(heads[:, h], x[:, :, h * d_head : (h + 1) * d_head])
    assert torch.equal(merge_heads(heads), x)


def test_split_heads_rejects_indivisible_width():
    with pytest.raises(ValueError, match=r"divisible by num_heads=3, got shape \(2, 5, 8\)"):
        split_heads(torch.randn(2, 5, 8), 3)
    with pytest.raises(ValueError, match=r"divisible by num_heads=0, got shape \(2, 5, 8\)"):
        split_heads(torch.randn(2, 5, 8), 0)


def test_merge_heads_rejects_a_tensor_that_is_not_4d():
    with pytest.raises(ValueError, match=r"merge_heads needs \(B, H, T, d_head\), got shape \(2, 5, 8\)"):
        merge_heads(torch.randn(2, 5, 8))


# --- the key/value cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[1] * T, [2, 1, 2], [3, 2], [T]])
def test_self_attention_cache_equals_full_causal_attention(chunks):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, T, D_MODEL)
    full, _ = layer(x, x, x, attn_mask=causal_mask(T))
    cache, pieces, start = KVCache(), [], 0
    for size in chunks:
        part = x[:, start : start + size]
        mask = causal_mask(start + size)[start:]  # (size, start + size): the new queries over all keys so far
        pieces.append(layer(part, part, part, attn_mask=mask, cache=cache)[0])
        start += size
        assert cache.key.shape == cache.value.shape == (B, NUM_HEADS, start, D_MODEL // NUM_HEADS)
        assert cache.length == start
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_self_attention_cache_with_padding_and_weights():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, T, D_MODEL)
    padding = lengths_to_mask(torch.tensor([T, T - 1, T - 2]), max_len=T)
    full, full_weights = layer(x, x, x, key_padding_mask=padding, attn_mask=causal_mask(T), need_weights=True)
    cache = KVCache()
    for t in range(T):
        token = x[:, t : t + 1]
        seen = padding[:, : t + 1]  # (B, t + 1): the mask covers the cached keys and the new one
        out, weights = layer(token, token, token, key_padding_mask=seen, cache=cache, need_weights=True)
        torch.testing.assert_close(out[:, 0], full[:, t])
        torch.testing.assert_close(weights[:, :, 0], full_weights[:, :, t, : t + 1])


def test_static_cache_computes_keys_once_and_reuses_them():
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    query, memory, _ = _inputs("cross")
    padding = lengths_to_mask(torch.tensor([S, 4, 2]), max_len=S)
    full, _ = layer(query, memory, memory, key_padding_mask=padding)
    assert KVCache(static=True).length == 0
    cache = KVCache(static=True)
    steps = []
    for t in range(T):
        # After the first call the cache is used and key/value are ignored: pass something else to prove it.
        source = memory if t == 0 else torch.zeros_like(memory)
        steps.append(layer(query[:, t : t + 1], source, source, key_padding_mask=padding, cache=cache)[0])
        assert cache.key.shape == (B, NUM_HEADS, S, D_MODEL // NUM_HEADS)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    first_key = cache.key
    layer(query, None, None, key_padding_mask=padding, cache=cache)
    assert cache.key is first_key


# --- the rotary hook ----------------------------------------------------------------------------------------


def _rotary_layer(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(D_MODEL, NUM_HEADS, rotary=RotaryEmbedding(D_MODEL // NUM_HEADS, max_len=64))


def test_rotary_rotates_queries_and_keys_by_their_positions():
    """The weights are softmax(rot(q_t, t) . rot(k_s, s) / sqrt(d_head)), computed here by hand."""
    layer = _rotary_layer()
    x = torch.randn(B, T, D_MODEL)
    _, weights = layer(x, x, x, attn_mask=causal_mask(T), need_weights=True)  # (B, H, T, T)
    q, k = (split_heads(projection(x), NUM_HEADS) for projection in (layer.q_proj, layer.k_proj))
    q, k = layer.rotary(q), layer.rotary(k)  # positions 0 .. T - 1
    scores = q @ k.transpose(-2, -1) / math.sqrt(D_MODEL // NUM_HEADS)  # (B, H, T, T)
    scores = scores.masked_fill(~causal_mask(T), -math.inf)
    torch.testing.assert_close(weights, scores.softmax(dim=-1))
    plain = MultiHeadAttention(D_MODEL, NUM_HEADS)
    plain.load_state_dict(layer.state_dict())  # the same weights without the hook: other weights
    assert not torch.allclose(plain(x, x, x, attn_mask=causal_mask(T), need_weights=True)[1], weights)


@pytest.mark.parametrize("shift", [1, 7, 40])
def test_rotary_scores_depend_only_on_relative_positions(shift):
    """The same tokens at positions shift .. shift + T - 1 (after `shift` cached keys that no query may see)
    get the same weights and outputs as at positions 0 .. T - 1: RoPE scores depend on t - s only."""
    layer = _rotary_layer()
    x = torch.randn(B, T, D_MODEL)
    out, weights = layer(x, x, x, attn_mask=causal_mask(T), need_weights=True)
    d_head = D_MODEL // NUM_HEADS
    cached = (torch.randn(B, NUM_HEADS, shift, d_head) for _ in range(2))  # keys and values of other tokens
    cache = KVCache(*cached)
    hidden = torch.zeros(T, shift, dtype=torch.bool)  # the cached positions are masked out
    mask = torch.cat([hidden, causal_mask(T)], dim=1)  # (T, shift + T)
    for need_weights in (True, False):
        cache_copy = KVCache(key=cache.key, value=cache.value)
        shifted, shifted_weights = layer(x, x, x, attn_mask=mask, cache=cache_copy, need_weights=need_weights)
        torch.testing.assert_close(shifted, out)
        if need_weights:
            torch.testing.assert_close(shifted_weights[..., shift:], weights)


@pytest.mark.parametrize("chunks", [[1] * T, [2, 1, 2], [T]])
def test_rotary_cache_in_chunks_equals_full_causal_attention(chunks):
    layer = _rotary_layer()
    x = torch.randn(B, T, D_MODEL)
    full, _ = layer(x, x, x, attn_mask=causal_mask(T))
    cache, pieces, start = KVCache(), [], 0
    for size in chunks:
        part = x[:, start : start + size]
        pieces.append(layer(part, part, part, attn_mask=causal_mask(start + size)[start:], cache=cache)[0])
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_cache_of_wrong_shape_is_rejected():
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS)
    x = torch.randn(B, 1, D_MODEL)
    cache = KVCache(key=torch.randn(B + 1, NUM_HEADS, 3, 4), value=torch.randn(B + 1, NUM_HEADS, 3, 4))
    with pytest.raises(ValueError, match=r"cache.key must be \(B, num_heads, S, d_head\).*\(3, 4, 4\)"):
        layer(x, x, x, cache=cache)


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_model, num_heads", [(10, 3), (16, 0), (16, 5)])
def test_indivisible_d_model_is_rejected_at_construction(d_model, num_heads):
    message = rf"d_model \({d_model}\) must be divisible by num_heads \({num_heads}\)"
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(d_model, num_heads)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_bad_dropout_is_rejected(dropout):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MultiHeadAttention(D_MODEL, NUM_HEADS, dropout=dropout)


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return MultiHeadAttention(D_MODEL, NUM_HEADS)


@pytest.mark.parametrize(
    "which, shape, message",
    [
        ("query", (B, T, 8), r"query has feature size 8 \(shape \(3, 5, 8\)\) but this layer .* d_model=16"),
        ("key", (B, S, 12), r"key has feature size 12 .* d_model=16"),
        ("value", (B, S, 12), r"value has feature size 12 .* d_model=16"),
        ("value", (B, S + 1, D_MODEL), r"same length S.*\(3, 7, 16\).*\(3, 8, 16\)"),
        ("key", (B + 1, S, D_MODEL), r"key has batch size 4 but query has batch size 3"),
        ("query", (T, D_MODEL), r"query must be 3-D \(batch, length, d_model\), got shape \(5, 16\)"),
    ],
)
def test_bad_input_shapes(layer, which, shape, message):
    inputs = dict(zip(("query", "key", "value"), _inputs("cross"), strict=True))
    inputs[which] = torch.randn(shape)
    with pytest.raises(ValueError, match=message):
        layer(**inputs)


def test_non_tensor_input_is_rejected(layer):
    query, key, value = _inputs("cross")
    with pytest.raises(TypeError, match="key must be a torch.Tensor, got list"):
        layer(query, key.tolist(), value)


def test_integer_input_is_rejected(layer):
    query, key, value = _inputs("cross")
    token_ids = torch.randint(0, 10, (B, T, D_MODEL))
    with pytest.raises(TypeError, match=r"query must be a floating-point tensor .* got dtype torch.int64"):
        layer(token_ids, key, value)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((B + 1, S), r"key_padding_mask has batch size 4 but the query has batch size 3"),
        ((B, S - 1), r"key_padding_mask has length 6 but there are S = 7 keys"),
        ((B, 1, S), r"key_padding_mask must be \(B, S\) = \(3, 7\), got shape \(3, 1, 7\)"),
    ],
)
def test_bad_key_padding_mask_shape(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(*_inputs("cross"), key_padding_mask=torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize(
    "shape", [(T, S - 1), (T + 1, S), (B * NUM_HEADS, T, S), (B, NUM_HEADS + 1, T, S), (S,)]
)
def test_attn_mask_that_cannot_broadcast(layer, shape):
    message = r"attn_mask of shape .* cannot broadcast to the scores .* \(3, 4, 5, 7\)"
    with pytest.raises(ValueError, match=message):
        layer(*_inputs("cross"), attn_mask=torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize("name", ["key_padding_mask", "attn_mask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.long])
@pytest.mark.parametrize("need_weights", [False, True])
def test_non_bool_masks_are_rejected(layer, name, dtype, need_weights):
    shape = (B, S) if name == "key_padding_mask" else (T, S)
    mask = torch.zeros(shape, dtype=dtype)
    with pytest.raises(TypeError, match=rf"{name} must be a bool tensor with True = may attend, got dtype"):
        layer(*_inputs("cross"), need_weights=need_weights, **{name: mask})


def test_load_rejects_mismatched_modules():
    ours = MultiHeadAttention(D_MODEL, NUM_HEADS)
    with pytest.raises(ValueError, match=r"theirs has embed_dim=32, num_heads=4; ours has d_model=16"):
        load_torch_multihead_attention(ours, nn.MultiheadAttention(32, NUM_HEADS))
    with pytest.raises(ValueError, match=r"num_heads=2; ours has d_model=16, num_heads=4"):
        load_torch_multihead_attention(ours, nn.MultiheadAttention(D_MODEL, 2))
    with pytest.raises(ValueError, match="bias mismatch"):
        load_torch_multihead_attention(ours, nn.MultiheadAttention(D_MODEL, NUM_HEADS, bias=False))
    with pytest.raises(ValueError, match="kdim/vdim, add_bias_kv or add_zero_attn"):
        load_torch_multihead_attention(ours, nn.MultiheadAttention(D_MODEL, NUM_HEADS, kdim=8, vdim=8))
    with pytest.raises(ValueError, match="kdim/vdim, add_bias_kv or add_zero_attn"):
        load_torch_multihead_attention(ours, nn.MultiheadAttention(D_MODEL, NUM_HEADS, add_bias_kv=True))
    with pytest.raises(TypeError, match="theirs must be a torch.nn.MultiheadAttention, got Linear"):
        load_torch_multihead_attention(ours, nn.Linear(D_MODEL, D_MODEL))


# --- grouped-query and multi-query attention (num_kv_heads, chapter 15) -------------------------------------


def _expanded_to_full(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """A full multi-head layer whose key/value heads repeat the grouped layer's, H // H_kv times each."""
    full = MultiHeadAttention(gqa.d_model, gqa.num_heads)
    group, d_head = gqa.num_heads // gqa.num_kv_heads, gqa.d_head
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            weight = getattr(gqa, name).weight.reshape(gqa.num_kv_heads, d_head, gqa.d_model)
            bias = getattr(gqa, name).bias.reshape(gqa.num_kv_heads, d_head)
            getattr(full, name).weight.copy_(weight.repeat_interleave(group, dim=0).reshape(-1, gqa.d_model))
            getattr(full, name).bias.copy_(bias.repeat_interleave(group, dim=0).reshape(-1))
    return full


def test_num_kv_heads_equal_to_num_heads_is_multi_head_attention():
    torch.manual_seed(0)
    default = MultiHeadAttention(D_MODEL, NUM_HEADS)
    grouped = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=NUM_HEADS)
    grouped.load_state_dict(default.state_dict())  # same parameter names and shapes
    for kind in ("self", "cross"):
        inputs = _inputs(kind)
        for need_weights in (False, True):
            ours, ours_weights = grouped(*inputs, need_weights=need_weights)
            ref, ref_weights = default(*inputs, need_weights=need_weights)
            torch.testing.assert_close(ours, ref, rtol=0, atol=0)
            if need_weights:
                torch.testing.assert_close(ours_weights, ref_weights, rtol=0, atol=0)


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
@pytest.mark.parametrize("kind, masks", [("self", "none"), ("self", "padding+causal"), ("cross", "padding")])
@pytest.mark.parametrize("need_weights", [False, True])
def test_grouped_query_attention_equals_full_attention_with_repeated_key_value_heads(
    num_kv_heads, kind, masks, need_weights
):
    torch.manual_seed(num_kv_heads)
    gqa = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=num_kv_heads)
    full = _expanded_to_full(gqa)
    inputs = _inputs(kind)
    padding, attn_mask = _masks(kind, masks)
    options = {"key_padding_mask": padding, "attn_mask": attn_mask, "need_weights": need_weights}
    ours, ours_weights = gqa(*inputs, **options)
    ref, ref_weights = full(*inputs, **options)
    torch.testing.assert_close(ours, ref)
    if need_weights:
        torch.testing.assert_close(ours_weights, ref_weights)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_query_attention_matches_pytorchs_enable_gqa(num_kv_heads):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=num_kv_heads)
    x = torch.randn(B, T, D_MODEL)
    q = split_heads(layer.q_proj(x), NUM_HEADS)  # (B, H, T, d_head)
    k, v = (split_heads(p(x), num_kv_heads) for p in (layer.k_proj, layer.v_proj))  # (B, H_kv, T, d_head)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, d_head)
    out, _ = layer(x, x, x, attn_mask=causal_mask(T))
    torch.testing.assert_close(out, layer.out_proj(merge_heads(expected)))


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_grouped_query_cache_holds_num_kv_heads_and_equals_full_decoding(num_kv_heads):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=num_kv_heads)
    x = torch.randn(B, T, D_MODEL)
    full, _ = layer(x, x, x, attn_mask=causal_mask(T))
    cache, steps = KVCache(), []
    for t in range(T):
        token = x[:, t : t + 1]
        steps.append(layer(token, token, token, cache=cache)[0])
        assert cache.key.shape == cache.value.shape == (B, num_kv_heads, t + 1, D_MODEL // NUM_HEADS)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_grouped_query_parameter_count(num_kv_heads):
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=num_kv_heads)
    d_kv = num_kv_heads * D_MODEL // NUM_HEADS
    expected = 2 * (D_MODEL * D_MODEL + D_MODEL) + 2 * (D_MODEL * d_kv + d_kv)  # q, out; k, v
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert layer.num_kv_heads == num_kv_heads


@pytest.mark.parametrize("num_kv_heads", [0, 3, 8, 2.0, True])
def test_bad_num_kv_heads_is_rejected(num_kv_heads):
    with pytest.raises(ValueError, match=r"num_kv_heads \(.*\) must divide num_heads \(4\).*\[1, 2, 4\]"):
        MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=num_kv_heads)


def test_grouped_cache_of_wrong_shape_is_rejected():
    layer = MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=2)
    x = torch.randn(B, 1, D_MODEL)
    cache = KVCache(key=torch.randn(B, NUM_HEADS, 3, 4), value=torch.randn(B, NUM_HEADS, 3, 4))
    with pytest.raises(ValueError, match=r"cache.key must be \(B, num_kv_heads, S, d_head\).*\(3, 2, 4\)"):
        layer(x, x, x, cache=cache)


def test_loading_pytorch_weights_into_grouped_attention_is_rejected():
    theirs = nn.MultiheadAttention(D_MODEL, NUM_HEADS, batch_first=True)
    with pytest.raises(ValueError, match=r"num_kv_heads=2 < num_heads=4"):
        load_torch_multihead_attention(MultiHeadAttention(D_MODEL, NUM_HEADS, num_kv_heads=2), theirs)
