"""Blending on the predictor's device: the exact integer sums of :mod:`geoseg.engine.blend`, in torch.

Probabilities stay where the network made them (a GPU): each tile's fixed-point probabilities,
times its fixed-point weights, are added into int64 sums on that device, and only the uint8
classes and confidence of a block's own window, and the integer sums over its shared windows,
come back to the host. On a CPU the same code runs on CPU tensors. The result is bit-identical to
:class:`~geoseg.engine.blend.BlockAccumulator` (tested): rounding is half-to-even in both, sums
of integers are exact, and the confidence is the same float64 division.

Examples
--------
>>> import numpy as np, torch
>>> acc = DeviceAccumulator(Window(0, 0, 1, 2), num_classes=2, device="cpu")
>>> probs = torch.tensor([[[0.2, 0.6]], [[0.8, 0.4]]])
>>> acc.add(Window(0, 0, 1, 2), probs, torch.tensor([[32768, 0]]))
>>> [a.tolist() for a in acc.classes_and_confidence(acc.window)]
[[[1, 255]], [[80, 255]]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geoseg.conventions import NODATA_CLASS
from geoseg.engine.blend import PROB_SCALE, BlockAccumulator, paste_slices
from geoseg.geo.window import Window


def predictor_device(predictor: Any) -> torch.device:
    """Where a predictor leaves its probabilities: its ``device``, else the CPU."""
    return torch.device(getattr(predictor, "device", None) or "cpu")


def predict_tensor(predictor: Any, batch: np.ndarray) -> torch.Tensor:
    """Probabilities ``(N, K, T, T)`` as a float32 tensor on the predictor's device.

    A predictor with a ``tensor`` method (e.g. :class:`~geoseg.models.predictor.TorchPredictor`)
    keeps them on its device; any other (NumPy) predictor's arrays are wrapped on the CPU.
    """
    method = getattr(predictor, "tensor", None)
    if callable(method):
        return method(batch)
    return torch.from_numpy(np.ascontiguousarray(predictor(batch), dtype=np.float32))


class DeviceAccumulator:
    """:class:`~geoseg.engine.blend.BlockAccumulator`'s sums of ``window`` (``num_classes``
    channels), kept on ``device`` (the predictor's) as int64 tensors."""

    def __init__(self, window: Window, num_classes: int, device: torch.device | str) -> None:
        self.window, self.num_classes = window, num_classes
        self.device = torch.device(device)
        shape = (window.height, window.width)
        self.scores = torch.zeros((num_classes, *shape), dtype=torch.int64, device=self.device)
        self.weights = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self._scratch: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _buffers(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable float32 and int64 buffers of one tile's shape: no allocation per tile (which
        would fragment the heap and make a long run's memory creep up)."""
        if shape not in self._scratch:
            self._scratch[shape] = (
                torch.empty(shape, dtype=torch.float32, device=self.device),
                torch.empty(shape, dtype=torch.int64, device=self.device),
            )
        return self._scratch[shape]

    def add(self, tile: Window, probs: torch.Tensor, weight: torch.Tensor) -> None:
        """Add one tile's probabilities ``(K, T, T)`` with its int64 fixed-point weights
        ``(T, T)`` (both on this device); only the tile's part inside the window is used."""
        where = paste_slices(tile, self.window)
        if where is None:
            return
        src, dst = where
        w = weight[src]
        part = probs[(slice(None), *src)]
        scaled, fixed = self._buffers(tuple(part.shape))
        torch.mul(part, float(PROB_SCALE), out=scaled)  # float32, exact (a power of two)
        torch.round(scaled, out=scaled)
        fixed.copy_(scaled).mul_(w)
        self.scores[(slice(None), *dst)] += fixed
        self.weights[dst] += w

    def _local(self, window: Window) -> tuple[slice, slice]:
        return window.relative_to(self.window).slices()

    def to_host(self, window: Window) -> BlockAccumulator:
        """The sums over ``window`` (inside this one) as a NumPy accumulator on the host."""
        local = self._local(window)
        scores = self.scores[(slice(None), *local)].cpu().numpy().copy()
        return BlockAccumulator.of(window, scores, self.weights[local].cpu().numpy().copy())

    def probabilities(self) -> np.ndarray:
        """Blended probabilities ``(K, H, W)`` float32 on the host; NaN where nothing valid."""
        return self.to_host(self.window).probabilities()

    def classes_and_confidence(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Arg-max classes and confidence (%) over ``window``, computed here; uint8 on the host."""
        local = self._local(window)
        scores, weights = self.scores[(slice(None), *local)], self.weights[local]
        valid = weights > 0
        classes = torch.argmax(scores, dim=0).to(torch.uint8)
        top = scores.max(dim=0).values.double() / (
            torch.where(valid, weights, 1).double() * float(PROB_SCALE)
        )
        confidence = torch.clamp(torch.round(top * 100.0), 0, 100).to(torch.uint8)
        classes[~valid] = NODATA_CLASS
        confidence[~valid] = NODATA_CLASS
        return classes.cpu().numpy(), confidence.cpu().numpy()
