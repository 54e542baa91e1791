"""Tests for transformer_lib/classification.py (written by notebooks/14_classification.ipynb).

The metrics and the logistic regression are checked against scikit-learn (a test-only reference); the
exercise checker of the notebook is run on typical wrong answers and on a correct one written differently.
"""

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from transformer_lib.classification import (
    POOLINGS,
    ClassifierConfig,
    EncoderClassifier,
    attention_rollout,
    bag_of_words,
    binary_metrics,
    confusion_matrix,
    encode_for_classification,
    fit_logistic_regression,
    make_batches,
    mask_digits,
    masked_mean,
    predict_proba,
    stratified_split,
    train_classifier,
)
from transformer_lib.tokenizer import WordTokenizer, pad_batch

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "14_classification.ipynb"


# --- stratified_split ---------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [(4827, 747), (90, 10), (50, 30, 20), (14, 6), (33, 21, 9)])
@pytest.mark.parametrize("fraction", [0.15, 0.1, 0.5])
def test_stratified_split_sizes_match_scikit_learn(counts, fraction):
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    kept, held = stratified_split(labels, fraction, seed=0)
    assert sorted(kept + held) == list(range(len(labels)))  # a partition
    assert kept == sorted(kept) and held == sorted(held)
    _, theirs = train_test_split(labels, test_size=fraction, stratify=labels, random_state=0)
    assert len(held) == len(theirs) == math.ceil(fraction * len(labels))
    assert Counter(labels[i] for i in held) == Counter(theirs)  # the same number of each class


def test_stratified_split_is_seeded():
    labels = [i % 3 == 0 for i in range(300)]
    assert stratified_split(labels, 0.2, seed=1) == stratified_split(labels, 0.2, seed=1)
    assert stratified_split(labels, 0.2, seed=1) != stratified_split(labels, 0.2, seed=2)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_split([0, 1] * 10, fraction, seed=0)


def test_stratified_split_rejects_bad_seed_and_tiny_data():
    with pytest.raises(TypeError, match="seed"):
        stratified_split([0, 1] * 10, 0.2, seed=0.5)
    with pytest.raises(ValueError, match="at least one"):
        stratified_split([0], 0.5, seed=0)


# --- text to ids ----------------------------------------------------------------------------------------


def test_mask_digits():
    assert mask_digits("Call 08712 now, win £1000!") == "Call 00000 now, win £0000!"
    with pytest.raises(TypeError):
        mask_digits(123)


@pytest.mark.parametrize("max_len", [3, 5, 50])
def test_encode_for_classification_frames_and_cuts(max_len):
    tokenizer = WordTokenizer.train("free prize call now to claim your prize", min_count=1)
    texts = ["free prize", "call now to claim your prize"]
    encoded = encode_for_classification(tokenizer, texts, max_len)
    vocab = tokenizer.vocab
    for text, ids in zip(texts, encoded, strict=True):
        body = tokenizer.encode(text)[: max_len - 2]
        assert ids == [vocab.bos_id, *body, vocab.eos_id]
        assert len(ids) <= max_len


@pytest.mark.parametrize("max_len", [2, 0, 2.5])
def test_encode_for_classification_rejects_short_max_len(max_len):
    tokenizer = WordTokenizer.train("a b", min_count=1)
    with pytest.raises(ValueError, match="max_len"):
        encode_for_classification(tokenizer, ["a"], max_len)


# --- pooling and the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[5, 2, 1], [4, 4], [1]])
def test_masked_mean_is_the_mean_of_the_real_rows(lengths):
    generator = torch.Generator().manual_seed(len(lengths))
    S = max(lengths)
    x = torch.randn(len(lengths), S, 3, generator=generator)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    pooled = masked_mean(x, mask)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(pooled[b], x[b, :length].mean(dim=0))
    junk = x.masked_fill(~mask[..., None], 1e6)
    torch.testing.assert_close(masked_mean(junk, mask), pooled)


