"""Tests for transformer_lib.training: data, batches, loss, schedules, loop, decoding, checkpoints."""

import copy
import itertools
import math
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR
from torch.utils.data import DataLoader

from transformer_lib.tokenizer import pad_batch
from transformer_lib.training import (
    TASKS,
    Batch,
    History,
    cosine_schedule,
    evaluate,
    exact_match_accuracy,
    greedy_decode,
    label_smoothed_cross_entropy,
    load_checkpoint,
    make_batch,
    make_splits,
    noam_lr,
    save_checkpoint,
    seed_everything,
    smoothed_targets,
    train,
    train_step,
    warmup_inverse_sqrt_schedule,
)
from transformer_lib.transformer import Transformer, TransformerConfig

PAD, BOS, EOS = 0, 1, 2
SYMBOLS = list(range(4, 10))  # six symbols, ids 4..9
VOCAB = 10


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    config = TransformerConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, d_model=16, num_heads=2,
                               num_encoder_layers=1, num_decoder_layers=1, d_ff=32, dropout=0.0, max_len=16)
    return Transformer(config)


def tiny_splits(task: str = "reverse", seed: int = 0):
    sizes = {"train": 256, "valid": 32, "test": 32}
    return make_splits(task, SYMBOLS, sizes, min_len=1, max_len=5, seed=seed)


class Oracle(nn.Module):
    """A fake model with the Transformer's interface whose logits put all weight on the reversed source.

    `wrong` rows (by index in the batch) get one wrong token; `endless` never produces <eos>.
    """

    def __init__(self, wrong: tuple[int, ...] = (), endless: bool = False) -> None:
        super().__init__()
        self.wrong, self.endless = wrong, endless
        self.weight = nn.Parameter(torch.zeros(1))  # so the module has a parameter, as real models do

    def encode(self, src, src_padding_mask):
        return torch.stack([src, src_padding_mask.long()], dim=-1).float()  # (B, S, 2): the source itself

    def decode(self, tgt, memory, src_padding_mask=None, tgt_padding_mask=None):
        B, T = tgt.shape  # batch, target positions
        logits = torch.full((B, T, VOCAB), -10.0)  # (B, T, V)
        for b in range(B):
            source = [int(i) for i, real in zip(memory[b, :, 0], memory[b, :, 1], strict=True) if real]
            answer = source[::-1] + [EOS]
            if b in self.wrong:
                answer[0] = SYMBOLS[0] if answer[0] != SYMBOLS[0] else SYMBOLS[1]
            for t in range(T):
                token = answer[t] if t < len(answer) else PAD
                if self.endless and token == EOS:
                    token = SYMBOLS[0]
                logits[b, t, token] = 10.0
        return logits + 0.0 * self.weight

    def forward(self, src, tgt, src_padding_mask, tgt_padding_mask):
        return self.decode(tgt, self.encode(src, src_padding_mask), src_padding_mask, tgt_padding_mask)


# --- data -----------------------------------------------------------------------------------------


def test_tasks_turn_sources_into_targets():
    assert TASKS["copy"]([5, 4, 6]) == [5, 4, 6]
    assert TASKS["reverse"]([5, 4, 6]) == [6, 4, 5]
    assert TASKS["sort"]([5, 4, 6, 4]) == [4, 4, 5, 6]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_make_splits_sizes_lengths_targets_and_no_overlap(task):
    splits = make_splits(task, SYMBOLS, {"train": 300, "valid": 50, "test": 80}, min_len=2, max_len=6, seed=3)
    assert {name: len(pairs) for name, pairs in splits.items()} == {"train": 300, "valid": 50, "test": 80}
    sources = {name: {tuple(s) for s, _ in pairs} for name, pairs in splits.items()}
    assert sum(len(s) for s in sources.values()) == 430  # distinct within each split...
    for first, second in itertools.combinations(sources.values(), 2):
        assert first.isdisjoint(second)  # ...and across splits
    for pairs in splits.values():
        for source, target in pairs:
            assert 2 <= len(source) <= 6 and set(source) <= set(SYMBOLS)
            assert target == TASKS[task](source)


def test_make_splits_is_deterministic_per_seed():
    assert tiny_splits(seed=1) == tiny_splits(seed=1)
    assert tiny_splits(seed=1) != tiny_splits(seed=2)


