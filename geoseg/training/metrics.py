"""Segmentation scores from a confusion matrix: IoU, F1, precision, recall, accuracy.

Shared by training (validation each epoch) and :mod:`geoseg.training.evaluate`. Undefined ratios
(0 / 0) are NaN and left out of the mean IoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` pixel counts (rows truth, columns prediction), skipping 255 and ids >= K.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), 2)
    array([[1, 0],
           [1, 1]])
    """
    truth, pred = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    keep = (truth < num_classes) & (pred < num_classes)
    flat = truth[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


@dataclass(frozen=True)
class Scores:
    """Per-class and overall scores from a confusion matrix."""

    iou: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    accuracy: float
    miou: float

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> Scores:
        """Scores of a ``(K, K)`` confusion matrix (rows truth, columns prediction)."""
        c = confusion.astype(np.float64)
        tp = np.diag(c)
        fp, fn = c.sum(axis=0) - tp, c.sum(axis=1) - tp
        iou = ratio(tp, tp + fp + fn)
        total = c.sum()
        return cls(
            iou=iou,
            f1=ratio(2 * tp, 2 * tp + fp + fn),
            precision=ratio(tp, tp + fp),
            recall=ratio(tp, tp + fn),
            support=confusion.sum(axis=1),
            accuracy=float(tp.sum() / total) if total else math.nan,
            miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
        )


def per_class(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``{name: value}`` for JSON and tables."""
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def json_number(value: float) -> float | None:
    """NaN becomes None (``null``) so the JSON is standard."""
    return None if math.isnan(value) else round(value, 6)


def fmt(value: float) -> str:
    """Three decimals, or ``-`` for NaN."""
    return "-" if math.isnan(value) else f"{value:.3f}"
