"""Encoders, field pooling, the embedding cache, the exact top-k kernel and the dense retriever."""

# The precisions a model may be evaluated at (a preset's eval.precision; the text encoders' choices).
# bf16 runs under autocast: text models on any device, open_clip models on CUDA only.
EVAL_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
