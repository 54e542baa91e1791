"""Chapter 12: our Transformer versus torch.nn.Transformer on Multi30k German->English, same budget.

    python benchmarks/bench_translation.py              # 2.5 min of training each (about 7 min in all)
    python benchmarks/bench_translation.py --minutes 5  # longer runs
    python benchmarks/bench_translation.py --quick      # 20 s each, prints only (a smoke test)

Both models are built from the same TransformerConfig and trained with the same recipe as `make translate`
(tools/translate.py: SETTINGS, data, vocabularies, length-grouped batches, chapter 9's train_step with
bfloat16 autocast, fused AdamW, the full run's learning-rate schedule): ours is
transformer_lib.transformer.Transformer with its attention projections drawn as nn.MultiheadAttention draws
them (init_attention_like_torch) and, as the full run's settings say, on the readable attention path
(set_fused_attention; the same function),
theirs is torch.nn.Transformer with the same token embeddings (N(0, 1/d_model), times sqrt(d_model)),
sinusoidal positions and bias-free output layer (bench_training.TorchSeq2Seq, checked first to compute the
same function with copied weights). Each trains for the same budget of training time (validation excluded),
one after the other, then translates test_2016_flickr greedily (BLEU: lower-cased, 13a, sacreBLEU's
BLEU(lowercase=True)). Throughput: real source + target tokens per second through train_step on the same
fixed batches, timed in interleaved rounds (median), so a busy moment slows both.
"""

import argparse
import importlib.util
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_training import TorchSeq2Seq, check_same_function, machine

