"""Tests for transformer_lib.sublayers: FeedForward, layer_norm, LayerNorm, Residual against PyTorch."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_lib.sublayers import FeedForward, LayerNorm, Residual, layer_norm

SHAPES = [(7,), (3, 5), (2, 4, 8), (2, 3, 4, 16), (1, 1, 2), (8, 64)]


def seeded(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """A seeded random tensor with non-zero mean and non-unit scale, so normalization has work to do."""
    generator = torch.Generator().manual_seed(seed)
    return (3.0 * torch.randn(*shape, generator=generator) + 1.5).to(dtype)


# Layer norm has two paths: the readable function and the module, which runs PyTorch's fused kernel.
PATHS = ["readable", "fused"]


def normalize(path: str, ln: LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`ln` applied to x by the readable `layer_norm` (with ln's gain, bias, eps) or by the module itself."""
    return layer_norm(x, ln.gain, ln.bias, ln.eps) if path == "readable" else ln(x)


# ---------------------------------------------------------------- FeedForward


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8), (2, 2, 3, 8)])
def test_feed_forward_equals_manual_formula(activation: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ff = FeedForward(8, 32, activation=activation).eval()
    x = seeded(*shape)
    act = F.relu if activation == "relu" else F.gelu
    expected = act(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    torch.testing.assert_close(ff(x), expected)


@pytest.mark.parametrize("activation, torch_act", [("relu", nn.ReLU), ("gelu", nn.GELU)])
def test_feed_forward_equals_torch_sequential_with_copied_weights(activation: str, torch_act: type) -> None:
    torch.manual_seed(1)
    ff = FeedForward(6, 24, activation=activation).eval()
    reference = nn.Sequential(nn.Linear(6, 24), torch_act(), nn.Linear(24, 6))
    reference[0].load_state_dict(ff.linear1.state_dict())
    reference[2].load_state_dict(ff.linear2.state_dict())
    x = seeded(2, 5, 6)
    torch.testing.assert_close(ff(x), reference(x))


def test_feed_forward_gelu_tanh_equals_torch_tanh_gelu() -> None:
    """"gelu_tanh", GPT-2's tanh approximation, is nn.GELU(approximate="tanh"), not the exact GELU."""
    torch.manual_seed(3)
    ff = FeedForward(6, 24, activation="gelu_tanh").eval()
    reference = nn.Sequential(nn.Linear(6, 24), nn.GELU(approximate="tanh"), nn.Linear(24, 6))
    reference[0].load_state_dict(ff.linear1.state_dict())
    reference[2].load_state_dict(ff.linear2.state_dict())
    x = seeded(2, 5, 6)
    torch.testing.assert_close(ff(x), reference(x))
    exact = FeedForward(6, 24, activation="gelu").eval()
    exact.load_state_dict(ff.state_dict())
    assert not torch.allclose(ff(x), exact(x), atol=1e-6, rtol=0)  # the two GELUs differ


def test_feed_forward_without_bias() -> None:
    torch.manual_seed(4)
    ff = FeedForward(8, 32, bias=False).eval()
    assert ff.linear1.bias is None and ff.linear2.bias is None
    assert sum(p.numel() for p in ff.parameters()) == 2 * 8 * 32
    x = seeded(2, 3, 8)
    torch.testing.assert_close(ff(x), F.relu(x @ ff.linear1.weight.T) @ ff.linear2.weight.T)


def test_feed_forward_shapes_and_parameter_count() -> None:
    ff = FeedForward(8, 32)
    assert ff.linear1.weight.shape == (32, 8) and ff.linear2.weight.shape == (8, 32)
    assert sum(p.numel() for p in ff.parameters()) == 8 * 32 + 32 + 32 * 8 + 8
    assert ff(seeded(2, 3, 8)).shape == (2, 3, 8)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward_is_position_wise(activation: str) -> None:
    torch.manual_seed(2)
    ff = FeedForward(8, 16, activation=activation).eval()
    x = seeded(2, 6, 8)
    y = ff(x)
    # Token by token gives the same result as the whole batch at once.
    one_by_one = torch.stack([torch.stack([ff(x[b, t]) for t in range(6)]) for b in range(2)])
    torch.testing.assert_close(y, one_by_one)
    # Changing one position changes that position's output only.
    x_changed = x.clone()
    x_changed[1, 3] = seeded(8, seed=5)
    y_changed = ff(x_changed)
    changed = (y_changed - y).abs().amax(dim=-1) > 0  # (B, T)
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[1, 3] = True
    assert torch.equal(changed, expected)


def test_feed_forward_dropout_only_in_train_mode() -> None:
    torch.manual_seed(3)
    ff = FeedForward(8, 64, dropout=0.5)
    x = seeded(4, 5, 8)
    ff.eval()
    torch.testing.assert_close(ff(x), ff(x))
    without_dropout = ff(x)
    ff.train()
    torch.manual_seed(0)
    first = ff(x)
    torch.manual_seed(1)
    second = ff(x)
    assert not torch.allclose(first, without_dropout)
    assert not torch.allclose(first, second)
    # Dropout acts on the hidden activations, between the two linear layers, as in nn.TransformerEncoderLayer.
    torch.manual_seed(0)
    mask = torch.ones(4, 5, 64).bernoulli_(0.5) / 0.5
    torch.testing.assert_close(first, ff.linear2(mask * F.relu(ff.linear1(x))))


# ---------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [1e-5, 1e-6, 1e-3, 0.5])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_layer_norm_matches_torch_values_and_gradients(
    path: str, shape: tuple[int, ...], eps: float, dtype: torch.dtype, tol: float
) -> None:
    d_model = shape[-1]
    ours = LayerNorm(d_model, eps=eps).to(dtype)
    theirs = nn.LayerNorm(d_model, eps=eps).to(dtype)
    with torch.no_grad():  # non-trivial gain and bias, the same in both
        ours.gain.copy_(seeded(d_model, seed=1))
        ours.bias.copy_(seeded(d_model, seed=2))
        theirs.weight.copy_(ours.gain)
        theirs.bias.copy_(ours.bias)
    x = seeded(*shape, dtype=dtype)
    x_ours = x.clone().requires_grad_()
    x_theirs = x.clone().requires_grad_()
    y_ours, y_theirs = normalize(path, ours, x_ours), theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs, atol=tol, rtol=tol)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    (y_ours * upstream).sum().backward()
    (y_theirs * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=tol, rtol=tol)
    # The gain's and bias's gradients are sums over every token: float32 rounding grows with their number.
    num_tokens = x.numel() // d_model
    torch.testing.assert_close(ours.gain.grad, theirs.weight.grad, atol=tol * num_tokens, rtol=tol)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, atol=tol * num_tokens, rtol=tol)


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_matches_torch_at_the_paper_width_in_float32(path: str) -> None:
    # d_model = 512: values to 1e-6; the readable path's input gradient sums 512 products per token, in
    # another order than PyTorch's fused kernel, so it agrees to a few float32 rounding steps of those sums.
    ours, theirs = LayerNorm(512), nn.LayerNorm(512)
    x = seeded(64, 512)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = normalize(path, ours, x_ours), theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-6, rtol=1e-6)
    upstream = torch.randn(64, 512, generator=torch.Generator().manual_seed(3))
    (y_ours * upstream).sum().backward()
    (y_theirs * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_readable_layer_norm_equals_the_module(
    shape: tuple[int, ...], dtype: torch.dtype, tol: float
) -> None:
    d_model = shape[-1]
    ln = LayerNorm(d_model, eps=1e-4).to(dtype)
    with torch.no_grad():
        ln.gain.copy_(seeded(d_model, seed=1))
        ln.bias.copy_(seeded(d_model, seed=2))
    x = seeded(*shape, dtype=dtype)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    results = {}
    for path in PATHS:
        x_path = x.clone().requires_grad_()
        y = normalize(path, ln, x_path)
        results[path] = (y, *torch.autograd.grad(y, [x_path, ln.gain, ln.bias], upstream))
    num_tokens = x.numel() // d_model  # the gain's and bias's gradients sum over every token
    for name, ours, fused, atol in zip(
        ["output", "input gradient", "gain gradient", "bias gradient"],
        results["readable"],
        results["fused"],
        [tol, tol, tol * num_tokens, tol * num_tokens],
        strict=True,
    ):
        torch.testing.assert_close(ours, fused, atol=atol, rtol=tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(3, 16), (2, 5, 64)])