def test_make_splits_can_use_every_possible_source():
    splits = make_splits("copy", [4, 5], {"a": 3, "b": 3}, min_len=1, max_len=2, seed=0)  # 2 + 4 = 6 sources
    sources = sorted(s for pairs in splits.values() for s, _ in pairs)
    assert sources == [[4], [4, 4], [4, 5], [5], [5, 4], [5, 5]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="shuffle"), "task must be one of"),
        (dict(symbol_ids=[]), "symbol_ids is empty"),
        (dict(min_len=0), "min_len=0"),
        (dict(min_len=4, max_len=3), "min_len=4, max_len=3"),
        (dict(sizes={"train": 5, "test": 0}), "every split needs at least one pair"),
        (dict(sizes={}), "every split needs at least one pair"),
        (dict(sizes={"train": 7}, symbol_ids=[4, 5], max_len=2), "only 6 exist"),
    ],
)
def test_make_splits_bad_input(kwargs, message):
    arguments = dict(task="reverse", symbol_ids=SYMBOLS, sizes={"train": 5}, min_len=1, max_len=3)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_splits(**arguments)


# --- batches --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [(0, 1, 2), (9, 7, 8)])
def test_make_batch_pads_shifts_and_masks(ids):
    pad_id, bos_id, eos_id = ids
    pairs = [([4, 5, 6], [6, 5]), ([4], [4, 4, 4]), ([5, 6], [])]
    batch = make_batch(pairs, pad_id, bos_id, eos_id)
    assert isinstance(batch, Batch)
    src, src_mask = pad_batch([s for s, _ in pairs], pad_id)
    assert torch.equal(batch.src, src) and torch.equal(batch.src_padding_mask, src_mask)
    p, b, e = pad_id, bos_id, eos_id
    assert batch.tgt_in.tolist() == [[b, 6, 5, p], [b, 4, 4, 4], [b, p, p, p]]
    assert batch.tgt_out.tolist() == [[6, 5, e, p], [4, 4, 4, e], [e, p, p, p]]
    assert batch.tgt_padding_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert batch.tgt_padding_mask.dtype == torch.bool and batch.num_tokens == 3 + 4 + 1


def test_make_batch_works_as_collate_fn():
    splits = tiny_splits()
    loader = DataLoader(splits["train"], batch_size=64, collate_fn=make_batch)
    batches = list(loader)
    assert len(batches) == 4 and sum(b.src.shape[0] for b in batches) == 256
    assert sum(b.num_tokens for b in batches) == sum(len(t) + 1 for _, t in splits["train"])


def test_make_batch_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        make_batch([])


# --- the loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_smoothed_targets_formula(smoothing):
    target = torch.tensor([[3, 0], [7, 7]])
    q = smoothed_targets(target, 9, smoothing)  # (2, 2, 9)
    assert q.shape == (2, 2, 9)
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 2))
    assert math.isclose(q[0, 0, 3].item(), 1 - smoothing + smoothing / 9, rel_tol=1e-6)
    assert math.isclose(q[0, 0, 4].item(), smoothing / 9, abs_tol=1e-7)


@pytest.mark.parametrize("shape", [(12,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("ignore_index", [0, 3, -100])
def test_loss_equals_torch_cross_entropy(shape, smoothing, ignore_index):
    generator = torch.Generator().manual_seed(len(shape) * 100 + int(10 * smoothing))
    V = 11
    logits = (torch.randn(*shape, V, generator=generator) * 2).requires_grad_()
    target = torch.randint(0, V, shape, generator=generator)
    target.view(-1)[::3] = ignore_index  # every third token is padding
    target.view(-1)[1] = 5  # at least one real token
    ours = label_smoothed_cross_entropy(logits, target, smoothing, ignore_index=ignore_index)
    theirs = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), label_smoothing=smoothing,
                             ignore_index=ignore_index)
    torch.testing.assert_close(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_loss_does_not_depend_on_padding():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=generator)
    target = torch.tensor([[4, 5, 6], [4, 0, 0]])
    longer_logits = torch.cat([logits, torch.randn(2, 4, 7, generator=generator)], dim=1)  # more padding
    longer_target = torch.cat([target, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, target, 0.1),
                               label_smoothed_cross_entropy(longer_logits, longer_target, 0.1))


def test_loss_floor_is_the_entropy_of_the_targets():
    q = smoothed_targets(torch.tensor([4]), 10, 0.2)  # (1, V)
    entropy = -(q * q.log()).sum()
    torch.testing.assert_close(label_smoothed_cross_entropy(q.log(), torch.tensor([4]), 0.2), entropy)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5])