from transformer_lib.distributed import select_device
from transformer_lib.training import seed_everything, train_step
from transformer_lib.transformer import Transformer, TransformerConfig
from transformer_lib.translation import (
    TokenBatches,
    corpus_bleu,
    init_attention_like_torch,
    set_fused_attention,
    train_translation,
    translate,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("ours", "torch")


def load_full_run():
    """tools/translate.py, the full run, whose SETTINGS and data preparation this benchmark shares."""
    spec = importlib.util.spec_from_file_location("translate_tool", ROOT / "tools" / "translate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_config(settings: dict, src_vocab_size: int, tgt_vocab_size: int) -> TransformerConfig:
    return TransformerConfig(
        src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=settings["d_model"],
        num_heads=settings["num_heads"], num_encoder_layers=settings["num_layers"],
        num_decoder_layers=settings["num_layers"], d_ff=settings["d_ff"], dropout=settings["dropout"],
        max_len=128,
    )


def make_model(name: str, config: TransformerConfig, settings: dict | None = None) -> torch.nn.Module:
    """Ours (with the full run's attention settings), or nn.Transformer with the same embeddings."""
    if name == "ours":
        model = Transformer(config)
        if settings is not None and settings["attention_init"] == "torch":
            init_attention_like_torch(model)  # the attention weights drawn as nn.MultiheadAttention's
        if settings is not None:
            set_fused_attention(model, settings["fused_attention"])
        return model
    return TorchSeq2Seq(config, embedding_std=config.d_model**-0.5)


def make_optimizer(model: torch.nn.Module, settings: dict) -> torch.optim.Optimizer:
    betas = (settings["beta1"], settings["beta2"])
    return torch.optim.AdamW(model.parameters(), lr=settings["lr"], betas=betas,
                             weight_decay=settings["weight_decay"], fused=settings["fused_adamw"])


def autocast(settings: dict, device: torch.device | str = "cpu"):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=settings["bfloat16"])


def train_and_test(name: str, config, settings: dict, data: dict, seconds: float, full_run,
                   device: torch.device | str = "cpu") -> dict:
    """One seeded run for `seconds` of training time, then greedy test BLEU."""
    seed_everything(0)
    model = make_model(name, config, settings).to(device)  # the library moves each batch there
    optimizer = make_optimizer(model, settings)
    schedule = full_run.make_schedule(settings, optimizer)  # the full run's learning-rate schedule
    batches = TokenBatches(data["encoded"]["train"], settings["max_tokens"], seed=0)
    load_before = os.getloadavg()[0]
    history = train_translation(
        model, optimizer, batches, data["encoded"]["val"], [en for _, en in data["splits"]["val"]],
        data["tgt_vocab"], max_seconds=seconds, smoothing=settings["smoothing"],
        max_grad_norm=settings["max_grad_norm"], progress=False,
        autocast_dtype=torch.bfloat16 if settings["bfloat16"] else None, **schedule,
    )
    sources = [source for source, _ in data["encoded"]["test_2016_flickr"]]
    references = [english for _, english in data["splits"]["test_2016_flickr"]]
    score = corpus_bleu(translate(model, sources, data["tgt_vocab"]), references)
    return {
        "bleu": round(score.score, 2), "bleu_detail": str(score), "updates": len(history.train_loss),
        "training_seconds": round(history.seconds[-1], 1),
        "valid_bleu": [round(b, 2) for b in history.valid_bleu],
        "load_average_before": round(load_before, 2),
    }


def throughput(config, settings: dict, batches: list, rounds: int,
               device: torch.device | str = "cpu") -> dict:
    """Real source + target tokens per second through train_step, both models on the same batches."""
    tokens = sum(int(b.src_padding_mask.sum()) + b.num_tokens for b in batches)
    batches = [batch.to(device) for batch in batches]  # on the device before the clock starts
    runs = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = make_model(name, config, settings).to(device)
        optimizer = make_optimizer(model, settings)

        def run(model=model, optimizer=optimizer):
            for batch in batches:
                with autocast(settings, device):
                    train_step(model, batch, optimizer, smoothing=settings["smoothing"],
                               max_grad_norm=settings["max_grad_norm"])

        run()  # warm-up: allocations, kernel choice, optimizer state
        runs[name] = run
    times = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved: a busy moment slows both
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    speed = {name: tokens / statistics.median(values) for name, values in times.items()}
    rounded = {name: round(value, 1) for name, value in speed.items()}
    return {**rounded, "ratio": speed["ours"] / speed["torch"], "tokens_per_round": tokens, "rounds": rounds}


def markdown(results: dict) -> str:
    ours, theirs = results["models"]["ours"], results["models"]["torch"]
    lines = [
        "# Chapter 12: translation with our Transformer vs torch.nn.Transformer",
        "",
        f"Measured {results['measured']} on {results['machine']} (load average {results['load_average']:.2f} "
        f"before the run, {results['load_average_after']:.2f} after), torch {results['torch']}, "
        f"**{results['threads']} threads**. Generated by `{results['command']}` in "
        f"{results['seconds']:.0f} s. Recipe: `make translate`'s (tools/translate.py), bfloat16 autocast "
        f"{results['settings']['bfloat16']}, "
        f"batches of up to {results['settings']['max_tokens']} tokens. BLEU: {results['bleu_definition']}, "
        "greedy decoding, test_2016_flickr.",
        "",
        f"## Same budget: {results['budget_seconds']:.0f} s of training each",
        "",
        "| model | test BLEU (greedy) | updates | training time (s) | validation BLEU per pass |",
        "|---|---:|---:|---:|---|",
    ]
    for label, row in (("our Transformer", ours), ("nn.Transformer", theirs)):
        lines.append(f"| {label} | {row['bleu']:.2f} | {row['updates']} | {row['training_seconds']:.0f} | "
                     f"{', '.join(f'{b:.1f}' for b in row['valid_bleu'])} |")
    speed = results["throughput"]
    lines += [
        "",
        f"## Training throughput ({speed['rounds']} interleaved rounds over the same {speed['batches']} "
        "batches, median)",
        "",
        "| ours (tokens/s) | nn.Transformer (tokens/s) | ours / nn.Transformer |",
        "|---:|---:|---:|",
        f"| {speed['ours']:,.0f} | {speed['torch']:,.0f} | {speed['ratio']:.3f} |",
        "",
        f"**BLEU ratio (ours / nn.Transformer): {results['bleu_ratio']:.3f}; throughput ratio: "
        f"{results['throughput_ratio']:.3f}.** Goals: both >= 1.0.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.5, help="training time for each model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (make translate uses 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput timing rounds")
    parser.add_argument("--quick", action="store_true", help="20 s each, 2 rounds, print only")
    parser.add_argument("--device", type=select_device, default=select_device(),
                        help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seconds = 20.0 if args.quick else 60 * args.minutes
    rounds = 2 if args.quick else args.rounds
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    full_run = load_full_run()
    settings = full_run.SETTINGS
    data = full_run.prepare(settings)
    config = make_config(settings, len(data["src_vocab"]), len(data["tgt_vocab"]))
    fixed = list(TokenBatches(data["encoded"]["train"], settings["max_tokens"], seed=1))[:8]
    check_same_function(config, fixed[0])

    models = {}
    for name in MODELS:
        models[name] = train_and_test(name, config, settings, data, seconds, full_run, args.device)
        print(f"{name}: test BLEU {models[name]['bleu']:.2f} after {models[name]['updates']} updates "
              f"({models[name]['training_seconds']:.0f} s)", flush=True)
    speed = throughput(config, settings, fixed, rounds, args.device)
    speed["batches"] = len(fixed)
    print(f"throughput: ours {speed['ours']:,.0f} tokens/s, torch {speed['torch']:,.0f} tokens/s, "
          f"ratio {speed['ratio']:.3f}", flush=True)
    command = "python benchmarks/bench_translation.py"
    command += f" --minutes {args.minutes:g}" if args.minutes != 2.5 else ""
    command += f" --threads {args.threads}" if args.threads != 2 else ""
    command += " --quick" if args.quick else ""
    results = {
        "command": command,
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(args.device),
        "load_average": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
        "budget_seconds": seconds,
        "settings": settings,
        "bleu_definition": full_run.BLEU_DEFINITION,
        "models": {name: {**row, "tokens_per_second": speed[name]} for name, row in models.items()},
        "throughput": speed,
        "bleu_ratio": round(models["ours"]["bleu"] / max(models["torch"]["bleu"], 1e-9), 4),
        "throughput_ratio": round(speed["ratio"], 4),
    }
    table = markdown(results)
    print()
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "translation_bench.md").write_text(table)
        (RESULTS / "translation_bench.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS / 'translation_bench.md'} and {RESULTS / 'translation_bench.json'}")


if __name__ == "__main__":
    main()
