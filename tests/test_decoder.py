"""Tests for transformer_lib.decoder: parity with torch.nn.TransformerDecoder(Layer), the causal property, the
decoder-only block, incremental decoding with a key/value cache, and bad input."""

import pytest
import torch
from torch import nn

from transformer_lib.attention import causal_mask
from transformer_lib.decoder import Decoder, DecoderLayer, load_torch_decoder, load_torch_decoder_layer
from transformer_lib.multihead import KVCache

D_MODEL, NUM_HEADS, D_FF = 16, 4, 32
B, T, S = 3, 6, 5  # batch, target positions, source positions (T != S so swapped roles change shapes)


def _perturb(module: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter by noise: no layer norm keeps gain 1 / bias 0, and stacked layers differ."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return module


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T, d_model), memory (B, S, d_model), and right-padded target (B, T) / source (B, S) masks."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D_MODEL, generator=generator)
    memory = torch.randn(B, S, D_MODEL, generator=generator)
    tgt_padding = torch.arange(T) < torch.tensor([T, 4, 2])[:, None]  # (B, T) True = real token
    src_padding = torch.arange(S) < torch.tensor([S, 3, 1])[:, None]  # (B, S)
    return x, memory, tgt_padding, src_padding


def _float_mask(keep: torch.Tensor) -> torch.Tensor:
    """Our bool mask (True = may attend) as PyTorch's additive float mask (0 = attend, -inf = ignore)."""
    return torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))


def _torch_layer(norm_first: bool, activation: str, dropout: float = 0.1) -> nn.TransformerDecoderLayer:
    layer = nn.TransformerDecoderLayer(
        D_MODEL,
        NUM_HEADS,
        D_FF,
        dropout=dropout,
        activation=activation,
        norm_first=norm_first,
        batch_first=True,
    )
    return _perturb(layer).eval()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("float_masks", [False, True])
