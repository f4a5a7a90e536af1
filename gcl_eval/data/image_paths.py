"""Where an image reference from a dataset file points on this machine.

Rules (docs/data.md, "Image paths"):
- no image root given: absolute paths are kept; relative paths are relative to the dataset folder
  (`base`);
- an image root given (`--images DIR`): relative paths are relative to DIR; absolute paths lose the
  folder they all share (the longest common parent folder of all absolute references) and what is
  left is placed under DIR. So `/old/images/ab/1.jpg` and `/old/images/cd/2.jpg` with `--images /new`
  become `/new/ab/1.jpg` and `/new/cd/2.jpg`. No file is touched: checking is `data check --check-images`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence


def resolve_image_paths(refs: Sequence[str | None], base: Path, images_root: Path | None = None) -> list[str | None]:
    """The references turned into local paths by the rules above; None stays None."""
    root = str(images_root if images_root is not None else base)
    prefix = _common_parent(r for r in refs if r and os.path.isabs(r)) if images_root is not None else None
    out: list[str | None] = []
    for ref in refs:
        if not ref:
            out.append(None)
        elif not os.path.isabs(ref):
            out.append(os.path.normpath(os.path.join(root, ref)))
        elif prefix is None:
            out.append(ref)
        else:
            out.append(os.path.join(root, ref[len(prefix):].lstrip("/\\")))
    return out


def _common_parent(paths: Iterable[str]) -> str | None:
    """The longest folder that is a parent of every path ('' when they share only the root)."""
    paths = list(paths)
    if not paths:
        return None
    common = os.path.commonprefix([min(paths), max(paths)])  # = the common prefix of all of them
    return common[: common.rfind(os.sep) + 1]