def test_masked_mean_rejects_bad_inputs():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="no real token"):
        masked_mean(x, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        masked_mean(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError):
        masked_mean(x, torch.ones(2, 3))  # a float mask: check_bool_mask explains the convention
    with pytest.raises(ValueError, match=r"\(B, S, D\)"):
        masked_mean(torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pooling": "max"}, "pooling"),
        ({"num_classes": 1}, "num_classes"),
        ({"d_model": 0}, "d_model"),
        ({"max_len": True}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(vocab_size=10, **change)


def _model(pooling, seed=0, **sizes):
    torch.manual_seed(seed)
    config = ClassifierConfig(vocab_size=20, d_model=16, num_heads=2, d_ff=32, max_len=12, pooling=pooling,
                              **sizes)
    return EncoderClassifier(config).eval()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_shapes_and_padding_invariance(pooling):
    model = _model(pooling)
    sequences = [[1, 5, 6, 7, 2], [1, 8, 2], [1, 9, 10, 11, 12, 13, 2]]
    tokens, mask = pad_batch(sequences, 0)
    logits, weights = model(tokens, mask, need_weights=True)
    assert logits.shape == (3, 2) and weights.shape == (2, 3, 2, 7, 7)
    for b, sequence in enumerate(sequences):  # alone, without padding, each message gets the same logits
        alone = model(torch.tensor([sequence]), torch.ones(1, len(sequence), dtype=torch.bool))
        torch.testing.assert_close(alone[0], logits[b], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_reads_the_right_positions(pooling):
    model = _model(pooling)
    tokens, mask = pad_batch([[1, 5, 6, 2], [1, 7, 2]], 0)
    h = model.encoder(model.positional(model.embedding(tokens)), key_padding_mask=mask)  # (B, S, d)
    expected = h[:, 0] if pooling == "cls" else torch.stack([h[0, :4].mean(0), h[1, :3].mean(0)])
    torch.testing.assert_close(model.head(expected), model(tokens, mask))


def test_classifier_needs_a_config_and_a_mask():
    with pytest.raises(TypeError, match="ClassifierConfig"):
        EncoderClassifier({"vocab_size": 10})
    with pytest.raises(ValueError, match="padding_mask"):
        _model("mean")(torch.tensor([[1, 2]]), None)


# --- batches, prediction, training ---------------------------------------------------------------------


def test_make_batches_keeps_every_example_once_with_its_label():
    sequences = [[1] + [5] * n + [2] for n in (3, 1, 7, 2, 5, 4, 6)]
    labels = [n % 2 for n in (3, 1, 7, 2, 5, 4, 6)]
    batches = make_batches(sequences, labels, batch_size=3)
    assert [len(b[2]) for b in batches] == [3, 3, 1]
    seen = []
    for tokens, mask, y in batches:
        lengths = mask.sum(dim=1)
        seen += list(zip(lengths.tolist(), y.tolist(), strict=True))
        assert tokens.shape[1] == lengths.max()  # padded to the longest of the batch only
    assert sorted(seen) == sorted((len(s), label) for s, label in zip(sequences, labels, strict=True))
    with pytest.raises(ValueError, match="labels"):
        make_batches(sequences, labels[:-1], 3)
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(sequences, labels, 0)


def test_predict_proba_keeps_the_order_and_the_mode():
    model = _model("mean").train()
    sequences = [[1, 5, 6, 7, 8, 2], [1, 9, 2], [1, 10, 11, 2]]
    probs = predict_proba(model, sequences, batch_size=2)
    assert model.training  # restored
    model.eval()
    for n, sequence in enumerate(sequences):
        alone = model(torch.tensor([sequence]), torch.ones(1, len(sequence), dtype=torch.bool))
        torch.testing.assert_close(probs[n], alone[0].softmax(-1), atol=1e-5, rtol=1e-5)


def _toy_task(seed):
    """Class 1 when token 5 occurs anywhere in the message."""
    generator = torch.Generator().manual_seed(seed)
    sequences, labels = [], []
    for _ in range(256):
        body = torch.randint(6, 20, (int(torch.randint(2, 9, (1,), generator=generator)),),
                             generator=generator).tolist()
        label = len(sequences) % 2
        if label:
            body[int(torch.randint(len(body), (1,), generator=generator))] = 5
        sequences.append([1, *body, 2])
        labels.append(label)
    return sequences, labels


@pytest.mark.parametrize("pooling", POOLINGS)
def test_train_classifier_learns_a_toy_task_deterministically(pooling):
    sequences, labels = _toy_task(0)
    batches = make_batches(sequences, labels, 32)
    runs = []
    for _ in range(2):
        model = _model(pooling, dropout=0.0)
        losses = train_classifier(model, batches, epochs=12, lr=3e-3, word_dropout=0.0, log=False)
        runs.append(losses)
    assert runs[0] == runs[1]  # same seed, same thread count: the same run
    assert runs[0][-1] < 0.25 * runs[0][0]
    test_sequences, test_labels = _toy_task(1)
    predicted = predict_proba(model, test_sequences).argmax(-1)
    assert (predicted == torch.tensor(test_labels)).float().mean() > 0.95


def test_train_classifier_rejects_bad_arguments():
    model = _model("mean")
    batches = make_batches([[1, 5, 2]], [1], 1)
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(model, batches, epochs=0)
    with pytest.raises(ValueError, match="empty"):
        train_classifier(model, [], epochs=1)
    with pytest.raises(ValueError, match="word_dropout"):
        train_classifier(model, batches, epochs=1, word_dropout=1.0)


# --- metrics against scikit-learn ----------------------------------------------------------------------


def _label_cases():
    generator = torch.Generator().manual_seed(0)
    cases = []
    for n, p_true, p_flip in [(50, 0.3, 0.1), (837, 0.134, 0.02), (10, 0.5, 0.5), (200, 0.05, 0.3)]:
        y_true = (torch.rand(n, generator=generator) < p_true).long()
        flip = torch.rand(n, generator=generator) < p_flip
        cases.append((y_true, torch.where(flip, 1 - y_true, y_true)))
    y = torch.tensor([0, 0, 1, 1, 0])
    cases += [
        (y, torch.zeros_like(y)),  # never predicts spam: precision undefined
        (y, torch.ones_like(y)),  # always spam
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 0, 0])),  # no spam at all
        (y, y),  # perfect
    ]
    return cases


@pytest.mark.parametrize("y_true, y_pred", _label_cases())
def test_metrics_match_scikit_learn(y_true, y_pred):
    t, p = y_true.numpy(), y_pred.numpy()
    ours = binary_metrics(y_true, y_pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" when there is no spam
        balanced = skm.balanced_accuracy_score(t, p)
    expected = {
        "accuracy": skm.accuracy_score(t, p),
        "balanced_accuracy": balanced,
        "precision": skm.precision_score(t, p, zero_division=0),
        "recall": skm.recall_score(t, p, zero_division=0),
        "f1": skm.f1_score(t, p, zero_division=0),
    }
    assert ours.keys() == expected.keys()
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    assert confusion_matrix(y_true, y_pred).tolist() == skm.confusion_matrix(t, p, labels=[0, 1]).tolist()


@pytest.mark.parametrize("num_classes", [3, 5])
def test_confusion_matrix_many_classes(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    y_true = torch.randint(num_classes, (100,), generator=generator)
    y_pred = torch.randint(num_classes, (100,), generator=generator)
    expected = skm.confusion_matrix(y_true.numpy(), y_pred.numpy(), labels=list(range(num_classes)))
    assert confusion_matrix(y_true, y_pred, num_classes).tolist() == expected.tolist()


@pytest.mark.parametrize(
    "y_true, y_pred, error",
    [
        (torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), TypeError),
        (torch.tensor([True, False]), torch.tensor([0, 1]), TypeError),
        (torch.tensor([0, 1, 1]), torch.tensor([0, 1]), ValueError),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), TypeError),
        ([0, 1], torch.tensor([0, 1]), TypeError),
    ],
)
def test_metrics_reject_bad_labels(y_true, y_pred, error):
    with pytest.raises(error):
        binary_metrics(y_true, y_pred)


