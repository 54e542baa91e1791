"""Tests for transformer_lib.language_model (written by notebooks/13_language_model.ipynb): the GPT against
Hugging Face's GPT-2 (a small randomly initialised GPT2LMHeadModel, no download), the causal property, the
cache, generation, the training pieces, bad input, and the chapter's exercise checker."""

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from transformer_lib.generation import sample_next_token
from transformer_lib.language_model import (
    GPT,
    GPTConfig,
    LMHistory,
    estimate_loss,
    generate_from_prompt,
    language_model_loss,
    load_gpt2_state_dict,
    make_optimizer,
    next_token_batch,
    train_language_model,
)

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "13_language_model.ipynb"


def small_config(**changes) -> GPTConfig:
    options = {"vocab_size": 40, "max_len": 16, "d_model": 32, "num_heads": 4, "num_layers": 2}
    return GPTConfig(**(options | changes))


def hf_pair(n_layer: int = 2, n_head: int = 4, n_embd: int = 32, vocab: int = 50, positions: int = 24,
            seed: int = 0) -> tuple[nn.Module, GPT]:
    """A small random GPT2LMHeadModel and our GPT with its weights loaded, both in eval mode."""
    transformers = pytest.importorskip("transformers")  # a test-only reference
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, initializer_range=0.2,
    )
    theirs = transformers.GPT2LMHeadModel(config).eval()
    ours = GPT(GPTConfig(vocab_size=vocab, max_len=positions, d_model=n_embd, num_heads=n_head,
                         num_layers=n_layer, bias=True, activation="gelu_tanh")).eval()
    with torch.no_grad():  # non-trivial layer norms and biases, which GPT-2 initializes to 1 and 0
        for name, p in theirs.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    load_gpt2_state_dict(ours, theirs.state_dict())
    return theirs, ours


# ---------------------------------------------------------------- GPT-2 parity


@pytest.mark.parametrize(("n_layer", "n_head", "n_embd"), [(1, 1, 16), (2, 4, 32), (3, 2, 24)])
def test_logits_match_hugging_face_gpt2(n_layer, n_head, n_embd):
    theirs, ours = hf_pair(n_layer, n_head, n_embd)
    tokens = torch.randint(50, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(tokens).logits, ours(tokens)
    assert expected.abs().max() > 1  # logits large enough for the tolerance to mean something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_greedy_generation_with_cache_matches_hugging_face():
    theirs, ours = hf_pair()
    prompt = torch.randint(2, 50, (2, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                   do_sample=False, eos_token_id=None)
    got = generate_from_prompt(ours, prompt, 20, use_cache=True)
    assert expected.shape == (2, 24)
    assert torch.equal(got, expected)
    assert len(set(got[:, 4:].flatten().tolist())) > 2  # not a trivially repeated token


def test_loader_accepts_a_gpt2model_state_dict_without_prefix():
    theirs, ours = hf_pair()
    again = GPT(ours.config).eval()
    load_gpt2_state_dict(again, theirs.transformer.state_dict())  # names without "transformer."
    tokens = torch.randint(50, (2, 10))
    torch.testing.assert_close(again(tokens), ours(tokens), atol=0, rtol=0)


def test_loader_rejects_a_model_built_unlike_gpt2():
    theirs, _ = hf_pair()
    options = {"vocab_size": 50, "max_len": 24, "d_model": 32, "num_heads": 4, "num_layers": 2}
    for changes, message in (({"activation": "gelu_tanh"}, "bias=True"), ({"bias": True}, "gelu_tanh")):
        with pytest.raises(ValueError, match=message):
            load_gpt2_state_dict(GPT(GPTConfig(**(options | changes))), theirs.state_dict())


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"num_layers": 3}, "num_layers differs"), ({"max_len": 32}, "max_len differs"),
     ({"vocab_size": 60}, "vocab_size differs"), ({"d_model": 16}, "d_model differs")],
)
def test_loader_rejects_other_sizes(changes, message):
    theirs, _ = hf_pair()
    options = {"vocab_size": 50, "max_len": 24, "d_model": 32, "num_heads": 4, "num_layers": 2,
               "bias": True, "activation": "gelu_tanh"}
    with pytest.raises(ValueError, match=message):
        load_gpt2_state_dict(GPT(GPTConfig(**(options | changes))), theirs.state_dict())


