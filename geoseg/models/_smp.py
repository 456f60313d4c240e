"""The one place that imports segmentation-models-pytorch (and with it timm and torchvision).

Why this module exists
----------------------
SMP's encoders import timm, and timm imports torchvision. With the CPU build of torch 2.13 the
only torchvision wheel pip finds (0.28.0) is built for CUDA: its compiled extension does not load,
so its Python code then fails at import with ``RuntimeError: operator torchvision::nms does not
exist`` (upstream pytorch/vision#9337) when it registers fake kernels for ``nms`` and ``qnms``.
SMP models never use torchvision's compiled detection ops, only its Python modules.

The fix: try the normal import first. Only if it fails with that specific error, forget the
half-imported torchvision modules, define the two missing operator *schemas* (no kernels: calling
them would still fail loudly), and import again. With a working torchvision nothing is touched.
Every geoseg module gets SMP through :func:`smp`, so the workaround lives here alone.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType

MISSING_TORCHVISION_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_schema_library = None  # keeps the torch.library fragment alive


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_schemas() -> None:
    global _schema_library
    import torch

    _schema_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in MISSING_TORCHVISION_OPS.values():
        _schema_library.define(schema)


def import_torchvision() -> ModuleType:
    """Import torchvision, working around a CUDA-only wheel on a CPU-only torch."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or "does not exist" not in str(exc):
            raise
        _forget_torchvision()
        _define_missing_schemas()
        import torchvision
    return torchvision


@functools.cache
def smp() -> ModuleType:
    """The ``segmentation_models_pytorch`` module, imported safely (see the module docstring)."""
    import_torchvision()
    import segmentation_models_pytorch

    return segmentation_models_pytorch
