"""transformer_lib: the Transformer, built step by step in the notebooks of the course.

Every module but this one is generated from a notebook (see the header of each file). This file is written by
hand and lists the public API, chapter by chapter, in the order the course builds it.

Quick start, five lines (masks are True at real tokens; the special tokens' ids are PAD_ID, BOS_ID, EOS_ID
and UNK_ID, 0 to 3 in every Vocabulary):

    from transformer_lib import PAD_ID, CharTokenizer, Transformer, TransformerConfig, generate, pad_batch
    tokenizer = CharTokenizer.train("hello world")
    src, src_mask = pad_batch([tokenizer.encode("hello"), tokenizer.encode("world")], PAD_ID)
    model = Transformer(TransformerConfig(len(tokenizer.vocab), len(tokenizer.vocab), d_model=64))
    print(generate(model, src, src_mask, max_new_tokens=5))  # token ids; untrained until chapter 9
"""

# Chapter 1. From text to vectors
from transformer_lib.tokenizer import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    Vocabulary,
    WordTokenizer,
    pad_batch,
    split_words,
)
# Chapter 2. Scaled dot-product attention
from transformer_lib.attention import (
    causal_mask,
    check_bool_mask,
    lengths_to_mask,
    padding_mask,
    scaled_dot_product_attention,
)
# Chapter 3. Multi-head attention
from transformer_lib.multihead import (
    KVCache,
    MultiHeadAttention,
    load_torch_multihead_attention,
    merge_heads,
    split_heads,
)
# Chapter 4. Positional encoding
from transformer_lib.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
# Chapter 5. Feed-forward network, residual connections and layer normalization
from transformer_lib.sublayers import (
    FeedForward,
    LayerNorm,
    Residual,
    layer_norm,
)
# Chapter 6. The encoder
from transformer_lib.encoder import (
    Encoder,
    EncoderLayer,
    load_torch_encoder,
    load_torch_encoder_layer,
)
# Chapter 7. The decoder
from transformer_lib.decoder import (
    Decoder,
    DecoderLayer,
    load_torch_decoder,
    load_torch_decoder_layer,
)
# Chapter 8. The full Transformer
from transformer_lib.transformer import (
    TokenEmbedding,
    Transformer,
    TransformerConfig,
    load_torch_transformer,
)
# Chapter 9. Training
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
# Chapter 10. Decoding
from transformer_lib.generation import (
    apply_temperature,
    beam_search,
    generate,
    length_penalty,
    sample_next_token,
    sequence_log_prob,
    top_k_filter,
    top_p_filter,
)
# Chapter 11. Real data
from transformer_lib.data import (
    DATASETS,
    DATA_ENV,
    MULTI30K_SPLITS,
    DatasetInfo,
    RemoteFile,
    data_dir,
    download,
    fetch,
    load_multi30k,
    load_sms_spam,
    load_tiny_shakespeare,
    sha256_of,
)
# Chapter 12. Machine translation
from transformer_lib.translation import (
    BleuScore,
    TokenBatches,
    TranslationHistory,
    brevity_penalty,
    build_vocabulary,
    clipped_matches,
    corpus_bleu,
    cross_attention_weights,
    decode_ids,
    encode_pairs,
    encode_tokens,
    init_attention_like_torch,
    length_grouped_batches,
    ngram_counts,
    padding_fraction,
    set_fused_attention,
    tokenize_13a,
    train_translation,
    translate,
    warmup_linear_decay,
)
# Chapter 13. Language modeling
from transformer_lib.language_model import (
    GPT,
    GPTConfig,
    LMHistory,
    estimate_loss,
    generate_from_prompt,
    language_model_loss,
    load_gpt2_state_dict,
    make_optimizer,
    next_token_batch,
    train_language_model,
)
# Chapter 14. Text classification
from transformer_lib.classification import (
    POOLINGS,
    ClassifierConfig,
    EncoderClassifier,
    attention_rollout,
    bag_of_words,
    binary_metrics,
    confusion_matrix,
    encode_for_classification,
    fit_logistic_regression,
    make_batches,
    mask_digits,
    masked_mean,
    predict_proba,
    stratified_split,
    train_classifier,
)
# Chapter 15. Efficiency and scale
from transformer_lib.distributed import (
    DistributedContext,
    DistributedResult,
    DistributedTrainConfig,
    cleanup_distributed,
    init_distributed,
    select_device,
    train_distributed,
    train_from_command_line,
)