def test_loader_rejects_missing_names_and_an_untied_head():
    theirs, ours = hf_pair()
    state = dict(theirs.state_dict())
    del state["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match=r"missing \['h.1.mlp.c_fc.bias'\]"):
        load_gpt2_state_dict(ours, state)
    state = dict(theirs.state_dict())
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="untied"):
        load_gpt2_state_dict(ours, state)
    with pytest.raises(TypeError, match="must be a GPT"):
        load_gpt2_state_dict(nn.Linear(2, 2), theirs.state_dict())


def test_gpt2_config_is_gpt2_small():
    c = GPTConfig.gpt2()
    assert (c.vocab_size, c.max_len, c.d_model, c.num_heads, c.num_layers, c.d_ff) == (
        50257, 1024, 768, 12, 12, 3072)
    assert c.bias and c.activation == "gelu_tanh" and c.eps == 1e-5
    # The parameter count of GPT-2 small, from the sizes (building the model takes half a gigabyte).
    d, block = c.d_model, 4 * c.d_model**2 + 4 * c.d_model + 2 * c.d_model * c.d_ff + c.d_ff + 5 * c.d_model
    assert c.vocab_size * d + c.max_len * d + c.num_layers * block + 2 * d == 124_439_808


# ---------------------------------------------------------------- the model


def test_output_layer_is_tied_and_shapes():
    model = GPT(small_config())
    assert model.output.weight is model.token_embedding.weight
    assert model(torch.randint(40, (3, 16))).shape == (3, 16, 40)
    d, V, P, ff = 32, 40, 16, 128
    expected = V * d + P * d + 2 * (4 * d * d + 2 * d * ff + 2 * d) + d  # no biases, layer norms' gains only
    assert sum(p.numel() for p in model.parameters()) == expected
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())  # nanoGPT's bias=False
    with_bias = GPT(small_config(bias=True))
    assert all(norm.bias is not None for name, norm in with_bias.named_modules() if name.endswith("norm"))
    rope = GPT(small_config(position="rope"))
    assert rope.positional is None and sum(p.numel() for p in rope.parameters()) == expected - P * d


def test_initialization_follows_gpt2():
    torch.manual_seed(0)
    model = GPT(small_config(d_model=128, num_layers=4, vocab_size=200, bias=True))
    assert abs(model.token_embedding.weight.std().item() - 0.02) < 0.002
    layer = model.decoder.layers[0]
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.002
    assert abs(layer.feed_forward.linear2.weight.std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert torch.count_nonzero(layer.feed_forward.linear1.bias) == 0


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("t", [0, 5, 14])
def test_logits_at_t_ignore_later_tokens(t, position):
    torch.manual_seed(0)
    model = GPT(small_config(position=position)).eval()
    tokens = torch.randint(40, (2, 16))
    changed = tokens.clone()
    changed[:, t + 1:] = torch.randint(40, changed[:, t + 1:].shape)
    torch.testing.assert_close(model(changed)[:, : t + 1], model(tokens)[:, : t + 1], atol=1e-6, rtol=0)
    if t < 15:
        assert not torch.allclose(model(changed)[:, t + 1:], model(tokens)[:, t + 1:])


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("chunks", [(16,), (1,) * 16, (5, 1, 10), (15, 1)])
def test_cache_in_chunks_equals_one_pass(chunks, position):
    torch.manual_seed(0)
    model = GPT(small_config(bias=True, position=position)).eval()
    tokens = torch.randint(40, (2, 16))
    cache, pieces, start = model.new_cache(), [], 0
    for size in chunks:
        pieces.append(model(tokens[:, start:start + size], cache=cache))
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(tokens), atol=1e-5, rtol=0)


def test_attention_weights_are_causal_distributions():
    torch.manual_seed(0)
    model = GPT(small_config()).eval()
    logits, weights = model(torch.randint(40, (2, 10)), need_weights=True)
    assert logits.shape == (2, 10, 40) and weights.shape == (2, 2, 4, 10, 10)  # (N, B, H, T, T)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 2, 4, 10))
    assert torch.all(weights.triu(diagonal=1) == 0)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(small_config(dropout=0.5))
    tokens = torch.randint(40, (2, 8))
    assert not torch.equal(model.train()(tokens), model(tokens))
    assert torch.equal(model.eval()(tokens), model(tokens))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"vocab_size": 0}, "vocab_size must be a positive int"), ({"num_heads": 5}, "not divisible"),
     ({"dropout": 1.0}, "dropout must be in"), ({"activation": "tanh"}, "activation must be"),
     ({"max_len": 2.5}, "max_len must be a positive int"), ({"num_layers": True}, "num_layers"),
     ({"position": "sinusoidal"}, "position must be"),
     ({"position": "rope", "d_model": 12, "num_heads": 4}, "must be even")],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes)


