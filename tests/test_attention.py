"""Tests for transformer_lib/attention.py (written by notebooks/02_attention.ipynb)."""

import math

import pytest
import torch
import torch.nn.functional as F

from transformer_lib.attention import (
    causal_mask,
    check_bool_mask,
    lengths_to_mask,
    padding_mask,
    scaled_dot_product_attention,
)

TOLERANCES = {torch.float64: {"rtol": 0.0, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def make_qkv(batch: tuple[int, ...], T: int, S: int, d_k: int, d_v: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(*batch, T, d_k, generator=generator, dtype=dtype)
    key = torch.randn(*batch, S, d_k, generator=generator, dtype=dtype)
    value = torch.randn(*batch, S, d_v, generator=generator, dtype=dtype)
    return query, key, value


def random_mask(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """A random bool mask that keeps at least one key in every row (the first one)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) > 0.4
    mask[..., 0] = True
    return mask


# (leading dims, T, S, d_k, d_v, mask shape or None, causal)
CASES = [
    ((), 5, 5, 8, 8, None, False),
    ((3,), 4, 6, 8, 5, None, False),
    ((2, 4), 5, 7, 16, 8, None, False),
    ((3,), 6, 6, 8, 8, None, True),
    ((2, 4), 6, 6, 8, 4, None, True),
    ((3,), 4, 6, 8, 8, (3, 4, 6), False),
    ((3,), 4, 6, 8, 8, (3, 1, 6), False),
    ((2, 4), 5, 7, 8, 8, (2, 1, 1, 7), False),
    ((2, 4), 5, 7, 8, 8, (2, 4, 5, 7), False),
    ((2, 4), 5, 7, 8, 8, (5, 7), False),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch, T, S, d_k, d_v, mask_shape, causal", CASES)
def test_matches_torch(batch, T, S, d_k, d_v, mask_shape, causal, dtype):
    query, key, value = make_qkv(batch, T, S, d_k, d_v, dtype)
    mask = causal_mask(T) if causal else (None if mask_shape is None else random_mask(mask_shape))
    output, weights = scaled_dot_product_attention(query, key, value, mask)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(output, expected, **TOLERANCES[dtype])
    assert weights.shape == (*batch, T, S)
    torch.testing.assert_close(weights @ value, output, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch_multihead_attention_weights(dtype):
    """nn.MultiheadAttention's key_padding_mask is True = ignore; ours is True = may attend."""
    torch.manual_seed(0)
    B, S, E = 2, 5, 8  # batch, length, embedding
    mha = torch.nn.MultiheadAttention(E, num_heads=1, bias=False, batch_first=True, dtype=dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(E, dtype=dtype).repeat(3, 1))
        mha.out_proj.weight.copy_(torch.eye(E, dtype=dtype))
    x = torch.randn(B, S, E, dtype=dtype)
    keep = lengths_to_mask(torch.tensor([5, 3]))  # (B, S), True = real token
    expected_out, expected_weights = mha(x, x, x, key_padding_mask=~keep)
    output, weights = scaled_dot_product_attention(x, x, x, keep[:, None, :])
    torch.testing.assert_close(output, expected_out, **TOLERANCES[dtype])
    torch.testing.assert_close(weights, expected_weights, **TOLERANCES[dtype])


@pytest.mark.parametrize("scale", [1.0, 0.25, 2.0])
def test_scale_matches_torch(scale):
    query, key, value = make_qkv((2,), 4, 6, 8, 8, torch.float64)
    output, _ = scaled_dot_product_attention(query, key, value, scale=scale)
    expected = F.scaled_dot_product_attention(query, key, value, scale=scale)
    torch.testing.assert_close(output, expected, rtol=0.0, atol=1e-10)


def test_default_scale_is_inverse_sqrt_d_k():
    query, key, value = make_qkv((2,), 4, 6, 16, 8, torch.float64)
    default, _ = scaled_dot_product_attention(query, key, value)
    explicit, _ = scaled_dot_product_attention(query, key, value, scale=1 / math.sqrt(16))
    unscaled, _ = scaled_dot_product_attention(query, key, value, scale=1.0)
    torch.testing.assert_close(default, explicit, rtol=0.0, atol=0.0)
    assert not torch.allclose(default, unscaled)


@pytest.mark.parametrize("mask_shape", [None, (3, 5, 7), (3, 1, 7)])
def test_weights_sum_to_one_over_keys(mask_shape):
    query, key, value = make_qkv((3,), 5, 7, 8, 8, torch.float64)
    mask = None if mask_shape is None else random_mask(mask_shape)
    _, weights = scaled_dot_product_attention(query, key, value, mask)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 5, dtype=torch.float64))
    assert (weights >= 0).all()


def test_masked_keys_get_exactly_zero_weight():
    query, key, value = make_qkv((2, 3), 5, 7, 8, 8, torch.float64)
    mask = random_mask((2, 3, 5, 7))
    output, weights = scaled_dot_product_attention(query, key, value, mask)
    assert (weights[~mask] == 0).all()
    assert (weights[mask] > 0).all()


def test_masked_keys_and_values_do_not_change_the_output():
    query, key, value = make_qkv((2, 3), 5, 7, 8, 8, torch.float64)
    keep = lengths_to_mask(torch.tensor([7, 4]))  # (2, 7): batch 1 has 3 padding positions
    output, _ = scaled_dot_product_attention(query, key, value, keep[:, None, None, :])
    padding = ~keep[:, None, :, None]  # (2, 1, 7, 1)
    key2 = torch.where(padding, 1e6, key)  # any keys and values at padding, even huge ones
    value2 = torch.where(padding, -1e6, value)
    output2, _ = scaled_dot_product_attention(query, key2, value2, keep[:, None, None, :])
    assert torch.equal(output2, output)


@pytest.mark.parametrize("position", [0, 3, 5])
def test_causal_mask_future_never_changes_the_past(position):
    T = 6
    query, key, value = make_qkv((2,), T, T, 8, 8, torch.float64)
    mask = causal_mask(T)
    output, _ = scaled_dot_product_attention(query, key, value, mask)
    key2, value2 = key.clone(), value.clone()
    key2[:, position] += 10.0
    value2[:, position] -= 10.0
    output2, _ = scaled_dot_product_attention(query, key2, value2, mask)
    assert torch.equal(output2[:, :position], output[:, :position])
    assert not torch.allclose(output2[:, position:], output[:, position:])


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fully_masked_row_gives_zeros_and_finite_gradients(dtype):
    query, key, value = make_qkv((2,), 4, 5, 8, 6, dtype)
    query.requires_grad_(True)
    key.requires_grad_(True)
    value.requires_grad_(True)
    mask = random_mask((2, 4, 5))
    mask[0, 2] = False  # query 2 of batch 0 may attend to nothing
    mask[1] = False  # nor may any query of batch 1
    # Anomaly mode fails on any NaN produced in the backward pass, even one that a later step would hide.
    with torch.autograd.detect_anomaly(check_nan=True):
        output, weights = scaled_dot_product_attention(query, key, value, mask)
        assert torch.isfinite(output).all() and torch.isfinite(weights).all()
        assert (output[0, 2] == 0).all() and (weights[0, 2] == 0).all()
        assert (output[1] == 0).all() and (weights[1] == 0).all()
        torch.testing.assert_close(weights[0, [0, 1, 3]].sum(-1), torch.ones(3, dtype=dtype))
        output.pow(2).sum().backward()
    for tensor in (query, key, value):
        assert torch.isfinite(tensor.grad).all()
    assert (query.grad[0, 2] == 0).all() and (query.grad[1] == 0).all()
    assert (value.grad[1] == 0).all()


@pytest.mark.parametrize("with_mask", [False, True])
def test_gradcheck(with_mask):
    query, key, value = make_qkv((2,), 3, 4, 5, 3, torch.float64)
    mask = None
    if with_mask:
        mask = random_mask((2, 3, 4))
        mask[1, 1] = False  # a fully masked row too
    inputs = tuple(t.requires_grad_(True) for t in (query, key, value))
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask), inputs)


