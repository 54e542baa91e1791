import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from transformer_lib.attention import causal_mask
from transformer_lib.decoder import Decoder
from transformer_lib.generation import _check_int_at_least, _eval_mode, sample_next_token
from transformer_lib.multihead import KVCache
from transformer_lib.positional import LearnedPositionalEmbedding
from transformer_lib.training import cosine_schedule
from transformer_lib.transformer import _check_token_ids
@dataclass
class GPTConfig:
    """Sizes and options of a decoder-only language model; the defaults are nanoGPT's small CPU model."""

    vocab_size: int
    max_len: int = 64  # the context: the most tokens the model reads at once (nanoGPT's block_size)
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    d_ff: int | None = None  # None: 4 * d_model, as in GPT and GPT-2
    dropout: float = 0.0
    bias: bool = False  # biases in the linear layers; GPT-2 has them, nanoGPT's small recipe drops them
    activation: str = "gelu"  # GPT-2 uses "gelu_tanh", the tanh approximation of GELU
    eps: float = 1e-5  # the layer norms' epsilon, GPT-2's

    def __post_init__(self) -> None:
        """Fill in d_ff and check that the sizes fit together, so a bad configuration fails here."""
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if isinstance(self.d_model, int) else self.d_model
        for name in ("vocab_size", "max_len", "d_model", "num_heads", "num_layers", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads != 0:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; num_heads that "
                f"divide it: {divisors}"
            )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if self.activation not in ("relu", "gelu", "gelu_tanh"):
            raise ValueError(f"activation must be 'relu', 'gelu' or 'gelu_tanh', got {self.activation!r}")

    @classmethod
    def gpt2(cls) -> "GPTConfig":
        """GPT-2 small (124M parameters): 12 layers, 12 heads, d_model 768, 1024 positions, 50257 tokens."""
        return cls(vocab_size=50257, max_len=1024, d_model=768, num_heads=12, num_layers=12, bias=True,
                   activation="gelu_tanh")
def _cache_length(cache: list[dict[str, KVCache]] | None, num_layers: int) -> int:
    """The number of positions a cache from GPT.new_cache() holds (0 for None or a new one)."""
    if cache is None:
        return 0
    if (not isinstance(cache, list) or len(cache) != num_layers
            or not all(isinstance(c, dict) and isinstance(c.get("self"), KVCache) for c in cache)):
        raise ValueError(
            f"cache must be a list with one dict per layer ({num_layers} layers), each holding a 'self' "
            "KVCache; make one with model.new_cache()"
        )
    return cache[0]["self"].length


class GPT(nn.Module):
    """A decoder-only language model: token ids (B, T) in, next-token logits (B, T, vocab_size) out.

    Token embedding plus learned positions, a stack of pre-LN decoder blocks without cross-attention
    (chapter 7), a final layer norm, and an output layer that shares the token embedding's matrix.

    Args:
        config: the sizes and options, a GPTConfig.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.d_model)  # (V, d_model), not scaled
        self.positional = LearnedPositionalEmbedding(c.max_len, c.d_model, c.dropout)
        self.decoder = Decoder(c.num_layers, c.d_model, c.num_heads, c.d_ff, c.dropout, c.activation,
                               norm_first=True, cross_attention=False, final_norm=True, eps=c.eps, bias=c.bias)
        self.output = nn.Linear(c.d_model, c.vocab_size, bias=False)  # weight (V, d_model)
        self.output.weight = self.token_embedding.weight  # tied: one matrix reads and writes tokens
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialization: weights N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 N)), biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        # Each block adds two outputs to the residual stream: scale them so its variance does not grow with N.
        for layer in self.decoder.layers:
            for projection in (layer.self_attn.out_proj, layer.feed_forward.linear2):
                nn.init.normal_(projection.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.num_layers))

    def new_cache(self) -> list[dict[str, KVCache]]:
        """Empty key/value caches, one dict per layer, for feeding a sequence a few tokens at a time."""
        return self.decoder.new_cache()

    def forward(
        self, tokens: Tensor, cache: list[dict[str, KVCache]] | None = None, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, T, vocab_size): at position t, scores for the token that follows tokens[:, t].

        Args:
            tokens: ids (B, T). With a cache they are the positions after the cached ones.
            cache: from new_cache(), updated in place.
            need_weights: also return the self-attention weights of every layer, (N, B, H, T, past + T).
        """
        _check_token_ids(tokens, self.config.vocab_size, "tokens")
        past = _cache_length(cache, self.config.num_layers)  # positions already in the cache
        B, T = tokens.shape  # batch, new positions
        if past + T > self.config.max_len:
            raise ValueError(
                f"positions {past} to {past + T - 1} do not fit the context of max_len={self.config.max_len} "
                f"(T={T} tokens after {past} cached ones); feed at most the last {self.config.max_len} tokens"
            )
        # Query t is position past + t: it may attend to every key up to itself, the cached ones included.
        mask = causal_mask(past + T, device=tokens.device)[past:]  # (T, past + T)
        x = self.positional(self.token_embedding(tokens), start=past)  # (B, T, d_model)
        out = self.decoder(x, self_attn_mask=mask, cache=cache, need_weights=need_weights)
        if need_weights:
            x, weights, _ = out  # (B, T, d_model), (N, B, H, T, past + T)
            return self.output(x), weights  # (B, T, V)
        return self.output(out)  # (B, T, V)