def test_rope_positions_are_relative_in_the_model():
    """With rope, a text read from a later start (after 4 cached tokens that the mask hides) gives the same
    logits; with learned positions it does not."""
    torch.manual_seed(0)
    tokens = torch.randint(40, (2, 8))
    for position, same in (("rope", True), ("learned", False)):
        model = GPT(small_config(position=position)).eval()
        cache = model.new_cache()
        model(torch.randint(40, (2, 4)), cache=cache)  # positions 0 .. 3
        mask = torch.cat([torch.zeros(8, 4, dtype=torch.bool), torch.ones(8, 8, dtype=torch.bool).tril()], 1)
        x = model.token_embedding(tokens)
        if model.positional is not None:
            x = model.positional(x, start=4)
        later = model.output(model.decoder(x, self_attn_mask=mask, cache=cache))
        assert torch.allclose(later, model(tokens), atol=1e-5) == same


def test_gpt2_loader_rejects_rope():
    theirs, _ = hf_pair()
    options = {"vocab_size": 50, "max_len": 24, "d_model": 32, "num_heads": 4, "num_layers": 2,
               "bias": True, "activation": "gelu_tanh", "position": "rope"}
    with pytest.raises(ValueError, match="position='learned'"):
        load_gpt2_state_dict(GPT(GPTConfig(**options)), theirs.state_dict())


def test_config_fills_d_ff():
    assert small_config().d_ff == 128 and small_config(d_ff=50).d_ff == 50


