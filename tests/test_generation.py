"""Tests for transformer_lib/generation.py: decoding agrees with its references (greedy decoding, the uncached
loop, analytic distributions) and has the properties it promises (reproducible samples, a stop at <eos> per
sequence, batch decoding equal to one by one)."""

import math

import pytest
import torch
from torch import Tensor, nn

from transformer_lib.generation import (
    apply_temperature,
    beam_search,
    generate,
    length_penalty,
    sample_next_token,
    sequence_log_prob,
    top_k_filter,
    top_p_filter,
)
from transformer_lib.training import greedy_decode
from transformer_lib.transformer import Transformer, TransformerConfig

PAD, BOS, EOS = 0, 1, 2  # the ids chapter 1's Vocabulary gives the special tokens
VOCAB = 13


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(
        src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=32, num_heads=4, num_encoder_layers=2,
        num_decoder_layers=2, d_ff=64, dropout=0.0, max_len=24,
    )
    model = Transformer(config).eval()
    with torch.no_grad():  # sharper next-token distributions than at initialization: no near-ties in argmax
        model.output.weight.mul_(4.0)
    return model


def random_sources(batch: int, seed: int, min_len: int = 3, max_len: int = 7) -> tuple[Tensor, Tensor]:
    """Source ids (B, S) of different lengths, padded with PAD, and their mask (True at real tokens)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=generator)
    lengths[0] = max_len  # the longest one fixes S
    src = torch.randint(3, VOCAB, (batch, max_len), generator=generator)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]  # (B, S)
    return src.masked_fill(~mask, PAD), mask


class BigramModel(nn.Module):
    """A stand-in model whose next-token distribution depends only on the previous token: probs[previous]."""

    def __init__(self, probs: Tensor) -> None:
        super().__init__()
        self.log_probs = probs.log()  # (V, V)

    def new_cache(self) -> list:
        return []

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        return torch.zeros(src.shape[0], src.shape[1], 1)  # (B, S, 1): the source plays no part

    def decode(self, tgt, memory, src_padding_mask=None, tgt_padding_mask=None, cache=None, start=0):
        return self.log_probs[tgt]  # (B, T, V)


class CopyModel(nn.Module):
    """A stand-in model that predicts, at target position t, the source token at position t."""

    config = TransformerConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, max_len=12)

    def new_cache(self) -> list:
        return []

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        return src[..., None].float()  # (B, S, 1)

    def decode(self, tgt, memory, src_padding_mask=None, tgt_padding_mask=None, cache=None, start=0):
        T = tgt.shape[1]
        script = memory[:, start : start + T, 0].long()  # (B, T): the source tokens at these positions
        return 10.0 * nn.functional.one_hot(script, VOCAB).float()  # (B, T, V)


def myopic_bigram() -> BigramModel:
    """Greedy takes "a" (0.6) and then has only poor continuations; "b" (0.4) then <eos> (0.9) is better."""
    a, b, other = 3, 4, 5
    probs = torch.full((6, 6), 1e-6)
    probs[BOS, [a, b]] = torch.tensor([0.6, 0.4])
    probs[a, [EOS, a, other]] = torch.tensor([0.34, 0.33, 0.33])
    probs[b, [EOS, other]] = torch.tensor([0.9, 0.1])
    probs[[EOS, PAD, other], EOS] = 1.0
    return BigramModel(probs / probs.sum(dim=-1, keepdim=True))


# ---------------------------------------------------------------- reshaping one distribution


def test_temperature_one_leaves_the_distribution_unchanged():
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(apply_temperature(logits, 1.0).softmax(-1), logits.softmax(-1), rtol=0, atol=0)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 7.0])
def test_temperature_divides_the_logits(temperature):
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    expected = torch.exp(logits / temperature) / torch.exp(logits / temperature).sum(-1, keepdim=True)
    torch.testing.assert_close(apply_temperature(logits, temperature).softmax(-1), expected)


def test_temperature_towards_zero_is_argmax_and_large_is_uniform():
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(2))
    one_hot = nn.functional.one_hot(logits.argmax(-1), 9).float()
    torch.testing.assert_close(apply_temperature(logits, 1e-3).softmax(-1), one_hot, rtol=0, atol=1e-6)
    uniform = torch.full_like(logits, 1 / 9)
    torch.testing.assert_close(apply_temperature(logits, 1e5).softmax(-1), uniform, rtol=0, atol=1e-4)
    temperatures = (0.25, 0.5, 1.0, 2.0, 4.0)
    entropies = [torch.special.entr(apply_temperature(logits, t).softmax(-1)).sum(-1) for t in temperatures]
    for lower, higher in zip(entropies, entropies[1:], strict=False):
        assert (higher > lower).all(), "entropy must grow with the temperature"


@pytest.mark.parametrize("k", [1, 2, 5, 9, 20])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = torch.randn(3, 9, generator=torch.Generator().manual_seed(3))
    filtered = top_k_filter(logits, k)
    kept = torch.isfinite(filtered)
    assert (kept.sum(-1) == min(k, 9)).all()
    expected = torch.zeros_like(kept).scatter(-1, logits.topk(min(k, 9), dim=-1).indices, True)
    assert torch.equal(kept, expected)
    assert torch.equal(filtered[kept], logits[kept]), "kept logits must keep their values"


PROBS = torch.tensor([0.1, 0.5, 0.15, 0.25])  # sorted: 0.5 (id 1), 0.25 (id 3), 0.15 (id 2), 0.1 (id 0)


@pytest.mark.parametrize(
    ("p", "kept"),
    [(0.3, {1}), (0.6, {1, 3}), (0.74, {1, 3}), (0.8, {1, 3, 2}), (0.95, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_the_smallest_set_that_reaches_p(p, kept):
    filtered = top_p_filter(PROBS.log(), p)
    assert set(torch.isfinite(filtered).nonzero().flatten().tolist()) == kept
    renormalised = filtered.softmax(-1)
    expected = torch.zeros(4)
    expected[list(kept)] = PROBS[list(kept)] / PROBS[list(kept)].sum()
    torch.testing.assert_close(renormalised, expected)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_set_is_minimal_on_random_distributions(p):
    logits = 2 * torch.randn(64, 50, generator=torch.Generator().manual_seed(4))
    probs = logits.softmax(-1)
    kept = torch.isfinite(top_p_filter(logits, p))  # (64, 50)
    assert kept.gather(-1, probs.argmax(-1, keepdim=True)).all(), "the most probable token is always kept"
    mass = (probs * kept).sum(-1)
    smallest_kept = probs.masked_fill(~kept, 2.0).amin(-1)
    largest_dropped = probs.masked_fill(kept, -1.0).amax(-1)
    assert (mass >= p - 1e-6).all(), "the kept tokens must reach p"
    assert (mass - smallest_kept < p).all(), "without its least probable token the set must fall short of p"
    assert (smallest_kept >= largest_dropped).all(), "the set must consist of the most probable tokens"


@pytest.mark.parametrize(("p", "count"), [(0.25, 1), (0.5, 2), (0.51, 3), (0.75, 3), (0.76, 4)])
def test_top_p_with_tied_probabilities_keeps_the_smallest_number(p, count):
    logits = torch.zeros(2, 4)  # four tokens of probability 0.25 each: any two of them reach 0.5
    assert (torch.isfinite(top_p_filter(logits, p)).sum(-1) == count).all()


def test_sampling_draws_from_the_filtered_renormalised_distribution():
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(40_000, 3)  # one row per draw
    generator = torch.Generator().manual_seed(5)
    draws = sample_next_token(logits, top_k=2, generator=generator)
    assert set(draws.unique().tolist()) == {0, 1}
    assert abs((draws == 0).float().mean().item() - 0.5 / 0.8) < 0.01
    draws = sample_next_token(logits, temperature=0.5, generator=generator)  # probabilities ~ p^2
    expected = torch.tensor([0.25, 0.09, 0.04]) / 0.38
    frequencies = torch.bincount(draws, minlength=3) / draws.numel()
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.01)


# ---------------------------------------------------------------- decoding with a model


def test_sampling_with_a_seeded_generator_is_reproducible(model):
    src, mask = random_sources(4, seed=6)
    runs = [
        generate(model, src, mask, 15, BOS, EOS, PAD, do_sample=True, temperature=1.5, top_k=8, top_p=0.95,
                 generator=torch.Generator().manual_seed(seed))
        for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]), "another seed should give other samples at this temperature"


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_equals_chapter_9s_greedy_decode(model, use_cache):
    src, mask = random_sources(6, seed=21)
    expected = greedy_decode(model, src, mask, 15, BOS, EOS, PAD)  # the plain loop of chapter 9
    assert torch.equal(generate(model, src, mask, 15, BOS, EOS, PAD, use_cache=use_cache), expected)


@pytest.mark.parametrize("eos_id", [EOS, None])
def test_cached_greedy_decoding_equals_uncached(model, eos_id):
    src, mask = random_sources(5, seed=9)
    tokens, logits = generate(model, src, mask, 20, BOS, eos_id, PAD, use_cache=True, return_logits=True)
    ref_tokens, ref_logits = generate(
        model, src, mask, 20, BOS, eos_id, PAD, use_cache=False, return_logits=True
    )
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    if eos_id is None:
        assert tokens.shape == (5, 20) and logits.shape == (5, 20, VOCAB)


def test_cached_sampling_equals_uncached(model):
    src, mask = random_sources(5, seed=10)
    runs = [
        generate(model, src, mask, 20, BOS, EOS, PAD, do_sample=True, temperature=1.3, top_p=0.9,
                 generator=torch.Generator().manual_seed(11), use_cache=use_cache, return_logits=True)
        for use_cache in (True, False)
    ]
    assert torch.equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beam_size", [2, 4])
def test_cached_beam_search_equals_uncached(model, beam_size):
    src, mask = random_sources(3, seed=12)
    tokens, scores = beam_search(model, src, mask, 12, beam_size, BOS, EOS, PAD, use_cache=True)
    ref_tokens, ref_scores = beam_search(model, src, mask, 12, beam_size, BOS, EOS, PAD, use_cache=False)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


class DecodeSpy(nn.Module):
    """Wraps a Transformer; records (tokens fed, start, self cache length, cross cache length) per decode."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def new_cache(self) -> list:
        return self.model.new_cache()

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        return self.model.encode(src, src_padding_mask)

    def decode(self, tgt, memory, src_padding_mask=None, tgt_padding_mask=None, cache=None, start=0):
        logits = self.model.decode(tgt, memory, src_padding_mask, tgt_padding_mask, cache, start)
        self.calls.append((tgt.shape[1], start, cache[0]["self"].length, cache[0]["cross"].length))
        return logits