# --- the baseline ---------------------------------------------------------------------------------------


def test_bag_of_words_counts():
    sequences = [[1, 4, 4, 2], [1, 2], [3, 3, 3]]
    counts = bag_of_words(sequences, vocab_size=6)
    assert counts.shape == (3, 6)
    for n, ids in enumerate(sequences):
        assert counts[n].tolist() == [float(Counter(ids)[v]) for v in range(6)]


@pytest.mark.parametrize("l2", [0.1, 1.0, 10.0])
def test_logistic_regression_matches_scikit_learn(l2):
    generator = torch.Generator().manual_seed(3)
    features = torch.poisson(torch.full((120, 8), 0.7), generator=generator).double()
    true_w = torch.randn(8, generator=generator).double()
    score = features @ true_w + 0.5 * torch.randn(120, generator=generator).double()
    labels = (score > score.median()).long()  # both classes, not separable (the noise)
    ours = fit_logistic_regression(features, labels, l2=l2).double()
    theirs = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=10_000).fit(features.numpy(), labels.numpy())
    torch.testing.assert_close(ours.weight.detach()[0], torch.from_numpy(theirs.coef_[0]), atol=2e-4, rtol=0)
    torch.testing.assert_close(ours.bias.detach(), torch.from_numpy(theirs.intercept_), atol=2e-4, rtol=0)
    with torch.no_grad():
        p_ours = torch.sigmoid(ours(features).squeeze(-1))
    torch.testing.assert_close(p_ours, torch.from_numpy(theirs.predict_proba(features.numpy())[:, 1]),
                               atol=1e-5, rtol=0)


