"""Tests for transformer_lib/translation.py: tokenization and BLEU agree with sacreBLEU (a test-only
reference), batching covers every pair once within its budget, vocabularies come from the data they are
given, decoding and attention agree with chapter 10's functions and the model's own forward pass, and bad
input raises clear errors.
"""

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
import torch
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from transformer_lib.generation import beam_search, generate
from transformer_lib.multihead import MultiHeadAttention
from transformer_lib.tokenizer import Vocabulary
from transformer_lib.training import Batch, warmup_inverse_sqrt_schedule
from transformer_lib.transformer import Transformer, TransformerConfig
from transformer_lib.translation import (
    BleuScore,
    TokenBatches,
    TranslationHistory,
    brevity_penalty,
    build_vocabulary,
    clipped_matches,
    corpus_bleu,
    cross_attention_weights,
    decode_ids,
    encode_pairs,
    encode_tokens,
    init_attention_like_torch,
    length_grouped_batches,
    ngram_counts,
    padding_fraction,
    set_fused_attention,
    tokenize_13a,
    train_translation,
    translate,
    warmup_linear_decay,
)

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    'Ein Mann (mit Hut) kauft 2,5 kg Äpfel für 3.50 Euro - "billig"!',
    "A man in an orange hat starring at something.",
    "Two young, White males are outside near many bushes.",
    "The 1990s-era car costs $5,000.00; isn't it cheap?",
    "&quot;Quoted&quot; &amp; &lt;tagged&gt; text<skipped> with a line-\nbreak",
    "A 3-year-old boy's toy: a red/blue ball [new] {old} ~ 50% off @ store #1.",
    "  leading and   trailing spaces  ",
    "",
    "ÜBER GROSSE STRAẞEN, ÉCOLE.",
]


def test_sacrebleu_signature_is_the_reference(capsys):
    metric = sacrebleu.BLEU(lowercase=True)
    metric.corpus_score(["a b c d"], [["a b c d"]])
    signature = str(metric.get_signature())
    with capsys.disabled():
        print(f"\nreference: sacrebleu {sacrebleu.__version__}, signature {signature}")
    assert "case:lc" in signature and "tok:13a" in signature and "smooth:exp" in signature


# --- tokenization and vocabularies ----------------------------------------------------------------


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_13a_matches_sacrebleu(text, lowercase):
    expected = Tokenizer13a()(text.lower() if lowercase else text).split()
    assert tokenize_13a(text, lowercase) == expected


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_13a_is_idempotent(text):
    tokens = tokenize_13a(text)
    assert tokenize_13a(" ".join(tokens)) == tokens


@pytest.mark.parametrize("bad", [None, 3, ["a", "b"], b"bytes"])
def test_tokenize_13a_rejects_non_strings(bad):
    with pytest.raises(TypeError, match="tokenize_13a takes a str"):
        tokenize_13a(bad)


def test_build_vocabulary_keeps_frequent_tokens_most_frequent_first():
    sentences = [["b", "a", "b"], ["c", "b", "a"], ["d"]]
    vocab = build_vocabulary(sentences, min_freq=2)
    assert list(vocab)[4:] == ["b", "a"]  # after the 4 special tokens; c and d are seen once
    assert vocab.token_to_id("c") == vocab.unk_id
    assert list(build_vocabulary(sentences, min_freq=1))[4:] == ["b", "a", "c", "d"]  # ties alphabetical


def test_vocabulary_built_on_training_split_only():
    train = [("ein hund läuft", "a dog runs"), ("ein hund springt", "a dog jumps")] * 2
    test = [("ein zebra läuft", "a zebra runs")]
    src_vocab = build_vocabulary((tokenize_13a(de) for de, _ in train), min_freq=2)
    tgt_vocab = build_vocabulary((tokenize_13a(en) for _, en in train), min_freq=2)
    assert "zebra" not in tgt_vocab and "zebra" not in src_vocab
    (src, tgt), = encode_pairs(test, src_vocab, tgt_vocab)
    assert src[1] == src_vocab.unk_id and tgt[1] == tgt_vocab.unk_id
    assert src[0] == src_vocab.token_to_id("ein") and tgt[2] == tgt_vocab.token_to_id("runs")


