"""Chapter 13's GPT against a GPT built from PyTorch's own layers: nanoGPT's recipe, step time, sampling.

    python benchmarks/bench_language_model.py          # writes benchmarks/results/language_model.{md,json}
    python benchmarks/bench_language_model.py --quick  # short runs, prints only (a smoke test)

The data and recipe are those of nanoGPT's character-level Shakespeare example for a CPU, as in
notebooks/13_language_model.ipynb: tiny Shakespeare with chapter 1's CharTokenizer (65 characters and the 4
special tokens), the first 90% for training and the last 10% for validation, 4 layers, 4 heads, d_model 128,
context 64, batch 12, dropout 0, no biases in the linear layers, AdamW (lr 1e-3, betas 0.9/0.99, weight decay
0.1 on matrices), 100 warm-up steps then a cosine down to 1e-4, clipping at 1.0, validation loss = the mean of
20 random batches.

- Loss versus time: one run of train_language_model with that recipe (2000 updates), the estimates every 250
  updates with the wall time since the start (evaluations included). nanoGPT's own code reaches validation
  loss 1.886 with it on this machine in 74 s (2 threads, quiet machine): the goal is <= 1.886.
- Step time: ours (transformer_lib.language_model.GPT) against TorchGPT, the same network from
  nn.TransformerEncoderLayer(norm_first=True, activation="gelu", bias=False) with a causal mask, the same
  embeddings, initialization and tied output layer (checked first: with copied weights the logits agree). Both
  run the recipe's update (forward, loss, backward, clipping, AdamW, schedule) on the same batches, timed in
  interleaved rounds (median). Goal: ours / torch <= 1.0.
- Sampling: new tokens per second of generate_from_prompt (greedy, 8 sequences, 256 new tokens after a
  one-token prompt, so the 64-token window moves) with and without the key/value cache, and for TorchGPT,
  which has no cache, recomputing the same window.
"""

import argparse
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

from transformer_lib.data import load_tiny_shakespeare
from transformer_lib.distributed import select_device
from transformer_lib.language_model import (
    GPT,
    GPTConfig,
    generate_from_prompt,
    language_model_loss,
    make_optimizer,
    next_token_batch,
    train_language_model,
)
from transformer_lib.tokenizer import CharTokenizer
from transformer_lib.training import cosine_schedule

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = {
    "steps": 2000, "batch_size": 12, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "weight_decay": 0.1,
    "betas": (0.9, 0.99), "max_grad_norm": 1.0, "eval_every": 250, "eval_batches": 20, "seed": 0,
}
NANOGPT = {"valid_loss": 1.886, "seconds": 74.0, "ms_per_step": 33.8, "threads": 2}


class TorchGPT(nn.Module):
    """The same GPT from PyTorch's layers: nn.TransformerEncoder of pre-LN GELU layers with a causal mask."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.config = c
        self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.position_embedding = nn.Embedding(c.max_len, c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.num_heads, c.d_ff, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True, bias=c.bias)
        self.layers = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model, bias=c.bias)
        self.output = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.output.weight = self.token_embedding.weight
        for module in self.modules():  # GPT-2's initialization, as GPT.reset_parameters
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for layer in self.layers.layers:
            nn.init.normal_(layer.self_attn.in_proj_weight, std=0.02)
            for projection in (layer.self_attn.out_proj, layer.linear2):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * c.num_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]  # time
        positions = torch.arange(T, device=tokens.device)  # (T,)
        x = self.token_embedding(tokens) + self.position_embedding(positions)  # (B, T, d_model)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=tokens.device)  # (T, T), -inf above
        x = self.layers(x, mask=mask, is_causal=True)  # (B, T, d_model)
        return self.output(self.norm(x))  # (B, T, V)


def check_same_function(config: GPTConfig, tokens: torch.Tensor) -> None:
    """With ours' weights copied into TorchGPT, the logits agree: the two are the same network."""
    torch.manual_seed(0)
    ours, theirs = GPT(config).eval(), TorchGPT(config).eval()
    with torch.no_grad():
        # Our layer norms have a bias, zero at initialization, which TorchGPT's (bias=False) lack.
        theirs.token_embedding.weight.copy_(ours.token_embedding.weight)
        theirs.position_embedding.weight.copy_(ours.positional.embedding.weight)
        theirs.norm.weight.copy_(ours.decoder.norm.gain)
        for mine, their in zip(ours.decoder.layers, theirs.layers.layers, strict=True):
            attn = mine.self_attn
            their.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight,
                                                            attn.v_proj.weight]))
            their.self_attn.out_proj.weight.copy_(attn.out_proj.weight)
            their.linear1.weight.copy_(mine.feed_forward.linear1.weight)
            their.linear2.weight.copy_(mine.feed_forward.linear2.weight)
            their.norm1.weight.copy_(mine.self_attn_residual.norm.gain)
            their.norm2.weight.copy_(mine.ff_residual.norm.gain)
        torch.testing.assert_close(ours(tokens), theirs(tokens), atol=1e-5, rtol=1e-5)