def test_dropout_zeroes_and_rescales_the_weights():
    query, key, value = make_qkv((4, 2), 16, 16, 8, 8, torch.float64)
    _, clean = scaled_dot_product_attention(query, key, value)
    torch.manual_seed(0)
    output, dropped = scaled_dot_product_attention(query, key, value, dropout_p=0.25)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], clean[kept] / 0.75)
    assert 0.2 < 1 - kept.double().mean().item() < 0.3
    torch.testing.assert_close(output, dropped @ value)
    torch.manual_seed(0)
    again, _ = scaled_dot_product_attention(query, key, value, dropout_p=0.25)
    assert torch.equal(again, output)


def test_dropout_zero_is_deterministic():
    query, key, value = make_qkv((2,), 4, 6, 8, 8, torch.float64)
    first, _ = scaled_dot_product_attention(query, key, value, dropout_p=0.0)
    second, _ = scaled_dot_product_attention(query, key, value)
    assert torch.equal(first, second)


# Mask helpers against hand-written expectations.


def test_causal_mask():
    expected = torch.tensor(
        [[True, False, False, False], [True, True, False, False], [True, True, True, False], [True] * 4]
    )
    assert torch.equal(causal_mask(4), expected)
    assert causal_mask(4).dtype == torch.bool
    assert torch.equal(causal_mask(1), torch.tensor([[True]]))


