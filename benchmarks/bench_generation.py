"""Time greedy generation with the key/value cache against generation without it (chapter 10).

    python benchmarks/bench_generation.py            # writes benchmarks/results/generation.{md,json}
    python benchmarks/bench_generation.py --quick    # a small model and 32 tokens, prints only (a smoke test)

One randomly initialised Transformer (chapter 8) in eval mode encodes a batch of sources once; then
`transformer_lib.generation.generate` decodes greedily for exactly N new tokens (eos_id=None, so no
sequence stops early), once with use_cache=True and once with use_cache=False; the two are first checked
to produce the same tokens (on 64 new tokens). Without the cache each step runs the decoder over the whole
prefix (step t processes t tokens); with it, each step processes only the newest token and reads the cached
keys and values. Times are the median of interleaved repeats (torch.utils.benchmark, one call each).
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils import benchmark

from transformer_lib.generation import generate
from transformer_lib.transformer import Transformer, TransformerConfig

RESULTS = Path(__file__).resolve().parent / "results"
BOS = 1  # chapter 1's Vocabulary: <pad> 0, <bos> 1, <eos> 2


def make_model(quick: bool, max_new_tokens: int) -> Transformer:
    """A small Transformer with random weights: decoding cost does not depend on what the weights say."""
    torch.manual_seed(0)
    if quick:
        sizes = dict(d_model=64, num_heads=4, d_ff=128, num_encoder_layers=1, num_decoder_layers=1)
    else:
        sizes = dict(d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3, num_decoder_layers=3)
    config = TransformerConfig(src_vocab_size=1000, tgt_vocab_size=1000, dropout=0.0, max_len=max_new_tokens,
                               **sizes)
    return Transformer(config).eval()


def check_same_tokens(model: Transformer, src: torch.Tensor, new_tokens: int) -> None:
    """Cached and uncached generation must agree, or the comparison would be meaningless (also a warm-up)."""
    cached = generate(model, src, None, new_tokens, BOS, None, use_cache=True)
    uncached = generate(model, src, None, new_tokens, BOS, None, use_cache=False)
    if not torch.equal(cached, uncached) or cached.shape[1] != new_tokens:
        raise RuntimeError("cached and uncached generation disagree: the comparison would be meaningless")


def time_generation(model: Transformer, src: torch.Tensor, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median seconds of one generate call with and without the cache, measured in interleaved repeats."""
    def decoder(use_cache: bool):
        return lambda: generate(model, src, None, new_tokens, BOS, None, use_cache=use_cache)

    runs = {"cached": decoder(True), "uncached": decoder(False)}
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
            times[name].append(timer.timeit(1).median)
    return {name: statistics.median(values) for name, values in times.items()}


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| new tokens | batch | without cache (s) | with cache (s) | ms per token, with cache | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_token = 1e3 * row["cached_s"] / row["new_tokens"]
        lines.append(
            f"| {row['new_tokens']} | {row['batch']} | {row['uncached_s']:.2f} | {row['cached_s']:.2f} "
            f"| {per_token:.2f} | {row['speedup']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, 32 tokens, print only")
    # One thread by default, as in the notebooks: decoding one sequence is a chain of small operations that a
    # second thread barely speeds up, and two threads slow down badly when the other core is busy.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats per length")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lengths = (32,) if args.quick else (256, 512)
    model = make_model(args.quick, max(lengths))
    source_length = 32
    src = torch.randint(4, 1000, (args.batch, source_length), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    check_same_tokens(model, src, min(64, max(lengths)))
    rows = []
    for new_tokens in lengths:
        times = time_generation(model, src, new_tokens, args.repeats)
        rows.append({
            "new_tokens": new_tokens,
            "batch": args.batch,
            "cached_s": times["cached"],
            "uncached_s": times["uncached"],
            "speedup": times["uncached"] / times["cached"],
        })
        print(f"{new_tokens} new tokens: without cache {times['uncached']:.2f} s, with cache "
              f"{times['cached']:.2f} s, {rows[-1]['speedup']:.1f}x", flush=True)
    elapsed = time.perf_counter() - started

    c, cpu = model.config, platform.processor() or platform.machine()
    header = (
        "# Generation with and without the key/value cache\n\n"
        "Greedy decoding of exactly N new tokens (no early stop at <eos>) with "
        "`transformer_lib.generation.generate`, a randomly initialised Transformer "
        f"(d_model={c.d_model}, {c.num_heads} heads, d_ff={c.d_ff}, {c.num_encoder_layers} encoder and "
        f"{c.num_decoder_layers} decoder layers, vocabulary {c.tgt_vocab_size}), source length "
        f"{source_length}, float32, CPU ({cpu}), torch {torch.__version__}, "
        f"**{torch.get_num_threads()} thread(s)**, median of {args.repeats} interleaved repeats "
        "(torch.utils.benchmark). Speed-up = time without cache / time with cache. Generated by "
        f"`python benchmarks/bench_generation.py` in {elapsed:.0f} s."
    )
    table = markdown(rows, header)
    print()
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "generation.md").write_text(table)
        meta = {
            "d_model": c.d_model, "num_heads": c.num_heads, "d_ff": c.d_ff,
            "num_encoder_layers": c.num_encoder_layers, "num_decoder_layers": c.num_decoder_layers,
            "vocab_size": c.tgt_vocab_size, "source_length": source_length, "batch": args.batch,
            "threads": torch.get_num_threads(), "repeats": args.repeats, "torch": torch.__version__,
            "seconds": round(elapsed, 1),
        }
        (RESULTS / "generation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {RESULTS / 'generation.md'} and {RESULTS / 'generation.json'}")


if __name__ == "__main__":
    main()