# --- attention rollout ----------------------------------------------------------------------------------


def test_rollout_of_one_layer_mixes_with_the_identity():
    weights = torch.softmax(torch.randn(1, 2, 3, 4, 4), dim=-1)  # (L=1, B, H, S, S)
    expected = 0.5 * weights[0].mean(dim=1) + 0.5 * torch.eye(4)
    torch.testing.assert_close(attention_rollout(weights), expected)


@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_rollout_multiplies_layers_and_rows_sum_to_one(num_layers):
    generator = torch.Generator().manual_seed(num_layers)
    weights = torch.softmax(torch.randn(num_layers, 2, 2, 5, 5, generator=generator), dim=-1)
    expected = torch.eye(5).expand(2, 5, 5)
    for layer in weights:
        expected = (0.5 * layer.mean(dim=1) + 0.5 * torch.eye(5)) @ expected
    rollout = attention_rollout(weights)
    torch.testing.assert_close(rollout, expected)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 5))


def test_rollout_of_self_attention_only_is_the_identity():
    weights = torch.eye(3).expand(2, 1, 4, 3, 3)  # every token attends to itself only
    torch.testing.assert_close(attention_rollout(weights), torch.eye(3).expand(1, 3, 3))


def test_rollout_rejects_single_layer_weights():
    with pytest.raises(ValueError, match="num_layers"):
        attention_rollout(torch.rand(2, 4, 5, 5))


# --- the exercise checker of the notebook --------------------------------------------------------------


def _checker():
    """check_masked_max, run from the notebook's own cell (tagged exercise-checker)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if "exercise-checker" in c["metadata"].get("tags", [])]
    assert len(sources) == 1, "the notebook should have exactly one cell tagged exercise-checker"
    code = sources[0].rsplit("check_masked_max(my_masked_max)", 1)[0]  # define, do not run the learner's
    namespace = {"torch": torch}
    exec(code, namespace)  # noqa: S102  (our own notebook)
    return namespace["check_masked_max"]


def _in_place(h, mask):
    return h.masked_fill_(~mask.unsqueeze(-1), float("-inf")).max(dim=1).values


WRONG_ANSWERS = {
    "padding included": (lambda h, mask: h.max(dim=1).values, "padded positions take part"),
    "mask inverted": (lambda h, mask: h.masked_fill(mask.unsqueeze(-1), float("-inf")).max(dim=1).values,
                      "True marks a real token"),
    "zero fill": (lambda h, mask: h.masked_fill(~mask.unsqueeze(-1), 0.0).max(dim=1).values,
                  "padding set to 0"),
    "multiplied": (lambda h, mask: (h * mask.unsqueeze(-1)).max(dim=1).values, "multiplied by the mask"),
    "tuple": (lambda h, mask: h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1),
              "returned a tuple"),
    "wrong dim": (lambda h, mask: h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=2).values,
                  "shape (B, D)"),
    "in place": (_in_place, "in place"),
    "mean instead of max": (lambda h, mask: masked_mean(h, mask), "compare with it"),
}


@pytest.mark.parametrize("name", list(WRONG_ANSWERS))
def test_checker_diagnoses_typical_mistakes(name, capsys):
    fn, diagnosis = WRONG_ANSWERS[name]
    _checker()(fn)
    out = capsys.readouterr().out
    assert diagnosis in out and "Correct" not in out


def _loop_max(h, padding_mask):
    """Correct, written differently from the solution: one row at a time, with a very negative fill."""
    rows = []
    for b in range(h.shape[0]):
        real = h[b][padding_mask[b]]  # (S_real, D)
        rows.append(real.max(dim=0).values)
    return torch.stack(rows)


def _min_float_max(h, padding_mask):
    """Correct too: torch.where with the smallest float instead of -inf."""
    low = torch.finfo(h.dtype).min
    return torch.where(padding_mask.unsqueeze(-1), h, torch.full_like(h, low)).amax(dim=1)


@pytest.mark.parametrize("fn", [_loop_max, _min_float_max])
def test_checker_accepts_correct_answers(fn, capsys):
    _checker()(fn)
    assert "Correct" in capsys.readouterr().out


def test_checker_reports_not_attempted(capsys):
    def not_yet(h, mask):
        raise NotImplementedError

    _checker()(not_yet)
    out = capsys.readouterr().out
    assert "Not attempted" in out and "Correct" not in out
