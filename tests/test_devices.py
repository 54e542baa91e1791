"""Every training path honours the device (chapter 15's select_device: CUDA, then MPS, then the CPU).

This machine has no GPU, so the tests use PyTorch's "meta" device: tensors with shapes and no data. A model
moved there runs its forward and backward passes on shapes only and fails at the first `.item()`. So a
helper that moves its inputs to the model's device fails with "cannot be called on meta tensors", and one
that forgets fails earlier with a device mismatch (or, worse, silently mixes devices: the forward pre-hooks
below record the device each model's inputs arrive on). The command-line entry points (tools/translate.py,
the training benchmarks, `python -m transformer_lib.distributed`) are run with select_device patched to
answer "meta", each library training function they call checking that its model is there, and their
--device option is checked to default to select_device()'s choice. (One file for a rule that spans the
modules of chapters 9 and 12-15 and the programs, so that it is checked in one place.)
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import transformer_lib.distributed as distributed
import transformer_lib.language_model as language_model
from transformer_lib.classification import (
    ClassifierConfig,
    EncoderClassifier,
    make_batches,
    predict_proba,
    train_classifier,
)
from transformer_lib.distributed import select_device, train_from_command_line
from transformer_lib.language_model import GPT, GPTConfig, estimate_loss, train_language_model
from transformer_lib.tokenizer import Vocabulary
from transformer_lib.training import evaluate, exact_match_accuracy, make_batch, train_step
from transformer_lib.transformer import Transformer, TransformerConfig
from transformer_lib.translation import TokenBatches, train_translation, translate

ROOT = Path(__file__).resolve().parent.parent
META = torch.device("meta")
ON_META = "cannot be called on meta tensors"  # the first .item() of a run that reached the meta device
PAIRS = [([4, 5, 6], [6, 5, 4]), ([7, 8], [8, 7]), ([9], [9])]


def on_meta(model: torch.nn.Module) -> tuple[torch.nn.Module, list]:
    """The model moved to the meta device, and the list of devices that the inputs of its modules (the
    embeddings' token ids among them) arrive on, recorded by forward pre-hooks."""
    seen = []
    for module in model.modules():
        module.register_forward_pre_hook(lambda module, args: seen.extend(
            a.device for a in args if isinstance(a, torch.Tensor)))
    return model.to(META), seen


def seq2seq() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(13, 13, d_model=16, num_heads=2, num_encoder_layers=1,
                                         num_decoder_layers=1, d_ff=32, max_len=32))


def test_batch_to_moves_every_tensor_and_keeps_a_batch_in_place():
    batch = make_batch(PAIRS)
    moved = batch.to(META)
    assert all(t.device == META for t in vars(moved).values())
    same = batch.to("cpu")
    assert all(getattr(same, name) is getattr(batch, name) for name in vars(batch))  # no copy on the CPU


@pytest.mark.parametrize("helper", ["train_step", "evaluate", "exact_match_accuracy", "translate greedy",
                                    "translate beam"])
def test_chapter_9_and_12_helpers_move_inputs_to_the_models_device(helper):
    model, seen = on_meta(seq2seq())
    calls = {
        "train_step": lambda: train_step(model, make_batch(PAIRS), torch.optim.SGD(model.parameters(), 0.1)),
        "evaluate": lambda: evaluate(model, [make_batch(PAIRS)]),
        "exact_match_accuracy": lambda: exact_match_accuracy(model, PAIRS),
        "translate greedy": lambda: translate(model, [s for s, _ in PAIRS], Vocabulary(list("abcdefghi"))),
        "translate beam": lambda: translate(model, [s for s, _ in PAIRS], Vocabulary(list("abcdefghi")), 2),
    }
    with pytest.raises(RuntimeError, match=ON_META):  # CPU ids would fail a device check first
        calls[helper]()
    assert set(seen) <= {META}


def test_train_translation_autocasts_on_the_models_device():
    model, _ = on_meta(seq2seq())
    vocab = Vocabulary(list("abcdefghi"))
    with pytest.raises(RuntimeError, match="device_type 'meta'"):  # not 'cpu' for a model elsewhere
        train_translation(model, torch.optim.SGD(model.parameters(), 0.1), TokenBatches(PAIRS, 100), PAIRS,
                          ["a", "b", "c"], vocab, max_steps=1, progress=False, autocast_dtype=torch.bfloat16)


@pytest.mark.parametrize("helper", ["train_language_model", "estimate_loss"])
def test_chapter_13_helpers_move_batches_to_the_models_device(helper, monkeypatch):
    if helper == "train_language_model":  # skip the estimate at step 0, so the first update runs
        monkeypatch.setattr(language_model, "estimate_loss", lambda *args: 0.0)
    torch.manual_seed(0)
    model, seen = on_meta(GPT(GPTConfig(vocab_size=13, max_len=8, d_model=16, num_heads=2, num_layers=1)))
    data = torch.randint(13, (100,))
    with pytest.raises(RuntimeError, match=ON_META):
        if helper == "train_language_model":
            train_language_model(model, data, data, steps=2, warmup_steps=1, eval_batches=1, progress=False)
        else:
            estimate_loss(model, data, batch_size=2, num_batches=1)
    assert seen and set(seen) == {META}  # an embedding on meta accepts CPU ids silently: the hook checks


