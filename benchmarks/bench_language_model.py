"""Chapter 13's GPT against a GPT from PyTorch's own layers: nanoGPT's recipe, seeds, step time, sampling.

    python benchmarks/bench_language_model.py          # writes benchmarks/results/language_model.{md,json}
    python benchmarks/bench_language_model.py --quick  # short runs, prints only (a smoke test)

The data and recipe are those of nanoGPT's character-level Shakespeare example for a CPU, as in
notebooks/13_language_model.ipynb: tiny Shakespeare with chapter 1's CharTokenizer less its 4 special tokens
(the 65 characters, as nanoGPT), the first 90% for training and the last 10% for validation, 4 layers, 4
heads, d_model 128, context 64, batch 12, dropout 0, no biases (linear layers and layer norms), AdamW (lr
1e-3, betas 0.9/0.99, weight decay 0.1 on tensors of 2 or more dimensions), 100 warm-up steps then a cosine
down to 1e-4, clipping at 1.0, validation loss = the mean of 20 random batches.

- Loss goal, over seeds: the recipe (train_language_model, 2000 updates, which draws its random numbers in the
  order of nanoGPT's train.py) after torch.manual_seed(seed) for seeds 1337 (nanoGPT's, and the chapter's),
  1338 and 1339, each with its final 20-batch estimate, the loss over the whole validation text (every
  character predicted once, windows of 64: no sampling noise) and the wall time. nanoGPT's own code reaches an
  estimate of 1.886 with seed 1337 on this machine: the goal is <= 1.886.
- Rotary positions: the same recipe with GPTConfig(position="rope"), seed 1337.
- Moonshot: MOONSHOT, a recipe of ours, with the same seeds; the goal is an estimate <= 1.886 in at most half
  the wall time of the recipe's run with the same seed, measured in the same run of this script.
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
from transformer_lib.tokenizer import SPECIAL_TOKENS, CharTokenizer
from transformer_lib.training import cosine_schedule

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = {
    "steps": 2000, "batch_size": 12, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "weight_decay": 0.1,
    "betas": (0.9, 0.99), "max_grad_norm": 1.0, "eval_every": 250, "eval_batches": 20,
}
NANOGPT = {"valid_loss": 1.886, "seconds": 74.0, "ms_per_step": 33.8, "threads": 2, "seed": 1337}
SEEDS = (1337, 1338, 1339)  # nanoGPT's seed (the chapter's) and the next two
# Ours: rotary positions (chapter 4's RotaryEmbedding rotates with one complex product, about 3 times as fast
# forward and backward as the real even/odd formula on (12, 4, 64, 32) queries), 820 updates, lr 4e-3, beta2
# 0.95, warmup 50, estimates only at the start and the end (each is 40 forward batches of wall time). Screened
# with seed 1337 against min_lr 1e-5 (1.883); the earlier 800-update recipe with five estimates reached 1.898.
MOONSHOT = {"config": {"position": "rope"},
            "recipe": {"steps": 820, "lr": 4e-3, "warmup_steps": 50, "eval_every": 820, "betas": [0.9, 0.95]}}


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
        # With bias=False neither model has biases, in the linear layers or the layer norms.
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


def _run_rows(run: dict) -> list[str]:
    return [f"| {step} | {train_loss:.3f} | {valid:.3f} | {seconds:.1f} |"
            for step, train_loss, valid, seconds in zip(run["eval_steps"], run["eval_train_loss"],
                                                         run["valid_loss"], run["seconds"], strict=True)]


def markdown(r: dict) -> str:
    goal = NANOGPT["valid_loss"]
    recipe, moon = r["recipe_runs"], r["moonshot_runs"]
    final = [run["valid_loss"][-1] for run in recipe]
    lines = [
        "# Chapter 13: our GPT on nanoGPT's Shakespeare recipe, against a GPT from PyTorch's layers",
        "",
        f"Measured {r['measured']} on {r['machine']} (load average {r['load_average'][0]:.2f} before the "
        f"run, {r['load_average_after'][0]:.2f} after), torch {r['torch']}, **{r['threads']} thread(s)**. "
        f"Generated by `python benchmarks/bench_language_model.py` in {r['seconds']:.0f} s. Model: 4 layers, "
        f"4 heads, d_model 128, context 64, 65 characters, no biases, {r['parameters']:,} parameters; "
        "recipe: nanoGPT's CPU setting for character-level Shakespeare (batch 12, 2000 updates, AdamW "
        "1e-3, warmup 100, cosine to 1e-4). Estimates: the mean loss of 20 random batches; whole text: "
        "every validation character predicted once, in windows of 64 (no sampling noise).",
        "",
        "## The loss goal, seed by seed",
        "",
        "| run | seed | validation estimate (20 batches) | whole validation text | wall time (s) | "
        "load average |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in recipe:
        lines.append(f"| the recipe | {run['seed']} | {run['valid_loss'][-1]:.3f} | "
                     f"{run['full_valid_loss']:.3f} | {run['seconds'][-1]:.1f} | {run['load_average']:.2f} |")
    lines += [
        f"| the recipe, mean of {len(recipe)} seeds | | {statistics.mean(final):.3f} | "
        f"{statistics.mean(run['full_valid_loss'] for run in recipe):.3f} | | |",
        f"| nanoGPT's own code ({NANOGPT['threads']} threads, quiet machine, not run here) | "
        f"{NANOGPT['seed']} | {goal:.3f} | | {NANOGPT['seconds']:.0f} | |",
    ]
    rope = r["rope_run"]
    lines += [
        f"| the recipe with rotary positions (position='rope') | {rope['seed']} | "
        f"{rope['valid_loss'][-1]:.3f} | {rope['full_valid_loss']:.3f} | {rope['seconds'][-1]:.1f} | "
        f"{rope['load_average']:.2f} |",
        "",
        f"Goal: estimate <= {goal} after the recipe. Met with seed(s) "
        f"{[run['seed'] for run in recipe if run['valid_loss'][-1] <= goal] or 'none'} of "
        f"{[run['seed'] for run in recipe]}; the chapter's seed {recipe[0]['seed']}: **"
        f"{'met' if final[0] <= goal else 'not met'}** ({final[0]:.3f}); the mean of the seeds: **"
        f"{'met' if statistics.mean(final) <= goal else 'not met'}** ({statistics.mean(final):.3f}). "
        "The 20-batch estimate of one trained model varies by a few hundredths from draw to draw (the "
        "chapter prints ten draws): compare the whole-text column.",
        "",
        "## Moonshot: a recipe of ours in at most half the time",
        "",
        f"Recipe: `{json.dumps(r['moonshot'])}` (everything else as in the recipe above).",
        "",
        "| seed | validation estimate | whole validation text | wall time (s) | recipe's time, same seed "
        f"(s) | time ratio | goal (<= {goal}, ratio <= 0.5) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m, run in zip(moon, recipe, strict=True):
        ratio = m["seconds"][-1] / run["seconds"][-1]
        met = m["valid_loss"][-1] <= goal and ratio <= 0.5
        lines.append(f"| {m['seed']} | {m['valid_loss'][-1]:.3f} | {m['full_valid_loss']:.3f} | "
                     f"{m['seconds'][-1]:.1f} | {run['seconds'][-1]:.1f} | {ratio:.2f} | "
                     f"{'met' if met else 'not met'} |")
    lines += [
        "",
        f"## Loss versus time (seed {recipe[0]['seed']}; estimates of 20 random batches, wall time with the "
        "estimates)",
        "",
        "The recipe:",
        "",
        "| update | train loss | validation loss | wall time (s) |",
        "|---:|---:|---:|---:|",
        *_run_rows(recipe[0]),
        "",
        "The moonshot recipe:",
        "",
        "| update | train loss | validation loss | wall time (s) |",
        "|---:|---:|---:|---:|",
        *_run_rows(moon[0]),
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


def recipe_run(config: GPTConfig, train_data: torch.Tensor, valid_data: torch.Tensor, recipe: dict,
               seed: int, device: torch.device | str = "cpu") -> dict:
    """A run of train_language_model from torch.manual_seed(seed): its estimates and the whole-text loss."""
    torch.manual_seed(seed)
    model = GPT(config).to(device)  # train_language_model moves each batch to the model's device
    history = train_language_model(model, train_data, valid_data, progress=False, **recipe)  # global RNG
    run = {"seed": seed, "eval_steps": history.eval_steps, "eval_train_loss": history.eval_train_loss,
           "valid_loss": history.valid_loss, "seconds": history.seconds,
           "full_valid_loss": full_validation_loss(model, valid_data), "load_average": os.getloadavg()[0]}
    print("seed {seed}: estimate {:.3f}, whole text {:.3f}, {:.1f} s".format(
        run["valid_loss"][-1], run["full_valid_loss"], run["seconds"][-1], seed=seed), flush=True)
    return run | {"model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, print only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the chapter uses 1)")
    parser.add_argument("--moonshot", type=json.loads, default=MOONSHOT,
                        help='another moonshot recipe, as JSON like MOONSHOT: {"config": ..., "recipe": ...}')
    parser.add_argument("--device", type=select_device, default=select_device(),
                        help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU)")
    args = parser.parse_args()
    moonshot = args.moonshot
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()

    text = load_tiny_shakespeare()
    tokenizer = CharTokenizer.train(text, use_unk=False)
    data = torch.tensor(tokenizer.encode(text)) - len(SPECIAL_TOKENS)  # the 65 characters: ids 0 to 64
    split = int(0.9 * len(data))
    train_data, valid_data = data[:split], data[split:]
    config = GPTConfig(vocab_size=len(tokenizer.vocab) - len(SPECIAL_TOKENS))
    check_same_function(config, train_data[:128].view(2, 64))

    quick = {"steps": 200, "eval_every": 100, "warmup_steps": 10}
    recipe = RECIPE | (quick if args.quick else {})
    seeds = SEEDS[:1] if args.quick else SEEDS
    recipe_runs = [recipe_run(config, train_data, valid_data, recipe, seed, args.device) for seed in seeds]
    model = recipe_runs[0].pop("model")
    for run in recipe_runs[1:]:
        run.pop("model")
    rope_config = GPTConfig(vocab_size=config.vocab_size, position="rope")
    rope = recipe_run(rope_config, train_data, valid_data, recipe, seeds[0], args.device)
    rope.pop("model")
    moon_config = GPTConfig(vocab_size=config.vocab_size, **moonshot["config"])
    moon_recipe = recipe | moonshot["recipe"] | ({"steps": 100, "eval_every": 50, "warmup_steps": 5}
                                                  if args.quick else {})
    if "betas" in moon_recipe:
        moon_recipe["betas"] = tuple(moon_recipe["betas"])  # JSON gives a list
    moonshot_runs = [recipe_run(moon_config, train_data, valid_data, moon_recipe, seed, args.device)
                     for seed in seeds]
    for run in moonshot_runs:
        run.pop("model")
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
        "seconds": time.perf_counter() - started, "recipe": dict(recipe), "moonshot": moonshot,
        "parameters": sum(p.numel() for p in model.parameters()), "nanogpt": NANOGPT,
        "recipe_runs": recipe_runs, "rope_run": rope,
        "moonshot_runs": moonshot_runs, "step_time": timing, "sampling": sampling,
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