@pytest.mark.parametrize("search", ["generate", "beam_search"])
def test_cache_appends_one_position_per_step_and_projects_the_memory_once(model, search):
    src, mask = random_sources(3, seed=22)
    spy = DecodeSpy(model).eval()  # eval: decoding restores the spy's mode, and with it the model's
    projections = []  # one entry per call of a cross-attention key or value projection
    hooks = [
        projection.register_forward_hook(lambda *_: projections.append(1))
        for layer in model.decoder.layers
        for projection in (layer.cross_attn.k_proj, layer.cross_attn.v_proj)
    ]
    try:
        if search == "generate":
            generate(spy, src, mask, 10, BOS, None, PAD)
        else:
            beam_search(spy, src, mask, 10, 3, BOS, None, PAD)
    finally:
        for hook in hooks:
            hook.remove()
    assert [call[:2] for call in spy.calls] == [(1, t) for t in range(10)], "one new token per step"
    assert [call[2] for call in spy.calls] == list(range(1, 11)), "the self-attention cache grows by one"
    assert all(call[3] == src.shape[1] for call in spy.calls), "the cross-attention cache holds the source"
    assert len(projections) == 2 * len(model.decoder.layers), "the memory is projected once per layer"


@pytest.mark.parametrize("seed", [13, 14])
def test_top_k_one_and_tiny_temperature_equal_greedy(model, seed):
    src, mask = random_sources(4, seed=seed)
    greedy = generate(model, src, mask, 15, BOS, EOS, PAD)
    generator = torch.Generator().manual_seed(seed)
    top1 = generate(model, src, mask, 15, BOS, EOS, PAD, do_sample=True, top_k=1, generator=generator)
    cold = generate(
        model, src, mask, 15, BOS, EOS, PAD, do_sample=True, temperature=1e-4, generator=generator
    )
    assert torch.equal(top1, greedy)
    assert torch.equal(cold, greedy)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("seed", [15, 16])