def test_layer_matches_torch(norm_first, activation, float_masks):
    x, memory, tgt_padding, src_padding = _inputs()
    theirs = _torch_layer(norm_first, activation)
    ours = DecoderLayer(
        D_MODEL, NUM_HEADS, D_FF, dropout=0.1, activation=activation, norm_first=norm_first
    ).eval()
    load_torch_decoder_layer(ours, theirs)
    if float_masks:  # what nn.Transformer.generate_square_subsequent_mask gives, with padding masks to match
        torch_masks = (
            nn.Transformer.generate_square_subsequent_mask(T),
            _float_mask(tgt_padding),
            _float_mask(src_padding),
        )
    else:  # PyTorch's bool masks: True = ignore
        torch_masks = (~causal_mask(T), ~tgt_padding, ~src_padding)
    expected = theirs(
        x,
        memory,
        tgt_mask=torch_masks[0],
        tgt_key_padding_mask=torch_masks[1],
        memory_key_padding_mask=torch_masks[2],
    )
    got = ours(
        x,
        memory,
        self_attn_mask=causal_mask(T),
        tgt_key_padding_mask=tgt_padding,
        memory_key_padding_mask=src_padding,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_gradients_match_torch(norm_first):
    x, memory, _, src_padding = _inputs()
    theirs = _torch_layer(norm_first, "relu")
    ours = DecoderLayer(D_MODEL, NUM_HEADS, D_FF, norm_first=norm_first).eval()
    load_torch_decoder_layer(ours, theirs)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    theirs(
        x_theirs, memory, tgt_mask=~causal_mask(T), memory_key_padding_mask=~src_padding
    ).square().sum().backward()
    ours(
        x_ours, memory, self_attn_mask=causal_mask(T), memory_key_padding_mask=src_padding
    ).square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours.cross_attn.q_proj.weight.grad,
        theirs.multihead_attn.in_proj_weight.grad[:D_MODEL],
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_decoder_matches_torch(norm_first, activation, final_norm):
    x, memory, tgt_padding, src_padding = _inputs(seed=1)
    num_layers = 3
    torch_layer = nn.TransformerDecoderLayer(
        D_MODEL, NUM_HEADS, D_FF, dropout=0.1, activation=activation, norm_first=norm_first, batch_first=True
    )
    norm = nn.LayerNorm(D_MODEL) if final_norm else None
    theirs = _perturb(nn.TransformerDecoder(torch_layer, num_layers, norm=norm)).eval()
    ours = Decoder(
        num_layers,
        D_MODEL,
        NUM_HEADS,
        D_FF,
        dropout=0.1,
        activation=activation,
        norm_first=norm_first,
        final_norm=final_norm,
    ).eval()
    load_torch_decoder(ours, theirs)
    expected = theirs(
        x,
        memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
        tgt_key_padding_mask=_float_mask(tgt_padding),
        memory_key_padding_mask=_float_mask(src_padding),
    )
    got = ours(
        x,
        memory,
        self_attn_mask=causal_mask(T),
        tgt_key_padding_mask=tgt_padding,
        memory_key_padding_mask=src_padding,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_decoder_matches_nn_transformer_decoder():
    """The decoder inside nn.Transformer (final norm included) loads the same way."""
    x, memory, _, _ = _inputs(seed=2)
    theirs = _perturb(nn.Transformer(D_MODEL, NUM_HEADS, 1, 2, D_FF, batch_first=True)).eval()
    ours = Decoder(2, D_MODEL, NUM_HEADS, D_FF).eval()
    load_torch_decoder(ours, theirs.decoder)
    expected = theirs.decoder(x, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T))
    torch.testing.assert_close(ours(x, memory, self_attn_mask=causal_mask(T)), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_only_layer_is_torch_encoder_layer_with_causal_mask(norm_first, activation):
    """Without cross-attention, a decoder layer is nn.TransformerEncoderLayer run with a causal mask."""
    x, _, tgt_padding, _ = _inputs(seed=3)
    theirs = _perturb(
        nn.TransformerEncoderLayer(
            D_MODEL,
            NUM_HEADS,
            D_FF,
            dropout=0.0,
            activation=activation,
            norm_first=norm_first,
            batch_first=True,
        )
    ).eval()
    ours = DecoderLayer(
        D_MODEL, NUM_HEADS, D_FF, activation=activation, norm_first=norm_first, cross_attention=False
    ).eval()
    with torch.no_grad():
        d = D_MODEL
        for i, proj in enumerate((ours.self_attn.q_proj, ours.self_attn.k_proj, ours.self_attn.v_proj)):
            proj.weight.copy_(theirs.self_attn.in_proj_weight[i * d : (i + 1) * d])
            proj.bias.copy_(theirs.self_attn.in_proj_bias[i * d : (i + 1) * d])
        ours.self_attn.out_proj.load_state_dict(theirs.self_attn.out_proj.state_dict())
        ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
        ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
        ours.self_attn_residual.norm.load_state_dict({"gain": theirs.norm1.weight, "bias": theirs.norm1.bias})
        ours.ff_residual.norm.load_state_dict({"gain": theirs.norm2.weight, "bias": theirs.norm2.bias})
    expected = theirs(x, src_mask=~causal_mask(T), src_key_padding_mask=~tgt_padding)
    got = ours(x, self_attn_mask=causal_mask(T), tgt_key_padding_mask=tgt_padding)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_decoder_only_layer_without_bias_is_torch_encoder_layer_without_bias():
    """bias=False drops the biases of every projection; PyTorch's bias=False also drops the norms' biases,
    which ours keep at their initial 0."""
    x, _, _, _ = _inputs(seed=4)
    theirs = nn.TransformerEncoderLayer(
        D_MODEL, NUM_HEADS, D_FF, 0.0, "gelu", norm_first=True, batch_first=True, bias=False
    )
    theirs = _perturb(theirs).eval()
    ours = DecoderLayer(
        D_MODEL, NUM_HEADS, D_FF, activation="gelu", norm_first=True, cross_attention=False, bias=False
    ).eval()
    linears = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 6 and all(m.bias is None for m in linears)
    with torch.no_grad():
        d = D_MODEL
        for i, proj in enumerate((ours.self_attn.q_proj, ours.self_attn.k_proj, ours.self_attn.v_proj)):
            proj.weight.copy_(theirs.self_attn.in_proj_weight[i * d : (i + 1) * d])
        ours.self_attn.out_proj.load_state_dict(theirs.self_attn.out_proj.state_dict())
        ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
        ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
        ours.self_attn_residual.norm.gain.copy_(theirs.norm1.weight)
        ours.ff_residual.norm.gain.copy_(theirs.norm2.weight)
    expected = theirs(x, src_mask=~causal_mask(T))
    torch.testing.assert_close(ours(x, self_attn_mask=causal_mask(T)), expected, atol=1e-5, rtol=0)


def test_decoder_passes_bias_to_every_layer():
    decoder = Decoder(2, D_MODEL, NUM_HEADS, D_FF, bias=False)
    assert all(m.bias is None for m in decoder.modules() if isinstance(m, nn.Linear))
    default = Decoder(2, D_MODEL, NUM_HEADS, D_FF)
    assert all(m.bias is not None for m in default.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("cross_attention", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("t", [0, 2, T - 2])
def test_output_at_t_ignores_later_target_tokens(cross_attention, norm_first, t):
    x, memory, _, _ = _inputs(seed=4)
    decoder = _perturb(
        Decoder(2, D_MODEL, NUM_HEADS, D_FF, norm_first=norm_first, cross_attention=cross_attention)
    ).eval()
    memory = memory if cross_attention else None
    x_changed = x.clone()
    x_changed[:, t + 1 :] = torch.randn(B, T - t - 1, D_MODEL, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        y = decoder(x, memory, self_attn_mask=causal_mask(T))
        y_changed = decoder(x_changed, memory, self_attn_mask=causal_mask(T))
    torch.testing.assert_close(y_changed[:, : t + 1], y[:, : t + 1], atol=1e-6, rtol=0)
    assert (y_changed[:, t + 1 :] - y[:, t + 1 :]).abs().amax() > 1e-3  # later positions do see the change


def test_without_causal_mask_earlier_positions_see_later_tokens():
    """The property above is the mask's doing: without it, position 0 changes too."""
    x, memory, _, _ = _inputs(seed=4)
    layer = DecoderLayer(D_MODEL, NUM_HEADS, D_FF).eval()
    x_changed = x.clone()
    x_changed[:, 1:] += 1.0
    with torch.no_grad():
        assert (layer(x, memory)[:, 0] - layer(x_changed, memory)[:, 0]).abs().amax() > 1e-3


def test_cross_attention_reads_the_memory_at_every_position():
    """Changing one real source token changes every target position; a masked source token changes none."""
    x, memory, _, _ = _inputs(seed=5)
    layer = DecoderLayer(D_MODEL, NUM_HEADS, D_FF).eval()
    memory_changed = memory.clone()
    memory_changed[:, 2] += 1.0
    keep = torch.ones(B, S, dtype=torch.bool)
    keep[:, 2] = False
    with torch.no_grad():
        change = (
            (layer(x, memory_changed, causal_mask(T)) - layer(x, memory, causal_mask(T))).abs().amax(dim=-1)
        )
        masked = layer(x, memory_changed, causal_mask(T), memory_key_padding_mask=keep) - layer(
            x, memory, causal_mask(T), memory_key_padding_mask=keep
        )
    assert torch.all(change > 1e-4)
    assert torch.all(masked == 0)


def test_decoder_only_block_has_no_cross_attention():
    layer = DecoderLayer(D_MODEL, NUM_HEADS, D_FF, cross_attention=False)
    full = DecoderLayer(D_MODEL, NUM_HEADS, D_FF)
    assert layer.cross_attn is None and layer.cross_attn_residual is None
    assert not any(name.startswith("cross") for name, _ in layer.named_parameters())
    num_params = sum(p.numel() for p in layer.parameters())
    attention, norm = 4 * D_MODEL**2 + 4 * D_MODEL, 2 * D_MODEL
    assert num_params == attention + norm + (2 * D_MODEL * D_FF + D_FF + D_MODEL) + norm
    assert sum(p.numel() for p in full.parameters()) - num_params == attention + norm
    assert set(layer.new_cache()) == {"self"}


def test_decoder_only_stack_runs_without_memory():
    x, _, tgt_padding, _ = _inputs(seed=6)
    gpt = Decoder(2, D_MODEL, NUM_HEADS, D_FF, cross_attention=False).eval()
    y = gpt(x, self_attn_mask=causal_mask(T), tgt_key_padding_mask=tgt_padding)
    assert y.shape == (B, T, D_MODEL) and torch.isfinite(y).all()


def test_dropout_only_in_training_mode():
    x, memory, _, _ = _inputs()
    layer = DecoderLayer(D_MODEL, NUM_HEADS, D_FF, dropout=0.5)
    torch.manual_seed(0)
    first, second = layer(x, memory, causal_mask(T)), layer(x, memory, causal_mask(T))
    assert not torch.allclose(first, second)
    layer.eval()
    assert torch.equal(layer(x, memory, causal_mask(T)), layer(x, memory, causal_mask(T)))


@pytest.mark.parametrize("cross_attention", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_steps_equal_full_causal_pass(cross_attention, norm_first):
    x, memory, _, src_padding = _inputs(seed=7)
    decoder = _perturb(
        Decoder(2, D_MODEL, NUM_HEADS, D_FF, norm_first=norm_first, cross_attention=cross_attention)
    ).eval()
    kwargs = dict(memory=memory, memory_key_padding_mask=src_padding) if cross_attention else {}
    with torch.no_grad():
        full = decoder(x, self_attn_mask=causal_mask(T), **kwargs)
        cache = decoder.new_cache()
        steps = [decoder(x[:, i : i + 1], cache=cache, **kwargs) for i in range(T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    d_head = D_MODEL // NUM_HEADS
    for layer_cache in cache:
        assert layer_cache["self"].key.shape == (B, NUM_HEADS, T, d_head)  # one key appended per step
        if cross_attention:
            assert layer_cache["cross"].key.shape == (B, NUM_HEADS, S, d_head)  # the source, computed once


def test_cached_chunk_with_mask_equals_full_pass():
    """A prefix in one call, then the rest in one call with a (T_new, past + T_new) causal mask."""
    x, memory, _, _ = _inputs(seed=8)
    decoder = Decoder(2, D_MODEL, NUM_HEADS, D_FF).eval()
    past = 2
    with torch.no_grad():
        full = decoder(x, memory, self_attn_mask=causal_mask(T))
        cache = decoder.new_cache()
        first = decoder(x[:, :past], memory, self_attn_mask=causal_mask(past), cache=cache)
        rest = decoder(x[:, past:], memory, self_attn_mask=causal_mask(T)[past:], cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_new_cache_structure():
    decoder = Decoder(3, D_MODEL, NUM_HEADS, D_FF)
    cache = decoder.new_cache()
    assert len(cache) == 3
    for layer_cache in cache:
        assert set(layer_cache) == {"self", "cross"}
        assert isinstance(layer_cache["self"], KVCache) and not layer_cache["self"].static
        assert isinstance(layer_cache["cross"], KVCache) and layer_cache["cross"].static
        assert layer_cache["self"].key is None and layer_cache["cross"].key is None
    assert cache[0]["self"] is not cache[1]["self"]


# Bad input: each raises early with a message that names the argument.


@pytest.fixture
def layer():
    return DecoderLayer(D_MODEL, NUM_HEADS, D_FF).eval()


def test_x_with_wrong_features(layer):
    _, memory, _, _ = _inputs()
    with pytest.raises(
        ValueError, match=r"x must have shape \(B, T, d_model\) with d_model=16, got \(3, 6, 8\)"
    ):
        layer(torch.randn(B, T, 8), memory)


def test_x_not_3d(layer):
    _, memory, _, _ = _inputs()
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(T, D_MODEL), memory)


def test_memory_with_wrong_features(layer):
    x, _, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"memory must have shape \(B, S, d_model\).*got \(3, 5, 8\)"):
        layer(x, torch.randn(B, S, 8))


def test_memory_with_wrong_batch(layer):
    x, _, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"memory must have shape.*B=3.*got \(2, 5, 16\)"):
        layer(x, torch.randn(2, S, D_MODEL))


def test_memory_missing_for_cross_attention(layer):
    x, _, _, _ = _inputs()
    with pytest.raises(ValueError, match="needs memory"):
        layer(x)
    with pytest.raises(ValueError, match="needs memory"):
        Decoder(2, D_MODEL, NUM_HEADS, D_FF)(x, self_attn_mask=causal_mask(T))


def test_memory_given_to_decoder_only_block():
    x, memory, _, src_padding = _inputs()
    gpt = Decoder(2, D_MODEL, NUM_HEADS, D_FF, cross_attention=False)
    with pytest.raises(ValueError, match="no cross-attention"):
        gpt(x, memory)
    with pytest.raises(ValueError, match="no cross-attention"):
        gpt.layers[0](x, memory_key_padding_mask=src_padding)


@pytest.mark.parametrize("bad_shape", [(S, S), (T, S), (B, T + 1, T), (1, NUM_HEADS + 1, T, T), (T,)])
def test_self_attn_mask_wrong_shape(layer, bad_shape):
    x, memory, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"self_attn_mask must have shape \(T, T\) = \(6, 6\)"):
        layer(x, memory, self_attn_mask=torch.ones(bad_shape, dtype=torch.bool))


def test_tgt_key_padding_mask_wrong_shape(layer):
    x, memory, _, src_padding = _inputs()
    with pytest.raises(
        ValueError, match=r"tgt_key_padding_mask must have shape \(B, T\) = \(3, 6\), got \(3, 5\)"
    ):
        layer(x, memory, tgt_key_padding_mask=src_padding)


def test_memory_key_padding_mask_wrong_shape(layer):
    x, memory, tgt_padding, _ = _inputs()
    with pytest.raises(
        ValueError, match=r"memory_key_padding_mask must have shape \(B, S\) = \(3, 5\), got \(3, 6\)"
    ):
        layer(x, memory, memory_key_padding_mask=tgt_padding)


def test_float_mask_rejected_with_the_conversion(layer):
    x, memory, _, _ = _inputs()
    with pytest.raises(TypeError, match=r"self_attn_mask must be a bool tensor.*`mask == 0`"):
        layer(x, memory, self_attn_mask=nn.Transformer.generate_square_subsequent_mask(T))


def test_mask_shape_with_cache_counts_cached_keys():
    x, memory, _, _ = _inputs()
    decoder = Decoder(1, D_MODEL, NUM_HEADS, D_FF).eval()
    cache = decoder.new_cache()
    decoder(x[:, :2], memory, self_attn_mask=causal_mask(2), cache=cache)
    with pytest.raises(ValueError, match=r"self_attn_mask must have shape \(T, past \+ T\) = \(1, 3\)"):
        decoder(x[:, 2:3], memory, self_attn_mask=causal_mask(1), cache=cache)


def test_memory_of_another_length_with_a_filled_cross_cache():
    """The cross-attention cache holds the keys of the first step's memory; a new source needs a new cache."""
    x, memory, _, _ = _inputs()
    layer = DecoderLayer(D_MODEL, NUM_HEADS, D_FF).eval()
    cache = layer.new_cache()
    layer(x[:, :1], memory, cache=cache)
    with pytest.raises(ValueError, match=r"memory has S=6 positions but the cross-attention cache .* for 5"):
        layer(x[:, 1:2], torch.randn(B, S + 1, D_MODEL), cache=cache)
    layer(x[:, 1:2], memory, cache=cache)  # the same source goes on
    assert cache["self"].length == 2 and cache["cross"].length == S


@pytest.mark.parametrize("num_layers", [0, -1])
def test_num_layers_below_one(num_layers):
    with pytest.raises(ValueError, match=f"num_layers must be at least 1, got {num_layers}"):
        Decoder(num_layers, D_MODEL, NUM_HEADS, D_FF)


def test_num_layers_not_int():
    with pytest.raises(ValueError, match="num_layers must be an int"):
        Decoder(2.0, D_MODEL, NUM_HEADS, D_FF)


def test_d_model_not_divisible_by_heads_at_construction():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by num_heads \(4\)"):
        DecoderLayer(10, 4, D_FF)
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by num_heads \(4\)"):
        Decoder(2, 10, 4, D_FF, cross_attention=False)


def test_wrong_cache_structure(layer):
    x, memory, _, _ = _inputs()
    with pytest.raises(ValueError, match="cache must be a dict with keys"):
        layer(x[:, :1], memory, cache={"self": KVCache()})
    with pytest.raises(ValueError, match="cache must be a dict with keys"):
        layer(x[:, :1], memory, cache={"self": KVCache(), "cross": KVCache()})  # cross must be static
    with pytest.raises(ValueError, match="one dict per layer"):
        Decoder(2, D_MODEL, NUM_HEADS, D_FF)(x[:, :1], memory, cache=[{"self": KVCache()}])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"norm_first": True}, "norm_first differs"),
        ({"activation": "gelu"}, "activation differs"),
        ({"cross_attention": False}, "cross_attention=True"),
    ],
)
def test_layer_loader_rejects_a_different_layer(option, message):
    theirs = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    with pytest.raises(ValueError, match=message):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF, **option), theirs)