def test_layer_norm_output_has_zero_mean_unit_variance_per_token(path: str, shape: tuple[int, ...]) -> None:
    ln = LayerNorm(shape[-1], eps=1e-12).double()  # gain 1, bias 0 at initialization
    y = normalize(path, ln, seeded(*shape, dtype=torch.float64))
    torch.testing.assert_close(y.mean(dim=-1), torch.zeros(shape[:-1], dtype=torch.float64))
    torch.testing.assert_close(y.var(dim=-1, correction=0), torch.ones(shape[:-1], dtype=torch.float64))


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_applies_gain_and_bias_after_normalizing(path: str) -> None:
    ln = LayerNorm(4).double()
    with torch.no_grad():
        ln.gain.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        ln.bias.copy_(torch.tensor([0.0, 1.0, 2.0, -3.0]))
    x = seeded(3, 4, dtype=torch.float64)
    x_hat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, correction=0, keepdim=True) + ln.eps)
    torch.testing.assert_close(normalize(path, ln, x), ln.gain * x_hat + ln.bias)


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_of_a_token_does_not_depend_on_other_tokens(path: str) -> None:
    ln = LayerNorm(8)
    x = seeded(4, 6, 8)
    alone = normalize(path, ln, x[2, 3])
    torch.testing.assert_close(normalize(path, ln, x)[2, 3], alone)
    x_other = x.clone()
    x_other[0] *= 100.0
    x_other[2, :3] += 7.0
    torch.testing.assert_close(normalize(path, ln, x_other)[2, 3], alone)


