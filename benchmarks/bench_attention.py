"""Time our MultiHeadAttention against torch.nn.MultiheadAttention, forward and forward+backward.

    python benchmarks/bench_attention.py            # full grid; writes benchmarks/results/attention.{md,json}
    python benchmarks/bench_attention.py --quick    # two small sizes, prints only (a smoke test)
    python benchmarks/bench_attention.py --threads 1 --clock cpu   # on a shared, busy machine (see --help)

Both modules run in the same process on the same inputs, self-attention on (32, T, d_model), and are first
checked to compute the same output. For each size the implementations are timed in interleaved rounds, in an
order that rotates from round to round (so a busy machine slows them alike), with torch.utils.benchmark, and
the median round is reported.

- forward: eval mode under torch.no_grad(), as at inference; there PyTorch takes its fused native fast path.
- forward+backward: training mode (dropout 0), the input requires grad, loss = output.sum().
- ours fast: need_weights=False (torch.nn.functional.scaled_dot_product_attention).
- ours readable: need_weights=True (chapter 2's attention, which materializes the (B, H, T, S) weights).
- torch: need_weights=False; causal runs pass the bool mask and the is_causal=True hint, as PyTorch documents.
Ratios are ours / torch: below 1.0 means ours is faster.
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

from transformer_lib.attention import causal_mask
from transformer_lib.multihead import MultiHeadAttention, load_torch_multihead_attention

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32
IMPLEMENTATIONS = ("torch", "fast", "readable")
BLOCK_SECONDS = 0.05  # length of one timed block
ROUND_BUDGET_SECONDS = 2.0  # cheap sizes: as many rounds as fit in this, up to MAX_ROUNDS
MAX_ROUNDS = 25
CLOCKS = {"wall": "wall-clock time", "cpu": "CPU time of the process (not inflated by other programs)"}


def make_call(
    name: str, ours: MultiHeadAttention, theirs: nn.MultiheadAttention, x: torch.Tensor, causal: bool
):
    """A zero-argument function that runs one implementation once and returns its output (B, T, d_model)."""
    T = x.shape[1]
    mask = causal_mask(T) if causal else None  # (T, T), True = may attend
    if name == "torch":
        torch_mask = None if mask is None else ~mask  # PyTorch: True = ignore
        return lambda: theirs(x, x, x, attn_mask=torch_mask, need_weights=False, is_causal=causal)[0]
    need_weights = name == "readable"
    return lambda: ours(x, x, x, attn_mask=mask, need_weights=need_weights)[0]


def forward_only(call):
    def run():
        with torch.no_grad():
            call()

    return run


def forward_backward(call):
    def run():
        call().sum().backward()

    return run


def time_interleaved(runs: dict, min_rounds: int, clock) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds (order rotated each round).

    Each timed block lasts about BLOCK_SECONDS (at least one call). Cheap sizes get more rounds, up to
    MAX_ROUNDS within about ROUND_BUDGET_SECONDS, since short timings suffer most from a busy machine.
    `clock` is time.perf_counter (wall clock) or time.process_time (CPU time of this process).
    """
    numbers, round_seconds = {}, 0.0
    for name, run in runs.items():
        start = clock()
        run()  # warm-up (allocations, kernel selection); its time sets how many calls make one timed block
        elapsed = max(clock() - start, 1e-6)
        numbers[name] = max(1, round(BLOCK_SECONDS / elapsed))
        round_seconds += numbers[name] * elapsed
    rounds = max(min_rounds, min(MAX_ROUNDS, int(ROUND_BUDGET_SECONDS / round_seconds)))
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: no implementation always goes first
            timer = benchmark.Timer(
                stmt="run()", globals={"run": runs[name]}, num_threads=torch.get_num_threads(), timer=clock
            )
            times[name].append(timer.timeit(numbers[name]).median)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_one(d_model: int, num_heads: int, T: int, causal: bool, min_rounds: int, clock) -> dict:
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
    ours = MultiHeadAttention(d_model, num_heads)
    load_torch_multihead_attention(ours, theirs)
    x = torch.randn(BATCH, T, d_model)
    calls = {name: make_call(name, ours, theirs, x, causal) for name in IMPLEMENTATIONS}
    with torch.no_grad():  # same function before timing it
        reference = calls["torch"]()
        for name in ("fast", "readable"):
            torch.testing.assert_close(calls[name](), reference, atol=1e-4, rtol=1e-4)

    for module in (ours, theirs):
        module.eval()
    forward = time_interleaved({n: forward_only(c) for n, c in calls.items()}, min_rounds, clock)

    for module in (ours, theirs):
        module.train()
    x.requires_grad_(True)
    train = time_interleaved({n: forward_backward(c) for n, c in calls.items()}, min_rounds, clock)
    return {
        "d_model": d_model,
        "num_heads": num_heads,
        "seq_len": T,
        "causal": causal,
        "forward_s": forward,
        "forward_backward_s": train,
    }


