"""Tests for transformer_lib/positional.py: the formula, the relative-position properties, and the errors."""

import math

import pytest
import torch

from transformer_lib.attention import scaled_dot_product_attention
from transformer_lib.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shift_matrix(k: int, d_model: int) -> torch.Tensor:
    """Block-diagonal rotation that should map PE(p) to PE(p + k), built from the formula (float64)."""
    angle = k * 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    cos, sin = angle.cos().tolist(), angle.sin().tolist()
    blocks = [torch.tensor([[c, s], [-s, c]], dtype=torch.float64) for c, s in zip(cos, sin, strict=True)]
    return torch.block_diag(*blocks)


def _rope_reference(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """RoPE as in the RoFormer reference code: pairs as complex numbers times exp(i * p * theta), float64."""
    T, d_head = x.shape[-2:]
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angle = torch.arange(start, start + T, dtype=torch.float64).unsqueeze(1) * theta
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d_head // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).flatten(-2)


# sinusoidal_encoding


@pytest.mark.parametrize("d_model", [2, 8, 64])
def test_position_zero_is_zeros_and_ones(d_model):
    pe = sinusoidal_encoding(10, d_model)
    expected = torch.tensor([0.0, 1.0] * (d_model // 2))
    assert torch.equal(pe[0], expected)


@pytest.mark.parametrize("max_len, d_model", [(1, 2), (30, 6), (50, 16)])
def test_every_entry_matches_the_formula(max_len, d_model):
    pe = sinusoidal_encoding(max_len, d_model)
    assert pe.shape == (max_len, d_model) and pe.dtype == torch.float32
    expected = torch.empty(max_len, d_model, dtype=torch.float64)
    for p in range(max_len):
        for i in range(d_model // 2):
            angle = p / 10000 ** (2 * i / d_model)
            expected[p, 2 * i] = math.sin(angle)
            expected[p, 2 * i + 1] = math.cos(angle)
    torch.testing.assert_close(pe.double(), expected, atol=1e-6, rtol=0)


def test_hand_computed_entries():
    # d_model = 4: pair 0 has frequency 1, pair 1 has 1 / 10000^(2/4) = 1 / 100.
    pe = sinusoidal_encoding(101, 4)
    assert pe[1, 0].item() == pytest.approx(0.8414709848, abs=1e-7)  # sin(1)
    assert pe[1, 1].item() == pytest.approx(0.5403023059, abs=1e-7)  # cos(1)
    assert pe[100, 2].item() == pytest.approx(0.8414709848, abs=1e-7)  # sin(100 / 100)
    assert pe[100, 3].item() == pytest.approx(0.5403023059, abs=1e-7)  # cos(100 / 100)
    assert pe[2, 3].item() == pytest.approx(math.cos(0.02), abs=1e-7)


def test_large_positions_are_accurate():
    pe = sinusoidal_encoding(5000, 8)
    for i in range(4):
        angle = 4999 / 10000 ** (2 * i / 8)
        assert pe[4999, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[4999, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("d_model", [8, 32])
def test_dot_product_depends_only_on_distance(d_model):
    pe = sinusoidal_encoding(60, d_model).double()
    gram = pe @ pe.T
    omega = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    offsets = torch.arange(60, dtype=torch.float64)
    expected = torch.cos((offsets[:, None] - offsets[None, :])[..., None] * omega).sum(-1)
    torch.testing.assert_close(gram, expected, atol=1e-5, rtol=0)
    for k in range(60):
        diagonal = gram.diagonal(k)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 5, 37])
@pytest.mark.parametrize("d_model", [4, 16])
def test_fixed_linear_map_shifts_every_position_by_k(k, d_model):
    pe = sinusoidal_encoding(80, d_model).double()
    m_k = _shift_matrix(k, d_model)
    torch.testing.assert_close(pe[:-k] @ m_k.T, pe[k:], atol=1e-6, rtol=0)
    torch.testing.assert_close(m_k @ m_k.T, torch.eye(d_model, dtype=torch.float64))


@pytest.mark.parametrize("d_model", [7, 1, 0, -4])
def test_sinusoidal_encoding_rejects_a_bad_d_model(d_model):
    with pytest.raises(ValueError, match=rf"d_model must be a positive even int.*got {d_model}"):
        sinusoidal_encoding(10, d_model)


def test_sinusoidal_encoding_rejects_a_bad_max_len():
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        sinusoidal_encoding(0, 8)


# SinusoidalPositionalEncoding


@pytest.mark.parametrize("shape", [(2, 5, 16), (5, 16), (2, 3, 5, 16)])
def test_sinusoidal_module_adds_the_table(shape):
    module = SinusoidalPositionalEncoding(16, max_len=20)
    x = torch.randn(*shape, generator=_generator())
    torch.testing.assert_close(module(x), x + sinusoidal_encoding(20, 16)[:5])
    assert torch.equal(module(torch.zeros(shape)), sinusoidal_encoding(5, 16).expand(shape))


def test_sinusoidal_module_keeps_the_input_dtype():
    module = SinusoidalPositionalEncoding(8, max_len=10)
    assert module(torch.zeros(1, 3, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("start", [0, 1, 6, 14])
def test_sinusoidal_start_equals_slicing_a_longer_call(start):
    module = SinusoidalPositionalEncoding(12, max_len=20)
    x = torch.randn(2, 20, 12, generator=_generator(1))
    full = module(x)
    assert torch.equal(module(x[:, start:], start=start), full[:, start:])
    assert torch.equal(module(x[:, start : start + 1], start=start), full[:, start : start + 1])


def test_sinusoidal_table_is_a_non_persistent_buffer():
    module = SinusoidalPositionalEncoding(8, max_len=50)
    assert list(module.state_dict()) == []
    assert list(module.parameters()) == []
    assert dict(module.named_buffers())["pe"].shape == (50, 8)
    assert module.double().pe.dtype == torch.float64  # buffers follow .to()/.double()


def test_sinusoidal_dropout_only_in_training():
    module = SinusoidalPositionalEncoding(16, max_len=64, dropout=0.5)
    x = torch.ones(4, 64, 16)
    torch.manual_seed(0)
    assert (module.train()(x) == 0).any()
    torch.testing.assert_close(module.eval()(x), x + module.pe)


# LearnedPositionalEmbedding


def test_learned_adds_its_rows():
    module = LearnedPositionalEmbedding(max_len=10, d_model=6)
    x = torch.randn(3, 4, 6, generator=_generator(2))
    out = module(x, start=2)
    assert out.shape == (3, 4, 6)
    torch.testing.assert_close(out, x + module.embedding.weight[2:6])


def test_learned_gradients_reach_the_used_rows_and_the_input():
    module = LearnedPositionalEmbedding(max_len=10, d_model=6)
    x = torch.randn(2, 4, 6, generator=_generator(3), requires_grad=True)
    module(x, start=3).pow(2).sum().backward()
    grad = module.embedding.weight.grad
    assert grad.shape == (10, 6)
    used = grad.abs().sum(dim=1) > 0
    assert used.tolist() == [False] * 3 + [True] * 4 + [False] * 3
    expected = 2 * (x + module.embedding.weight[3:7]).sum(dim=0)  # d/dE of the squared sum, summed over batch
    torch.testing.assert_close(grad[3:7], expected.detach())
    assert x.grad is not None and x.grad.shape == x.shape


def test_learned_table_is_a_parameter_in_the_state_dict():
    module = LearnedPositionalEmbedding(max_len=12, d_model=4)
    assert {name: tuple(t.shape) for name, t in module.state_dict().items()} == {"embedding.weight": (12, 4)}
    assert sum(p.numel() for p in module.parameters()) == 12 * 4


@pytest.mark.parametrize("start", [0, 3, 9])
def test_learned_start_equals_slicing_a_longer_call(start):
    module = LearnedPositionalEmbedding(max_len=10, d_model=6)
    x = torch.randn(2, 10, 6, generator=_generator(4))
    assert torch.equal(module(x[:, start:], start=start), module(x)[:, start:])


def test_learned_dropout_only_in_training():
    module = LearnedPositionalEmbedding(max_len=64, d_model=16, dropout=0.5)
    x = torch.ones(4, 64, 16)
    torch.manual_seed(0)
    assert (module.train()(x) == 0).any()
    torch.testing.assert_close(module.eval()(x), x + module.embedding.weight)


# RotaryEmbedding


@pytest.mark.parametrize("shape", [(7, 8), (2, 9, 16), (2, 3, 5, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotary_matches_complex_reference(shape, dtype):
    rope = RotaryEmbedding(shape[-1], max_len=64)
    x = torch.randn(*shape, generator=_generator(5), dtype=dtype)
    out = rope(x)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), _rope_reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base", [100.0, 10000.0, 500000.0])
def test_rotary_base(base):
    rope = RotaryEmbedding(8, max_len=32, base=base)
    x = torch.randn(2, 32, 8, generator=_generator(6), dtype=torch.float64)
    torch.testing.assert_close(rope(x, start=0), _rope_reference(x, base=base), atol=1e-5, rtol=1e-5)


def test_rotary_leaves_position_zero_and_keeps_norms():
    rope = RotaryEmbedding(16, max_len=200)
    x = torch.randn(3, 200, 16, generator=_generator(7))
    out = rope(x)
    assert torch.equal(out[:, 0], x[:, 0])
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    pairs_in = x.reshape(3, 200, 8, 2).norm(dim=-1)
    torch.testing.assert_close(out.reshape(3, 200, 8, 2).norm(dim=-1), pairs_in)  # each pair is rotated


@pytest.mark.parametrize("d_head", [2, 8, 64])
def test_rotary_score_depends_only_on_offset(d_head):
    rope = RotaryEmbedding(d_head, max_len=256)
    q = torch.randn(d_head, generator=_generator(8))
    k = torch.randn(d_head, generator=_generator(9))
    queries = rope(q.expand(256, d_head))  # row m: q at position m
    keys = rope(k.expand(256, d_head))  # row n: k at position n
    scores = queries @ keys.T  # scores[m, n]
    for m, n, shift in [(0, 0, 100), (5, 2, 7), (2, 5, 40), (10, 90, 150), (200, 3, 50)]:
        assert scores[m + shift, n + shift].item() == pytest.approx(scores[m, n].item(), abs=1e-4)
    for offset in range(-255, 256, 17):
        diagonal = scores.diagonal(offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4, rtol=1e-4)
    assert scores[0, 0].item() == pytest.approx(torch.dot(q, k).item(), abs=1e-5)


def test_rotary_attention_weights_are_shift_invariant():
    rope = RotaryEmbedding(8, max_len=64)
    q, k, v = torch.randn(3, 2, 4, 10, 8, generator=_generator(10)).unbind(0)  # each (B, H, T, d_head)
    _, weights = scaled_dot_product_attention(rope(q), rope(k), v)
    _, shifted = scaled_dot_product_attention(rope(q, start=30), rope(k, start=30), v)
    torch.testing.assert_close(shifted, weights, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("start", [0, 4, 9])
def test_rotary_start_equals_slicing_a_longer_call(start):
    rope = RotaryEmbedding(8, max_len=10)
    x = torch.randn(2, 3, 10, 8, generator=_generator(11))
    # The complex product may round the last bit differently in its vectorized and scalar loops: equal up to
    # float32 rounding, not bit for bit.
    piece, whole = rope(x[..., start:, :], start=start), rope(x)[..., start:, :]
    torch.testing.assert_close(piece, whole, rtol=1e-6, atol=1e-6)


def test_rotary_tables_are_non_persistent_buffers():
    rope = RotaryEmbedding(8, max_len=16)
    assert list(rope.state_dict()) == [] and list(rope.parameters()) == []
    assert {name: tuple(t.shape) for name, t in rope.named_buffers()} == {"cos": (16, 4), "sin": (16, 4)}


# Permutation equivariance: lost only when positions are added


def _self_attention(x: torch.Tensor, weights: tuple[torch.Tensor, ...], add=None, rope=None) -> torch.Tensor:
    """Self-attention of x (B, T, d); `add` adds positions to x, `rope` rotates the queries and keys."""
    if add is not None:
        x = add(x)
    w_q, w_k, w_v = weights
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    if rope is not None:
        q, k = rope(q), rope(k)
    return scaled_dot_product_attention(q, k, v)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_without_positions_is_permutation_equivariant(seed):
    generator = _generator(seed)
    weights = tuple(torch.randn(8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    x = torch.randn(2, 7, 8, generator=generator, dtype=torch.float64)
    perm = torch.randperm(7, generator=generator)
    torch.testing.assert_close(_self_attention(x[:, perm], weights), _self_attention(x, weights)[:, perm])


@pytest.mark.parametrize("scheme", ["sinusoidal", "learned", "rotary"])
def test_positions_break_permutation_equivariance(scheme):
    torch.manual_seed(12)  # the learned table's initial values
    generator = _generator(12)
    weights = tuple(torch.randn(8, 8, generator=generator) for _ in range(3))
    x = torch.randn(2, 7, 8, generator=generator)
    perm = torch.tensor([6, 0, 1, 2, 3, 4, 5])
    add = {
        "sinusoidal": SinusoidalPositionalEncoding(8, max_len=7),
        "learned": LearnedPositionalEmbedding(max_len=7, d_model=8),
    }.get(scheme)
    rope = RotaryEmbedding(8, max_len=7) if scheme == "rotary" else None
    with torch.no_grad():
        permuted_then_attended = _self_attention(x[:, perm], weights, add, rope)
        attended_then_permuted = _self_attention(x, weights, add, rope)[:, perm]
    assert (permuted_then_attended - attended_then_permuted).abs().max() > 0.01


# Bad input

MODULES = {
    "sinusoidal": lambda: SinusoidalPositionalEncoding(8, max_len=10),
    "learned": lambda: LearnedPositionalEmbedding(max_len=10, d_model=8),
    "rotary": lambda: RotaryEmbedding(8, max_len=10),
}


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("T, start", [(11, 0), (4, 7), (1, 10)])
def test_sequence_past_the_table_names_t_start_and_max_len(name, T, start):
    module = MODULES[name]()
    with pytest.raises(ValueError, match=rf"T={T} .*start={start}.*max_len=10.*max_len >= {start + T}"):
        module(torch.zeros(2, T, 8), start=start)


@pytest.mark.parametrize("name", list(MODULES))
def test_wrong_feature_size_names_the_shape(name):
    module = MODULES[name]()
    shape = r"\(\.\.\., T, d_(model|head)\) with d_(model|head)=8, got \(2, 5, 6\)"
    with pytest.raises(ValueError, match=shape):
        module(torch.zeros(2, 5, 6))


@pytest.mark.parametrize("name", list(MODULES))
def test_one_dimensional_input_is_rejected(name):
    with pytest.raises(ValueError, match=r"got \(8,\)"):
        MODULES[name]()(torch.zeros(8))


@pytest.mark.parametrize("name", list(MODULES))
def test_negative_or_non_int_start_is_rejected(name):
    module = MODULES[name]()
    with pytest.raises(ValueError, match="start must be >= 0"):
        module(torch.zeros(1, 2, 8), start=-1)
    with pytest.raises(ValueError, match="start must be an int"):
        module(torch.zeros(1, 2, 8), start=1.0)


def test_non_tensor_input_is_rejected():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        SinusoidalPositionalEncoding(8)([[0.0] * 8])


@pytest.mark.parametrize("d", [7, 0])
def test_odd_feature_size_is_rejected_at_construction(d):
    with pytest.raises(ValueError, match=rf"d_model must be a positive even int.*got {d}"):
        SinusoidalPositionalEncoding(d)
    with pytest.raises(ValueError, match=rf"d_head must be a positive even int.*got {d}"):
        RotaryEmbedding(d)


def test_rotary_rejects_a_bad_max_len():
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        RotaryEmbedding(8, max_len=0)


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_floating_input_is_rejected(name, dtype):
    with pytest.raises(TypeError, match=rf"floating-point vectors, got dtype {dtype}"):
        MODULES[name]()(torch.zeros(1, 2, 8, dtype=dtype))


@pytest.mark.parametrize("d_model", [8.0, True, "8"])
def test_sinusoidal_encoding_rejects_a_non_int_d_model(d_model):
    with pytest.raises(ValueError, match="d_model must be a positive even int"):
        sinusoidal_encoding(10, d_model)


@pytest.mark.parametrize("max_len", [10.0, True, -3])
def test_sinusoidal_encoding_rejects_a_non_int_or_negative_max_len(max_len):
    with pytest.raises(ValueError, match=rf"max_len must be a positive int.*got {max_len!r}"):
        sinusoidal_encoding(max_len, 8)


@pytest.mark.parametrize(
    "max_len, d_model, bad", [(0, 8, "max_len"), (10, -1, "d_model"), (10, 7.5, "d_model")]
)
def test_learned_rejects_bad_sizes_at_construction(max_len, d_model, bad):
    with pytest.raises(ValueError, match=rf"{bad} must be a positive int"):
        LearnedPositionalEmbedding(max_len=max_len, d_model=d_model)


@pytest.mark.parametrize("base", [1.0, 0.0, -10000.0, float("nan"), "10000"])
def test_rotary_rejects_a_bad_base(base):
    with pytest.raises(ValueError, match="base must be a number > 1"):
        RotaryEmbedding(8, base=base)


def test_rotary_is_accurate_at_large_positions():
    # The angle tables are computed in float64: at positions in the thousands a float32 angle would be off by
    # about 1e-4 radians, and the rotated vectors with it.
    rope = RotaryEmbedding(16, max_len=4096)
    x = torch.randn(2, 8, 16, generator=_generator(13), dtype=torch.float64)
    torch.testing.assert_close(rope(x, start=4088), _rope_reference(x, start=4088), atol=1e-6, rtol=0)
