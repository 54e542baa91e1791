"""The full run of chapter 12: train German->English translation on Multi30k for a budget of training time.

    python tools/translate.py --minutes 5 --threads 2      # what `make translate` runs
    python tools/translate.py --minutes 2.5 --set lr=0.003 --out /tmp/trial.json   # an experiment

Trains chapter 8's Transformer with chapter 9's recipe (the settings of notebooks/12_translation.ipynb,
SETTINGS below; the learning rate decays to zero over the time budget), validating after every pass over the
data; keeps the checkpoint with the best validation BLEU (outside the repository by default); loads it back
with chapter 9's load_checkpoint (weights_only=True); translates test_2016_flickr greedily and with beam
search (length penalty chosen on the validation split); and writes
benchmarks/results/translation.json (BLEU, wall time, threads, the exact command, the git commit, the loss
and BLEU curves) and translation_outputs.json (the test translations, which tests/test_translation.py
scores with sacreBLEU).
"""

import argparse
import ast
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from transformer_lib.data import load_multi30k
from transformer_lib.distributed import select_device
from transformer_lib.training import (
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    warmup_inverse_sqrt_schedule,
)
from transformer_lib.transformer import Transformer, TransformerConfig
from transformer_lib.translation import (
    TokenBatches,
    build_vocabulary,
    corpus_bleu,
    encode_pairs,
    init_attention_like_torch,
    set_fused_attention,
    tokenize_13a,
    train_translation,
    translate,
    warmup_linear_decay,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# The recipe; notebooks/12_translation.ipynb trains with the same settings for a fixed number of updates.
SETTINGS = {
    "lowercase": True, "min_freq": 2, "max_tokens": 1000, "d_model": 256, "num_heads": 4, "num_layers": 2,
    "d_ff": 512, "dropout": 0.0, "lr": 2e-3, "warmup_steps": 200, "beta1": 0.9, "beta2": 0.98,
    "weight_decay": 0.01, "smoothing": 0.1, "max_grad_norm": 1.0, "bfloat16": True,
    "attention_init": "torch", "fused_attention": False, "schedule": "linear_decay", "fused_adamw": True,
}
ALPHAS = (0.6, 1.0, 1.4)  # length penalties tried for beam search, on the validation split
BLEU_DEFINITION = ("corpus BLEU, lower-cased, 13a tokenization, one reference, 'exp' smoothing, n <= 4 "
                   "(sacreBLEU's BLEU(lowercase=True))")


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def prepare(settings: dict) -> dict:
    """Splits, vocabularies (training split only) and encoded pairs."""
    splits = {name: load_multi30k(name) for name in ("train", "val", "test_2016_flickr")}
    lowercase = settings["lowercase"]
    tokens = [(tokenize_13a(de, lowercase), tokenize_13a(en, lowercase)) for de, en in splits["train"]]
    src_vocab = build_vocabulary((de for de, _ in tokens), settings["min_freq"])
    tgt_vocab = build_vocabulary((en for _, en in tokens), settings["min_freq"])
    encoded = {name: encode_pairs(pairs, src_vocab, tgt_vocab, lowercase) for name, pairs in splits.items()}
    return {"splits": splits, "src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "encoded": encoded}


def make_model(settings: dict, src_vocab_size: int, tgt_vocab_size: int) -> Transformer:
    """Chapter 8's Transformer; attention drawn as nn.MultiheadAttention draws it, and on the
    readable path, when the settings say so."""
    model = Transformer(TransformerConfig(
        src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=settings["d_model"],
        num_heads=settings["num_heads"], num_encoder_layers=settings["num_layers"],
        num_decoder_layers=settings["num_layers"], d_ff=settings["d_ff"], dropout=settings["dropout"],
        max_len=128,
    ))
    if settings["attention_init"] == "torch":
        init_attention_like_torch(model)
    set_fused_attention(model, settings["fused_attention"])
    return model


def make_schedule(settings: dict, optimizer: torch.optim.Optimizer) -> dict:
    """train_translation's scheduler or lr_schedule argument for the settings' schedule."""
    if settings["schedule"] == "linear_decay":  # warmup, then linear decay to 0 over the budget
        return {"lr_schedule": warmup_linear_decay(settings["warmup_steps"])}
    if settings["schedule"] == "inverse_sqrt":
        return {"scheduler": LambdaLR(optimizer, warmup_inverse_sqrt_schedule(settings["warmup_steps"]))}
    raise ValueError(f"unknown schedule {settings['schedule']!r}: linear_decay or inverse_sqrt")


def parse_overrides(pairs: list[str]) -> dict:
    """--set key=value pairs (values as Python literals) checked against SETTINGS."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in SETTINGS:
            raise SystemExit(f"--set {pair}: unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare word such as inverse_sqrt
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="budget of training time (validation excluded)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (default: translation.pt in a new temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "translation.json", help="results file")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (no bfloat16 autocast)")
    parser.add_argument("--device", type=select_device, default=select_device(),
                        help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one of SETTINGS (for experiments), e.g. --set lr=0.003")
    args = parser.parse_args()
    settings = {**SETTINGS, "bfloat16": SETTINGS["bfloat16"] and not args.no_bf16,
                **parse_overrides(args.set)}
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or Path(tempfile.mkdtemp(prefix="translation-")) / "translation.pt"
    load_before, commit = os.getloadavg()[0], git_commit()
    started = time.perf_counter()

    data = prepare(settings)
    src_vocab, tgt_vocab, encoded = data["src_vocab"], data["tgt_vocab"], data["encoded"]
    seed_everything(args.seed)
    model = make_model(settings, len(src_vocab), len(tgt_vocab)).to(args.device)  # batches follow the model
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], betas=(settings["beta1"],
                                  settings["beta2"]), weight_decay=settings["weight_decay"],
                                  fused=settings["fused_adamw"])  # one kernel for all parameters
    schedule = make_schedule(settings, optimizer)
    batches = TokenBatches(encoded["train"], settings["max_tokens"], seed=args.seed)
    valid_references = [english for _, english in data["splits"]["val"]]

    best = {"valid_bleu": -1.0}

    def save(history) -> None:  # keep the checkpoint with the best validation BLEU
        if history.valid_bleu[-1] > best["valid_bleu"]:
            best.update(valid_bleu=history.valid_bleu[-1], updates=history.valid_steps[-1],
                        training_seconds=history.valid_seconds[-1])
            save_checkpoint(checkpoint, model, optimizer, schedule.get("scheduler"),
                            updates=best["updates"], training_seconds=best["training_seconds"],
                            valid_bleu=best["valid_bleu"], settings=settings)

    history = train_translation(
        model, optimizer, batches, encoded["val"], valid_references, tgt_vocab,
        max_seconds=60 * args.minutes, smoothing=settings["smoothing"],
        max_grad_norm=settings["max_grad_norm"], on_validation=save,
        autocast_dtype=torch.bfloat16 if settings["bfloat16"] else None, **schedule,
    )
    trained = make_model(settings, len(src_vocab), len(tgt_vocab)).to(args.device)  # filled from the file
    extra = load_checkpoint(checkpoint, trained)
    assert extra["updates"] == best["updates"]
    print(f"best validation BLEU {best['valid_bleu']:.2f} after {best['updates']} updates: decoding with it")

    # The length penalty of beam search is chosen on the validation split, never on the test set.
    valid_sources = [source for source, _ in encoded["val"]]
    valid_beam_bleu = {
        alpha: corpus_bleu(translate(trained, valid_sources, tgt_vocab, args.beam_size, alpha=alpha),
                           valid_references).score
        for alpha in ALPHAS
    }
    alpha = max(ALPHAS, key=valid_beam_bleu.get)
    print(f"validation BLEU, beam search, by length penalty alpha: {valid_beam_bleu}; chose {alpha}")
    test_sources = [source for source, _ in encoded["test_2016_flickr"]]
    test_references = [english for _, english in data["splits"]["test_2016_flickr"]]
    outputs, scores, decode_seconds = {}, {}, {}
    for name, beam_size in (("greedy", 1), ("beam", args.beam_size)):
        start = time.perf_counter()
        outputs[name] = translate(trained, test_sources, tgt_vocab, beam_size=beam_size, alpha=alpha)
        decode_seconds[name] = round(time.perf_counter() - start, 1)
        scores[name] = corpus_bleu(outputs[name], test_references)
        print(f"test_2016_flickr, {name}: {scores[name]} ({decode_seconds[name]} s)", flush=True)

    every = 10
    train_curve = [{"step": i + every, "seconds": round(history.seconds[i + every - 1], 2),
                    "loss": round(sum(history.train_loss[i : i + every]) / every, 4)}
                   for i in range(0, len(history.train_loss) - every + 1, every)]
    curve = [{"step": s, "seconds": round(t, 2), "valid_loss": round(loss, 4), "valid_bleu": round(bleu, 2)}
             for s, t, loss, bleu in zip(history.valid_steps, history.valid_seconds, history.valid_loss,
                                         history.valid_bleu, strict=True)]
    results = {
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]]),
        "commit": commit,
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(args.device),
        "load_average": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "settings": settings,
        "seed": args.seed,
        "budget_minutes": args.minutes,
        "training_seconds": round(history.seconds[-1], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "updates": len(history.train_loss),
        "checkpoint": {"updates": best["updates"], "training_seconds": round(best["training_seconds"], 1),
                       "valid_bleu": round(best["valid_bleu"], 2), "rule": "best validation BLEU"},
        "epochs": round(len(history.train_loss) / len(batches), 2),
        "vocabulary": {"german": len(src_vocab), "english": len(tgt_vocab)},
        "beam_size": args.beam_size,
        "beam_alpha": alpha,
        "valid_beam_bleu_by_alpha": {str(a): round(v, 2) for a, v in valid_beam_bleu.items()},
        "bleu_definition": BLEU_DEFINITION,
        "bleu": {name: round(score.score, 2) for name, score in scores.items()},
        "brevity_penalty": {name: round(score.brevity_penalty, 4) for name, score in scores.items()},
        "bleu_detail": {name: str(score) for name, score in scores.items()},
        "decode_seconds": decode_seconds,
        "curve": curve,
        "train_curve": train_curve,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    outputs_file = args.out.with_name(args.out.stem + "_outputs.json")
    outputs_file.write_text(json.dumps(outputs, indent=0) + "\n")
    print(f"wrote {args.out} and {outputs_file}; checkpoint {checkpoint}")


if __name__ == "__main__":
    main()