@pytest.mark.parametrize(
    "sentences, min_freq, error, match",
    [
        ([["a"]], 0, ValueError, "min_freq must be an int >= 1"),
        ([["a"]], 1.5, ValueError, "min_freq must be an int >= 1"),
        (["a sentence"], 1, TypeError, "tokenize it"),
        ([], 1, ValueError, "got no tokens"),
    ],
)
def test_build_vocabulary_rejects_bad_input(sentences, min_freq, error, match):
    with pytest.raises(error, match=match):
        build_vocabulary(sentences, min_freq)


@pytest.mark.parametrize("text", TEXTS[:7])
def test_encode_decode_round_trip(text):
    tokens = tokenize_13a(text, lowercase=True)
    vocab = Vocabulary(tokens)
    ids = encode_tokens(tokens, vocab)
    assert decode_ids(ids, vocab) == " ".join(tokens)
    framed = torch.tensor([vocab.bos_id, *ids, vocab.eos_id, *ids, vocab.pad_id])
    assert decode_ids(framed, vocab) == " ".join(tokens)  # <bos> dropped, stops at the first <eos>
    assert tokenize_13a(decode_ids(ids, vocab)) == tokens


def test_encode_pairs_rejects_bad_pairs():
    vocab = Vocabulary(["a"])
    with pytest.raises(TypeError, match="pair 1 must be a"):
        encode_pairs([("a", "a"), ("a",)], vocab, vocab)
    with pytest.raises(TypeError, match="pair 0 must be a"):
        encode_pairs([(["a"], "a")], vocab, vocab)


# --- batching -------------------------------------------------------------------------------------


def random_pairs(count: int, seed: int, max_len: int = 30) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [([rng.randrange(4, 50) for _ in range(rng.randint(1, max_len))],
             [rng.randrange(4, 50) for _ in range(rng.randint(1, max_len))]) for _ in range(count)]


@pytest.mark.parametrize("max_tokens", [31, 100, 1000])
@pytest.mark.parametrize("seed", [0, 1, None])
def test_length_grouped_batches_cover_every_pair_once_within_budget(max_tokens, seed):
    pairs = random_pairs(500, seed=3)
    batches = length_grouped_batches(pairs, max_tokens, seed)
    assert sorted(i for batch in batches for i in batch) == list(range(len(pairs)))
    for batch in batches:
        longest = max(max(len(pairs[i][0]), len(pairs[i][1]) + 1) for i in batch)
        assert len(batch) * longest <= max_tokens
        made = make_batch_of(pairs, batch)
        assert max(made.src.numel(), made.tgt_in.numel()) <= max_tokens  # what the tensors really hold
    if seed is None:  # shortest first, in sorted order
        flat = [len(pairs[i][0]) for batch in batches for i in batch]
        assert flat == sorted(flat)


def make_batch_of(pairs, indices) -> Batch:
    from transformer_lib.training import make_batch

    return make_batch([pairs[i] for i in indices])


def test_length_grouped_batches_are_seeded_and_greedy():
    pairs = random_pairs(300, seed=4)
    assert length_grouped_batches(pairs, 200, 5) == length_grouped_batches(pairs, 200, 5)
    assert length_grouped_batches(pairs, 200, 5) != length_grouped_batches(pairs, 200, 6)
    batches = length_grouped_batches(pairs, 200, None)
    for batch, following in zip(batches, batches[1:], strict=False):  # greedy: the next one did not fit
        longest = max(max(len(pairs[i][0]), len(pairs[i][1]) + 1) for i in [*batch, following[0]])
        assert (len(batch) + 1) * longest > 200


def test_length_grouped_batches_reduce_padding():
    rng = random.Random(5)  # a target about as long as its source, as in a translation corpus
    lengths = [rng.randint(1, 30) for _ in range(2000)]
    pairs = [([4] * n, [5] * max(1, n + rng.randint(-2, 2))) for n in lengths]
    grouped = [make_batch_of(pairs, batch) for batch in length_grouped_batches(pairs, 1000, 0)]
    size = round(len(pairs) / len(grouped))
    shuffled = [make_batch_of(pairs, range(k, min(k + size, len(pairs)))) for k in range(0, len(pairs), size)]
    assert padding_fraction(grouped) < 0.1 < 0.3 < padding_fraction(shuffled)


