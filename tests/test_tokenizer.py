"""Tests for transformer_lib/tokenizer.py (written by notebooks/01_tokens_and_embeddings.ipynb)."""

import random

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from transformer_lib.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    Vocabulary,
    WordTokenizer,
    pad_batch,
    split_words,
)

TRAINING_TEXT = (
    "The hedgehog lives in the lower garden. Every evening the hedgehog walks to the newest hedge, "
    "then to the widest hedge. The cat watches the hedgehog walking; the hedgehog watches the cat watching.\n"
)
VARIED_TEXTS = [
    "",
    "a",
    "Hello, world!",
    "  two  spaces,\ttabs\tand\nnew\n\nlines  \n",
    "Der Igel schläft. Le hérisson dort. 刺猬在睡觉。",
    "emoji 🦔🦔 and combining e\u0301 accents, naïve café",
    "it's 3.14 -- (maybe) [not] {quite}!?",
    "   ",
]


def _random_text(rng: random.Random, length: int) -> str:
    alphabet = "ab cde\n\t.,'!éß漢🙂"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _tokenizers(text: str) -> list[Tokenizer]:
    return [CharTokenizer.train(text), WordTokenizer.train(text), BPETokenizer.train(text, 25)]


# ---------------------------------------------------------------------------------------------- vocabulary


def test_special_tokens_come_first_with_fixed_ids():
    vocab = Vocabulary(["the", "cat"])
    assert SPECIAL_TOKENS == (PAD, BOS, EOS, UNK) == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert list(vocab) == ["<pad>", "<bos>", "<eos>", "<unk>", "the", "cat"]
    assert [vocab.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]


def test_vocabulary_maps_both_ways_and_skips_repeats():
    tokens = ["x", "y", "x", "z", "<pad>", "y"]
    vocab = Vocabulary(tokens)
    assert len(vocab) == 4 + 3
    for token in set(tokens):
        assert vocab.id_to_token(vocab.token_to_id(token)) == token
    assert [vocab.token_to_id(t) for t in "xyz"] == [4, 5, 6]
    assert "y" in vocab and "w" not in vocab


def test_unknown_token_maps_to_unk():
    assert Vocabulary(["a"]).token_to_id("b") == 3


def test_unknown_token_without_unk_raises_naming_it():
    with pytest.raises(ValueError, match=r"'dog' is not in the vocabulary of 5 tokens.*use_unk"):
        Vocabulary(["cat"], use_unk=False).token_to_id("dog")


@pytest.mark.parametrize("token_id", [6, 100, -1])
def test_id_out_of_range_raises_naming_id_and_size(token_id):
    with pytest.raises(ValueError, match=rf"token id {token_id} .*vocabulary size 6"):
        Vocabulary(["a", "b"]).id_to_token(token_id)


def test_id_accepts_integer_tensors_and_rejects_other_types():
    vocab = Vocabulary(["a", "b"])
    assert vocab.id_to_token(torch.tensor(5)) == "b"
    with pytest.raises(ValueError, match="token id must be an int, got 1.5"):
        vocab.id_to_token(1.5)


def test_vocabulary_rejects_the_empty_token():
    with pytest.raises(ValueError, match="must not be the empty string"):
        Vocabulary(["a", ""])


@pytest.mark.parametrize("bad", [3, None, ("a",)])
def test_vocabulary_rejects_non_str_tokens(bad):
    with pytest.raises(TypeError, match=r"a token must be a str, got"):
        Vocabulary(["a", bad])


# ------------------------------------------------------------------------------------------- split_words


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_split_words_pieces_join_back_to_text(text):
    assert "".join(split_words(text)) == text
    assert all(split_words(text))


def test_split_words_known_example():
    assert split_words("The cat's  mat,\nok.") == ["The", " cat", "'", "s", " ", " mat", ",", "\n", "ok", "."]


def test_split_words_rejects_non_str():
    with pytest.raises(TypeError, match="split_words takes a str, got list"):
        split_words(["a"])


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", VARIED_TEXTS + [TRAINING_TEXT])
@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_round_trip_on_the_training_text(kind, text):
    tokenizer = {"char": CharTokenizer, "word": WordTokenizer}.get(kind)
    tokenizer = tokenizer.train(text) if tokenizer else BPETokenizer.train(text, 30)
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) and 4 <= i < len(tokenizer.vocab) for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(torch.tensor(ids, dtype=torch.long)) == text


