"""gcl-eval's cache folder: parsed dataset files, the built-in synthetic dataset, embeddings.

$GCL_EVAL_CACHE wins; else $XDG_CACHE_HOME/gcl-eval; else ~/.cache/gcl-eval. What it holds is listed
and pruned by gcl_eval.experiments.cache (`gcl-eval cache`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a sub-folder of it), created on demand."""
    root = os.environ.get("GCL_EVAL_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "gcl-eval" if xdg else Path.home() / ".cache" / "gcl-eval"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_used(path: str | os.PathLike) -> None:
    """Record that a cache entry was just read: its modification time becomes now, which is what
    `gcl-eval cache` takes as its last use (the least recently used entries are pruned first).
    Best effort: a read-only cache is used as it is."""
    try:
        os.utime(path)
    except OSError:
        pass
