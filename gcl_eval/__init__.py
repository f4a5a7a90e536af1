"""gcl-eval: train, evaluate and compare ranking-aware embedding models (GCL) on ranked retrieval data."""

__version__ = "0.1.0"