def test_beam_size_one_equals_greedy(model, alpha, seed):
    src, mask = random_sources(4, seed=seed)
    greedy = generate(model, src, mask, 15, BOS, EOS, PAD)
    tokens, scores = beam_search(model, src, mask, 15, 1, BOS, EOS, PAD, alpha=alpha)
    assert tokens.shape[1] == 1
    assert torch.equal(tokens[:, 0], greedy)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_scores_are_length_normalized_log_probs_best_first(model, alpha):
    src, mask = random_sources(3, seed=17)
    tokens, scores = beam_search(model, src, mask, 12, 3, BOS, EOS, PAD, alpha=alpha)
    B, K, L = tokens.shape
    flat_src, flat_mask = src.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)
    log_prob = sequence_log_prob(model, flat_src, flat_mask, tokens.view(B * K, L), BOS, PAD).view(B, K)
    lengths = (tokens != PAD).sum(-1)  # generated tokens, <eos> included
    torch.testing.assert_close(scores, log_prob / length_penalty(lengths, alpha), rtol=1e-5, atol=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "beams must come best first"
    for beams in tokens:
        assert len({tuple(row.tolist()) for row in beams}) == K, "the beams of one source must differ"


def test_beam_search_beats_myopic_greedy():
    bigram = myopic_bigram()
    src = torch.zeros(1, 1, dtype=torch.long)
    greedy = generate(bigram, src, None, 5, BOS, EOS, PAD)
    tokens, scores = beam_search(bigram, src, None, 5, 2, BOS, EOS, PAD, alpha=0.0)
    assert greedy.tolist() == [[3, EOS]]
    assert tokens[0, 0].tolist() == [4, EOS]
    both = torch.cat([greedy, tokens[:, 0]])  # (2, 2)
    greedy_score, beam_score = sequence_log_prob(bigram, src.expand(2, 1), None, both, BOS, PAD)
    assert beam_score > greedy_score
    assert math.isclose(beam_score.item(), math.log(0.4 * 0.9), rel_tol=1e-4)
    assert math.isclose(greedy_score.item(), math.log(0.6 * 0.34), rel_tol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_stops_at_eos_per_sequence_and_pads(use_cache):
    src = torch.tensor([[5, 6, EOS, EOS, EOS, EOS], [7, 8, 9, 10, EOS, EOS], [4, EOS, EOS, EOS, EOS, EOS]])
    tokens = generate(CopyModel(), src, None, 10, BOS, EOS, PAD, use_cache=use_cache)
    expected = [[5, 6, EOS, PAD, PAD], [7, 8, 9, 10, EOS], [4, EOS, PAD, PAD, PAD]]
    assert tokens.tolist() == expected, "stop when every sequence has ended; pad the ones that ended earlier"
    beams, _ = beam_search(CopyModel(), src, None, 10, 2, BOS, EOS, PAD, use_cache=use_cache)
    L = beams.shape[-1]  # the runner-up beams end later than the best ones
    assert beams[:, 0].tolist() == [row + [PAD] * (L - len(row)) for row in expected]
    for beam in beams.view(-1, L).tolist():  # every beam ends with one <eos>, then only padding
        end = beam.index(EOS)
        assert set(beam[end + 1 :]) <= {PAD}
    cut = generate(CopyModel(), src, None, 3, BOS, EOS, PAD, use_cache=use_cache)
    assert cut.tolist() == [[5, 6, EOS], [7, 8, 9], [4, EOS, PAD]], "max_new_tokens caps the length"


def test_without_eos_generation_runs_to_max_new_tokens():
    src = torch.tensor([[EOS, EOS, EOS, EOS]])
    assert generate(CopyModel(), src, None, 4, BOS, None, PAD).tolist() == [[EOS, EOS, EOS, EOS]]
    beams, _ = beam_search(CopyModel(), src, None, 4, 2, BOS, None, PAD)
    assert beams.shape == (1, 2, 4)


def trim(tokens: Tensor) -> list[int]:
    """A generated row without its trailing padding."""
    ids = tokens.tolist()
    while ids and ids[-1] == PAD:
        ids.pop()
    return ids


@pytest.mark.parametrize("use_cache", [True, False])
def test_batch_decoding_equals_one_by_one(model, use_cache):
    src, mask = random_sources(5, seed=18)
    batch = generate(model, src, mask, 15, BOS, EOS, PAD, use_cache=use_cache)
    beams, scores = beam_search(model, src, mask, 15, 3, BOS, EOS, PAD, use_cache=use_cache)
    for i in range(5):
        alone = src[i : i + 1, : int(mask[i].sum())]  # this source only, without padding
        alone_tokens = generate(model, alone, None, 15, BOS, EOS, PAD, use_cache=use_cache)
        assert trim(batch[i]) == trim(alone_tokens[0])
        alone_beams, alone_scores = beam_search(model, alone, None, 15, 3, BOS, EOS, PAD, use_cache=use_cache)
        assert [trim(row) for row in beams[i]] == [trim(row) for row in alone_beams[0]]
        torch.testing.assert_close(scores[i], alone_scores[0], rtol=1e-5, atol=1e-5)


def test_sequence_log_prob_sums_the_step_log_probs(model):
    src, mask = random_sources(4, seed=19)
    tokens, logits = generate(model, src, mask, 12, BOS, EOS, PAD, return_logits=True)
    picked = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, L)
    expected = picked.masked_fill(tokens == PAD, 0.0).sum(-1)
    got = sequence_log_prob(model, src, mask, tokens, BOS, PAD)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_length_penalty_values():
    assert length_penalty(1, 0.6).item() == pytest.approx(1.0)
    assert length_penalty(7, 1.0).item() == pytest.approx(2.0)
    assert length_penalty(19, 0.5).item() == pytest.approx(2.0)
    assert torch.equal(length_penalty(torch.tensor([1, 5, 30]), 0.0), torch.ones(3))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan")])
def test_bad_temperature(model, temperature):
    with pytest.raises(ValueError, match=rf"temperature must be a number > 0, got {temperature!r}"):
        apply_temperature(torch.zeros(1, 3), temperature)
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match="temperature must be"):
        generate(model, src, mask, 5, BOS, EOS, PAD, do_sample=True, temperature=temperature)


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_bad_top_k(model, k):
    with pytest.raises(ValueError, match=rf"top_k must be an int >= 1, got {k!r}"):
        top_k_filter(torch.zeros(1, 3), k)
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match="top_k must be"):
        generate(model, src, mask, 5, BOS, EOS, PAD, do_sample=True, top_k=k)


