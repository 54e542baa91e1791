"""Train our Transformer and torch.nn.Transformer on chapter 9's task: time to 99% and training throughput.

    python benchmarks/bench_training.py            # writes benchmarks/results/training.{md,json}
    python benchmarks/bench_training.py --quick    # one seed, short timings, prints only (a smoke test)

Both models are built from the same TransformerConfig and settings as notebooks/09_training.ipynb (SETTINGS
below; the notebook checks that its own are the same): ours is transformer_lib.transformer.Transformer, theirs
is torch.nn.Transformer with the same token embeddings (N(0, 1/d_model), times sqrt(d_model)), sinusoidal
positions and a bias-free output layer (TorchSeq2Seq), the same parameter count, and, with copied weights, the
same outputs (checked first).

- Time to 99%: for each seed, a fresh seeded run of `train` on the reversal task (AdamW, cosine schedule,
  label smoothing 0.1, clipping), stopped after the first epoch whose validation exact match (greedy decoding)
  reaches 99%. Reported: the updates done, the wall and CPU time of the run (training plus the validation
  after each epoch), and the test exact match then. Runs of the two models alternate, so a busy machine slows
  both.
- Throughput: real source + target tokens per second through `train_step` (forward, smoothed loss, backward,
  clipping, AdamW), on the same fixed batches for both models, timed with torch.utils.benchmark in interleaved
  rounds (median). Also for a wider model on longer sequences, to show how the ratio changes with size.
"""

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils import benchmark
from torch.utils.data import DataLoader

from transformer_lib.attention import causal_mask
from transformer_lib.distributed import select_device
from transformer_lib.positional import SinusoidalPositionalEncoding
from transformer_lib.tokenizer import CharTokenizer
from transformer_lib.training import (
    cosine_schedule,
    exact_match_accuracy,
    make_batch,
    make_splits,
    seed_everything,
    train,
    train_step,
)
from transformer_lib.transformer import Transformer, TransformerConfig, load_torch_transformer

RESULTS = Path(__file__).resolve().parent / "results"
# The settings of chapter 9 (notebooks/09_training.ipynb); the notebook asserts that they are the same.
SETTINGS = {
    "task": "reverse", "train_size": 10_000, "valid_size": 1_000, "test_size": 2_000,
    "min_len": 1, "max_len": 10, "data_seed": 0, "seed": 0,
    "d_model": 64, "num_heads": 4, "num_layers": 2, "d_ff": 256, "dropout": 0.0,
    "batch_size": 128, "epochs": 4, "lr": 3e-3, "beta1": 0.9, "beta2": 0.98, "adam_eps": 1e-9,
    "weight_decay": 0.01, "warmup_steps": 30, "schedule": "cosine", "smoothing": 0.1, "max_grad_norm": 1.0,
}
TARGET = 0.99
MODELS = ("ours", "torch")


