"""Pretrained encoder weights from a local file, mapped onto an SMP encoder (nothing downloaded).

Checkpoints of timm, torchvision and SMP encoders name the same tensors differently:

- wrappers add prefixes (``module.``, ``model.``, ``encoder.``, ``backbone.``, ``state_dict``);
- torchvision's resnets and SMP's resnet encoders share names (SMP subclasses torchvision's
  ``ResNet``); the classifier (``fc.*``) has no place in an encoder and is left out;
- SMP's ``tu-`` encoders wrap a timm ``features_only`` model as ``model.``; such a model flattens
  nested module names (``stages.0`` becomes ``stages_0``).

:func:`map_encoder_state` compares names after removing those differences, keeps tensors whose
shapes fit, and adapts the first convolution to the band count by SMP's own rule
(:func:`adapt_first_conv`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIXES = ("module.", "model.", "encoder.", "backbone.")
MIN_MATCHED = 0.9
"""Share of the encoder's weight tensors the file must provide, else it is refused (a resnet18
file gives a resnet34 encoder about half of its tensors)."""
UNCOUNTED = ("num_batches_tracked",)
"""Buffers many checkpoints leave out; they are neither counted nor needed."""
_FLAT = re.compile(r"(^|\.)([A-Za-z]+)_(\d+)(?=\.)")


@dataclass(frozen=True)
class EncoderLoad:
    """What loading encoder weights did: tensors matched, the encoder's total, the adapted conv."""

    path: str
    matched: int
    total: int
    sha256: str
    adapted: str | None = None

    @property
    def share(self) -> float:
        """Share of the encoder's tensors taken from the file."""
        return self.matched / max(self.total, 1)

    def describe(self) -> str:
        """One line for people, e.g. ``122/122 encoder tensors from r18.pth (first conv: 1 band)``."""
        extra = f" (adapted {self.adapted})" if self.adapted else ""
        return f"{self.matched}/{self.total} encoder tensors from {self.path}{extra}"


def weight_count(keys: Iterable[str]) -> int:
    """Tensors that count when matching (batch-norm step counters do not).

    Examples
    --------
    >>> weight_count(["bn1.weight", "bn1.num_batches_tracked"])
    1
    """
    return sum(not k.endswith(UNCOUNTED) for k in keys)


def canonical(key: str) -> str:
    """A tensor name without wrapper prefixes, with timm's flattened names expanded.

    Examples
    --------
    >>> canonical("module.encoder.layer1.0.conv1.weight")
    'layer1.0.conv1.weight'
    >>> canonical("model.stages_0.blocks.1.weight")
    'stages.0.blocks.1.weight'
    """
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return _FLAT.sub(r"\1\2.\3", key)


def adapt_first_conv(weight: Any, bands: int) -> Any:
    """SMP's rule for a 3-band first convolution on ``bands`` inputs.

    One band: the sum of the RGB kernels. Otherwise the RGB kernels repeated cyclically
    (R, G, B, R, ...) and scaled by ``3 / bands``, so the response to a grey input is kept.

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(2, 3, 1, 1)
    >>> adapt_first_conv(w, 1).flatten().tolist(), adapt_first_conv(w, 4).shape
    ([3.0, 3.0], torch.Size([2, 4, 1, 1]))
    """
    import torch

    source = weight.shape[1]
    if bands == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(bands) % source
    return weight[:, index] * (source / bands)


def map_encoder_state(
    state: Mapping[str, Any], expected: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The file's tensors renamed to the encoder's names where shapes fit (or can be adapted).

    Returns the mapped state and the name of the first convolution if it was adapted.
    """
    by_name = {canonical(k): v for k, v in state.items()}
    mapped: dict[str, Any] = {}
    adapted = None
    for name, target in expected.items():
        value = by_name.get(canonical(name))
        if value is None:
            continue
        if tuple(value.shape) == tuple(target.shape):
            mapped[name] = value
        elif is_first_conv(value, target):
            mapped[name], adapted = adapt_first_conv(value, target.shape[1]), name
    return mapped, adapted


def is_first_conv(value: Any, target: Any) -> bool:
    """Whether ``value`` is a 3-input conv kernel that differs from ``target`` only in inputs."""
    return (
        value.ndim == 4
        and target.ndim == 4
        and value.shape[1] == 3
        and tuple(value.shape[:1]) + tuple(value.shape[2:])
        == tuple(target.shape[:1]) + tuple(target.shape[2:])
    )
