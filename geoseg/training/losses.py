"""Losses that leave unlabeled pixels out, class weights and the learning-rate schedule.

Every loss takes logits ``(N, K, H, W)`` (``K = 1`` in binary mode) and integer targets
``(N, H, W)`` in which :data:`geoseg.io.labels.IGNORE` (255) marks pixels that must not count:
cross-entropy is torch's (class-weighted), the others SMP's with ``ignore_index``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from geoseg.conventions import NODATA_CLASS as IGNORE
from geoseg.models._smp import smp
from geoseg.options import parse_loss

WARMUP = 0.05
"""Share of the steps with a linear learning-rate warm-up (then cosine decay to 1 %)."""
SMP_LOSSES = {
    "dice": "DiceLoss",
    "focal": "FocalLoss",
    "jaccard": "JaccardLoss",
    "lovasz": "LovaszLoss",
    "tversky": "TverskyLoss",
}


def class_weights(frequencies: np.ndarray) -> np.ndarray:
    """Cross-entropy weights ``sqrt(median / frequency)`` of present classes, clipped to [0.2, 5].

    Chips are already drawn class-balanced, so the weights only soften the remaining imbalance.

    Examples
    --------
    >>> class_weights(np.array([0.81, 0.09, 0.01, 0.0])).round(2)
    array([0.33, 1.  , 3.  , 1.  ])
    """
    present = frequencies > 0
    weights = np.ones_like(frequencies)
    if present.any():
        median = np.median(frequencies[present])
        weights[present] = np.clip(np.sqrt(median / frequencies[present]), 0.2, 5.0)
    return weights


def build_loss(
    name: str, mode: str, weights: np.ndarray, device: str = "cpu"
) -> Callable[[Any, Any], Any]:
    """A loss ``(logits, target) -> scalar``; targets of 255 never count."""
    terms = [loss_term(part, mode, weights, device) for part in parse_loss(name)]

    def total(logits: Any, target: Any) -> Any:
        return sum(term(logits, target) for term in terms)

    return total


def loss_term(part: str, mode: str, weights: np.ndarray, device: str) -> Callable[[Any, Any], Any]:
    """One loss; ``ce`` is torch's (class-weighted), the others SMP's."""
    import torch

    if part == "ce" and mode == "binary":
        return MaskedBCE(float(weights[1] / weights[0]))
    if part == "ce":
        w = torch.as_tensor(weights, dtype=torch.float32, device=device)
        return torch.nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE)

    loss: Callable[[Any, Any], Any] = getattr(smp().losses, SMP_LOSSES[part])(
        mode, ignore_index=IGNORE
    )
    return loss


class MaskedBCE:
    """Binary cross-entropy over labeled pixels only (targets of 255 are left out)."""

    def __init__(self, pos_weight: float) -> None:
        self.pos_weight = pos_weight

    def __call__(self, logits: Any, target: Any) -> Any:
        import torch

        keep = target != IGNORE
        weight = torch.tensor(self.pos_weight, device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, 0][keep], target[keep].float(), pos_weight=weight
        )


def learning_rate(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 1 % of ``base``."""
    warm = max(1, round(WARMUP * total))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