@pytest.mark.parametrize(
    "pairs, max_tokens, match",
    [
        ([([4] * 5, [4] * 5)], 0, "max_tokens must be an int >= 1"),
        ([([4] * 5, [4] * 5)], 2.5, "max_tokens must be an int >= 1"),
        ([], 10, "got no pairs"),
        ([([4] * 3, [4] * 3), ([4] * 12, [4] * 3)], 10, "pair 1 alone needs 12 tokens"),
        ([([4] * 3, [4] * 9)], 9, "pair 0 alone needs 10 tokens"),
    ],
)
def test_length_grouped_batches_reject_bad_input(pairs, max_tokens, match):
    with pytest.raises(ValueError, match=match):
        length_grouped_batches(pairs, max_tokens)


def test_padding_fraction_counts_padded_positions():
    batch = Batch(
        src=torch.zeros(2, 3, dtype=torch.long), tgt_in=torch.zeros(2, 4, dtype=torch.long),
        tgt_out=torch.zeros(2, 4, dtype=torch.long),
        src_padding_mask=torch.tensor([[True, True, True], [True, False, False]]),
        tgt_padding_mask=torch.tensor([[True] * 4, [True, True, True, False]]),
    )
    assert padding_fraction([batch]) == pytest.approx(3 / 14)
    with pytest.raises(ValueError, match="got no batches"):
        padding_fraction([])


def test_token_batches_reshuffle_each_pass_and_cover_every_pair():
    pairs = random_pairs(400, seed=6)
    batches = TokenBatches(pairs, 300, seed=2)
    passes = [[(b.src.tolist(), b.tgt_out.tolist()) for b in batches] for _ in range(2)]
    assert len(passes[0]) == len(passes[1]) == len(batches)
    assert passes[0] != passes[1] and sorted(map(str, passes[0])) == sorted(map(str, passes[1]))
    seen = Counter()
    for batch in TokenBatches(pairs, 300, seed=2):
        for row, mask in zip(batch.src.tolist(), batch.src_padding_mask.tolist(), strict=True):
            seen[tuple(token for token, real in zip(row, mask, strict=True) if real)] += 1
    assert seen == Counter(tuple(source) for source, _ in pairs)


# --- BLEU -----------------------------------------------------------------------------------------


def test_ngram_counts_and_clipping_on_papinenis_example():
    the = "the the the the the the the".split()
    cat = "the cat is on the mat".split()
    assert ngram_counts(cat, 2) == Counter({("the", "cat"): 1, ("cat", "is"): 1, ("is", "on"): 1,
                                            ("on", "the"): 1, ("the", "mat"): 1})
    assert clipped_matches(the, cat, 1) == (2, 7)
    assert clipped_matches("the cat the cat on the mat".split(), cat, 2) == (3, 6)
    assert clipped_matches(["a"], ["a"], 2) == (0, 0)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        ngram_counts(cat, 0)
    with pytest.raises(TypeError, match="tokenize it first"):
        clipped_matches("the cat", cat, 1)


@pytest.mark.parametrize("hyp_len, ref_len, expected", [(10, 10, 1.0), (12, 10, 1.0), (10, 12, 0.8187307531),
                                                        (1, 4, 0.0497870684), (0, 5, 0.0), (0, 0, 1.0)])
def test_brevity_penalty_analytic(hyp_len, ref_len, expected):
    assert brevity_penalty(hyp_len, ref_len) == pytest.approx(expected, abs=1e-9)


def test_brevity_penalty_rejects_negative_lengths():
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        brevity_penalty(-1, 3)