def test_forward_rejects_bad_input():
    model = GPT(small_config())
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"vocab_size": 40})
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.rand(2, 4))
    with pytest.raises(ValueError, match="vocab_size=40"):
        model(torch.tensor([[3, 40]]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 10, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="10 cached"):
        model(torch.zeros(1, 7, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="new_cache"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=[{}])


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("prompt_length", [1, 5, 20])
def test_generation_with_and_without_cache_agree_beyond_the_window(prompt_length, position):
    """40 new tokens with max_len 16: the window jumps several times; the cache never changes the result."""
    torch.manual_seed(0)
    model = GPT(small_config(bias=True, position=position))
    with torch.no_grad():
        model.token_embedding.weight.mul_(50)  # confident logits: no near-ties between the two paths
    prompt = torch.randint(40, (3, prompt_length))
    cached = generate_from_prompt(model, prompt, 40)
    assert cached.shape == (3, prompt_length + 40) and torch.equal(cached[:, :prompt_length], prompt)
    assert torch.equal(cached, generate_from_prompt(model, prompt, 40, use_cache=False))


def test_generation_reads_the_window_that_the_docstring_describes():
    """After the window jumps, each step's logits are those of the last tokens since the jump."""
    torch.manual_seed(0)
    model = GPT(small_config(max_len=8)).eval()
    prompt = torch.randint(40, (1, 3))
    out = generate_from_prompt(model, prompt, 12, use_cache=False)
    window = 0
    for length in range(3, 15):
        if length - window > 8:
            window = length - 4
        expected = model(out[:, window:length])[:, -1].argmax(dim=-1)
        assert torch.equal(out[:, length], expected)


def test_sampling_draws_as_sample_next_token():
    torch.manual_seed(0)
    model = GPT(small_config()).eval()
    prompt = torch.randint(40, (2, 3))
    options = {"temperature": 0.7, "top_k": 10, "top_p": 0.9}
    got = generate_from_prompt(model, prompt, 6, do_sample=True, generator=torch.Generator().manual_seed(3),
                               **options)
    generator, tokens = torch.Generator().manual_seed(3), prompt
    for _ in range(6):
        logits = model(tokens)[:, -1]
        tokens = torch.cat([tokens, sample_next_token(logits, generator=generator, **options)[:, None]], 1)
    assert torch.equal(got, tokens)


def test_generation_restores_the_training_mode_and_rejects_bad_input():
    model = GPT(small_config()).train()
    generate_from_prompt(model, torch.zeros(1, 2, dtype=torch.long), 3)
    assert model.training
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        generate_from_prompt(model, torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="empty"):
        generate_from_prompt(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature"):
        generate_from_prompt(model, torch.zeros(1, 2, dtype=torch.long), 3, do_sample=True, temperature=0)
    with pytest.raises(TypeError, match="integer token ids"):
        generate_from_prompt(model, torch.zeros(1, 2), 3)


# ---------------------------------------------------------------- data and training


@pytest.mark.parametrize(("batch_size", "context"), [(1, 1), (4, 7), (16, 29)])
def test_next_token_batch_targets_are_the_next_tokens(batch_size, context):
    data = torch.arange(1000, 1030)
    x, y = next_token_batch(data, batch_size, context, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (batch_size, context)
    assert torch.equal(y, x + 1)  # consecutive ids: the next token is the id plus one
    assert torch.all(x[:, 1:] == x[:, :-1] + 1)  # contiguous windows
    assert x.min() >= 1000 and y.max() <= 1029


def test_next_token_batch_covers_every_start_including_the_last():
    data = torch.arange(10)
    starts = {int(next_token_batch(data, 1, 4, torch.Generator().manual_seed(s))[0][0, 0])
              for s in range(200)}
    assert starts == set(range(6))  # the last window's target is data[9]


def test_next_token_batch_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D tensor"):
        next_token_batch(torch.zeros(2, 5, dtype=torch.long), 2, 3)
    with pytest.raises(ValueError, match="too few"):
        next_token_batch(torch.arange(4), 2, 4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        next_token_batch(torch.arange(10), 0, 4)
    with pytest.raises(ValueError, match="context must be an int >= 1"):
        next_token_batch(torch.arange(10), 2, 0)


def test_language_model_loss_is_mean_negative_log_likelihood():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(7, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(language_model_loss(logits, targets), expected)
    uniform = language_model_loss(torch.zeros(1, 3, 7), torch.tensor([[0, 3, 6]]))
    assert math.isclose(uniform.item(), math.log(7), rel_tol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        language_model_loss(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))


def test_estimate_loss_averages_the_batches_it_draws():
    torch.manual_seed(0)
    model = GPT(small_config()).train()
    data = torch.randint(40, (300,))
    got = estimate_loss(model, data, 4, 3, torch.Generator().manual_seed(5))
    assert model.training  # restored
    model.eval()
    generator = torch.Generator().manual_seed(5)
    losses = [language_model_loss(model(x), y).item()
              for x, y in (next_token_batch(data, 4, 16, generator) for _ in range(3))]
    assert math.isclose(got, sum(losses) / 3, rel_tol=1e-6)
    with pytest.raises(ValueError, match="num_batches"):
        estimate_loss(model, data, 4, 0)


def test_make_optimizer_decays_only_matrices():
    model = GPT(small_config(bias=True))
    optimizer = make_optimizer(model, 1e-3, weight_decay=0.1)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # the tied matrix once
    assert optimizer.defaults["betas"] == (0.9, 0.99)


def test_training_learns_a_repeating_text_and_records_history():
    torch.manual_seed(0)
    data = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 40)  # the next token is always determined
    model = GPT(small_config(vocab_size=8, max_len=8))
    calls = []
    history = train_language_model(model, data, data, steps=60, batch_size=8, lr=3e-3, warmup_steps=5,
                                   eval_every=25, eval_batches=2, progress=False,
                                   on_eval=lambda h, m: calls.append(h.eval_steps[-1]))
    assert isinstance(history, LMHistory)
    assert history.eval_steps == [0, 25, 50, 60] == calls
    assert len(history.train_loss) == 60
    assert len(history.valid_loss) == len(history.eval_train_loss) == len(history.seconds) == 4
    assert history.valid_loss[0] > 1.5 and history.valid_loss[-1] < 0.3
    assert history.seconds == sorted(history.seconds)


def test_training_is_reproducible_with_a_seed():
    data = torch.randint(40, (200,), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GPT(small_config())
        losses.append(train_language_model(model, data, data, steps=5, warmup_steps=1, eval_every=5,
                                           eval_batches=1, progress=False).train_loss)
    assert losses[0] == losses[1]


def test_training_draws_random_numbers_in_nanogpt_order(monkeypatch):
    """One generator: the first update's batch, then the estimates of step 0 (train, then validation), then
    each update draws the next update's batch; and the warmup is nanoGPT's (t + 1) / (warmup + 1)."""
    data = torch.randint(40, (200,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = GPT(small_config())
    initial = GPT(small_config())
    initial.load_state_dict(model.state_dict())
    history = train_language_model(model, data, data, steps=3, batch_size=4, warmup_steps=2, eval_every=3,
                                   eval_batches=1, generator=torch.Generator().manual_seed(7), progress=False)
    generator = torch.Generator().manual_seed(7)
    x, y = next_token_batch(data, 4, 16, generator)  # the first update's batch comes first
    expected = [estimate_loss(initial, data, 4, 1, generator) for _ in range(2)]  # train, then validation
    assert [history.eval_train_loss[0], history.valid_loss[0]] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        first = language_model_loss(initial(x), y).item()
    assert history.train_loss[0] == pytest.approx(first, rel=1e-6)
    lrs, original_step = [], torch.optim.AdamW.step

    def record(self, *args, **kwargs):  # the learning rate of each update
        lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    train_language_model(GPT(small_config()), data, data, steps=4, lr=1e-3, min_lr=1e-4, warmup_steps=2,
                         eval_every=4, eval_batches=1, progress=False)
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])  # (t + 1) / 3, then the cosine's peak


def test_training_rejects_bad_settings():
    model, data = GPT(small_config()), torch.randint(40, (100,))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train_language_model(model, data, data, steps=0, progress=False)
    with pytest.raises(ValueError, match="min_lr"):
        train_language_model(model, data, data, steps=5, lr=1e-3, min_lr=1e-2, progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        train_language_model(model, data, data, steps=5, eval_every=0, progress=False)


# ---------------------------------------------------------------- the exercise checker of the notebook


def _notebook_checker():
    """The notebook's check_next_token_batch, run from its cell."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "def check_next_token_batch" in "".join(c["source"]))
    source = source.replace("check_next_token_batch(my_next_token_batch)", "")
    namespace = {"torch": torch}
    exec(source, namespace)
    return namespace["check_next_token_batch"]


def _run(fn) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _notebook_checker()(fn)
    return out.getvalue()


def _correct(data, starts, context):  # written differently from the notebook's solution
    windows = data.unfold(0, context + 1, 1)[starts]  # (B, context + 1)
    return windows[:, :-1], windows[:, 1:]


def _positions(starts, context, shift=0):
    return starts[:, None] + torch.arange(context) + shift


def _not_attempted(data, starts, context):
    raise NotImplementedError


WRONG = {
    "swapped": (lambda d, s, c: (d[_positions(s, c, 1)], d[_positions(s, c)]), "swapped"),
    "same": (lambda d, s, c: (d[_positions(s, c)], d[_positions(s, c)]), "y equals x"),
    "previous": (lambda d, s, c: (d[_positions(s, c)], d[_positions(s, c, -1)]), "previous tokens"),
    "late": (lambda d, s, c: (d[_positions(s, c, 1)], d[_positions(s, c, 2)]), "one token late"),
    "short": (lambda d, s, c: (d[_positions(s, c)], d[_positions(s, c - 1, 1)]), "one token short"),
    "list": (lambda d, s, c: [d[_positions(s, c)], d[_positions(s, c, 1)]], "pair of tensors"),
    "skip": (lambda d, s, c: (d[_positions(s, c)], d[_positions(s, c, 2)]), "skips a token"),
    "overrun": (lambda d, s, c: (d[_positions(s, c)], d[s[:, None] + torch.arange(c) + 1 + len(d)]),
                "IndexError"),
    "other": (lambda d, s, c: (d[_positions(s, c)], d[_positions(s, c, 1)].flip(-1)), "For each start i"),
}


@pytest.mark.parametrize("mistake", sorted(WRONG))
def test_checker_diagnoses_typical_mistakes(mistake):
    fn, diagnosis = WRONG[mistake]
    report = _run(fn)
    assert diagnosis in report and "Correct" not in report


def test_checker_accepts_a_correct_answer_and_notices_none():
    assert "Correct" in _run(_correct)
    assert "Not attempted yet" in _run(_not_attempted)