def step_time(config: GPTConfig, train_data: torch.Tensor, rounds: int, steps: int,
              device: torch.device | str = "cpu") -> dict:
    """Milliseconds per update of the recipe, both models on the same batches, interleaved rounds (median)."""
    generator = torch.Generator().manual_seed(0)
    batches = [tuple(t.to(device) for t in next_token_batch(train_data, RECIPE["batch_size"], config.max_len,
                                                            generator))
               for _ in range(steps)]  # on the device before the clock starts
    runs = {}
    for name, cls in (("ours", GPT), ("torch", TorchGPT)):
        torch.manual_seed(0)
        model = cls(config).to(device).train()
        optimizer = make_optimizer(model, RECIPE["lr"], RECIPE["weight_decay"], RECIPE["betas"])
        scheduler = LambdaLR(optimizer, cosine_schedule(RECIPE["steps"], RECIPE["warmup_steps"], 0.1))

        def run(model=model, optimizer=optimizer, scheduler=scheduler):
            for x, y in batches:
                loss = language_model_loss(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), RECIPE["max_grad_norm"])
                optimizer.step()
                scheduler.step()

        run()  # warm-up: allocations, optimizer state
        runs[name] = run
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()  # the GPU has finished the round
            times[name].append((time.perf_counter() - start) / steps * 1000)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"ms_per_step": medians, "rounds_ms": times, "ratio": medians["ours"] / medians["torch"]}


