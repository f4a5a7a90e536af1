"""The training engine: score-to-weight functions, weighted losses, training loop."""