def perturbed(references: list[str], seed: int) -> list[str]:
    """Hypotheses made from the references by dropping, swapping, repeating and replacing words."""
    rng = random.Random(seed)
    hypotheses = []
    for reference in references:
        words = reference.split()
        for _ in range(rng.randint(0, 4)):
            if not words:
                break
            i = rng.randrange(len(words))
            action = rng.choice(["drop", "swap", "repeat", "replace", "case"])
            if action == "drop":
                del words[i]
            elif action == "swap":
                j = rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
            elif action == "repeat":
                words.insert(i, words[i])
            elif action == "replace":
                words[i] = rng.choice(["dog", "Man", "the", "red", ",", "."])
            else:
                words[i] = words[i].upper()
        hypotheses.append(" ".join(words))
    return hypotheses


REFERENCES = [
    "A man in an orange hat starring at something.",
    "A Boston Terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
    "Five people wearing winter jackets and helmets stand in the snow, with snowmobiles in the background.",
    "People are fixing the roof of a house.",
    "A man in light colored clothing photographs a group of men wearing dark suits and hats.",
    "A group of people standing in front of an igloo.",
    "A boy in a red uniform is attempting to avoid getting out at home plate, while the catcher in the blue "
    "uniform is attempting to catch him.",
]
CASES = {
    "perturbed": (perturbed(REFERENCES, 0), REFERENCES),
    "heavily perturbed": (perturbed(perturbed(REFERENCES, 1), 2), REFERENCES),
    "identical": (REFERENCES, REFERENCES),
    "short hypotheses": ([r.split()[0] for r in REFERENCES], REFERENCES),
    "no 4-gram match (smoothing)": (["a man", "the dog runs", "people are here", "a b c"],
                                    ["a man sleeps", "the dog is running", "people are not here", "x y z"]),
    "no match at all": (["foo bar baz qux"], ["a b c d"]),
    "empty hypothesis": (["", "a man in a hat"], ["a man", "a man in an orange hat"]),
    "longer than the references": ([r + " and more words here" for r in REFERENCES], REFERENCES),
    "numbers and punctuation": (["It costs 3.50 Euro - (cheap)!", "1990s-era car, $5,000"],
                                ["It costs 3.50 euro - cheap!", "A 1990s-era car for $5,000."]),
}


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_corpus_bleu_equals_sacrebleu_on_fixtures(case, lowercase):
    hypotheses, references = CASES[case]
    ours = corpus_bleu(hypotheses, references, lowercase=lowercase)
    theirs = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=lowercase)
    assert ours.score == pytest.approx(theirs.score, abs=1e-6)
    assert ours.precisions == pytest.approx(theirs.precisions, abs=1e-6)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=1e-9)
    assert (ours.hyp_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.matches == list(theirs.counts) and ours.totals == list(theirs.totals)


@pytest.mark.parametrize("seed", range(5))
def test_corpus_bleu_equals_sacrebleu_on_random_corpora(seed):
    rng = random.Random(seed)
    words = "a the man dog runs red ball on grass , . Two people".split()
    references = [" ".join(rng.choices(words, k=rng.randint(1, 15))) for _ in range(50)]
    hypotheses = perturbed(references, seed)
    ours = corpus_bleu(hypotheses, references).score
    theirs = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_bleu_score_prints_like_sacrebleu():
    score = corpus_bleu(["a man in a hat"], ["a man in an orange hat"])
    assert isinstance(score, BleuScore)
    assert str(score).startswith(f"BLEU = {score.score:.2f} ") and "BP = " in str(score)


@pytest.mark.parametrize(
    "hypotheses, references, error, match",
    [
        ("a b", ["a b"], TypeError, "lists of sentences"),
        (["a b"], "a b", TypeError, "lists of sentences"),
        (["a", "b"], ["a"], ValueError, "got 2 hypotheses but 1 references"),
        ([], [], ValueError, "at least one sentence"),
    ],
)
def test_corpus_bleu_rejects_bad_input(hypotheses, references, error, match):
    with pytest.raises(error, match=match):
        corpus_bleu(hypotheses, references)


# --- a tiny trained model: decoding, attention, training loop --------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """A small Transformer trained for 60 updates on a synthetic word-reversal 'language pair'."""
    torch.manual_seed(0)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(20)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(2, 8))) for _ in range(600)]
    pairs = [(s, " ".join(reversed(s.split()))) for s in sentences]
    vocab = build_vocabulary([tokenize_13a(s) for s, _ in pairs[:500]], min_freq=1)
    encoded = encode_pairs(pairs, vocab, vocab)
    config = TransformerConfig(src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), d_model=32, num_heads=4,
                               num_encoder_layers=1, num_decoder_layers=1, d_ff=64, dropout=0.0, max_len=32)
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = TokenBatches(encoded[:500], max_tokens=200, seed=0)
    history = train_translation(model, optimizer, batches, encoded[500:540], [t for _, t in pairs[500:540]],
                                vocab, max_steps=60, progress=False)
    return {"model": model, "vocab": vocab, "pairs": pairs[500:], "encoded": encoded[500:],
            "history": history, "batches": batches}


