"""One comparison engine and its renderers: compare tables, the CI gate, suite summaries."""
