"""Competitors GCL is judged against: BM25, zero-shot encoders, E5-style text encoders."""