@pytest.mark.parametrize("helper", ["train_classifier", "predict_proba"])
def test_chapter_14_helpers_move_batches_to_the_models_device(helper):
    torch.manual_seed(0)
    config = ClassifierConfig(13, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=16)
    model, seen = on_meta(EncoderClassifier(config))
    sequences = [[1, 4, 5], [1, 6], [1, 7, 8, 9]]
    with pytest.raises(RuntimeError, match=ON_META):
        if helper == "train_classifier":
            train_classifier(model, make_batches(sequences, [0, 1, 0], 1), epochs=1, log=False)
        else:
            predict_proba(model, sequences)
    assert seen and set(seen) == {META}


# The command-line entry points that train: each has --device, defaulting to select_device()'s choice.
ENTRY_POINTS = {
    "tools/translate.py": ["--minutes", "0.01"],
    "benchmarks/bench_training.py": ["--quick"],
    "benchmarks/bench_translation.py": ["--quick"],
    "benchmarks/bench_language_model.py": ["--quick"],
    "benchmarks/bench_classification.py": ["--quick"],
}
TRAINERS = {  # the library's training functions each one calls, with the model first
    "tools/translate.py": ["train_translation"],
    "benchmarks/bench_training.py": ["train", "train_step"],
    "benchmarks/bench_translation.py": ["train_translation", "train_step"],
    "benchmarks/bench_language_model.py": ["train_language_model"],
    "benchmarks/bench_classification.py": ["train_classifier"],
}


def load_script(path: str, monkeypatch):
    """Import a script as a module (benchmarks import each other by name, so their folder is on the path)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"script_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Parsed(Exception):
    """Raised instead of running the program once its command line is parsed."""


def parse_command_line(module, argv: list[str], monkeypatch) -> argparse.Namespace:
    """What the script's main() parses from argv, without running the rest of it."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(real(self, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed) as parsed:
        module.main()
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    return parsed.value.args[0]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_has_a_device_option_defaulting_to_select_device(path, monkeypatch):
    module = load_script(path, monkeypatch)
    assert parse_command_line(module, [], monkeypatch).device == select_device()
    assert parse_command_line(module, ["--device", "cpu"], monkeypatch).device == torch.device("cpu")
    with pytest.raises(SystemExit):  # argparse reports the bad value and exits
        parse_command_line(module, ["--device", "tpu"], monkeypatch)


def meta_select_device(device=None):
    """select_device on a machine whose best device is "meta"."""
    return META if device in (None, "meta", META) else select_device(device)


def only_on_meta(function):
    """function, checking first that the model it gets is on the meta device."""
    def checked(model, *args, **kwargs):
        device = next(model.parameters()).device
        assert device == META, f"{function.__name__} got a model on {device}, not on the selected device"
        return function(model, *args, **kwargs)

    return checked


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_trains_on_the_device_select_device_picks(path, monkeypatch, tmp_path):
    module = load_script(path, monkeypatch)
    monkeypatch.setattr(module, "select_device", meta_select_device)
    for name in TRAINERS[path]:
        monkeypatch.setattr(module, name, only_on_meta(getattr(module, name)))
    if path == "tools/translate.py":  # the data preparation, on a few pairs
        vocab = Vocabulary(list("abcdefghi"))
        pairs = PAIRS * 4
        monkeypatch.setattr(module, "prepare", lambda settings: {
            "splits": {name: [("a b", "c")] * len(pairs) for name in ("train", "val", "test_2016_flickr")},
            "src_vocab": vocab, "tgt_vocab": vocab,
            "encoded": {name: pairs for name in ("train", "val", "test_2016_flickr")}})
    files = ["--out", str(tmp_path / "out.json"), "--checkpoint", str(tmp_path / "model.pt")]
    monkeypatch.setattr(sys, "argv", [path, *ENTRY_POINTS[path], *(files if "translate.py" in path else [])])
    # A run that reached the meta device fails at its first .item() or at autocast on 'meta'; a run that
    # ignored the device would train on the CPU to the end and raise nothing.
    with pytest.raises(RuntimeError, match=f"{ON_META}|device_type 'meta'"):
        module.main()


def test_distributed_command_line_trains_on_the_device_select_device_picks(monkeypatch):
    assert distributed._parse_args([]).device is None  # init_distributed(None) asks select_device()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "select_device", meta_select_device)
    with pytest.raises(RuntimeError, match=ON_META):
        train_from_command_line(["--steps", "1", "--train-size", "64", "--valid-size", "0",
                                 "--log-every", "0"])