def next_token_batch(
    data: Tensor, batch_size: int, context: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A random batch of windows from the token ids data (N,): inputs x (B, T) and targets y (B, T).

    y is x moved one position left: y[b, t] = data[i_b + t + 1], the token after x[b, t] = data[i_b + t].
    """
    if not isinstance(data, Tensor) or data.dim() != 1:
        got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(f"data must be a 1-D tensor of token ids (N,), got {got}")
    _check_int_at_least("batch_size", batch_size, 1, "it is the number of windows per batch")
    _check_int_at_least("context", context, 1, "it is the length T of each window")
    if len(data) < context + 1:
        raise ValueError(
            f"data has {len(data)} tokens, too few for one window of context={context} plus its next token"
        )
    starts = torch.randint(len(data) - context, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(context)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T): the next token of every position
    return x, y
def language_model_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of next-token logits (B, T, V) against target ids (B, T), in nats per token."""
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits must be (B, T, V) and targets (B, T), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B * T, V) against (B * T,)


@torch.no_grad()
def estimate_loss(
    model: nn.Module, data: Tensor, batch_size: int, num_batches: int = 20,
    generator: torch.Generator | None = None,
) -> float:
    """The mean loss of num_batches random batches of data (nanoGPT's estimate), in eval mode."""
    _check_int_at_least("num_batches", num_batches, 1, "the estimate averages that many batches")
    with _eval_mode(model):
        losses = [language_model_loss(model(x), y).item()
                  for x, y in (next_token_batch(data, batch_size, model.config.max_len, generator)
                               for _ in range(num_batches))]
    return sum(losses) / len(losses)
def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.99)
) -> torch.optim.AdamW:
    """AdamW that decays only the matrices (weights and embeddings), not the biases and layer-norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]  # a tied matrix comes once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
@dataclass
class LMHistory:
    """What train_language_model records: every step's loss, and the estimates at each evaluation."""

    train_loss: list[float] = field(default_factory=list)  # one per update, on its own batch
    eval_steps: list[int] = field(default_factory=list)  # updates done at each evaluation
    eval_train_loss: list[float] = field(default_factory=list)  # estimate on the training text
    valid_loss: list[float] = field(default_factory=list)  # estimate on the validation text
    seconds: list[float] = field(default_factory=list)  # wall time since the start, evaluations included


def train_language_model(
    model: GPT,
    train_data: Tensor,
    valid_data: Tensor,
    steps: int = 2000,
    batch_size: int = 12,
    lr: float = 1e-3,
    min_lr: float = 1e-4,
    warmup_steps: int = 100,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
    max_grad_norm: float | None = 1.0,
    eval_every: int = 250,
    eval_batches: int = 20,
    seed: int = 0,
    on_eval: Callable[[int, GPT], None] | None = None,
    progress: bool = True,
) -> LMHistory:
    """Train on random windows of train_data with AdamW and a warmup-cosine schedule; nanoGPT's recipe.

    Evaluates (eval_batches random batches of each split) at step 0, every eval_every updates and at the end.

    Args:
        train_data, valid_data: token ids (N,).
        min_lr: the learning rate the cosine reaches at `steps` (chapter 9's cosine_schedule).
        seed: seeds the generators of the batches, so a rerun draws the same windows.
        on_eval: called as on_eval(step, model) after each evaluation, e.g. to print a sample.
    """
    _check_int_at_least("steps", steps, 1, "it is the number of updates")
    _check_int_at_least("eval_every", eval_every, 1, "it is the number of updates between evaluations")
    if not 0 <= min_lr <= lr:
        raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={min_lr!r}, lr={lr!r}")
    optimizer = make_optimizer(model, lr, weight_decay, betas)
    scheduler = LambdaLR(optimizer, cosine_schedule(steps, warmup_steps, min_lr / lr))
    batches = torch.Generator().manual_seed(seed)
    estimates = torch.Generator().manual_seed(seed + 1)
    context = model.config.max_len
    history = LMHistory()
    bar = tqdm(total=steps, desc="training", file=sys.stdout, disable=not progress, mininterval=0,
               miniters=steps + 1, maxinterval=math.inf,
               bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} updates{postfix}")
    start = time.perf_counter()

    def evaluate_now(step: int) -> None:
        history.eval_steps.append(step)
        history.eval_train_loss.append(estimate_loss(model, train_data, batch_size, eval_batches, estimates))
        history.valid_loss.append(estimate_loss(model, valid_data, batch_size, eval_batches, estimates))
        history.seconds.append(time.perf_counter() - start)
        bar.set_postfix_str(f"train {history.eval_train_loss[-1]:.3f}, valid {history.valid_loss[-1]:.3f}",
                            refresh=False)
        if on_eval is not None:
            on_eval(step, model)

    evaluate_now(0)
    model.train()
    for step in range(1, steps + 1):
        x, y = next_token_batch(train_data, batch_size, context, batches)  # (B, T) each
        loss = language_model_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        history.train_loss.append(loss.item())
        if step % eval_every == 0 or step == steps:
            evaluate_now(step)
            bar.update(step - bar.n)
            if step < steps:
                bar.refresh()
    bar.close()
    return history
