"""Encoders, field pooling, the embedding cache, the exact top-k kernel and the dense retriever."""