def sampling_speed(model: GPT, reference: TorchGPT, new_tokens: int, repeats: int) -> dict:
    """New tokens per second of greedy generation: ours with and without the cache, TorchGPT without."""
    device = next(model.parameters()).device
    prompts = torch.zeros(8, 1, dtype=torch.long, device=device)  # 8 sequences, one token each

    @torch.no_grad()
    def torch_generate(tokens: torch.Tensor) -> torch.Tensor:  # the same window rule as ours, no cache
        window, max_len = 0, reference.config.max_len
        for _ in range(new_tokens):
            if tokens.shape[1] - window > max_len:
                window = tokens.shape[1] - max_len // 2
            next_token = reference(tokens[:, window:])[:, -1].argmax(dim=-1)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        return tokens

    reference.eval()
    runs = {
        "ours, with cache": lambda: generate_from_prompt(model, prompts, new_tokens, use_cache=True),
        "ours, without cache": lambda: generate_from_prompt(model, prompts, new_tokens, use_cache=False),
        "torch, without cache": lambda: torch_generate(prompts),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    assert torch.equal(outputs["ours, with cache"], outputs["ours, without cache"])
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: 8 * new_tokens / statistics.median(s) for name, s in seconds.items()}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def markdown(r: dict) -> str:
    run = r["recipe_run"]
    lines = [
        "# Chapter 13: our GPT on nanoGPT's Shakespeare recipe, against a GPT from PyTorch's layers",
        "",
        f"Measured {r['measured']} on {r['machine']} (load average {r['load_average'][0]:.2f} before the "
        f"run, {r['load_average_after'][0]:.2f} after), torch {r['torch']}, **{r['threads']} thread(s)**. "
        f"Generated by `python benchmarks/bench_language_model.py` in {r['seconds']:.0f} s. Model: 4 layers, "
        f"4 heads, d_model 128, context 64, no biases, {r['parameters']:,} parameters; recipe: nanoGPT's CPU "
        "setting for character-level Shakespeare (batch 12, 2000 updates, AdamW 1e-3, warmup 100, cosine "
        "to 1e-4).",
        "",
        "## Loss versus time (one run, estimates of 20 random batches per split)",
        "",
        "| update | train loss | validation loss | wall time (s) |",
        "|---:|---:|---:|---:|",
    ]
    for step, train_loss, valid, seconds in zip(run["eval_steps"], run["eval_train_loss"],
                                                 run["valid_loss"], run["seconds"], strict=True):
        lines.append(f"| {step} | {train_loss:.3f} | {valid:.3f} | {seconds:.1f} |")
    lines += [
        f"| nanoGPT (its own code, {NANOGPT['threads']} threads, quiet machine) | | "
        f"{NANOGPT['valid_loss']:.3f} | {NANOGPT['seconds']:.0f} |",
        "",
        f"Goal: validation loss <= {NANOGPT['valid_loss']} after the recipe: "
        f"**{'met' if run['valid_loss'][-1] <= NANOGPT['valid_loss'] else 'not met'}** "
        f"({run['valid_loss'][-1]:.3f}). Validation loss of the trained model on the whole validation text "
        f"(non-overlapping windows of 64, no sampling noise): {r['full_valid_loss']:.3f}.",
        "",
        "## Time per training update (same batches, interleaved rounds, median)",
        "",
        "| model | ms per update |",
        "|---|---:|",
        f"| ours (GPT) | {r['step_time']['ms_per_step']['ours']:.1f} |",
        f"| torch (TorchGPT: nn.TransformerEncoderLayer, norm_first, GELU, causal mask) | "
        f"{r['step_time']['ms_per_step']['torch']:.1f} |",
        f"| nanoGPT (its own code, {NANOGPT['threads']} threads, quiet machine, not measured here) | "
        f"{NANOGPT['ms_per_step']} |",
        "",
        f"Ratio ours / torch: **{r['step_time']['ratio']:.2f}** (goal <= 1.0).",
        "",
        "## Sampling speed (greedy, 8 sequences, 256 new tokens each)",
        "",
        "| generation | new tokens per second |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {speed:,.0f} |" for name, speed in r["sampling"].items()]
    cached, uncached = r["sampling"]["ours, with cache"], r["sampling"]["ours, without cache"]
    lines += ["", f"The cache makes our sampling {cached / uncached:.1f} times as fast (the same tokens)."]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def full_validation_loss(model: GPT, data: torch.Tensor) -> float:
    """Mean loss over every non-overlapping window of the validation text."""
    model.eval()
    T = model.config.max_len
    n = (len(data) - 1) // T
    device = next(model.parameters()).device
    x, y = data[: n * T].view(n, T).to(device), data[1 : n * T + 1].view(n, T).to(device)
    total = sum(language_model_loss(model(x[i : i + 256]), y[i : i + 256]).item() * len(x[i : i + 256])
                for i in range(0, n, 256))
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, print only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the chapter uses 1)")
    parser.add_argument("--device", type=select_device, default=select_device(),
                        help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()

    text = load_tiny_shakespeare()
    tokenizer = CharTokenizer.train(text, use_unk=False)
    data = torch.tensor(tokenizer.encode(text))
    split = int(0.9 * len(data))
    train_data, valid_data = data[:split], data[split:]
    config = GPTConfig(vocab_size=len(tokenizer.vocab))
    check_same_function(config, train_data[:128].view(2, 64))

    recipe = RECIPE | ({"steps": 200, "eval_every": 100, "warmup_steps": 10} if args.quick else {})
    torch.manual_seed(0)
    model = GPT(config).to(args.device)  # train_language_model moves each batch to the model's device
    history = train_language_model(model, train_data, valid_data, progress=False, **recipe)
    run = {"eval_steps": history.eval_steps, "eval_train_loss": history.eval_train_loss,
           "valid_loss": history.valid_loss, "seconds": history.seconds}
    for row in zip(*run.values(), strict=True):
        print("update {}: train {:.3f}, validation {:.3f}, {:.1f} s".format(*row))
    full = full_validation_loss(model, valid_data)
    timing = step_time(config, train_data, rounds=2 if args.quick else 5, steps=10 if args.quick else 40,
                       device=args.device)
    print(f"ms per update: {timing['ms_per_step']}, ratio {timing['ratio']:.2f}")
    torch.manual_seed(0)
    reference = TorchGPT(config).to(args.device)
    sampling = sampling_speed(model, reference, 64 if args.quick else 256, 1 if args.quick else 3)
    print("new tokens per second:", {k: round(v) for k, v in sampling.items()})

    results = {
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "torch": torch.__version__, "threads": args.threads, "device": str(args.device),
        "load_average": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": time.perf_counter() - started, "recipe": {k: v for k, v in recipe.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "nanogpt": NANOGPT, "recipe_run": run, "full_valid_loss": full,
        "step_time": timing, "sampling": sampling,
    }
    if args.quick:
        print(markdown(results))
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "language_model.md").write_text(markdown(results))
    (RESULTS / "language_model.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'language_model.md'} and {RESULTS / 'language_model.json'}")


if __name__ == "__main__":
    main()