@pytest.mark.parametrize("path, gain", [("readable", 1.0), ("readable", 0.7), ("fused", 1.0)])
def test_layer_norm_with_one_feature_gives_the_bias_and_zero_input_gradient(path: str, gain: float) -> None:
    # With d_model = 1 every token equals its own mean: x_hat = 0 exactly, so y = bias and dy/dx = 0.
    # The readable path gives exactly that for any gain. PyTorch's fused backward (LayerNorm's and
    # nn.LayerNorm's) does so at the initial gain of 1 only; with another gain it returns float32 rounding
    # noise times 1/sqrt(eps), so the fused path is compared with the analytic answer at gain 1.
    ln = LayerNorm(1)
    with torch.no_grad():
        ln.gain.fill_(gain)
        ln.bias.fill_(0.25)
    x = seeded(3, 4, 1).requires_grad_()
    y = normalize(path, ln, x)
    torch.testing.assert_close(y, torch.full((3, 4, 1), 0.25))
    (y * seeded(3, 4, 1, seed=9)).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3, 4, 1))


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_of_a_constant_token_is_finite(path: str) -> None:
    y = normalize(path, LayerNorm(5), torch.full((2, 5), 3.0))
    torch.testing.assert_close(y, torch.zeros(2, 5))


# ---------------------------------------------------------------- Residual


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_norm_and_residual_without_bias_match_torch(norm_first: bool) -> None:
    """bias=False leaves the offset out, as nn.LayerNorm(bias=False): only the gain is learned."""
    torch.manual_seed(0)
    ours, theirs = LayerNorm(8, bias=False), nn.LayerNorm(8, bias=False)
    assert ours.bias is None and [name for name, _ in ours.named_parameters()] == ["gain"]
    with torch.no_grad():
        ours.gain.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.gain)
    x = 3 * torch.randn(2, 5, 8) + 1  # (B, T, d_model)
    torch.testing.assert_close(ours(x), theirs(x))
    residual = Residual(8, norm_first=norm_first, bias=False)
    assert residual.norm.bias is None
    ff = FeedForward(8, 16)
    expected = x + ff(F.layer_norm(x, (8,))) if norm_first else F.layer_norm(x + ff(x), (8,))
    torch.testing.assert_close(residual(x, ff), expected)


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_equals_its_formula(norm_first: bool) -> None:
    torch.manual_seed(4)
    block = Residual(8, norm_first=norm_first)
    with torch.no_grad():
        block.norm.gain.copy_(seeded(8, seed=6))
        block.norm.bias.copy_(seeded(8, seed=7))
    ff = FeedForward(8, 16)
    x = seeded(2, 5, 8)
    reference_norm = nn.LayerNorm(8)
    reference_norm.load_state_dict({"weight": block.norm.gain, "bias": block.norm.bias})
    if norm_first:
        expected = x + ff(reference_norm(x))
    else:
        expected = reference_norm(x + ff(x))
    torch.testing.assert_close(block(x, ff), expected)
    assert block.norm.eps == 1e-5 and Residual(8, eps=1e-6).norm.eps == 1e-6


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_with_zero_sublayer(norm_first: bool) -> None:
    block = Residual(6, norm_first=norm_first)
    x = seeded(3, 6)
    expected = x if norm_first else block.norm(x)
    torch.testing.assert_close(block(x, torch.zeros_like), expected)


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_dropout_only_in_train_mode(norm_first: bool) -> None:
    block = Residual(8, dropout=0.5, norm_first=norm_first)
    ff = FeedForward(8, 16)
    x = seeded(4, 6, 8)
    block.eval()
    plain = block(x, ff)
    torch.testing.assert_close(block(x, ff), plain)
    block.train()
    torch.manual_seed(0)
    first = block(x, ff)
    torch.manual_seed(1)
    second = block(x, ff)
    assert not torch.allclose(first, plain)
    assert not torch.allclose(first, second)
    # With the dropped positions zeroed and the rest scaled by 1 / (1 - p), the formula holds exactly.
    torch.manual_seed(0)
    mask = torch.ones(4, 6, 8).bernoulli_(0.5) / 0.5
    sub = ff(block.norm(x) if norm_first else x)
    expected = x + mask * sub if norm_first else block.norm(x + mask * sub)
    torch.testing.assert_close(first, expected)