class TorchSeq2Seq(nn.Module):
    """nn.Transformer plus token embeddings (times sqrt(d_model)), sinusoidal positions, an output layer."""

    def __init__(self, config: TransformerConfig, embedding_std: float | None = None) -> None:
        super().__init__()
        c, self.d_model = config, config.d_model
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.d_model)
        if embedding_std is not None:
            for embedding in (self.src_embedding, self.tgt_embedding):
                nn.init.normal_(embedding.weight, std=embedding_std)
        self.positional = SinusoidalPositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.transformer = nn.Transformer(
            c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.d_ff, c.dropout,
            activation=c.activation, norm_first=c.norm_first, batch_first=True,
        )
        self.transformer.encoder.use_nested_tensor = False  # no prototype nested tensors (and their warning)
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        nn.init.xavier_uniform_(self.output.weight)

    def encode(self, src: torch.Tensor, src_padding_mask: torch.Tensor) -> torch.Tensor:
        x = self.positional(self.src_embedding(src) * math.sqrt(self.d_model))  # (B, S, d_model)
        return self.transformer.encoder(x, src_key_padding_mask=~src_padding_mask)  # PyTorch: True = ignore

    def decode(self, tgt, memory, src_padding_mask, tgt_padding_mask=None) -> torch.Tensor:
        T = tgt.shape[1]  # target positions
        x = self.positional(self.tgt_embedding(tgt) * math.sqrt(self.d_model))  # (B, T, d_model)
        tgt_key_padding_mask = None if tgt_padding_mask is None else ~tgt_padding_mask
        tgt_mask = ~causal_mask(T, device=tgt.device)  # (T, T), PyTorch's convention: True = ignore
        x = self.transformer.decoder(x, memory, tgt_mask=tgt_mask, tgt_is_causal=True,
                                     tgt_key_padding_mask=tgt_key_padding_mask,
                                     memory_key_padding_mask=~src_padding_mask)  # (B, T, d_model)
        return self.output(x)  # (B, T, V)

    def forward(self, src, tgt, src_padding_mask, tgt_padding_mask) -> torch.Tensor:
        return self.decode(tgt, self.encode(src, src_padding_mask), src_padding_mask, tgt_padding_mask)


def make_config(vocab_size: int, d_model: int, num_heads: int, d_ff: int, max_len: int = 32):
    return TransformerConfig(
        src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
        num_encoder_layers=SETTINGS["num_layers"], num_decoder_layers=SETTINGS["num_layers"], d_ff=d_ff,
        dropout=SETTINGS["dropout"], max_len=max_len,
    )


def make_model(name: str, config: TransformerConfig) -> nn.Module:
    """Ours, or nn.Transformer with the same initialization of the embeddings (std d_model^-0.5)."""
    return Transformer(config) if name == "ours" else TorchSeq2Seq(config, embedding_std=config.d_model**-0.5)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    betas = (SETTINGS["beta1"], SETTINGS["beta2"])
    return torch.optim.AdamW(model.parameters(), lr=SETTINGS["lr"], betas=betas, eps=SETTINGS["adam_eps"],
                             weight_decay=SETTINGS["weight_decay"])


def check_same_function(config: TransformerConfig, batch) -> None:
    """With copied weights, both models give the same logits: they are the same network."""
    ours, theirs = Transformer(config).eval(), make_model("torch", config).eval()
    load_torch_transformer(ours, theirs.transformer)
    with torch.no_grad():
        ours.src_embedding.weight.copy_(theirs.src_embedding.weight)
        ours.tgt_embedding.weight.copy_(theirs.tgt_embedding.weight)
        ours.output.weight.copy_(theirs.output.weight)
        args = (batch.src, batch.tgt_in, batch.src_padding_mask, batch.tgt_padding_mask)
        torch.testing.assert_close(ours(*args), theirs(*args), atol=1e-4, rtol=1e-4)
    count = [sum(p.numel() for p in model.parameters()) for model in (ours, theirs)]
    assert count[0] == count[1], f"parameter counts differ: ours {count[0]}, torch {count[1]}"


def time_to_target(name: str, config: TransformerConfig, splits: dict, seed: int,
                   device: torch.device | str = "cpu") -> dict:
    """One seeded run of chapter 9's recipe, stopped at the first epoch with validation exact match >= 99%."""
    seed_everything(seed)
    model = make_model(name, config).to(device)  # train() moves each batch to the model's device
    optimizer = make_optimizer(model)
    loader = DataLoader(splits["train"], batch_size=SETTINGS["batch_size"], shuffle=True,
                        collate_fn=make_batch, generator=torch.Generator().manual_seed(seed))
    total_steps = SETTINGS["epochs"] * len(loader)
    scheduler = LambdaLR(optimizer, cosine_schedule(total_steps, SETTINGS["warmup_steps"]))
    cpu_start = time.process_time()
    history = train(model, optimizer, loader, splits["valid"], SETTINGS["epochs"], scheduler,
                    smoothing=SETTINGS["smoothing"], max_grad_norm=SETTINGS["max_grad_norm"],
                    target_accuracy=TARGET, progress=False)
    cpu = time.process_time() - cpu_start
    return {
        "seed": seed, "reached": history.valid_accuracy[-1] >= TARGET, "steps": history.epoch_steps[-1],
        "wall_s": round(history.seconds[-1], 2), "cpu_s": round(cpu, 2),
        "valid_accuracy": history.valid_accuracy,
        "test_accuracy": exact_match_accuracy(model, splits["test"]),
    }