@pytest.mark.parametrize("seed", range(5))
def test_bpe_round_trip_on_unseen_text_over_the_same_alphabet(seed):
    rng = random.Random(seed)
    tokenizer = BPETokenizer.train(_random_text(rng, 300), 40)
    alphabet = "".join(sorted(set(_random_text(rng, 300)) & set(tokenizer.vocab)))
    unseen = "".join(rng.choice(alphabet) for _ in range(200))
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen


def test_special_tokens_frame_the_ids_and_decode_drops_them():
    for tokenizer in _tokenizers(TRAINING_TEXT):
        ids = tokenizer.encode("The cat", add_special_tokens=True)
        assert ids[0] == tokenizer.vocab.bos_id and ids[-1] == tokenizer.vocab.eos_id
        assert ids[1:-1] == tokenizer.encode("The cat") and 3 not in ids
        assert tokenizer.decode(ids + [tokenizer.vocab.pad_id] * 3) == "The cat"
        assert tokenizer.decode(ids, skip_special_tokens=False) == "<bos>The cat<eos>"


def test_unknown_symbols_become_unk_and_stay_visible():
    chars, words, bpe = _tokenizers(TRAINING_TEXT)
    assert chars.encode("The fox")[-3:] == [3, chars.vocab.token_to_id("o"), 3]  # no "f", no "x" in the text
    assert chars.decode(chars.encode("fox")) == "<unk>o<unk>"
    assert words.encode("The fox") == [words.vocab.token_to_id("The"), 3]
    assert words.decode(words.encode("The fox.")) == "The<unk>."
    assert bpe.decode(bpe.encode("The fox walked")) == "The <unk>o<unk> walked"


@pytest.mark.parametrize("kind", [CharTokenizer, WordTokenizer])
def test_unknown_symbol_without_unk_raises_naming_it(kind):
    tokenizer = kind.train(TRAINING_TEXT, use_unk=False)
    unknown = "f" if kind is CharTokenizer else " fox"
    with pytest.raises(ValueError, match=f"{unknown!r} is not in the vocabulary"):
        tokenizer.encode("The fox")


def test_bpe_unknown_character_without_unk_raises_naming_it():
    tokenizer = BPETokenizer.train(TRAINING_TEXT, 20, use_unk=False)
    with pytest.raises(ValueError, match="'f' is not in the vocabulary"):
        tokenizer.encode("The fox")


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_decode_of_an_id_outside_the_vocabulary_raises(kind):
    tokenizer = dict(zip(["char", "word", "bpe"], _tokenizers(TRAINING_TEXT), strict=True))[kind]
    size = len(tokenizer.vocab)
    with pytest.raises(ValueError, match=rf"token id {size} is outside the vocabulary.*size {size}"):
        tokenizer.decode([4, size])
    with pytest.raises(ValueError, match=r"token id -1 is outside"):
        tokenizer.decode([-1])


@pytest.mark.parametrize("tokenizer", _tokenizers("abc"), ids=lambda t: type(t).__name__)
def test_encode_rejects_non_str(tokenizer):
    with pytest.raises(TypeError, match="encode takes a str, got bytes"):
        tokenizer.encode(b"abc")


def test_base_class_encodes_and_decodes_with_any_tokenize():
    class PairTokenizer(Tokenizer):
        def __init__(self):
            self.vocab = Vocabulary(["ab", "cd", "e"])

        def tokenize(self, text: str) -> list[str]:
            return [text[i : i + 2] for i in range(0, len(text), 2)]

    tokenizer = PairTokenizer()
    assert tokenizer.encode("abcde", add_special_tokens=True) == [1, 4, 5, 6, 2]
    assert tokenizer.encode("abxy") == [4, 3]
    assert tokenizer.decode([1, 4, 5, 6, 2, 0]) == "abcde"
    with pytest.raises(NotImplementedError, match="Tokenizer must define tokenize"):
        Tokenizer().encode("ab")


@pytest.mark.parametrize("kind", [CharTokenizer, WordTokenizer])
def test_train_rejects_non_str_text(kind):
    with pytest.raises(TypeError, match="train takes a str, got list"):
        kind.train(["a b"])


def test_char_tokenizer_vocabulary_is_the_sorted_alphabet():
    assert list(CharTokenizer.train("banana!").vocab)[4:] == ["!", "a", "b", "n"]