def test_smoothing_outside_0_1_is_rejected(smoothing):
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        label_smoothed_cross_entropy(torch.randn(2, 5), torch.tensor([1, 2]), smoothing)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        smoothed_targets(torch.tensor([1, 2]), 5, smoothing)


def test_loss_bad_input():
    with pytest.raises(ValueError, match=r"logits \(2, 3, 5\) and target \(2, 4\)"):
        label_smoothed_cross_entropy(torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="every target equals ignore_index=0"):
        label_smoothed_cross_entropy(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target ids must be in 0 \.\. 4 .* got 1\.\.7"):
        label_smoothed_cross_entropy(torch.randn(2, 5), torch.tensor([1, 7]))
    with pytest.raises(TypeError, match="integer class ids"):
        label_smoothed_cross_entropy(torch.randn(2, 5), torch.tensor([1.0, 2.0]))


# --- schedules ------------------------------------------------------------------------------------


def lambda_lr_rates(factor, steps: int, base_lr: float) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = LambdaLR(optimizer, factor)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("d_model, warmup", [(512, 4000), (64, 30), (16, 1)])
def test_noam_lr_formula(d_model, warmup):
    for step in (1, 2, warmup, warmup + 1, 10 * warmup):
        expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert math.isclose(noam_lr(step, d_model, warmup), expected, rel_tol=1e-12)
    peak = max(noam_lr(s, d_model, warmup) for s in range(1, 3 * warmup + 2))
    assert noam_lr(warmup, d_model, warmup) == peak


@pytest.mark.parametrize("d_model, warmup", [(512, 400), (64, 30), (16, 1)])
def test_warmup_inverse_sqrt_schedule_in_lambda_lr_is_the_paper_schedule(d_model, warmup):
    rates = lambda_lr_rates(warmup_inverse_sqrt_schedule(warmup), 3 * warmup + 5, (d_model * warmup) ** -0.5)
    for k, rate in enumerate(rates, start=1):  # the k-th update uses the paper's lrate(k)
        assert math.isclose(rate, noam_lr(k, d_model, warmup), rel_tol=1e-9)
    assert warmup_inverse_sqrt_schedule(warmup)(warmup - 1) == 1.0


def test_cosine_schedule_formula_and_warmup():
    factor = cosine_schedule(110, warmup_steps=10, min_factor=0.1)
    assert [factor(s) for s in range(10)] == [pytest.approx((s + 1) / 10) for s in range(10)]
    for s in range(10, 111):
        progress = (s - 10) / 100
        assert factor(s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.55)
    assert factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)


@pytest.mark.parametrize("min_factor", [0.0, 0.2])
def test_cosine_schedule_without_warmup_matches_cosine_annealing_lr(min_factor):
    ours = lambda_lr_rates(cosine_schedule(50, min_factor=min_factor), 51, 0.5)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = CosineAnnealingLR(optimizer, T_max=50, eta_min=0.5 * min_factor)
    theirs = []
    for _ in range(51):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("warmup", [0, -3, 2.5, True])
def test_warmup_steps_below_one_are_rejected(warmup):
    with pytest.raises(ValueError, match=f"warmup_steps must be an int >= 1, got {warmup!r}"):
        warmup_inverse_sqrt_schedule(warmup)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 1"):
        noam_lr(5, 512, warmup)


def test_schedules_bad_input():
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0, got -1"):
        cosine_schedule(10, warmup_steps=-1)
    with pytest.raises(ValueError, match="total_steps=10 must be larger than warmup_steps=10"):
        cosine_schedule(10, warmup_steps=10)
    with pytest.raises(ValueError, match=r"min_factor must be in \[0, 1\], got 1.5"):
        cosine_schedule(10, min_factor=1.5)
    with pytest.raises(ValueError, match="counts update steps from 1, got step=0"):
        noam_lr(0, 512, 4000)
    with pytest.raises(ValueError, match="d_model must be >= 1, got 0"):
        noam_lr(1, 0, 4000)


# --- one update -----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_grad_norm", [None, 1e-3])
def test_train_step_is_forward_loss_backward_clip_step(max_grad_norm):
    batch = make_batch(tiny_splits()["train"][:16])
    model = tiny_model()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = LambdaLR(optimizer, warmup_inverse_sqrt_schedule(4))
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2 / 4)  # factor at s = 0: 1/4

    loss = train_step(model, batch, optimizer, scheduler, smoothing=0.1, max_grad_norm=max_grad_norm)

    logits = reference(batch.src, batch.tgt_in, batch.src_padding_mask, batch.tgt_padding_mask)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), batch.tgt_out.reshape(-1), label_smoothing=0.1,
                               ignore_index=PAD)
    expected.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(reference.parameters(), max_grad_norm)
    reference_optimizer.step()
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert scheduler.last_epoch == 1 and optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 2)


