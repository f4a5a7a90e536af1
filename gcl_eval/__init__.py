"""gcl-eval: train, evaluate and compare ranking-aware embedding models (GCL) on ranked retrieval data.

The Python entry points load lazily, so ``import gcl_eval`` stays light (no torch):

- ``gcl_eval.evaluate_model(encoder, data, fields=..., protocol=..., out=...)``: evaluate your own
  model (an ``Encoder``) under the protocol and get the RunResult (docs/evaluation.md);
- ``gcl_eval.evaluate_run_files(dataset, {split: path}, protocol)``: score another system's TREC runs;
- ``gcl_eval.EvalProtocol``, ``gcl_eval.Encoder``, ``gcl_eval.load_run``.
"""

__version__ = "0.1.0"

_LAZY = {
    "evaluate_model": ("gcl_eval.experiments.own_model", "evaluate_encoder"),
    "evaluate_run_files": ("gcl_eval.experiments.external_runs", "evaluate_run_files"),
    "EvalProtocol": ("gcl_eval.protocol.evaluate", "EvalProtocol"),
    "Encoder": ("gcl_eval.retrieval.encoder", "Encoder"),
    "load_run": ("gcl_eval.protocol.results", "load_run"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        module, attribute = _LAZY[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gcl_eval' has no attribute {name!r}")