def test_layer_loader_rejects_other_sizes():
    theirs = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, 2 * D_FF, batch_first=True)
    with pytest.raises(ValueError, match="d_ff differs"):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)
    theirs = nn.TransformerDecoderLayer(D_MODEL, 2, D_FF, batch_first=True)
    with pytest.raises(ValueError, match="num_heads differs: ours 4, PyTorch's 2"):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)
    theirs = nn.TransformerDecoderLayer(2 * D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    with pytest.raises(ValueError, match="d_model differs"):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF), theirs)


def test_layer_loader_rejects_tanh_gelu():
    """nn.GELU(approximate="tanh") is not the exact GELU that FeedForward computes."""
    tanh_gelu = nn.GELU(approximate="tanh")
    theirs = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, D_FF, activation=tanh_gelu, batch_first=True)
    with pytest.raises(ValueError, match="activation.*no counterpart"):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF, activation="gelu"), theirs)


def test_decoder_loader_rejects_a_different_stack():
    torch_layer = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    with pytest.raises(ValueError, match="number of layers differs"):
        load_torch_decoder(Decoder(2, D_MODEL, NUM_HEADS, D_FF), nn.TransformerDecoder(torch_layer, 3))
    with pytest.raises(ValueError, match="final_norm=False"):
        load_torch_decoder(
            Decoder(2, D_MODEL, NUM_HEADS, D_FF), nn.TransformerDecoder(torch_layer, 2, norm=None)
        )