# --- decoding and evaluation ----------------------------------------------------------------------


def test_greedy_decode_follows_the_argmax_and_pads_after_eos():
    pairs = [([4, 5, 6], [6, 5, 4]), ([7], [7]), ([8, 9], [9, 8])]
    batch = make_batch(pairs)
    output = greedy_decode(Oracle(), batch.src, batch.src_padding_mask, max_new_tokens=6)
    assert output.tolist() == [[6, 5, 4, EOS], [7, EOS, PAD, PAD], [9, 8, EOS, PAD]]  # stops once all ended
    short = greedy_decode(Oracle(), batch.src, batch.src_padding_mask, max_new_tokens=2)
    assert short.tolist() == [[6, 5], [7, EOS], [9, 8]]


def test_greedy_decode_equals_a_loop_over_full_forward_passes():
    model = tiny_model().eval()
    batch = make_batch(tiny_splits()["valid"][:5])
    output = greedy_decode(model, batch.src, batch.src_padding_mask, 4, eos_id=-1)  # -1: never stops
    tgt = torch.full((5, 1), BOS)
    with torch.no_grad():
        for _ in range(4):
            logits = model(batch.src, tgt, batch.src_padding_mask, None)  # (B, t, V)
            tgt = torch.cat([tgt, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(output, tgt[:, 1:])


def test_greedy_decode_restores_training_mode_and_rejects_bad_lengths():
    model = tiny_model().train()
    batch = make_batch([([4, 5], [5, 4])])
    greedy_decode(model, batch.src, batch.src_padding_mask, 3)
    assert model.training
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match=f"max_new_tokens must be an int >= 1, got {bad!r}"):
            greedy_decode(model, batch.src, batch.src_padding_mask, bad)


def test_exact_match_accuracy_counts_whole_sequences():
    pairs = tiny_splits()["valid"][:10]
    assert exact_match_accuracy(Oracle(), pairs) == 1.0
    # Chunks of 4, 4 and 2 pairs; rows 0 and 3 of each chunk are wrong: 2 + 2 + 1 of 10.
    assert exact_match_accuracy(Oracle(wrong=(0, 3)), pairs, batch_size=4) == pytest.approx(0.5)
    assert exact_match_accuracy(Oracle(endless=True), pairs) == 0.0  # no <eos>: never a match
    with pytest.raises(ValueError, match="empty split"):
        exact_match_accuracy(Oracle(), [])


def test_evaluate_is_the_token_weighted_cross_entropy():
    model = tiny_model().train()
    pairs = tiny_splits()["valid"]
    batches = [make_batch(pairs[:5]), make_batch(pairs[5:])]
    with torch.no_grad():
        model.eval()
        losses = []
        for b in batches:
            logits = model(b.src, b.tgt_in, b.src_padding_mask, b.tgt_padding_mask)  # (B, T, V)
            losses.append(F.cross_entropy(logits.reshape(-1, VOCAB), b.tgt_out.reshape(-1), ignore_index=PAD,
                                          reduction="sum"))
        model.train()
    expected = sum(losses) / sum(b.num_tokens for b in batches)
    assert evaluate(model, batches) == pytest.approx(expected.item(), rel=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="validation split is empty"):
        evaluate(model, [])


# --- the loop, seeding, checkpoints ---------------------------------------------------------------


def make_run(seed: int = 0):
    splits = tiny_splits("copy")
    seed_everything(seed)
    model = tiny_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = DataLoader(splits["train"], batch_size=32, shuffle=True, collate_fn=make_batch,
                        generator=torch.Generator().manual_seed(seed))
    scheduler = LambdaLR(optimizer, cosine_schedule(3 * len(loader), 4))
    return model, optimizer, loader, scheduler, splits


def test_train_records_history_and_learns(capsys):
    model, optimizer, loader, scheduler, splits = make_run()
    history = train(model, optimizer, loader, splits["valid"], 3, scheduler)
    assert isinstance(history, History)
    assert len(history.train_loss) == 3 * len(loader) and history.epoch_steps == [8, 16, 24]
    assert len(history.valid_loss) == len(history.valid_accuracy) == len(history.seconds) == 3
    assert history.valid_loss[-1] < history.valid_loss[0]
    assert sum(history.train_loss[-8:]) < sum(history.train_loss[:8])
    output = capsys.readouterr().out
    assert output.count("epoch ") == 3 and "valid exact match" in output
    assert "it/s" not in output and "<" not in output  # no rate, no clock: the same text on every run


def test_train_stops_at_the_target_accuracy():
    model, optimizer, loader, scheduler, splits = make_run()
    history = train(model, optimizer, loader, splits["valid"], 3, scheduler, target_accuracy=0.0,
                    progress=False)
    assert history.epoch_steps == [len(loader)]


def test_train_bad_input():
    model, optimizer, loader, scheduler, splits = make_run()
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        train(model, optimizer, loader, splits["valid"], 0)
    with pytest.raises(ValueError, match="training split gave no batch"):
        train(model, optimizer, [], splits["valid"], 1)
    with pytest.raises(ValueError, match="valid_pairs is empty"):
        train(model, optimizer, loader, [], 1)


def test_same_seed_gives_identical_runs():
    def losses(seed: int) -> list[float]:
        model, optimizer, loader, scheduler, _ = make_run(seed)
        return [train_step(model, b, optimizer, scheduler) for b in itertools.islice(loader, 5)]

    assert losses(0) == losses(0)
    assert losses(0) != losses(1)


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(1.5)


def test_checkpoint_resumes_a_run_exactly(tmp_path):
    model, optimizer, loader, scheduler, _ = make_run()
    batches = list(itertools.islice(loader, 6))
    for batch in batches[:3]:
        train_step(model, batch, optimizer, scheduler)
    path = tmp_path / "run.pt"
    save_checkpoint(path, model, optimizer, scheduler, step=3, note="tiny", losses=[1.0, 2.0])
    continued = [train_step(model, batch, optimizer, scheduler) for batch in batches[3:]]

    restored = tiny_model(seed=5)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=123.0)  # overwritten by the checkpoint
    restored_scheduler = LambdaLR(restored_optimizer, cosine_schedule(3 * len(loader), 4))
    extra = load_checkpoint(path, restored, restored_optimizer, restored_scheduler)
    assert extra == {"step": 3, "note": "tiny", "losses": [1.0, 2.0]}
    resumed = [train_step(restored, batch, restored_optimizer, restored_scheduler) for batch in batches[3:]]
    assert resumed == continued
    for ours, theirs in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)