def test_causal_mask_device():
    assert causal_mask(3, device="cpu").device.type == "cpu"
    assert causal_mask(3, device=torch.device("cpu")).device.type == "cpu"


def test_padding_mask():
    tokens = torch.tensor([[5, 7, 9, 0], [4, 0, 0, 0], [0, 3, 2, 1]])
    expected = torch.tensor(
        [[True, True, True, False], [True, False, False, False], [False, True, True, True]]
    )
    assert torch.equal(padding_mask(tokens, pad_id=0), expected)
    assert padding_mask(tokens, pad_id=0).dtype == torch.bool
    assert torch.equal(padding_mask(tokens, pad_id=9)[0], torch.tensor([True, True, False, True]))


def test_lengths_to_mask():
    expected = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    assert torch.equal(lengths_to_mask(torch.tensor([2, 3, 0])), expected)
    assert lengths_to_mask(torch.tensor([2, 3, 0])).dtype == torch.bool
    wide = lengths_to_mask(torch.tensor([2, 3, 0]), max_len=5)
    assert wide.shape == (3, 5) and torch.equal(wide[:, :3], expected) and not wide[:, 3:].any()


def test_lengths_to_mask_matches_padding_mask():
    tokens = torch.tensor([[5, 7, 9, 0], [4, 0, 0, 0], [8, 3, 2, 1]])
    assert torch.equal(lengths_to_mask(torch.tensor([3, 1, 4])), padding_mask(tokens, pad_id=0))


# Bad input: a clear error that names the shapes or values.


def test_query_and_key_feature_sizes_differ():
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"same feature size d_k.*\(2, 4, 8\).*\(2, 5, 6\)"):
        scaled_dot_product_attention(query, key, value)


def test_key_and_value_lengths_differ():
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    with pytest.raises(ValueError, match=r"same length S.*\(2, 5, 8\).*\(2, 6, 8\)"):
        scaled_dot_product_attention(query, key, value)