@pytest.mark.parametrize(
    ("final_norm", "message"),
    [
        (nn.LayerNorm(D_MODEL, eps=1e-3), r"eps=0\.001.*eps=1e-05"),
        (nn.LayerNorm(D_MODEL // 2), r"normalized_shape=\(8,\).*d_model=16"),
        (nn.LayerNorm(D_MODEL, bias=False), "without a learned weight and bias"),
    ],
)
def test_decoder_loader_checks_the_final_norm(final_norm, message):
    """The final norm is built apart from the layers, so its size and eps are checked on their own."""
    torch_layer = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    theirs = nn.TransformerDecoder(torch_layer, 2, norm=final_norm)
    with pytest.raises(ValueError, match=message):
        load_torch_decoder(Decoder(2, D_MODEL, NUM_HEADS, D_FF), theirs)


@pytest.mark.parametrize("cross_attention", [True, False])
def test_need_weights_returns_both_attentions(cross_attention):
    x, memory, tgt_padding, src_padding = _inputs(seed=10)
    decoder = Decoder(2, D_MODEL, NUM_HEADS, D_FF, cross_attention=cross_attention).eval()
    kwargs = dict(memory=memory, memory_key_padding_mask=src_padding) if cross_attention else {}
    with torch.no_grad():
        plain = decoder(x, self_attn_mask=causal_mask(T), tgt_key_padding_mask=tgt_padding, **kwargs)
        out, self_weights, cross_weights = decoder(
            x, self_attn_mask=causal_mask(T), tgt_key_padding_mask=tgt_padding, need_weights=True, **kwargs
        )
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    assert self_weights.shape == (2, B, NUM_HEADS, T, T)
    assert torch.all(self_weights.triu(diagonal=1) == 0)  # causal: no weight on later positions
    torch.testing.assert_close(self_weights.sum(-1), torch.ones(2, B, NUM_HEADS, T))
    if cross_attention:
        assert cross_weights.shape == (2, B, NUM_HEADS, T, S)
        assert torch.all(cross_weights.masked_select(~src_padding[None, :, None, None, :]) == 0)
    else:
        assert cross_weights is None


def test_eps_reaches_every_layer_norm_and_the_loader_checks_it():
    decoder = Decoder(2, D_MODEL, NUM_HEADS, D_FF, eps=1e-6)
    assert {m.eps for m in decoder.modules() if hasattr(m, "gain")} == {1e-6}
    torch_layer = nn.TransformerDecoderLayer(D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    with pytest.raises(ValueError, match="eps differs"):
        load_torch_decoder_layer(decoder.layers[0], torch_layer)


def test_loaders_reject_other_pytorch_modules():
    encoder_layer = nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, D_FF, batch_first=True)
    with pytest.raises(TypeError, match="TransformerDecoderLayer, got TransformerEncoderLayer"):
        load_torch_decoder_layer(DecoderLayer(D_MODEL, NUM_HEADS, D_FF), encoder_layer)
    with pytest.raises(TypeError, match="must be a torch.nn.TransformerDecoder, got TransformerEncoder"):
        load_torch_decoder(Decoder(1, D_MODEL, NUM_HEADS, D_FF), nn.TransformerEncoder(encoder_layer, 1))
