"""Tests for transformer_lib/distributed.py (written by notebooks/15_efficiency.ipynb): device selection, the
single-process path of train_distributed (determinism, resuming), and real data-parallel runs launched by
torchrun on this machine (two processes, and two "machines" of one process each) that must end with the
parameters of one process trained on the same global batches.

Every process talks only to 127.0.0.1: the rendezvous endpoint, the workers' address and gloo's interface.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer_lib import distributed
from transformer_lib.distributed import (
    DistributedContext,
    DistributedTrainConfig,
    init_distributed,
    select_device,
    train_distributed,
    train_from_command_line,
)
from transformer_lib.tokenizer import CharTokenizer
from transformer_lib.training import label_smoothed_cross_entropy, make_batch, make_splits, seed_everything
from transformer_lib.transformer import Transformer, TransformerConfig

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# A small model and few steps: each launch costs a few seconds of process start-up, not of training.
SIZES = ["--train-size", "256", "--valid-size", "0", "--batch-size", "16", "--d-model", "32",
         "--num-heads", "4", "--num-layers", "1", "--d-ff", "64"]
LAUNCH_TIMEOUT = 90  # seconds; a hung rendezvous fails the test instead of blocking the suite


# ---------------------------------------------------------------- device selection


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_select_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(distributed, "_mps_available", lambda: mps)
    assert select_device() == torch.device(expected)


def test_select_device_honours_an_available_device_and_rejects_others(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(distributed, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda:0")
    with pytest.raises(ValueError, match="MPS is not available"):
        select_device("mps")
    for bad in ("gpu", "meta", 3.5):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            select_device(bad)


def test_without_torchrun_there_is_one_process_and_no_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext(0, 0, 1, torch.device("cpu"), None)
    assert context.is_main and not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    "rank, world_size, message", [("x", "2", "RANK='x'"), ("2", "2", "RANK=2 must be in 0 .. ")]
)
def test_bad_torchrun_environment_is_explained(monkeypatch, rank, world_size, message):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match=message):
        init_distributed("cpu")


# ---------------------------------------------------------------- one process


def _task(train_size: int = 256):
    tokenizer = CharTokenizer("0123456789")
    splits = make_splits("reverse", tokenizer.encode("0123456789"), {"train": train_size}, 1, 10, seed=0)
    return splits["train"], len(tokenizer.vocab)


def _model(vocab_size: int, dropout: float = 0.0, seed: int = 0) -> Transformer:
    seed_everything(seed)
    config = TransformerConfig(vocab_size, vocab_size, d_model=32, num_heads=4, num_encoder_layers=1,
                               num_decoder_layers=1, d_ff=64, dropout=dropout, max_len=32)
    return Transformer(config)


def _parameters(model_or_state) -> dict[str, torch.Tensor]:
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    return {name: value.detach().clone() for name, value in state.items()}


def _one_process(steps: int, optimizer: str, dropout: float = 0.0, **options) -> dict[str, torch.Tensor]:
    """The reference: train in this process exactly as `python -m transformer_lib.distributed` does."""
    pairs, vocab_size = _task()
    model = _model(vocab_size, dropout)
    config = DistributedTrainConfig(steps=steps, batch_size=16, optimizer=optimizer, log_every=0, **options)
    train_distributed(model, pairs, config, DistributedContext(), log=None)
    return _parameters(model)


def _assert_same_parameters(got: dict, expected: dict, atol: float) -> None:
    assert got.keys() == expected.keys()
    worst = max((got[name] - expected[name]).abs().max().item() for name in got)
    assert worst <= atol, f"largest parameter difference {worst:.2e} > {atol:.0e}"


def test_same_seed_same_result_and_another_seed_differs():
    first = _one_process(steps=5, optimizer="adamw", dropout=0.1)
    second = _one_process(steps=5, optimizer="adamw", dropout=0.1)
    _assert_same_parameters(first, second, atol=0.0)
    other = _one_process(steps=5, optimizer="adamw", dropout=0.1, seed=1)
    assert any(not torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("stop", [2, 5])  # inside the first epoch of 16 updates, and at a later step
def test_resuming_from_a_checkpoint_equals_training_straight_through(tmp_path, stop):
    straight = _one_process(steps=8, optimizer="adamw", dropout=0.1)
    path = str(tmp_path / "run.pt")
    _one_process(steps=stop, optimizer="adamw", dropout=0.1, checkpoint=path)
    assert torch.load(path, weights_only=True)["extra"]["step"] == stop
    resumed = _one_process(steps=8, optimizer="adamw", dropout=0.1, checkpoint=path)
    _assert_same_parameters(resumed, straight, atol=0.0)


def test_the_first_update_sees_the_first_global_batch_of_the_seeded_shuffle():
    pairs, vocab_size = _task(64)
    model = _model(vocab_size)
    permutation = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    batch = make_batch([pairs[i] for i in permutation[:16]])  # DistributedSampler's order for seed 0, epoch 0
    with torch.no_grad():
        logits = model(batch.src, batch.tgt_in, batch.src_padding_mask, batch.tgt_padding_mask)
        expected = label_smoothed_cross_entropy(logits, batch.tgt_out, 0.0).item()
    config = DistributedTrainConfig(steps=1, batch_size=16, log_every=0)
    result = train_distributed(model, pairs, config, DistributedContext(), log=None)
    assert result.losses == [pytest.approx(expected, abs=1e-6)]
    assert result.world_size == 1 and result.start_step == 0 and result.steps_per_second > 0


def test_bad_configurations_are_explained():
    pairs, vocab_size = _task(64)
    with pytest.raises(ValueError, match="batch_size=15 must be divisible by the 2 processes"):
        train_distributed(_model(vocab_size), pairs, DistributedTrainConfig(steps=1, batch_size=15),
                          DistributedContext(world_size=2), log=None)
    with pytest.raises(ValueError, match="64 pairs do not fill one global batch of 128"):
        train_distributed(_model(vocab_size), pairs, DistributedTrainConfig(steps=1, batch_size=128),
                          DistributedContext(), log=None)
    bad = (("steps", 0), ("batch_size", 2.5), ("log_every", -1), ("optimizer", "adam"), ("lr", 0))
    for field, value in bad:
        with pytest.raises(ValueError, match=field):
            DistributedTrainConfig(**{field: value})


def test_command_line_in_one_process_logs_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    report = tmp_path / "report.json"
    program = ["--steps", "4", "--log-every", "2", "--report", str(report), "--device", "cpu"]
    assert train_from_command_line([*SIZES, *program]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" loss")[0] for line in lines if line.startswith("step ")] == ["step 2/4", "step 4/4"]
    summary = json.loads(report.read_text())
    assert summary["world_size"] == 1 and summary["steps"] == 4 and len(summary["losses"]) == 4


# ---------------------------------------------------------------- real processes, launched by torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONWARNINGS="ignore::RuntimeWarning:runpy")  # -m on a module the package imported
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun(launcher_args: list[str], program_args: list[str]) -> subprocess.Popen:
    command = [*TORCHRUN, *launcher_args, "--local-addr", "127.0.0.1", "-m", "transformer_lib.distributed",
               *SIZES, *program_args]
    return subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    try:
        out, _ = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT} s:\n{out}")
    assert process.returncode == 0, out
    return out


def _command_line_in_this_process(tmp_path: Path, program_args: list[str]) -> dict[str, torch.Tensor]:
    """The reference: the same program and global batches in one process (this one), no process group."""
    checkpoint = tmp_path / "one_process.pt"
    assert train_from_command_line([*SIZES, *program_args, "--checkpoint", str(checkpoint)]) == 0
    return torch.load(checkpoint, weights_only=True)["model"]


def _two_processes(tmp_path: Path, name: str, program_args: list[str]) -> tuple[dict, str]:
    """torchrun, one machine, two processes, rendezvous on 127.0.0.1; the final parameters and the output."""
    checkpoint = tmp_path / f"{name}.pt"
    launcher = ["--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", name]
    out = _finish(_torchrun(launcher, [*program_args, "--checkpoint", str(checkpoint)]))
    return torch.load(checkpoint, weights_only=True), out


def test_two_processes_end_with_the_parameters_of_one_process(tmp_path):
    program = ["--steps", "6", "--optimizer", "sgd", "--log-every", "2"]
    checkpoint, out = _two_processes(tmp_path, "sgd", program)
    assert checkpoint["extra"]["world_size"] == 2 and checkpoint["extra"]["step"] == 6
    _assert_same_parameters(checkpoint["model"], _command_line_in_this_process(tmp_path, program), atol=1e-6)
    # Rank 0 alone logs: one header, one line per logging step (not one per process).
    assert out.count("2 process(es), backend gloo") == 1
    assert [line.split(" loss")[0] for line in out.splitlines() if line.startswith("step ")] == [
        "step 2/6", "step 4/6", "step 6/6"]


def test_two_machines_with_static_rendezvous_end_with_the_parameters_of_one_process(tmp_path):
    port, checkpoint = _free_port(), tmp_path / "nodes.pt"
    program = ["--steps", "6", "--optimizer", "sgd", "--log-every", "0"]
    nodes = [
        _torchrun(["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node_rank),
                   "--rdzv-backend", "static", "--master-addr", "127.0.0.1", "--master-port", str(port)],
                  [*program, "--checkpoint", str(checkpoint)])
        for node_rank in (0, 1)
    ]
    outputs = [_finish(node) for node in nodes]
    assert "2 process(es), backend gloo" in outputs[0]  # node_rank 0 runs rank 0, which alone logs
    assert "process(es)" not in outputs[1]
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["extra"]["world_size"] == 2
    _assert_same_parameters(saved["model"], _command_line_in_this_process(tmp_path, program), atol=1e-6)


def test_two_processes_resume_from_a_checkpoint_as_if_never_stopped(tmp_path):
    common = ["--optimizer", "adamw", "--dropout", "0.1", "--log-every", "0"]
    straight, _ = _two_processes(tmp_path, "straight", ["--steps", "6", *common])
    _two_processes(tmp_path, "stopped", ["--steps", "3", *common])  # writes stopped.pt at step 3
    resumed, out = _two_processes(tmp_path, "stopped", ["--steps", "6", *common])
    assert "resumed from" in out and "at step 3" in out
    _assert_same_parameters(resumed["model"], straight["model"], atol=0.0)


# ---------------------------------------------------------------- the chapter's exercise checker


@pytest.fixture(scope="module")
def check_cache_bytes():
    """The chapter's checker as a learner imports it (generated from the notebook)."""
    from transformer_lib.exercises import check_cache_bytes

    return check_cache_bytes