# ---------------------------------------------------------------- Bad input


def test_feed_forward_rejects_unknown_activation() -> None:
    expected = r"activation must be one of \('relu', 'gelu', 'gelu_tanh'\), got 'tanh'"
    with pytest.raises(ValueError, match=expected):
        FeedForward(8, 16, activation="tanh")


@pytest.mark.parametrize("d_model, d_ff, bad", [(0, 16, "d_model"), (8, 0, "d_ff"), (-2, 16, "d_model")])
def test_feed_forward_rejects_non_positive_sizes(d_model: int, d_ff: int, bad: str) -> None:
    with pytest.raises(ValueError, match=f"{bad} must be at least 1"):
        FeedForward(d_model, d_ff)


def test_sizes_must_be_integers() -> None:
    with pytest.raises(ValueError, match="d_ff must be an int, got float"):
        FeedForward(8, 16.0)
    with pytest.raises(ValueError, match="d_model must be an int, got bool"):
        LayerNorm(True)


@pytest.mark.parametrize("module", [FeedForward(8, 16), LayerNorm(8)], ids=["FeedForward", "LayerNorm"])
def test_wrong_feature_size_names_the_shapes(module: nn.Module) -> None:
    name = type(module).__name__
    with pytest.raises(ValueError, match=rf"{name} expects .*d_model=8, got shape \(2, 3, 5\)"):
        module(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        module(torch.tensor(1.0))


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_rejects_wrong_feature_size(norm_first: bool) -> None:
    with pytest.raises(ValueError, match=r"Residual expects .*d_model=8, got shape \(2, 4\)"):
        Residual(8, norm_first=norm_first)(torch.zeros(2, 4), FeedForward(4, 8))


def test_residual_rejects_sublayer_that_changes_the_shape() -> None:
    with pytest.raises(ValueError, match=r"must return its input's shape \(2, 3, 8\).*got \(2, 3, 1\)"):
        Residual(8)(torch.zeros(2, 3, 8), lambda x: x.sum(-1, keepdim=True))


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_layer_norm_rejects_non_positive_eps(eps: float) -> None:
    with pytest.raises(ValueError, match="eps must be a small positive number"):
        LayerNorm(8, eps=eps)
    with pytest.raises(ValueError, match="eps must be a small positive number"):
        Residual(8, eps=eps)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_readable_layer_norm_rejects_non_positive_eps(eps: float) -> None:
    with pytest.raises(ValueError, match="eps must be a small positive number such as 1e-5"):
        layer_norm(torch.zeros(2, 8), torch.ones(8), torch.zeros(8), eps=eps)


def test_readable_layer_norm_rejects_wrong_input() -> None:
    gain, bias = torch.ones(8), torch.zeros(8)
    with pytest.raises(ValueError, match=r"layer_norm expects .*d_model=8, got shape \(2, 3, 5\)"):
        layer_norm(torch.zeros(2, 3, 5), gain, bias)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        layer_norm(torch.tensor(1.0), gain, bias)
    wrong_dtype = "layer_norm expects floating-point token vectors, got dtype torch.int64"
    with pytest.raises(TypeError, match=wrong_dtype):
        layer_norm(torch.zeros(2, 8, dtype=torch.long), gain, bias)
    with pytest.raises(TypeError, match="layer_norm expects a torch.Tensor, got list"):
        layer_norm([[0.0] * 8], gain, bias)


@pytest.mark.parametrize("gain_shape, bias_shape", [((8,), (4,)), ((4,), (8,)), ((1, 8), (1, 8)), ((), ())])
def test_readable_layer_norm_rejects_gain_and_bias_of_the_wrong_shape(
    gain_shape: tuple[int, ...], bias_shape: tuple[int, ...]
) -> None:
    expected = r"layer_norm expects gain and bias of shape \(d_model,\), " + re.escape(
        f"got {gain_shape} and {bias_shape}"
    )
    with pytest.raises(ValueError, match=expected):
        layer_norm(torch.zeros(2, 8), torch.ones(gain_shape), torch.zeros(bias_shape))


def test_layer_norm_rejects_non_positive_d_model() -> None:
    with pytest.raises(ValueError, match="d_model must be at least 1, got 0"):
        LayerNorm(0)
    with pytest.raises(ValueError, match="d_model must be at least 1, got 0"):
        Residual(0)


@pytest.mark.parametrize(
    "module", [FeedForward(8, 16), LayerNorm(8), Residual(8)], ids=["FeedForward", "LayerNorm", "Residual"]
)
def test_non_floating_or_non_tensor_input_is_rejected(module: nn.Module) -> None:
    def call(x):
        return module(x, nn.Identity()) if isinstance(module, Residual) else module(x)

    name = type(module).__name__
    wrong_dtype = rf"{name} expects floating-point token vectors, got dtype torch.int64"
    with pytest.raises(TypeError, match=wrong_dtype):
        call(torch.zeros(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match=rf"{name} expects a torch.Tensor, got list"):
        call([[0.0] * 8])


@pytest.mark.parametrize("norm_first", ["pre", 1, None])
def test_residual_rejects_a_non_bool_norm_first(norm_first: object) -> None:
    with pytest.raises(ValueError, match=r"norm_first must be True \(pre-LN\) or False \(post-LN\)"):
        Residual(8, norm_first=norm_first)


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_rejects_a_sublayer_that_returns_a_tuple(norm_first: bool) -> None:
    attention = nn.MultiheadAttention(8, 2, batch_first=True)  # returns (output, weights)
    with pytest.raises(TypeError, match=r"must return a tensor, got tuple.*lambda h: attn\(h, h, h\)\[0\]"):
        Residual(8, norm_first=norm_first)(torch.zeros(2, 3, 8), lambda h: attention(h, h, h))