@pytest.mark.parametrize("p", [0, 0.0, -0.1, 1.01, 2])
def test_bad_top_p(model, p):
    with pytest.raises(ValueError, match=rf"top_p must be in \(0, 1\], got {p!r}"):
        top_p_filter(torch.zeros(1, 3), p)
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match="top_p must be"):
        generate(model, src, mask, 5, BOS, EOS, PAD, do_sample=True, top_p=p)


@pytest.mark.parametrize("beam_size", [0, -1, 2.0])
def test_bad_beam_size(model, beam_size):
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match=rf"beam_size must be an int >= 1, got {beam_size!r}"):
        beam_search(model, src, mask, 5, beam_size, BOS, EOS, PAD)


def test_beam_size_larger_than_the_vocabulary(model):
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match=rf"beam_size=14 is larger than the vocabulary \({VOCAB} tokens\)"):
        beam_search(model, src, mask, 5, 14, BOS, EOS, PAD)


@pytest.mark.parametrize("max_new_tokens", [0, -3, 2.5])
def test_bad_max_new_tokens(model, max_new_tokens):
    src, mask = random_sources(1, seed=0)
    message = rf"max_new_tokens must be an int >= 1, got {max_new_tokens!r}"
    with pytest.raises(ValueError, match=message):
        generate(model, src, mask, max_new_tokens, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=message):
        beam_search(model, src, mask, max_new_tokens, 2, BOS, EOS, PAD)