def generate_from_prompt(
    model: GPT,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Continue the prompts (B, T0) by max_new_tokens tokens: greedy, or sampling as chapter 10's generate.

    The model reads at most max_len tokens. When the text outgrows that window, the window jumps forward
    to keep the last max_len // 2 tokens (the cache is rebuilt from them), with and without the cache alike,
    so use_cache never changes the result.

    Returns:
        (B, T0 + max_new_tokens): the prompts followed by their continuations.
    """
    _check_int_at_least("max_new_tokens", max_new_tokens, 1, "it is the number of tokens to generate")
    _check_token_ids(prompt, model.config.vocab_size, "prompt")
    if prompt.shape[1] == 0:
        raise ValueError("prompt is empty (B, 0): give every sequence at least one token to continue")
    max_len = model.config.max_len
    tokens = prompt
    window = max(0, prompt.shape[1] - max_len)  # the first position the model reads
    cache = None
    with _eval_mode(model):
        for _ in range(max_new_tokens):
            length = tokens.shape[1]
            if length - window > max_len:  # the window is full: jump forward, refill the cache
                window, cache = length - max_len // 2, None
            if not use_cache:
                logits = model(tokens[:, window:])[:, -1]  # (B, V): the whole window again
            elif cache is None:
                cache = model.new_cache()
                logits = model(tokens[:, window:], cache=cache)[:, -1]  # (B, V): fills the cache
            else:
                logits = model(tokens[:, -1:], cache=cache)[:, -1]  # (B, V): only the newest token
            if do_sample:
                next_token = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B,)
            else:
                next_token = logits.argmax(dim=-1)  # (B,)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)  # (B, length + 1)
    return tokens
def load_gpt2_state_dict(model: GPT, state_dict: dict[str, Tensor]) -> None:
    """Copy the weights of a Hugging Face GPT-2 (GPT2LMHeadModel or GPT2Model state dict) into model, in place.

    GPT-2's Conv1D layers store their weight as (in_features, out_features), the transpose of nn.Linear's, and
    c_attn holds W_q, W_k, W_v side by side. The mapping (i = layer; "transformer." may be left out):

        transformer.wte.weight              -> token_embedding.weight (and output.weight, tied)
        transformer.wpe.weight              -> positional.embedding.weight
        transformer.h.i.ln_1.weight, .bias  -> decoder.layers.i.self_attn_residual.norm.gain, .bias
        transformer.h.i.attn.c_attn.weight  -> decoder.layers.i.self_attn.{q,k,v}_proj.weight (split, transposed)
        transformer.h.i.attn.c_attn.bias    -> decoder.layers.i.self_attn.{q,k,v}_proj.bias (split)
        transformer.h.i.attn.c_proj.weight  -> decoder.layers.i.self_attn.out_proj.weight (transposed), .bias
        transformer.h.i.ln_2.weight, .bias  -> decoder.layers.i.ff_residual.norm.gain, .bias
        transformer.h.i.mlp.c_fc.weight     -> decoder.layers.i.feed_forward.linear1.weight (transposed), .bias
        transformer.h.i.mlp.c_proj.weight   -> decoder.layers.i.feed_forward.linear2.weight (transposed), .bias
        transformer.ln_f.weight, .bias      -> decoder.norm.gain, .bias
        lm_head.weight                      -> must equal wte (GPT-2 ties them)

    The model must be built like GPT-2: GPTConfig(..., bias=True, activation="gelu_tanh", eps=1e-5), with the
    checkpoint's vocab_size, max_len (n_positions), d_model, num_layers and num_heads (which the weights do
    not show: GPT-2 small has 12).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    c = model.config
    if not c.bias or c.activation != "gelu_tanh":
        raise ValueError(
            f"GPT-2 has biases and the tanh GELU; build the model with bias=True, activation='gelu_tanh' (got "
            f"bias={c.bias}, activation={c.activation!r})"
        )
    sd = {name.removeprefix("transformer."): tensor for name, tensor in state_dict.items()}
    # Causal-mask buffers of older transformers versions: not weights.
    sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    head = sd.pop("lm_head.weight", None)
    if "wte.weight" not in sd:
        raise ValueError("state_dict has no 'transformer.wte.weight': is it a GPT-2 state dict?")
    if head is not None and not torch.equal(head, sd["wte.weight"]):
        raise ValueError("lm_head.weight differs from wte.weight: an untied head cannot load into our tied model")
    sizes = {
        "vocab_size": (c.vocab_size, sd["wte.weight"].shape[0]),
        "d_model": (c.d_model, sd["wte.weight"].shape[1]),
        "max_len": (c.max_len, sd["wpe.weight"].shape[0] if "wpe.weight" in sd else None),
        "num_layers": (c.num_layers, len({k.split(".")[1] for k in sd if k.startswith("h.")})),
        "d_ff": (c.d_ff, sd["h.0.mlp.c_fc.weight"].shape[1] if "h.0.mlp.c_fc.weight" in sd else None),
    }
    for name, (ours, theirs) in sizes.items():
        if ours != theirs:
            raise ValueError(f"{name} differs: the model has {ours}, the checkpoint {theirs}; build it with "
                             f"{name}={theirs}")
    d = c.d_model
    targets: dict[str, tuple[Tensor, bool]] = {  # GPT-2 name -> (our tensor, transposed?)
        "wte.weight": (model.token_embedding.weight, False),
        "wpe.weight": (model.positional.embedding.weight, False),
        "ln_f.weight": (model.decoder.norm.gain, False),
        "ln_f.bias": (model.decoder.norm.bias, False),
    }
    for i, layer in enumerate(model.decoder.layers):
        attn, ff = layer.self_attn, layer.feed_forward
        for gpt2_name, ours in (("ln_1", layer.self_attn_residual.norm), ("ln_2", layer.ff_residual.norm)):
            targets[f"h.{i}.{gpt2_name}.weight"] = (ours.gain, False)
            targets[f"h.{i}.{gpt2_name}.bias"] = (ours.bias, False)
        for gpt2_name, ours in (("attn.c_proj", attn.out_proj), ("mlp.c_fc", ff.linear1),
                                ("mlp.c_proj", ff.linear2)):
            targets[f"h.{i}.{gpt2_name}.weight"] = (ours.weight, True)
            targets[f"h.{i}.{gpt2_name}.bias"] = (ours.bias, False)
    c_attn = {f"h.{i}.attn.c_attn.{p}" for i in range(c.num_layers) for p in ("weight", "bias")}
    missing, unexpected = sorted((set(targets) | c_attn) - set(sd)), sorted(set(sd) - set(targets) - c_attn)
    if missing or unexpected:
        raise ValueError(f"state_dict does not match GPT-2's names: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    with torch.no_grad():
        for name, (ours, transposed) in targets.items():
            theirs = sd[name].t() if transposed else sd[name]
            if ours.shape != theirs.shape:
                raise ValueError(f"{name}: shape {tuple(sd[name].shape)} does not fit {tuple(ours.shape)}")
            ours.copy_(theirs)
        for i, layer in enumerate(model.decoder.layers):
            attn = layer.self_attn
            weight, bias = sd[f"h.{i}.attn.c_attn.weight"], sd[f"h.{i}.attn.c_attn.bias"]  # (d, 3d), (3d,)
            if weight.shape != (d, 3 * d):
                raise ValueError(f"h.{i}.attn.c_attn.weight: shape {tuple(weight.shape)}, expected {(d, 3 * d)}")
            for projection, w, b in zip((attn.q_proj, attn.k_proj, attn.v_proj), weight.split(d, dim=1),
                                        bias.split(d), strict=True):
                projection.weight.copy_(w.t())  # (d, d): Conv1D's (in, out) to Linear's (out, in)
                projection.bias.copy_(b)  # (d,)