def test_char_tokenizer_rejects_multi_character_symbols():
    with pytest.raises(ValueError, match="single characters, got 'ab'"):
        CharTokenizer(["a", "ab"])


def test_word_tokenizer_ranks_by_count_and_honours_min_count():
    text = "b b a b c c c"  # words "b" once, " b" twice, " a" once, " c" three times
    assert list(WordTokenizer.train(text).vocab)[4:] == [" c", " b", " a", "b"]  # ties in alphabetical order
    tokenizer = WordTokenizer.train(text, min_count=2)
    assert list(tokenizer.vocab)[4:] == [" c", " b"]
    assert tokenizer.encode(" a") == [3]


@pytest.mark.parametrize("min_count", [0, -1, 1.5, True])
def test_word_tokenizer_rejects_bad_min_count(min_count):
    with pytest.raises(ValueError, match=f"min_count must be an int >= 1, got {min_count!r}"):
        WordTokenizer.train("a b", min_count=min_count)


# ----------------------------------------------------------------------------------------------------- BPE


def test_bpe_known_example_by_hand():
    # "abab ab" splits into the words "abab" and " ab". Pair counts: (a,b) 3, (b,a) 1, (' ',a) 1, so
    # ('a','b') is merged first, leaving [ab, ab] and [' ', ab]. Then (ab,ab) and (' ',ab) occur once each:
    # the tie goes to the pair that sorts first, (' ', 'ab'). Last (ab, ab); then every word is one symbol
    # and training stops after three merges.
    tokenizer = BPETokenizer.train("abab ab", num_merges=10)
    assert tokenizer.merges == [("a", "b"), (" ", "ab"), ("ab", "ab")]
    assert list(tokenizer.vocab) == [*SPECIAL_TOKENS, " ", "a", "b", "ab", " ab", "abab"]
    assert tokenizer.tokenize("abab ab ba") == ["abab", " ab", " ", "b", "a"]
    assert tokenizer.tokenize("aba") == ["ab", "a"]