def test_max_new_tokens_beyond_the_models_positions(model):
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match=r"max_new_tokens=25 .* max_len=24"):
        generate(model, src, mask, 25, BOS, EOS, PAD)
    assert generate(model, src, mask, 24, BOS, None, PAD).shape == (1, 24), "max_len new tokens fit"


def test_bad_alpha(model):
    src, mask = random_sources(1, seed=0)
    with pytest.raises(ValueError, match=r"alpha must be a number >= 0, got -0.5"):
        beam_search(model, src, mask, 5, 2, BOS, EOS, PAD, alpha=-0.5)


def test_src_must_be_a_batch_of_ids(model):
    with pytest.raises(ValueError, match=r"src must be a \(B, S\) tensor of source token ids, got \(5,\)"):
        generate(model, torch.tensor([3, 4, 5, 6, 7]), None, 5, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"src must be a \(B, S\) tensor"):
        beam_search(model, [[3, 4]], None, 5, 2, BOS, EOS, PAD)


def test_decoding_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(1)
    config = TransformerConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=16, num_heads=2,
                               num_encoder_layers=1, num_decoder_layers=1, d_ff=32, dropout=0.5, max_len=16)
    model = Transformer(config)  # training mode, with dropout
    src, mask = random_sources(3, seed=20)
    runs = [generate(model, src, mask, 8, BOS, EOS, PAD, use_cache=use_cache) for use_cache in (True, False)]
    beams = [beam_search(model, src, mask, 8, 2, BOS, EOS, PAD)[0] for _ in range(2)]
    assert model.training, "the caller's mode must be restored"
    assert torch.equal(runs[0], runs[1]) and torch.equal(beams[0], beams[1]), "no dropout while decoding"
    assert torch.equal(runs[0], generate(model.eval(), src, mask, 8, BOS, EOS, PAD))


@pytest.mark.parametrize("options", [dict(top_k=5), dict(top_p=0.9), dict(temperature=0.7)])
def test_generate_refuses_sampling_options_without_sampling(options):
    model = torch.nn.Identity()  # the check comes before any use of the model
    src = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="do_sample=False takes the argmax and would ignore them"):
        generate(model, src, None, 5, **options)


def test_sample_next_token_wants_two_dimensional_float_logits():
    with pytest.raises(ValueError, match=r"needs logits \(B, V\).*got shape \(2, 3, 7\).*logits\[:, -1\]"):
        sample_next_token(torch.randn(2, 3, 7))
    with pytest.raises(TypeError, match="needs float logits"):
        sample_next_token(torch.ones(2, 7, dtype=torch.long))


def test_quick_start_of_the_package_docstring_runs(capsys):
    import transformer_lib

    doc = transformer_lib.__doc__
    lines = [line[4:] for line in doc[doc.index("Quick start"):].splitlines() if line.startswith("    ")]
    assert len(lines) == 5
    exec("\n".join(lines), {})
    printed = capsys.readouterr().out
    assert printed.startswith("tensor([[") and printed.count("\n") == 2  # two sequences of token ids
