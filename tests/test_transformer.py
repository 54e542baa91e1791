"""Tests for transformer_lib.transformer: parity with torch.nn.Transformer, properties, counts, bad input."""

import io
import math
import warnings

import pytest
import torch
from torch import nn

from transformer_lib.attention import causal_mask
from transformer_lib.transformer import TokenEmbedding, Transformer, TransformerConfig, load_torch_transformer

# nn.Transformer warns about its nested-tensor fast path (a prototype); it does not change the results.
pytestmark = [
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors"),
]

VOCAB = 23


def small_config(**overrides) -> TransformerConfig:
    settings = dict(
        src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=16, num_heads=4, num_encoder_layers=2,
        num_decoder_layers=3, d_ff=24, dropout=0.1, max_len=20,
    )
    settings.update(overrides)
    return TransformerConfig(**settings)


def batch(config: TransformerConfig, seed: int = 0):
    """Source and target ids with right padding, and their masks (True at real tokens)."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(1, config.src_vocab_size, (3, 7), generator=generator)  # (B, S)
    tgt = torch.randint(1, config.tgt_vocab_size, (3, 6), generator=generator)  # (B, T)
    src_mask = torch.arange(7) < torch.tensor([7, 4, 2])[:, None]  # (B, S)
    tgt_mask = torch.arange(6) < torch.tensor([6, 6, 3])[:, None]  # (B, T)
    src[~src_mask] = config.pad_id
    tgt[~tgt_mask] = config.pad_id
    return src, tgt, src_mask, tgt_mask


def torch_reference(model, theirs, src, tgt, src_mask, tgt_mask):
    """Our embeddings and positions, nn.Transformer, our output layer (PyTorch masks: True = ignore)."""
    x = model.positional(model.src_embedding(src))
    y = model.positional(model.tgt_embedding(tgt))
    h = theirs(
        x, y, tgt_mask=~causal_mask(tgt.shape[1]), src_key_padding_mask=~src_mask,
        tgt_key_padding_mask=~tgt_mask, memory_key_padding_mask=~src_mask,
    )
    return model.output(h)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def formula(c: TransformerConfig) -> int:
    """Parameter count by formula: attention 4d^2 + 4d, FFN 2 d d_ff + d_ff + d, layer norm 2d."""
    d = c.d_model
    attention, ffn, norm = 4 * d * d + 4 * d, 2 * d * c.d_ff + c.d_ff + d, 2 * d
    encoder = c.num_encoder_layers * (attention + ffn + 2 * norm) + norm
    decoder = c.num_decoder_layers * (2 * attention + ffn + 3 * norm) + norm
    vocab = c.src_vocab_size * d if c.tie_embeddings else (c.src_vocab_size + 2 * c.tgt_vocab_size) * d
    return vocab + encoder + decoder


# Parity -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("tie", [False, True])
def test_matches_torch_transformer(norm_first, activation, tie):
    torch.manual_seed(0)
    config = small_config(norm_first=norm_first, activation=activation, tie_embeddings=tie,
                          tgt_vocab_size=VOCAB if tie else VOCAB + 6)
    ours = Transformer(config).eval()
    theirs = nn.Transformer(
        d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=24, dropout=0.1,
        activation=activation, batch_first=True, norm_first=norm_first,
    ).eval()
    load_torch_transformer(ours, theirs)
    src, tgt, src_mask, tgt_mask = batch(config)
    with torch.no_grad():
        expected = torch_reference(ours, theirs, src, tgt, src_mask, tgt_mask)
        actual = ours(src, tgt, src_mask, tgt_mask)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_matches_torch_transformer_without_padding():
    torch.manual_seed(1)
    config = small_config(tie_embeddings=True)
    ours = Transformer(config).eval()
    theirs = nn.Transformer(16, 4, 2, 3, 24, dropout=0.0, batch_first=True).eval()
    load_torch_transformer(ours, theirs)
    src, tgt, _, _ = batch(config)
    x = ours.positional(ours.src_embedding(src))
    y = ours.positional(ours.tgt_embedding(tgt))
    with torch.no_grad():
        expected = ours.output(theirs(x, y, tgt_mask=~causal_mask(tgt.shape[1])))
        actual = ours(src, tgt)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_load_torch_transformer_copies_weights_not_references():
    ours = Transformer(small_config()).eval()
    theirs = nn.Transformer(16, 4, 2, 3, 24, batch_first=True)
    load_torch_transformer(ours, theirs)
    before = ours.encoder.layers[0].self_attn.q_proj.weight.clone()
    with torch.no_grad():
        theirs.encoder.layers[0].self_attn.in_proj_weight.zero_()
    torch.testing.assert_close(ours.encoder.layers[0].self_attn.q_proj.weight, before)


# Embeddings, tying, initialization --------------------------------------------------------------------------


def test_token_embedding_is_scaled_lookup():
    embedding = TokenEmbedding(11, 16)
    reference = nn.Embedding(11, 16)
    reference.weight.data.copy_(embedding.weight.data)
    ids = torch.tensor([[0, 3, 10], [7, 7, 1]])
    torch.testing.assert_close(embedding(ids), reference(ids) * 4.0)


def test_embedding_init_scale():
    torch.manual_seed(0)
    embedding = TokenEmbedding(2000, 256)
    assert abs(embedding.weight.std().item() - 256**-0.5) < 0.02 * 256**-0.5
    scaled = embedding(torch.arange(2000)[None])  # (1, 2000, 256)
    assert abs(scaled.std().item() - 1.0) < 0.02


def test_tied_weights_are_one_parameter():
    model = Transformer(small_config(tie_embeddings=True))
    assert model.tgt_embedding is model.src_embedding
    assert model.output.weight is model.src_embedding.weight
    assert model.output.bias is None
    with torch.no_grad():
        model.src_embedding.weight[5] += 1.0
    torch.testing.assert_close(model.output.weight[5], model.tgt_embedding.weight[5])


def test_state_dict_round_trip_keeps_tying():
    torch.manual_seed(0)
    config = small_config(tie_embeddings=True)
    model = Transformer(config).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    loaded = Transformer(config).eval()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.output.weight is loaded.src_embedding.weight is loaded.tgt_embedding.weight
    src, tgt, src_mask, tgt_mask = batch(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(src, tgt, src_mask, tgt_mask), model(src, tgt, src_mask, tgt_mask))


def test_untied_weights_are_separate():
    model = Transformer(small_config(tgt_vocab_size=VOCAB + 4))
    assert model.tgt_embedding is not model.src_embedding
    assert model.output.weight is not model.tgt_embedding.weight
    assert model.output.weight.shape == (VOCAB + 4, 16)


def test_initialization_xavier_and_normal():
    torch.manual_seed(0)
    config = small_config(d_model=64, num_heads=4, d_ff=128, src_vocab_size=500, tgt_vocab_size=500)
    model = Transformer(config)
    embedding_std = model.src_embedding.weight.std().item()
    assert abs(embedding_std - 64**-0.5) < 0.05 * 64**-0.5
    embeddings = {id(model.src_embedding.weight), id(model.tgt_embedding.weight)}
    for name, p in model.named_parameters():
        if p.dim() > 1 and id(p) not in embeddings:
            fan_out, fan_in = p.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert p.abs().max().item() <= bound, name
            assert abs(p.std().item() - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3), name


# Properties -------------------------------------------------------------------------------------------------


def test_output_shape():
    config = small_config(tgt_vocab_size=VOCAB + 2)
    src, tgt, src_mask, tgt_mask = batch(config)
    assert Transformer(config)(src, tgt, src_mask, tgt_mask).shape == (3, 6, VOCAB + 2)


@pytest.mark.parametrize("t", [0, 2, 4])
def test_logits_do_not_depend_on_later_target_tokens(t):
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, _ = batch(config)
    changed = tgt.clone()
    changed[:, t + 1 :] = (tgt[:, t + 1 :] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(src, tgt, src_mask), model(src, changed, src_mask)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    assert (before[:, t + 1 :] - after[:, t + 1 :]).abs().max() > 1e-3  # later positions do see them


def test_padded_source_ids_do_not_matter():
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, tgt_mask = batch(config)
    other = src.clone()
    other[~src_mask] = 5
    with torch.no_grad():
        before = model(src, tgt, src_mask, tgt_mask)
        after = model(other, tgt, src_mask, tgt_mask)
        forgotten = model.decode(tgt, model.encode(other, src_mask), None, tgt_mask)
    torch.testing.assert_close(before[tgt_mask], after[tgt_mask], rtol=0, atol=1e-6)
    assert (forgotten - before)[tgt_mask].abs().max() > 1e-3  # without the memory mask, padding leaks


def test_padded_target_ids_do_not_change_real_positions():
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, tgt_mask = batch(config)
    other = tgt.clone()
    other[~tgt_mask] = 7
    with torch.no_grad():
        before = model(src, tgt, src_mask, tgt_mask)
        after = model(src, other, src_mask, tgt_mask)
    torch.testing.assert_close(before[tgt_mask], after[tgt_mask], rtol=0, atol=1e-6)


def test_a_batch_equals_its_sequences_one_by_one():
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, tgt_mask = batch(config)
    with torch.no_grad():
        batched = model(src, tgt, src_mask, tgt_mask)
        for b in range(3):
            S, T = int(src_mask[b].sum()), int(tgt_mask[b].sum())
            alone = model(src[b : b + 1, :S], tgt[b : b + 1, :T])
            torch.testing.assert_close(batched[b, :T], alone[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1], [2, 3, 1], [6]])
def test_cached_decoding_equals_full_decoding(chunks):
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, _ = batch(config)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask)
        cache, start, pieces = model.new_cache(), 0, []
        for size in chunks:
            piece = tgt[:, start : start + size]
            pieces.append(model.decode(piece, memory, src_mask, cache=cache, start=start))
            start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_cached_decoding_with_target_padding_mask():
    torch.manual_seed(0)
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, tgt_mask = batch(config)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask, tgt_mask)
        cache = model.new_cache()
        steps = [
            model.decode(tgt[:, i : i + 1], memory, src_mask, tgt_mask[:, : i + 1], cache=cache, start=i)
            for i in range(tgt.shape[1])
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1)[tgt_mask], full[tgt_mask], rtol=0, atol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    config = small_config(dropout=0.3)
    model = Transformer(config)
    src, tgt, src_mask, tgt_mask = batch(config)
    assert not torch.equal(model(src, tgt, src_mask, tgt_mask), model(src, tgt, src_mask, tgt_mask))
    model.eval()
    torch.testing.assert_close(model(src, tgt, src_mask, tgt_mask), model(src, tgt, src_mask, tgt_mask))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    config = small_config(tie_embeddings=True)
    model = Transformer(config)
    src, tgt, src_mask, tgt_mask = batch(config)
    model(src, tgt, src_mask, tgt_mask).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# Parameter counts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        small_config(),
        small_config(tie_embeddings=True),
        small_config(tgt_vocab_size=40, num_encoder_layers=1, num_decoder_layers=4),
        TransformerConfig.base(),
    ],
)
def test_parameter_count_by_formula(config):
    with torch.device("meta"):
        model = Transformer(config)
    assert count(model) == formula(config)


def test_base_configuration_is_the_paper_base_model():
    c = TransformerConfig.base()
    sizes = (c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.d_ff)
    assert sizes == (512, 8, 6, 6, 2048)
    assert (c.src_vocab_size, c.tgt_vocab_size, c.tie_embeddings, c.dropout) == (37000, 37000, True, 0.1)
    assert abs(formula(c) - 65e6) / 65e6 < 0.05  # Table 3 of Vaswani et al. (2017): 65 million


# Bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(d_model=18, num_heads=4), r"d_model=18 is not divisible by num_heads=4"),
        (dict(tie_embeddings=True, tgt_vocab_size=30), r"src_vocab_size=23 != tgt_vocab_size=30"),
        (dict(d_model=15, num_heads=5), r"d_model must be even"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout="0.1"), r"dropout must be in \[0, 1\), got '0.1'"),
        (dict(activation="tanh"), r"activation must be 'relu' or 'gelu', got 'tanh'"),
        (dict(pad_id=23), r"0 <= pad_id < 23, got 23"),
        (dict(num_decoder_layers=0), r"num_decoder_layers must be a positive int, got 0"),
        (dict(max_len=2.5), r"max_len must be a positive int, got 2.5"),
    ],
)
def test_bad_config_fails_at_construction(overrides, match):
    with pytest.raises(ValueError, match=match):
        small_config(**overrides)


@pytest.mark.parametrize(
    "vocab_size, d_model, name", [(0, 4, "vocab_size"), (5, 0, "d_model"), (5, 4.0, "d_model")]
)
def test_token_embedding_rejects_bad_sizes(vocab_size, d_model, name):
    with pytest.raises(ValueError, match=rf"TokenEmbedding: {name} must be a positive int"):
        TokenEmbedding(vocab_size, d_model)


def test_transformer_needs_a_config():
    with pytest.raises(TypeError, match="needs a TransformerConfig, got dict"):
        Transformer({"src_vocab_size": 10})


def test_source_longer_than_max_len():
    model = Transformer(small_config())
    with pytest.raises(ValueError, match=r"src needs positions 0 to 20 .* max_len=20"):
        model(torch.ones(1, 21, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


def test_target_longer_than_max_len_with_start():
    model = Transformer(small_config())
    memory = model.encode(torch.ones(1, 3, dtype=torch.long))
    match = r"tgt needs positions 18 to 20 \(length 3 from start=18\).*max_len=20"
    with pytest.raises(ValueError, match=match):
        model.decode(torch.ones(1, 3, dtype=torch.long), memory, start=18)


@pytest.mark.parametrize("name", ["src", "tgt"])
def test_token_ids_outside_vocabulary(name):
    config = small_config()
    model = Transformer(config)
    src, tgt, src_mask, tgt_mask = batch(config)
    bad = {"src": src, "tgt": tgt}[name].clone()
    bad[0, 0] = VOCAB + 5
    args = (bad, tgt) if name == "src" else (src, bad)
    match = rf"{name} has max id 28 and min id \d+, but vocab_size=23 allows ids 0 to 22"
    with pytest.raises(ValueError, match=match):
        model(*args)


def test_negative_token_ids():
    model = Transformer(small_config())
    with pytest.raises(ValueError, match=r"src has max id 3 and min id -1, but vocab_size=23"):
        model(torch.tensor([[-1, 3]]), torch.tensor([[1, 2]]))


def test_token_embedding_rejects_bad_ids():
    embedding = TokenEmbedding(5, 4)
    with pytest.raises(ValueError, match=r"tokens has max id 5 .* vocab_size=5 allows ids 0 to 4"):
        embedding(torch.tensor([[1, 5]]))
    with pytest.raises(TypeError, match="integer token ids, got dtype torch.float32"):
        embedding(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"must have shape \(B, T\), got \(3,\)"):
        embedding(torch.tensor([1, 2, 3]))


@pytest.mark.parametrize(
    "which, shape, match",
    [
        ("src", (3, 4), r"src_padding_mask must have shape \(B, S\) = \(3, 7\), got \(3, 4\)"),
        ("src", (2, 7), r"src_padding_mask must have shape \(B, S\) = \(3, 7\), got \(2, 7\)"),
        ("tgt", (3, 7), r"tgt_padding_mask must have shape \(B, T\) = \(3, 6\), got \(3, 7\)"),
        ("tgt", (3,), r"tgt_padding_mask must have shape \(B, T\) = \(3, 6\), got \(3,\)"),
    ],
)
def test_masks_of_the_wrong_shape(which, shape, match):
    config = small_config()
    model = Transformer(config)
    src, tgt, src_mask, tgt_mask = batch(config)
    bad = torch.ones(shape, dtype=torch.bool)
    masks = (bad, tgt_mask) if which == "src" else (src_mask, bad)
    with pytest.raises(ValueError, match=match):
        model(src, tgt, *masks)


def test_memory_mask_of_the_wrong_shape_in_decode():
    config = small_config()
    model = Transformer(config)
    src, tgt, src_mask, _ = batch(config)
    memory = model.encode(src, src_mask)
    match = r"src_padding_mask must have shape \(B, S\) = \(3, 7\), got \(3, 6\)"
    with pytest.raises(ValueError, match=match):
        model.decode(tgt, memory, src_mask[:, :6])


def test_mask_of_the_wrong_dtype():
    config = small_config()
    model = Transformer(config)
    src, tgt, src_mask, _ = batch(config)
    with pytest.raises(TypeError, match="src_padding_mask must be a bool tensor with True = real token"):
        model(src, tgt, src_mask.float())


def test_cache_and_start_must_agree():
    config = small_config()
    model = Transformer(config).eval()
    src, tgt, src_mask, _ = batch(config)
    memory = model.encode(src, src_mask)
    cache = model.new_cache()
    model.decode(tgt[:, :2], memory, src_mask, cache=cache, start=0)
    with pytest.raises(ValueError, match=r"the cache holds 2 positions but start=1; pass start=2"):
        model.decode(tgt[:, 2:3], memory, src_mask, cache=cache, start=1)
    with pytest.raises(ValueError, match=r"one dict per decoder layer \(3 layers\)"):
        model.decode(tgt[:, 2:3], memory, src_mask, cache=cache[:2], start=2)
    with pytest.raises(ValueError, match=r"tgt_padding_mask must have shape \(B, start \+ T\) = \(3, 3\)"):
        model.decode(tgt[:, 2:3], memory, src_mask, torch.ones(3, 1, dtype=torch.bool), cache=cache, start=2)


def test_negative_start():
    model = Transformer(small_config())
    memory = model.encode(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="start must be an int >= 0.*got -1"):
        model.decode(torch.ones(1, 2, dtype=torch.long), memory, start=-1)


def test_load_torch_transformer_rejects_mismatches():
    ours = Transformer(small_config())
    with pytest.raises(TypeError, match="theirs must be a torch.nn.Transformer, got TransformerEncoder"):
        load_torch_transformer(ours, nn.Transformer(16, 4, 2, 3, 24, batch_first=True).encoder)
    with pytest.raises(ValueError, match="layers"):
        load_torch_transformer(ours, nn.Transformer(16, 4, 2, 2, 24, batch_first=True))
    with pytest.raises(ValueError, match="norm_first"):
        load_torch_transformer(ours, nn.Transformer(16, 4, 2, 3, 24, batch_first=True, norm_first=True))
    with pytest.raises(ValueError, match="d_ff"):
        load_torch_transformer(ours, nn.Transformer(16, 4, 2, 3, 32, batch_first=True))


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_pytorch_polarity_padding_mask_is_caught(side):
    model = Transformer(small_config()).eval()
    src, tgt, src_mask, tgt_mask = batch(model.config)
    assert (~src_mask).any() and (~tgt_mask).any()
    masks = {"src_padding_mask": src_mask, "tgt_padding_mask": tgt_mask}
    masks[f"{side}_padding_mask"] = ~masks[f"{side}_padding_mask"]  # True = padding, PyTorch's polarity
    with pytest.raises(ValueError, match=f"{side}_padding_mask is True exactly where.*PyTorch's convention"):
        model(src, tgt, **masks)


def test_padded_source_without_mask_warns():
    model = Transformer(small_config()).eval()
    src, tgt, src_mask, tgt_mask = batch(model.config)
    with pytest.warns(UserWarning, match="src holds pad_id=0 but src_padding_mask is None"):
        model.encode(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode(src, src_mask)  # with the mask: silent
        model.encode(src[:, :1])  # no padding at all: silent