def test_load_checkpoint_model_only_and_missing_state(tmp_path):
    model = tiny_model(seed=1)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    restored = tiny_model(seed=2)
    assert load_checkpoint(path, restored) == {}
    pairs = zip(model.state_dict().values(), restored.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    optimizer = torch.optim.AdamW(restored.parameters())
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(path, restored, optimizer)


class _NotPlainData:
    """An arbitrary class: unpickling it would run code named by the file, which weights_only=True refuses."""


def test_load_checkpoint_loads_with_weights_only(tmp_path):
    model = tiny_model()
    path = tmp_path / "unsafe.pt"
    save_checkpoint(path, model, note=_NotPlainData())  # torch.save pickles anything
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        load_checkpoint(path, tiny_model())


@pytest.mark.parametrize("symbol_ids", [range(10), [3, 4, 5], [0]])
def test_make_splits_rejects_special_ids(symbol_ids):
    with pytest.raises(ValueError, match=r"include the special ids \[.*\].*<pad>, <bos>, <eos>, <unk>"):
        make_splits("copy", list(symbol_ids), {"train": 1}, max_len=3)


def test_train_step_and_train_want_batches_not_pairs():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    pairs = tiny_splits()["train"][:8]
    with pytest.raises(TypeError, match=r"train_step needs a Batch.*pairs: make_batch\(pairs\)"):
        train_step(model, pairs, optimizer)
    with pytest.raises(TypeError, match=r"train: each element of train_batches needs a Batch.*make_batch"):
        train(model, optimizer, pairs, pairs, epochs=1, progress=False)


def test_train_wants_a_dataloader_with_make_batch():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    pairs = tiny_splits()["train"][:8]
    loader = DataLoader(pairs, batch_size=4)  # collate_fn forgotten
    with pytest.raises(TypeError, match=r"without collate_fn.*collate_fn=make_batch"):
        train(model, optimizer, loader, pairs, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"train_step needs a Batch.*collate_fn=make_batch"):
        train_step(model, [torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)], optimizer)