def test_corpus_bleu_equals_sacrebleu_on_a_trained_models_outputs(tiny):
    sources = [source for source, _ in tiny["encoded"]]
    references = [target for _, target in tiny["pairs"]]
    for beam_size in (1, 3):
        hypotheses = translate(tiny["model"], sources, tiny["vocab"], beam_size=beam_size)
        ours = corpus_bleu(hypotheses, references).score
        assert ours == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score,
                                     abs=1e-6)
        assert ours > 5.0  # the model has learned something, so the comparison is not between zeros


OUTPUTS = ROOT / "benchmarks" / "results" / "translation_outputs.json"


@pytest.mark.skipif(not OUTPUTS.exists() or not os.environ.get("TRANSFORMER_COURSE_DATA"),
                    reason="needs the full run's outputs and the Multi30k data")
def test_corpus_bleu_equals_sacrebleu_on_the_full_runs_outputs():
    from transformer_lib.data import load_multi30k

    references = [english for _, english in load_multi30k("test_2016_flickr")]
    outputs = json.loads(OUTPUTS.read_text())
    results = json.loads((ROOT / "benchmarks" / "results" / "translation.json").read_text())
    for name in ("greedy", "beam"):
        ours = corpus_bleu(outputs[name], references).score
        theirs = sacrebleu.corpus_bleu(outputs[name], [references], lowercase=True).score
        assert ours == pytest.approx(theirs, abs=1e-6)
        assert round(ours, 2) == results["bleu"][name]  # the results file holds these outputs' scores


def test_translate_equals_generate_and_beam_search_one_sentence_at_a_time(tiny):
    model, vocab = tiny["model"], tiny["vocab"]
    sources = [source for source, _ in tiny["encoded"][:12]]
    for beam_size in (1, 3):
        batched = translate(model, sources, vocab, beam_size=beam_size, batch_size=5)
        for source, output in zip(sources, batched, strict=True):
            src = torch.tensor([source])
            max_new = int(1.5 * len(source)) + 10
            if beam_size == 1:
                tokens = generate(model, src, None, max_new)[0]
            else:
                tokens = beam_search(model, src, None, max_new, beam_size)[0][0, 0]
            assert output == decode_ids(tokens, vocab)


def test_translate_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="beam_size must be an int >= 1"):
        translate(tiny["model"], [[4, 5]], tiny["vocab"], beam_size=0)
    with pytest.raises(ValueError, match="got no sources"):
        translate(tiny["model"], [], tiny["vocab"])


