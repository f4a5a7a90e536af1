"""Make torchvision importable on CPU-only torch.

The registry's torchvision 0.28.0 is a CUDA build. On a CPU build of torch its meta registrations
fail with ``RuntimeError: operator torchvision::nms does not exist`` and take open_clip,
transformers and sentence-transformers down with them. When (and only when) that happens, we
define the two operator schemas torchvision's meta registrations expect, forget the half-imported
modules and import again. Transforms and models work; torchvision's compiled ops (nms, roi_align)
stay unusable, and nothing here needs them. Where torchvision imports normally this does nothing.

Call :func:`ensure_torchvision` before anything imports torchvision or open_clip.
"""

from __future__ import annotations

import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library must live as long as the process
_state: str | None = None  # None (not tried), "native" or "patched"


def ensure_torchvision() -> str:
    """Import torchvision, patching the missing operator schemas if needed.

    Returns "native" when torchvision imported as is, "patched" when the guard had to step in.
    Any other import error propagates unchanged.
    """
    global _state
    if _state is not None:
        return _state
    try:
        import torchvision  # noqa: F401

        _state = "native"
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        _define_missing_schemas()
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision  # noqa: F401,F811

        _state = "patched"
    return _state


def _define_missing_schemas() -> None:
    global _library
    import torch

    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS.values():
            _library.define(schema)