def test_bpe_sennrich_example():
    # Sennrich et al. (2016), without their end-of-word marker: low x5, lower x2, newest x6, widest x3.
    text = " ".join(["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3)
    tokenizer = BPETokenizer.train(text, num_merges=4)
    # Words: "low" 1, " low" 4, " lower" 2, " newest" 6, " widest" 3. Pair counts by hand: (e,s) 6+3 = 9,
    # (s,t) 9, (w,e) 2+6 = 8, (l,o) 7, (o,w) 7, the rest fewer. (e,s) and (s,t) tie; (e,s) sorts first.
    # After it, (es,t) occurs 9 times and wins.
    assert tokenizer.merges[:2] == [("e", "s"), ("es", "t")]


def _apply_merges_in_order(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """The slow definition: apply each merge, in training order, everywhere in the word."""
    symbols = list(word)
    for left, right in merges:
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                merged.append(left + right)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


@pytest.mark.parametrize("seed", range(5))
def test_bpe_applies_merges_in_training_order(seed):
    rng = random.Random(seed)
    tokenizer = BPETokenizer.train(_random_text(rng, 400), 60)
    for word in split_words(_random_text(rng, 400)):
        assert tokenizer.tokenize(word) == _apply_merges_in_order(word, tokenizer.merges)


def test_bpe_tokenizes_its_training_text_as_training_left_it():
    tokenizer = BPETokenizer.train(TRAINING_TEXT, 40)
    assert len(tokenizer.merges) == 40
    for word in set(split_words(TRAINING_TEXT)):
        assert tokenizer.tokenize(word) == _apply_merges_in_order(word, tokenizer.merges)
    assert " hedgehog" in tokenizer.tokenize("the hedgehog")


def test_bpe_vocabulary_is_specials_then_alphabet_then_merges():
    tokenizer = BPETokenizer.train(TRAINING_TEXT, 30)
    alphabet = sorted(set(TRAINING_TEXT))
    assert list(tokenizer.vocab) == [*SPECIAL_TOKENS, *alphabet, *(a + b for a, b in tokenizer.merges)]


def test_bpe_is_deterministic_and_extends_its_own_merges():
    short, long = BPETokenizer.train(TRAINING_TEXT, 10), BPETokenizer.train(TRAINING_TEXT, 30)
    assert BPETokenizer.train(TRAINING_TEXT, 30).merges == long.merges
    assert long.merges[:10] == short.merges


def test_bpe_extremes_are_characters_and_words():
    assert BPETokenizer.train(TRAINING_TEXT, 0).tokenize(TRAINING_TEXT) == list(TRAINING_TEXT)
    many = BPETokenizer.train(TRAINING_TEXT, 10_000)
    assert many.tokenize(TRAINING_TEXT) == split_words(TRAINING_TEXT)
    assert len(many.merges) < 10_000  # stopped early: every word became one symbol


def test_bpe_rejects_negative_num_merges():
    with pytest.raises(ValueError, match="num_merges must be >= 0, got -1"):
        BPETokenizer.train(TRAINING_TEXT, -1)


@pytest.mark.parametrize("num_merges", [2.0, "3", None, True])
def test_bpe_rejects_non_int_num_merges(num_merges):
    with pytest.raises(ValueError, match="num_merges must be an int"):
        BPETokenizer.train(TRAINING_TEXT, num_merges)


def test_bpe_rejects_non_str_text():
    with pytest.raises(TypeError, match="train takes a str, got list"):
        BPETokenizer.train(["a b"], 3)


def test_bpe_rejects_a_merge_of_unknown_symbols():
    with pytest.raises(ValueError, match=r"merge 1 \('ab', 'c'\)"):
        BPETokenizer(["a", "b"], [("a", "b"), ("ab", "c")])


# ----------------------------------------------------------------------------------------------- pad_batch


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pad_id", [0, 1, 7])
def test_pad_batch_matches_pad_sequence(seed, pad_id):
    rng = random.Random(seed)
    lengths = [rng.randrange(1, 9) for _ in range(rng.randrange(1, 6))]
    sequences = [[rng.randrange(4, 50) for _ in range(length)] for length in lengths]
    ids, mask = pad_batch(sequences, pad_id)
    B, S = len(sequences), max(map(len, sequences))  # batch, longest sequence
    assert ids.shape == mask.shape == (B, S)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    expected = pad_sequence([torch.tensor(s) for s in sequences], batch_first=True, padding_value=pad_id)
    assert torch.equal(ids, expected)
    assert torch.equal(mask, torch.arange(S)[None, :] < torch.tensor(lengths)[:, None])  # True at real tokens


def test_pad_batch_known_example_and_empty_rows():
    ids, mask = pad_batch([[5, 6, 7], [], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 0], [8, 0, 0]]
    assert mask.tolist() == [[True, True, True], [False, False, False], [True, False, False]]
    ids, mask = pad_batch([[], []], pad_id=0)
    assert ids.shape == mask.shape == (2, 0)


def test_pad_batch_accepts_tensors():
    ids, mask = pad_batch([torch.tensor([4, 5]), torch.tensor([6])], pad_id=0)
    assert ids.tolist() == [[4, 5], [6, 0]] and mask.tolist() == [[True, True], [True, False]]


def test_pad_batch_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="at least one sequence, got an empty list"):
        pad_batch([], pad_id=0)


def test_pad_batch_rejects_a_nested_sequence():
    with pytest.raises(ValueError, match=r"sequence 1 has shape \(2, 2\)"):
        pad_batch([[4], [[4, 5], [6, 7]]], pad_id=0)


@pytest.mark.parametrize("sequence", [["a", "b"], "abc", [1, [2]], [None]])
def test_pad_batch_rejects_a_sequence_that_is_not_ids(sequence):
    with pytest.raises(TypeError, match=r"sequence 1 must be a list or 1-D tensor of int token ids, got"):
        pad_batch([[4], sequence], pad_id=0)


def test_pad_batch_rejects_float_ids():
    with pytest.raises(TypeError, match="sequence 0 holds torch.float32 values"):
        pad_batch([[4.0, 5.5]], pad_id=0)


@pytest.mark.parametrize("pad_id", [0.0, None, "0"])
def test_pad_batch_rejects_a_non_int_pad_id(pad_id):
    with pytest.raises(ValueError, match="pad_id must be an int"):
        pad_batch([[4]], pad_id=pad_id)


def test_special_token_ids_are_public_and_match_every_vocabulary():
    from transformer_lib import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    for vocab in (Vocabulary([]), Vocabulary(["a", "b"]), CharTokenizer.train("abc").vocab):
        assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    assert [SPECIAL_TOKENS[i] for i in (PAD_ID, BOS_ID, EOS_ID, UNK_ID)] == [PAD, BOS, EOS, UNK]