__all__ = [
    # Chapter 1. From text to vectors
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "SPECIAL_TOKENS",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "Vocabulary",
    "Tokenizer",
    "CharTokenizer",
    "split_words",
    "WordTokenizer",
    "BPETokenizer",
    "pad_batch",
    # Chapter 2. Scaled dot-product attention
    "padding_mask",
    "lengths_to_mask",
    "causal_mask",
    "check_bool_mask",
    "scaled_dot_product_attention",
    # Chapter 3. Multi-head attention
    "split_heads",
    "merge_heads",
    "KVCache",
    "MultiHeadAttention",
    "load_torch_multihead_attention",
    # Chapter 4. Positional encoding
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    # Chapter 5. Feed-forward network, residual connections and layer normalization
    "FeedForward",
    "layer_norm",
    "LayerNorm",
    "Residual",
    # Chapter 6. The encoder
    "EncoderLayer",
    "load_torch_encoder_layer",
    "Encoder",
    "load_torch_encoder",
    # Chapter 7. The decoder
    "DecoderLayer",
    "load_torch_decoder_layer",
    "Decoder",
    "load_torch_decoder",
    # Chapter 8. The full Transformer
    "TransformerConfig",
    "TokenEmbedding",
    "Transformer",
    "load_torch_transformer",
    # Chapter 9. Training
    "seed_everything",
    "TASKS",
    "make_splits",
    "Batch",
    "make_batch",
    "smoothed_targets",
    "label_smoothed_cross_entropy",
    "noam_lr",
    "warmup_inverse_sqrt_schedule",
    "cosine_schedule",
    "train_step",
    "greedy_decode",
    "exact_match_accuracy",
    "evaluate",
    "History",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    # Chapter 10. Decoding
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next_token",
    "generate",
    "sequence_log_prob",
    "length_penalty",
    "beam_search",
    # Chapter 11. Real data
    "RemoteFile",
    "DatasetInfo",
    "DATASETS",
    "DATA_ENV",
    "data_dir",
    "sha256_of",
    "download",
    "fetch",
    "MULTI30K_SPLITS",
    "load_multi30k",
    "load_tiny_shakespeare",
    "load_sms_spam",
    # Chapter 12. Machine translation
    "tokenize_13a",
    "build_vocabulary",
    "encode_tokens",
    "decode_ids",
    "encode_pairs",
    "length_grouped_batches",
    "padding_fraction",
    "TokenBatches",
    "ngram_counts",
    "clipped_matches",
    "brevity_penalty",
    "BleuScore",
    "corpus_bleu",
    "translate",
    "init_attention_like_torch",
    "set_fused_attention",
    "TranslationHistory",
    "warmup_linear_decay",
    "train_translation",
    "cross_attention_weights",
    # Chapter 13. Language modeling
    "GPTConfig",
    "GPT",
    "next_token_batch",
    "language_model_loss",
    "estimate_loss",
    "make_optimizer",
    "LMHistory",
    "train_language_model",
    "generate_from_prompt",
    "load_gpt2_state_dict",
    # Chapter 14. Text classification
    "stratified_split",
    "mask_digits",
    "encode_for_classification",
    "masked_mean",
    "POOLINGS",
    "ClassifierConfig",
    "EncoderClassifier",
    "make_batches",
    "predict_proba",
    "train_classifier",
    "confusion_matrix",
    "binary_metrics",
    "bag_of_words",
    "fit_logistic_regression",
    "attention_rollout",
    # Chapter 15. Efficiency and scale
    "select_device",
    "DistributedContext",
    "init_distributed",
    "cleanup_distributed",
    "DistributedTrainConfig",
    "DistributedResult",
    "train_distributed",
    "train_from_command_line",
]
