"""Classic segmentation architectures that segmentation-models-pytorch lacks.

One module per family, each following its paper (cited in the module docstring):

========================  ===================================  ==============  =============
name                      paper                                SMP encoder     tile multiple
========================  ===================================  ==============  =============
``fcn32s/16s/8s``         Long, Shelhamer, Darrell 2015        yes             32
``segnet``                Badrinarayanan et al. 2017           no (VGG-like)   32
``frrn``                  Pohlen et al. 2017 (FRRN-A)          no              16
``fcdensenet56/67/103``   Jégou et al. 2017 (Tiramisu)         no              32
``refinenet``             Lin et al. 2017                      yes             32
``gcn``                   Peng et al. 2017 (Large Kernel ...)  yes             32
``icnet``                 Zhao et al. 2018                     yes (dilated)   32
``enet``                  Paszke et al. 2016                   no              8
========================  ===================================  ==============  =============

Every class is built as ``cls(encoder_name=..., in_channels=..., classes=...)`` (plus optional
keyword arguments of its own), takes any band count and returns logits ``(N, classes, H, W)``
at the input size; ``H`` and ``W`` must be multiples of :func:`tile_multiple`. Architectures
with their own encoder (not in :data:`USES_ENCODER`) accept ``encoder_name`` and ignore it.
``encoder_weights`` may only be ``None``: nothing is downloaded.

ICNet's training-mode forward also stores its cascade-label-guidance logits on ``aux_logits``;
see :mod:`geoseg.models.classic.icnet`.
"""

from __future__ import annotations

from geoseg.models.classic.enet import ENet
from geoseg.models.classic.fcdensenet import FCDenseNet56, FCDenseNet67, FCDenseNet103
from geoseg.models.classic.fcn import FCN8s, FCN16s, FCN32s
from geoseg.models.classic.frrn import FRRN
from geoseg.models.classic.gcn import GCN
from geoseg.models.classic.icnet import ICNet, cascade_loss
from geoseg.models.classic.refinenet import RefineNet
from geoseg.models.classic.segnet import SegNet

CLASSIC_ARCHITECTURES: dict[str, type] = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "segnet": SegNet,
    "frrn": FRRN,
    "fcdensenet56": FCDenseNet56,
    "fcdensenet67": FCDenseNet67,
    "fcdensenet103": FCDenseNet103,
    "refinenet": RefineNet,
    "gcn": GCN,
    "icnet": ICNet,
    "enet": ENet,
}
"""Lower-case architecture name -> network class."""

USES_ENCODER: frozenset[str] = frozenset({"fcn32s", "fcn16s", "fcn8s", "refinenet", "gcn", "icnet"})
"""Architectures built over an SMP encoder (``encoder_name``); the others have their own."""


def tile_multiple(arch: str) -> int:
    """The number tile height and width must be multiples of for ``arch`` (e.g. 32).

    Raises ``KeyError`` naming the valid architectures for an unknown name.
    """
    try:
        cls = CLASSIC_ARCHITECTURES[arch.lower()]
    except KeyError:
        raise KeyError(
            f"unknown classic architecture {arch!r}; choose from {sorted(CLASSIC_ARCHITECTURES)}"
        ) from None
    return int(cls.TILE_MULTIPLE)  # type: ignore[attr-defined]


__all__ = [
    "CLASSIC_ARCHITECTURES",
    "FRRN",
    "GCN",
    "USES_ENCODER",
    "ENet",
    "FCDenseNet56",
    "FCDenseNet67",
    "FCDenseNet103",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "ICNet",
    "RefineNet",
    "SegNet",
    "cascade_loss",
    "tile_multiple",
]