def test_batch_dims_do_not_broadcast():
    query, key, value = torch.randn(2, 4, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    with pytest.raises(ValueError, match=r"do not broadcast"):
        scaled_dot_product_attention(query, key, value)


@pytest.mark.parametrize("mask_shape", [(3, 7), (2, 5), (2, 4, 4, 5), (3, 2, 4, 5)])
def test_mask_that_cannot_broadcast(mask_shape):
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.ones(mask_shape, dtype=torch.bool)
    shape = str(mask_shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"mask of shape {shape} cannot broadcast.*\(2, 4, 5\)"):
        scaled_dot_product_attention(query, key, value, mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_mask_of_wrong_dtype(dtype):
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.ones(2, 4, 5, dtype=dtype)
    with pytest.raises(TypeError, match=r"bool tensor with True = may attend.*" + str(dtype)):
        scaled_dot_product_attention(query, key, value, mask)


def test_mask_not_a_tensor():
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    with pytest.raises(TypeError, match="mask must be a bool tensor with True = may attend, got list"):
        scaled_dot_product_attention(query, key, value, [[True] * 5] * 4)


@pytest.mark.parametrize("mask", [None, torch.ones(2, 3, dtype=torch.bool)])
def test_check_bool_mask_accepts_none_and_bool(mask):
    check_bool_mask(mask, "attn_mask")


@pytest.mark.parametrize(
    "mask, got",
    [(torch.ones(2, 3), "dtype torch.float32"), (torch.ones(2, 3, dtype=torch.long), "dtype torch.int64"),
     ([[True]], "list")],
)
def test_check_bool_mask_names_the_mask_its_meaning_and_the_fix(mask, got):
    message = rf"src_padding_mask must be a bool tensor with True = real token, got {got}"
    with pytest.raises(TypeError, match=message):
        check_bool_mask(mask, "src_padding_mask", "real token")
    with pytest.raises(TypeError, match=r"`~mask`.*`mask == 0`"):
        check_bool_mask(mask)


@pytest.mark.parametrize("dropout_p", [-0.1, 1.0, 1.5])
def test_dropout_p_out_of_range(dropout_p):
    query, key, value = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)


def test_inputs_must_be_floating_point_tensors_of_one_dtype():
    x = torch.randn(2, 4, 8)
    with pytest.raises(TypeError, match="key must be a torch.Tensor"):
        scaled_dot_product_attention(x, x.tolist(), x)
    with pytest.raises(TypeError, match="query must be a floating-point tensor"):
        scaled_dot_product_attention(torch.ones(2, 4, 8, dtype=torch.long), x, x)
    with pytest.raises(TypeError, match="share one dtype"):
        scaled_dot_product_attention(x, x.double(), x)
    with pytest.raises(ValueError, match=r"value needs at least 2 dims.*\(8,\)"):
        scaled_dot_product_attention(x, x, torch.randn(8))


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_causal_mask_bad_size(size):
    with pytest.raises(ValueError, match="positive int size"):
        causal_mask(size)


def test_padding_mask_bad_input():
    with pytest.raises(TypeError, match="tensor of token ids"):
        padding_mask([[1, 2, 0]], pad_id=0)
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        padding_mask(torch.tensor([[1.0, 0.0]]), pad_id=0)


def test_lengths_to_mask_bad_input():
    with pytest.raises(TypeError, match=r"torch.tensor\(lengths\)"):
        lengths_to_mask([2, 3])
    with pytest.raises(ValueError, match=r"1-D integer tensor.*\(2, 1\)"):
        lengths_to_mask(torch.tensor([[2], [3]]))
    with pytest.raises(TypeError, match=r"integer lengths, got dtype torch.float32"):
        lengths_to_mask(torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match=r"lengths must be >= 0.*-1"):
        lengths_to_mask(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match=r"exceeds max_len=2"):
        lengths_to_mask(torch.tensor([2, 3]), max_len=2)


@pytest.mark.parametrize("max_len", [-1, 3.5, "4", True])
def test_lengths_to_mask_bad_max_len(max_len):
    with pytest.raises(ValueError, match=f"max_len must be an int >= 0.*got {max_len!r}"):
        lengths_to_mask(torch.tensor([2, 3]), max_len=max_len)