def throughput(config: TransformerConfig, batches: list, rounds: int, block_seconds: float,
               device: torch.device | str = "cpu") -> dict:
    """Real source + target tokens per second through train_step, both models on the same batches."""
    tokens = sum(int(b.src_padding_mask.sum()) + b.num_tokens for b in batches)
    batches = [batch.to(device) for batch in batches]  # on the device before the clock starts
    runs = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = make_model(name, config).to(device)
        optimizer = make_optimizer(model)

        def run(model=model, optimizer=optimizer):
            for batch in batches:
                train_step(model, batch, optimizer, smoothing=SETTINGS["smoothing"],
                           max_grad_norm=SETTINGS["max_grad_norm"])

        runs[name] = run
    numbers = {}
    for name, run in runs.items():
        run()  # warm-up: allocations, kernel choice, optimizer state
        start = time.perf_counter()
        run()
        numbers[name] = max(1, round(block_seconds / (time.perf_counter() - start)))
    times = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved: a busy moment slows both
        for name, run in runs.items():
            timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
            times[name].append(timer.timeit(numbers[name]).median)
    speed = {name: tokens / statistics.median(values) for name, values in times.items()}
    return {**speed, "ratio": speed["ours"] / speed["torch"]}


def wide_batches(vocab_size: int, batch_size: int, length: int, count: int) -> list:
    """Batches of random reversal pairs, lengths length/2 .. length, for the wider throughput size."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator).tolist()
        sources = [torch.randint(4, vocab_size, (n,), generator=generator).tolist() for n in lengths]
        batches.append(make_batch([(s, s[::-1]) for s in sources]))
    return batches


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def markdown(results: dict) -> str:
    lines = [
        "# Chapter 9: training our Transformer vs torch.nn.Transformer",
        "",
        f"Measured {results['measured']} on {results['machine']} (load average {results['load_average']:.1f} "
        f"before the run), torch {results['torch']}, **{results['threads']} thread**. Generated by "
        f"`python benchmarks/bench_training.py` in {results['seconds']:.0f} s. Task and settings: chapter 9 "
        f"(reversal of 1 to 10 digits, d_model {SETTINGS['d_model']}, {SETTINGS['num_layers']}+"
        f"{SETTINGS['num_layers']} layers, batch {SETTINGS['batch_size']}, AdamW, cosine schedule).",
        "",
        f"## Time to {TARGET:.0%} validation exact match (medians over seeds {results['seeds']})",
        "",
        "| model | updates | wall time (s) | CPU time (s) | test exact match | reached in every run |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, label in (("ours", "our Transformer"), ("torch", "nn.Transformer")):
        run = results["time_to_99"][name]
        lines.append(f"| {label} | {run['median_steps']:.0f} | {run['median_wall_s']:.1f} | "
                     f"{run['median_cpu_s']:.1f} | {run['median_test_accuracy']:.2%} | "
                     f"{'yes' if run['all_reached'] else 'no'} |")
    lines += [
        "",
        f"Updates are counted at the end of the epoch where validation reached the target "
        f"({results['steps_per_epoch']} updates per epoch); the times include the validation after each "
        "epoch. Goal: at most 60 s of wall time on this machine.",
        "",
        "## Training throughput (real source + target tokens per second through train_step)",
        "",
        "| size | ours (tokens/s) | nn.Transformer (tokens/s) | ours / nn.Transformer |",
        "|---|---:|---:|---:|",
    ]
    for size in results["throughput_sizes"]:
        speeds = f"{size['ours']:,.0f} | {size['torch']:,.0f} | {size['ratio']:.2f}"
        lines.append(f"| {size['label']} | {speeds} |")
    lines += ["", "Goal: ratio >= 1.0 (ours at least as fast)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short timings, print only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (chapter 9 uses 1)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the time to 99%%")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput timing rounds")
    parser.add_argument("--device", type=select_device, default=select_device(),
                        help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(1 if args.quick else args.seeds))
    rounds, block = (2, 0.3) if args.quick else (args.rounds, 2.0)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    tokenizer = CharTokenizer("0123456789")
    symbol_ids = tokenizer.encode("0123456789")
    vocab_size = len(tokenizer.vocab)
    sizes = {name: SETTINGS[f"{name}_size"] for name in ("train", "valid", "test")}
    splits = make_splits(SETTINGS["task"], symbol_ids, sizes, SETTINGS["min_len"], SETTINGS["max_len"],
                         seed=SETTINGS["data_seed"])
    config = make_config(vocab_size, SETTINGS["d_model"], SETTINGS["num_heads"], SETTINGS["d_ff"])
    chapter_batches = list(itertools.islice(DataLoader(splits["train"], batch_size=SETTINGS["batch_size"],
                                                       collate_fn=make_batch), 4))
    check_same_function(config, chapter_batches[0])

    runs = {name: [] for name in MODELS}
    for seed in seeds:
        for name in MODELS:
            runs[name].append(time_to_target(name, config, splits, seed, args.device))
            run = runs[name][-1]
            print(f"time to 99%, {name}, seed {seed}: {run['steps']} updates, {run['wall_s']:.1f} s wall, "
                  f"{run['cpu_s']:.1f} s CPU, reached {run['reached']}, test {run['test_accuracy']:.2%}",
                  flush=True)
    time_to_99 = {
        name: {
            "runs": runs[name],
            "all_reached": all(run["reached"] for run in runs[name]),
            **{f"median_{key}": statistics.median(run[key] for run in runs[name])
               for key in ("steps", "wall_s", "cpu_s", "test_accuracy")},
        }
        for name in MODELS
    }

    wide_config = make_config(vocab_size, 256, 8, 1024, max_len=80)
    check_same_function(wide_config, wide_batches(vocab_size, 4, 64, 1)[0])
    sizes_to_time = [
        ("chapter 9: d_model 64, d_ff 256, batch 128, 1-10 digits", config, chapter_batches),
        ("wider: d_model 256, 8 heads, d_ff 1024, batch 32, 32-64 digits", wide_config,
         wide_batches(vocab_size, 32, 64, 2)),
    ]
    throughput_sizes = []
    for label, size_config, batches in sizes_to_time:
        speed = throughput(size_config, batches, rounds, block, args.device)
        throughput_sizes.append({"label": label, **{k: round(v, 3) for k, v in speed.items()}})
        print(f"throughput, {label}: ours {speed['ours']:,.0f} tokens/s, torch {speed['torch']:,.0f} "
              f"tokens/s, ratio {speed['ratio']:.2f}", flush=True)

    results = {
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(args.device),
        "load_average": round(load_before, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "seeds": seeds,
        "steps_per_epoch": math.ceil(SETTINGS["train_size"] / SETTINGS["batch_size"]),
        "target": TARGET,
        "settings": SETTINGS,
        "time_to_99": time_to_99,
        "throughput": {key: throughput_sizes[0][key] for key in ("ours", "torch", "ratio")},
        "throughput_sizes": throughput_sizes,
    }
    table = markdown(results)
    print()
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "training.md").write_text(table)
        (RESULTS / "training.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS / 'training.md'} and {RESULTS / 'training.json'}")


if __name__ == "__main__":
    main()