def _right(num_layers, d_model, num_heads, num_kv_heads, bytes_per_number):
    return num_layers * 2 * bytes_per_number * d_model * num_kv_heads / num_heads  # a float, in another order


@pytest.mark.parametrize(
    "answer, diagnosis",
    [
        (lambda n, d, h, kv, b: _right(n, d, h, kv, b) / 2, "keys AND values"),
        (lambda n, d, h, kv, b: _right(n, d, h, h, b), "only num_kv_heads key/value heads are stored"),
        (lambda n, d, h, kv, b: _right(1, d, h, kv, b), "every layer has its own cache"),
        (lambda n, d, h, kv, b: _right(n, d, h, kv, b) * 8, "not bits"),
        (lambda n, d, h, kv, b: _right(n, d, h, kv, 1), "multiply by bytes_per_number"),
        (lambda n, d, h, kv, b: _right(n, d, h, kv, b) + 1, "2 (key and value) x num_kv_heads x d_head"),
        (lambda n, d, h, kv, b: "a lot", "got 'a lot'"),
    ],
)
def test_cache_checker_names_the_mistake(check_cache_bytes, capsys, answer, diagnosis):
    check_cache_bytes(answer)
    out = capsys.readouterr().out
    assert diagnosis in out and "Correct" not in out


def test_cache_checker_accepts_a_right_answer_and_waits_for_an_attempt(check_cache_bytes, capsys):
    check_cache_bytes(_right)
    assert capsys.readouterr().out.startswith("Correct")

    def not_attempted(*args):
        raise NotImplementedError

    check_cache_bytes(not_attempted)
    assert "Not attempted yet" in capsys.readouterr().out