def ratio(row: dict, mode: str, name: str) -> float:
    return row[mode][name] / row[mode]["torch"]


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| d_model | heads | T | causal | torch fwd (ms) | fast / torch | readable / torch "
        "| torch fwd+bwd (ms) | fast / torch | readable / torch |",
        "|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [str(row[key]) for key in ("d_model", "num_heads", "seq_len")]
        cells.append("yes" if row["causal"] else "no")
        for mode in ("forward_s", "forward_backward_s"):
            cells.append(f"{row[mode]['torch'] * 1e3:.2f}")
            cells += [f"{ratio(row, mode, name):.2f}" for name in ("fast", "readable")]
        lines.append("| " + " | ".join(cells) + " |")
    modes = ("forward_s", "forward_backward_s")
    worst = {mode: max(ratio(row, mode, "fast") for row in rows) for mode in modes}
    lines += [
        "",
        f"Fast path, worst ratio: forward {worst['forward_s']:.2f}, forward+backward "
        f"{worst['forward_backward_s']:.2f} (1.0 = as fast as torch.nn.MultiheadAttention).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small sizes, print only")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--rounds", type=int, default=3, help="least interleaved timing rounds per size")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process, which other programs on a busy machine do "
        "not inflate (meaningful with --threads 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    if args.quick:
        grid = [(128, 4, 64, False), (128, 4, 64, True)]
    else:
        grid = list(itertools.product((128, 256), (4, 8), (64, 128, 256, 512), (False, True)))
    load_before = os.getloadavg()[0]  # other work on the machine slows the timings, ours and torch's alike
    started = time.perf_counter()
    rows = []
    for d_model, num_heads, T, causal in grid:
        rows.append(bench_one(d_model, num_heads, T, causal, args.rounds, clock))
        fast = ratio(rows[-1], "forward_s", "fast"), ratio(rows[-1], "forward_backward_s", "fast")
        print(f"d_model={d_model} heads={num_heads} T={T} causal={causal}: fast/torch forward {fast[0]:.2f}, "
              f"forward+backward {fast[1]:.2f}", flush=True)
    elapsed = time.perf_counter() - started

    header = (
        f"# MultiHeadAttention vs torch.nn.MultiheadAttention\n\n"
        f"Self-attention, batch {BATCH}, float32, CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before the run), torch {torch.__version__}, "
        f"**{torch.get_num_threads()} thread(s)**, {CLOCKS[args.clock]}. Median of {args.rounds} to "
        f"{MAX_ROUNDS} interleaved rounds (more for small sizes; torch.utils.benchmark). Ratios are "
        f"ours / torch: below 1.0 means ours is faster. Forward: eval mode, no grad (PyTorch's native "
        f"fast path). Forward+backward: training mode. Generated by `python benchmarks/bench_attention.py "
        f"--threads {torch.get_num_threads()} --clock {args.clock}` in {elapsed:.0f} s."
    )
    table = markdown(rows, header)
    print()
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "attention.md").write_text(table)
        meta = {"batch": BATCH, "threads": torch.get_num_threads(), "min_rounds": args.rounds,
                "max_rounds": MAX_ROUNDS, "clock": args.clock, "load_average_before": load_before,
                "torch": torch.__version__,
                "seconds": round(elapsed, 1)}
        (RESULTS / "attention.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {RESULTS / 'attention.md'} and {RESULTS / 'attention.json'}")


if __name__ == "__main__":
    main()
