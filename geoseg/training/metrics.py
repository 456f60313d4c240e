"""Segmentation scores: IoU, F1, precision, recall and accuracy from a confusion matrix, and
boundary F1.

Boundary F1 is the BF score of Csurka, Larlus & Perronnin 2013 ("What is a good evaluation
measure for semantic segmentation?", BMVC): the boundary pixels of the prediction and of the
truth are matched within a distance tolerance; precision is the share of predicted boundary
pixels within ``tolerance_px`` of a true one, recall the share of true boundary pixels within
``tolerance_px`` of a predicted one, and the score their harmonic mean. It is computed over the
label maps' boundaries as a whole (not per class).

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


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """Boolean map of boundary pixels: those whose right, lower or lower-right neighbour differs.

    One pixel thick (only the upper/left side of a label change is marked), like ``seg2bmap``.

    Examples
    --------
    >>> boundary_map(np.array([[0, 0, 1], [0, 0, 1]])).astype(int)
    array([[0, 1, 0],
           [0, 1, 0]])
    """
    a = np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {a.shape}")
    edge = np.zeros(a.shape, dtype=bool)
    edge[:, :-1] |= a[:, :-1] != a[:, 1:]
    edge[:-1, :] |= a[:-1, :] != a[1:, :]
    edge[:-1, :-1] |= a[:-1, :-1] != a[1:, 1:]
    return edge


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a 2-D mask by a Euclidean disk of ``radius`` pixels (numpy only).

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[2, 2] = True
    >>> dilate(m, 1).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    h, w = mask.shape
    padded = np.pad(mask.astype(bool), radius)
    out = np.zeros((h, w), dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


def boundary_f1(
    pred: np.ndarray, truth: np.ndarray, tolerance_px: int = 2, valid: np.ndarray | None = None
) -> float:
    """Boundary F1 score of a predicted label map against the truth (BF score, Csurka et al. 2013).

    Both maps are 2-D integer labels of the same shape. Returns 1.0 when neither has a boundary
    and 0.0 when only one of them has. With ``valid``, boundary pixels next to an invalid pixel
    (nodata, unlabeled) do not count.

    Examples
    --------
    >>> truth = np.zeros((20, 20), int); truth[:, 10:] = 1
    >>> pred = np.zeros((20, 20), int); pred[:, 12:] = 1     # boundary 2 px off
    >>> boundary_f1(pred, truth, tolerance_px=2), boundary_f1(pred, truth, tolerance_px=1)
    (1.0, 0.0)
    >>> pred[5, 3] = 1                                        # a stray pixel: 4 extra boundary px
    >>> round(boundary_f1(pred, truth, tolerance_px=2), 3)
    0.909
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    pb, tb = boundary_map(pred), boundary_map(truth)
    if valid is not None:
        inside = ~dilate(~np.asarray(valid, bool), 1)
        pb, tb = pb & inside, tb & inside
    n_pred, n_true = int(pb.sum()), int(tb.sum())
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    precision = float((pb & dilate(tb, tolerance_px)).sum()) / n_pred
    recall = float((tb & dilate(pb, tolerance_px)).sum()) / n_true
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
