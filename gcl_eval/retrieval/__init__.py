"""Encoders, field pooling, the embedding cache, the exact top-k kernel and the dense retriever."""

# The precisions a model may be evaluated at (a preset's eval.precision; the text encoders' choices).
# bf16 runs under autocast on any device (fp32 pooling and normalisation); fp16 (open_clip on CUDA) is eval-only.
EVAL_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
