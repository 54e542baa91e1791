"""Tests for transformer_lib.encoder: parity with nn.TransformerEncoder(Layer), padding, masks, bad input."""

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

from transformer_lib.encoder import Encoder, EncoderLayer, load_torch_encoder, load_torch_encoder_layer

D_MODEL, NUM_HEADS, D_FF = 16, 4, 32
FIGURE = Path(__file__).resolve().parent.parent / "book" / "figures" / "transformer_architecture.svg"


def _nudge(module: nn.Module, seed: int) -> nn.Module:
    """Add noise to every parameter (layer norms start at 1 and 0, torch's stacked layers start identical)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return module


def _batch(seed: int = 0, lengths: tuple[int, ...] = (7, 5, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, S, d_model) and a padding mask (B, S), True at real tokens."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), D_MODEL, generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


def _torch_layer(norm_first: bool, activation: str, seed: int = 0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, NUM_HEADS, D_FF, dropout=0.1, activation=activation, norm_first=norm_first, batch_first=True
    )
    return _nudge(layer, seed).eval()


def _torch_encoder(norm_first: bool, activation: str, final_norm: bool, nested: bool = False, num_layers=3):
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(
        D_MODEL, NUM_HEADS, D_FF, dropout=0.1, activation=activation, norm_first=norm_first, batch_first=True
    )
    encoder = nn.TransformerEncoder(
        layer, num_layers, norm=nn.LayerNorm(D_MODEL) if final_norm else None, enable_nested_tensor=nested
    )
    return _nudge(encoder, 1).eval()


def _loaded_layer(norm_first: bool, activation: str) -> tuple[EncoderLayer, nn.TransformerEncoderLayer]:
    theirs = _torch_layer(norm_first, activation)
    ours = EncoderLayer(D_MODEL, NUM_HEADS, D_FF, dropout=0.1, activation=activation, norm_first=norm_first)
    load_torch_encoder_layer(ours, theirs)
    return ours.eval(), theirs


# Parity with PyTorch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_encoder_layer_matches_torch(norm_first, activation, grad):
    ours, theirs = _loaded_layer(norm_first, activation)
    x, mask = _batch()
    with torch.set_grad_enabled(grad):  # without gradients PyTorch takes its fused inference path
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x, mask), theirs(x, src_key_padding_mask=~mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_encoder_matches_torch(norm_first, activation, final_norm):
    theirs = _torch_encoder(norm_first, activation, final_norm)
    ours = Encoder(
        3,
        D_MODEL,
        NUM_HEADS,
        D_FF,
        dropout=0.1,
        activation=activation,
        norm_first=norm_first,
        final_norm=final_norm,
    )
    load_torch_encoder(ours, theirs)
    ours.eval()
    x, mask = _batch(seed=2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mask), theirs(x, src_key_padding_mask=~mask), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("final_norm", [False, True])
def test_encoder_matches_torch_nested_tensor_path_at_real_positions(final_norm):
    theirs = _torch_encoder(norm_first=False, activation="relu", final_norm=final_norm, nested=True)
    ours = Encoder(3, D_MODEL, NUM_HEADS, D_FF, final_norm=final_norm)
    load_torch_encoder(ours, theirs)
    ours.eval()
    x, mask = _batch(seed=3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are in prototype stage"
        expected = theirs(x, src_key_padding_mask=~mask)
    # The nested-tensor path skips padded positions and writes zeros; a final norm maps zeros to its bias.
    padded_value = theirs.norm.bias if final_norm else torch.zeros(D_MODEL)
    torch.testing.assert_close(expected[~mask], padded_value.expand(int((~mask).sum()), D_MODEL))
    torch.testing.assert_close(ours(x, mask)[mask], expected[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_gradients_match_torch(norm_first):
    theirs = _torch_encoder(norm_first, "gelu", final_norm=True)
    ours = Encoder(3, D_MODEL, NUM_HEADS, D_FF, activation="gelu", norm_first=norm_first)
    load_torch_encoder(ours, theirs)
    ours.eval()
    x, mask = _batch(seed=4)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours(x_ours, mask)[mask] ** 2).sum().backward()
    (theirs(x_theirs, src_key_padding_mask=~mask)[mask] ** 2).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=1e-4, rtol=1e-4)
    ours_gain = ours.layers[0].attn_residual.norm.gain.grad
    torch.testing.assert_close(ours_gain, theirs.layers[0].norm1.weight.grad, atol=1e-4, rtol=1e-4)


def test_layer_weights_match_torch_multihead_attention():
    ours, theirs = _loaded_layer(norm_first=False, activation="relu")
    x, mask = _batch(seed=5)
    with torch.no_grad():
        _, weights = ours(x, mask, need_weights=True)
        _, expected = theirs.self_attn(x, x, x, key_padding_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=0)


# Properties -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("extra", [1, 3])
def test_padding_never_changes_real_outputs(norm_first, extra):
    torch.manual_seed(7)
    encoder = Encoder(3, D_MODEL, NUM_HEADS, D_FF, norm_first=norm_first).eval()
    _nudge(encoder, 7)
    x, _ = _batch(seed=7, lengths=(4,))
    junk = 10 * torch.randn(1, extra, D_MODEL)
    padded = torch.cat([x, junk], dim=1)  # (1, 4 + extra, d_model)
    mask = torch.arange(4 + extra)[None, :] < 4
    with torch.no_grad():
        torch.testing.assert_close(encoder(padded, mask)[:, :4], encoder(x), atol=1e-6, rtol=0)
        assert not torch.allclose(encoder(padded)[:, :4], encoder(x), atol=1e-3), (
            "without the mask it must differ"
        )


def test_padding_in_a_batch_matches_each_sequence_alone():
    torch.manual_seed(8)
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF, norm_first=True).eval()
    x, mask = _batch(seed=8, lengths=(6, 3, 1))
    with torch.no_grad():
        batched = encoder(x, mask)
        for b, length in enumerate(mask.sum(dim=1).tolist()):
            alone = encoder(x[b : b + 1, :length])
            torch.testing.assert_close(batched[b : b + 1, :length], alone, atol=1e-6, rtol=0)


def test_output_has_the_shape_of_the_input():
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF)
    for shape in [(1, 1, D_MODEL), (3, 9, D_MODEL)]:
        assert encoder(torch.randn(shape)).shape == shape


def test_encoder_is_bidirectional():
    torch.manual_seed(9)
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF).eval()
    x = torch.randn(1, 5, D_MODEL, requires_grad=True)
    encoder(x)[0, 0].sum().backward()  # the first output depends on every input, the last one included
    assert (x.grad[0].abs().sum(dim=-1) > 0).all()


def test_encoder_is_permutation_equivariant():
    torch.manual_seed(10)
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF).eval()
    x, mask = _batch(seed=10)
    perm = torch.randperm(x.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(encoder(x[:, perm], mask[:, perm]), encoder(x, mask)[:, perm])


def test_all_padding_sequence_gives_finite_outputs():
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF).eval()
    x, mask = _batch(seed=11, lengths=(3, 0))
    with torch.no_grad():
        y, weights = encoder(x, mask, need_weights=True)
    assert torch.isfinite(y).all() and (weights[:, 1] == 0).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_need_weights(norm_first):
    torch.manual_seed(12)
    encoder = Encoder(3, D_MODEL, NUM_HEADS, D_FF, norm_first=norm_first).eval()
    x, mask = _batch(seed=12)
    with torch.no_grad():
        y, weights = encoder(x, mask, need_weights=True)
        torch.testing.assert_close(y, encoder(x, mask), atol=1e-6, rtol=0)
    B, S = mask.shape  # batch, source length
    assert weights.shape == (3, B, NUM_HEADS, S, S)
    assert (weights.masked_select(~mask[None, :, None, None, :]) == 0).all(), "padding columns must be zero"
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, B, NUM_HEADS, S))
    layer_output, layer_weights = encoder.layers[0](x, mask, need_weights=True)
    torch.testing.assert_close(layer_weights, weights[0])
    assert layer_output.shape == x.shape


def test_dropout_only_in_training():
    torch.manual_seed(13)
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF, dropout=0.5)
    x, mask = _batch(seed=13)
    encoder.eval()
    with torch.no_grad():
        first, second = encoder(x, mask), encoder(x, mask)
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        encoder.train()
        assert not torch.allclose(encoder(x, mask), first, atol=1e-3)


def test_final_norm_is_optional():
    assert isinstance(Encoder(2, D_MODEL, NUM_HEADS, D_FF).norm, nn.Module)
    assert Encoder(2, D_MODEL, NUM_HEADS, D_FF, final_norm=False).norm is None
    assert len(Encoder(4, D_MODEL, NUM_HEADS, D_FF).layers) == 4


# Bad input --------------------------------------------------------------------------------------------------


def test_wrong_feature_size_is_rejected():
    encoder = Encoder(2, D_MODEL, NUM_HEADS, D_FF)
    with pytest.raises(ValueError, match=r"d_model=16.*\(2, 5, 8\)"):
        encoder(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"\(B, S, d_model\).*\(5, 16\)"):
        encoder.layers[0](torch.randn(5, D_MODEL))


def test_mask_of_wrong_shape_names_both_shapes():
    x = torch.randn(2, 5, D_MODEL)
    for module in [Encoder(2, D_MODEL, NUM_HEADS, D_FF), EncoderLayer(D_MODEL, NUM_HEADS, D_FF)]:
        with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 4\)"):
            module(x, torch.ones(2, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"\(2, 5\).*\(5, 2\)"):
            module(x, torch.ones(5, 2, dtype=torch.bool))


def test_mask_must_be_bool():
    with pytest.raises(TypeError, match="bool"):
        Encoder(2, D_MODEL, NUM_HEADS, D_FF)(torch.randn(2, 5, D_MODEL), torch.ones(2, 5))


def test_input_must_be_a_tensor():
    with pytest.raises(TypeError, match="list"):
        Encoder(1, D_MODEL, NUM_HEADS, D_FF)([[0.0] * D_MODEL])


@pytest.mark.parametrize("num_layers", [0, -1, 2.0, True])
def test_num_layers_must_be_positive_int(num_layers):
    with pytest.raises(ValueError, match="num_layers"):
        Encoder(num_layers, D_MODEL, NUM_HEADS, D_FF)


def test_heads_must_divide_d_model_at_construction():
    with pytest.raises(ValueError, match="num_heads"):
        Encoder(2, 10, 3, D_FF)
    with pytest.raises(ValueError, match="num_heads"):
        EncoderLayer(10, 4, D_FF)


@pytest.mark.parametrize(
    ("ours_kwargs", "message"),
    [
        ({"norm_first": True}, "norm_first"),
        ({"activation": "gelu"}, "activation"),
        ({"d_ff": 2 * D_FF}, "d_ff"),
        ({"num_heads": 2}, "num_heads"),
    ],
)
def test_layer_loader_rejects_a_different_configuration(ours_kwargs, message):
    theirs = _torch_layer(norm_first=False, activation="relu")
    kwargs = {"d_model": D_MODEL, "num_heads": NUM_HEADS, "d_ff": D_FF} | ours_kwargs
    with pytest.raises(ValueError, match=message):
        load_torch_encoder_layer(EncoderLayer(**kwargs), theirs)


def test_layer_loader_rejects_other_activation_and_eps():
    theirs = nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, D_FF, activation=torch.tanh, batch_first=True)
    with pytest.raises(ValueError, match="activation"):
        load_torch_encoder_layer(EncoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)
    # PyTorch files the tanh approximation of GELU under "gelu", but FeedForward's GELU is exact.
    tanh_gelu = nn.GELU(approximate="tanh")
    theirs = nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, D_FF, activation=tanh_gelu, batch_first=True)
    with pytest.raises(ValueError, match="activation.*tanh"):
        load_torch_encoder_layer(EncoderLayer(D_MODEL, NUM_HEADS, D_FF, activation="gelu"), theirs)
    theirs = nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, D_FF, layer_norm_eps=1e-6, batch_first=True)
    with pytest.raises(ValueError, match="eps"):
        load_torch_encoder_layer(EncoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)


def test_encoder_loader_rejects_different_depth_or_norm():
    theirs = _torch_encoder(norm_first=False, activation="relu", final_norm=True)
    with pytest.raises(ValueError, match="3 layers.*2"):
        load_torch_encoder(Encoder(2, D_MODEL, NUM_HEADS, D_FF), theirs)
    with pytest.raises(ValueError, match="final_norm=True"):
        load_torch_encoder(Encoder(3, D_MODEL, NUM_HEADS, D_FF, final_norm=False), theirs)


def test_layer_loader_rejects_layers_without_bias():
    theirs = nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, D_FF, bias=False, batch_first=True)
    with pytest.raises(ValueError, match="bias=False"):
        load_torch_encoder_layer(EncoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)


# The architecture figure drawn for chapters 6-8 -------------------------------------------------------------


def test_architecture_figure_is_a_self_contained_svg():
    root = ET.parse(FIGURE).getroot()
    svg = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{svg}svg" and root.get("viewBox")
    labels = [t.text for t in root.iter(f"{svg}text")]
    for label in ["Multi-head", "Masked multi-head", "cross-attention", "Linear", "Softmax", "K, V", "Q"]:
        assert label in labels, label
    assert labels.count("Add & norm") == 5 and labels.count("Feed-forward") == 2
    assert labels.count("Positional") == 2
    assert not list(root.iter(f"{svg}image")), "no embedded or external images"
    assert "http" not in FIGURE.read_text().replace("http://www.w3.org/2000/svg", ""), "no external resources"