def test_cross_attention_weights_are_the_decoders_own(tiny):
    model = tiny["model"]
    src, tgt = tiny["encoded"][0]
    weights = cross_attention_weights(model, src, tgt)
    N, H = model.config.num_decoder_layers, model.config.num_heads
    assert weights.shape == (N, H, len(tgt) + 1, len(src))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(N, H, len(tgt) + 1))
    # The same weights, read from each cross-attention module during the model's own decode.
    captured = []

    def hook(module, args, kwargs, output):
        query, key, value = args[:3]
        mask = kwargs.get("key_padding_mask")
        with torch.no_grad():
            _, w = module.forward(query, key, value, key_padding_mask=mask, need_weights=True)
        captured.append(w)

    layers = model.decoder.layers
    handles = [layer.cross_attn.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    model.eval()
    with torch.no_grad():
        model(torch.tensor([src]), torch.tensor([[1, *tgt]]))
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(weights, torch.stack(captured)[:, 0])


def test_train_translation_records_and_stops_at_max_steps(tiny):
    history = tiny["history"]
    assert isinstance(history, TranslationHistory)
    assert len(history.train_loss) == len(history.seconds) == 60
    assert history.valid_steps[-1] == 60 and len(history.valid_bleu) == len(history.valid_loss)
    assert len(history.valid_steps) == -(-60 // len(tiny["batches"]))  # one per (partial) pass
    assert history.seconds == sorted(history.seconds)
    assert history.train_loss[-1] < history.train_loss[0]


def test_train_translation_is_reproducible_and_steps_the_scheduler():
    def run():
        torch.manual_seed(0)
        vocab = Vocabulary([f"w{i}" for i in range(10)])
        pairs = [([4 + i % 10, 5], [5, 4 + i % 10]) for i in range(40)]
        config = TransformerConfig(len(vocab), len(vocab), d_model=16, num_heads=2, num_encoder_layers=1,
                                   num_decoder_layers=1, d_ff=32, max_len=16)
        model = Transformer(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scheduler = LambdaLR(optimizer, warmup_inverse_sqrt_schedule(4))
        history = train_translation(model, optimizer, TokenBatches(pairs, 30, seed=0), pairs[:4],
                                    ["w1 w0"] * 4, vocab, scheduler, max_steps=7, progress=False)
        return history, scheduler

    (first, scheduler), (second, _) = run(), run()
    assert first.train_loss == second.train_loss and first.valid_bleu == second.valid_bleu
    assert scheduler.last_epoch == 7


def test_train_translation_time_budget_and_bfloat16_autocast():
    torch.manual_seed(0)
    vocab = Vocabulary([f"w{i}" for i in range(10)])
    pairs = [([4 + i % 10, 5, 6], [6, 5, 4 + i % 10]) for i in range(60)]
    config = TransformerConfig(len(vocab), len(vocab), d_model=16, num_heads=2, num_encoder_layers=1,
                               num_decoder_layers=1, d_ff=32, max_len=16)
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = train_translation(model, optimizer, TokenBatches(pairs, 40, seed=0), pairs[:4],
                                ["w0 w1 w2"] * 4, vocab, max_seconds=1e-9, progress=False)
    assert len(history.train_loss) == 1 and history.valid_steps == [1]  # one update exceeds the budget
    history = train_translation(model, optimizer, TokenBatches(pairs, 40, seed=0), pairs[:4],
                                ["w0 w1 w2"] * 4, vocab, max_steps=6, progress=False,
                                autocast_dtype=torch.bfloat16)
    assert len(history.train_loss) == 6 and all(torch.isfinite(torch.tensor(history.train_loss)))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights alone


def test_train_translation_rejects_bad_input(tiny):
    args = (tiny["model"], torch.optim.SGD(tiny["model"].parameters(), lr=0.0), tiny["batches"])
    valid, references = tiny["encoded"][:2], [t for _, t in tiny["pairs"][:2]]
    with pytest.raises(ValueError, match="give max_steps"):
        train_translation(*args, valid, references, tiny["vocab"])
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        train_translation(*args, valid, references, tiny["vocab"], max_steps=0)
    with pytest.raises(ValueError, match="max_seconds must be > 0"):
        train_translation(*args, valid, references, tiny["vocab"], max_seconds=0)
    with pytest.raises(ValueError, match="as many valid references"):
        train_translation(*args, valid, references[:1], tiny["vocab"], max_steps=1)


@pytest.mark.parametrize("warmup", [1, 4, 10])
def test_warmup_linear_decay_analytic(warmup):
    factor = warmup_linear_decay(warmup)
    for updates in range(3 * warmup):
        for used in (0.0, 0.25, 0.5, 1.0):
            expected = min(1.0, (updates + 1) / warmup) * (1.0 - used)
            assert factor(updates, used) == pytest.approx(expected, abs=1e-12)
    assert factor(10 * warmup, 1.5) == 0.0  # past the budget: never negative
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 1"):
        warmup_linear_decay(0)


def _tiny_run(**kwargs):
    torch.manual_seed(0)
    vocab = Vocabulary([f"w{i}" for i in range(10)])
    pairs = [([4 + i % 10, 5, 6], [6, 5, 4 + i % 10]) for i in range(60)]
    config = TransformerConfig(len(vocab), len(vocab), d_model=16, num_heads=2, num_encoder_layers=1,
                               num_decoder_layers=1, d_ff=32, max_len=16)
    model = Transformer(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    rates = []
    step = optimizer.step

    def recording_step(*args, **step_kwargs):  # the rate each update actually used
        rates.append(optimizer.param_groups[0]["lr"])
        return step(*args, **step_kwargs)

    optimizer.step = recording_step
    history = train_translation(model, optimizer, TokenBatches(pairs, 40, seed=0), pairs[:4],
                                ["w0 w1 w2"] * 4, vocab, progress=False, **kwargs)
    return history, rates


@pytest.mark.parametrize("max_steps", [5, 8])
def test_train_translation_lr_schedule_follows_the_share_of_the_budget(max_steps):
    history, rates = _tiny_run(max_steps=max_steps, lr_schedule=warmup_linear_decay(2))
    assert len(rates) == len(history.train_loss) == max_steps
    expected = [0.5 * min(1.0, (u + 1) / 2) * (1 - u / max_steps) for u in range(max_steps)]
    assert rates == pytest.approx(expected, abs=1e-12)


def test_train_translation_lr_schedule_with_a_time_budget_decays_with_the_clock():
    history, rates = _tiny_run(max_seconds=0.5, lr_schedule=lambda updates, used: 1.0 - used)
    assert len(rates) >= 3
    used = [0.0] + [t / 0.5 for t in history.seconds[:-1]]  # share used before each update
    assert rates == pytest.approx([0.5 * (1.0 - min(u, 1.0)) for u in used], abs=1e-12)


def test_train_translation_rejects_a_scheduler_and_an_lr_schedule(tiny):
    optimizer = torch.optim.SGD(tiny["model"].parameters(), lr=0.0)
    scheduler = LambdaLR(optimizer, warmup_inverse_sqrt_schedule(4))
    with pytest.raises(ValueError, match="not both"):
        train_translation(tiny["model"], optimizer, tiny["batches"], tiny["encoded"][:2],
                          [t for _, t in tiny["pairs"][:2]], tiny["vocab"], scheduler, max_steps=1,
                          lr_schedule=warmup_linear_decay(2))


@pytest.mark.parametrize("d_model, num_heads", [(16, 2), (64, 4), (256, 8)])
def test_init_attention_like_torch_draws_as_nn_multihead_attention(d_model, num_heads):
    torch.manual_seed(0)
    config = TransformerConfig(50, 60, d_model=d_model, num_heads=num_heads, num_encoder_layers=2,
                               num_decoder_layers=1, d_ff=2 * d_model, max_len=16)
    model = Transformer(config)
    untouched = {name: p.clone() for name, p in model.named_parameters() if "proj" not in name}
    assert init_attention_like_torch(model) == 2 + 2  # 2 encoder layers, 1 decoder layer (self + cross)
    theirs = nn.Transformer(d_model, num_heads, 2, 1, 2 * d_model, batch_first=True)
    bound = (6.0 / (4 * d_model)) ** 0.5  # Xavier-uniform of the stacked (3 d_model, d_model) matrix
    their_std = theirs.encoder.layers[0].self_attn.in_proj_weight.std().item()
    for layer in (m for m in model.modules() if isinstance(m, MultiHeadAttention)):
        for projection in (layer.q_proj, layer.k_proj, layer.v_proj):
            assert projection.weight.abs().max() <= bound
            assert projection.weight.std().item() == pytest.approx(their_std, rel=0.25)
            assert projection.bias.abs().max() == 0
        assert layer.out_proj.bias.abs().max() == 0
    for name, p in model.named_parameters():  # everything else keeps its draw
        if name in untouched:
            assert torch.equal(p, untouched[name]), name


def test_set_fused_attention_switches_every_layer_and_keeps_the_function(tiny):
    model, batch = tiny["model"], next(iter(tiny["batches"]))
    outputs = {}
    for fused in (True, False):
        assert set_fused_attention(model, fused) == 3  # encoder self, decoder self and cross
        assert all(m.fused is fused for m in model.modules() if isinstance(m, MultiHeadAttention))
        model.zero_grad()
        logits = model(batch.src, batch.tgt_in, batch.src_padding_mask, batch.tgt_padding_mask)
        logits.square().mean().backward()
        outputs[fused] = (logits.detach(), model.output.weight.grad.clone(),
                          model.encoder.layers[0].self_attn.q_proj.weight.grad.clone())
    set_fused_attention(model, True)
    for fused_value, readable_value in zip(outputs[True], outputs[False], strict=True):
        torch.testing.assert_close(readable_value, fused_value, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="True or False"):
        set_fused_attention(model, "no")


# --- the exercise checker of notebooks/12_translation.ipynb -----------------------------------------


@pytest.fixture(scope="module")
def check_clipped_matches():
    notebook = json.loads((ROOT / "notebooks" / "12_translation.ipynb").read_text())
    source = next("".join(cell["source"]) for cell in notebook["cells"]
                  if "".join(cell["source"]).startswith("def _clipped_variants"))
    source = source.rsplit("check_clipped_matches(my_clipped_matches)", 1)[0]
    namespace = {"Counter": Counter, "random": random, "clipped_matches": clipped_matches}
    exec(source, namespace)
    return namespace["check_clipped_matches"]


def _grams(tokens, n, stop=1):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + stop)]


def no_clipping(hyp, ref, n):
    ref_grams = set(_grams(ref, n))
    return sum(g in ref_grams for g in _grams(hyp, n)), max(0, len(hyp) - n + 1)


def distinct_only(hyp, ref, n):
    return len(set(_grams(hyp, n)) & set(_grams(ref, n))), max(0, len(hyp) - n + 1)


def reference_total(hyp, ref, n):
    return clipped_matches(hyp, ref, n)[0], max(0, len(ref) - n + 1)


def length_total(hyp, ref, n):
    return clipped_matches(hyp, ref, n)[0], len(hyp)


def last_missed(hyp, ref, n):
    h, r = Counter(_grams(hyp, n, 0)), Counter(_grams(ref, n, 0))
    return sum(min(c, r[g]) for g, c in h.items()), max(0, len(hyp) - n)


@pytest.mark.parametrize(
    "wrong, phrase",
    [
        (no_clipping, "clip each n-gram's count"),
        (distinct_only, "clip to the reference count, not to 1"),
        (reference_total, "the n-grams of the hypothesis"),
        (length_total, "L - n + 1 n-grams"),
        (last_missed, "stops one early"),
        (lambda hyp, ref, n: [0, 0], "Return a tuple"),
    ],
)
def test_checker_diagnoses_typical_mistakes(check_clipped_matches, capsys, wrong, phrase):
    assert check_clipped_matches(wrong) is False
    assert phrase in capsys.readouterr().out


def test_checker_accepts_a_correct_answer_written_differently(check_clipped_matches, capsys):
    def mine(hypothesis, reference, n):
        remaining = [tuple(reference[i : i + n]) for i in range(len(reference) - n + 1)]
        matches = total = 0
        for start in range(len(hypothesis) - n + 1):
            gram = tuple(hypothesis[start : start + n])
            total += 1
            if gram in remaining:
                remaining.remove(gram)
                matches += 1
        return matches, total

    assert check_clipped_matches(mine) is True
    assert "Correct on all" in capsys.readouterr().out


def test_checker_reports_not_attempted(check_clipped_matches, capsys):
    def stub(hypothesis, reference, n):
        raise NotImplementedError

    assert check_clipped_matches(stub) is False
    assert "Not attempted yet" in capsys.readouterr().out
