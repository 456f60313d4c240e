"""Pure blending: the tile weight window and the per-block accumulator.

A pixel covered by several overlapping tiles gets the weighted mean of their class
probabilities, ``sum(w_i * p_i) / sum(w_i)``. The weight window is flat in the tile's middle and
falls smoothly (raised cosine) to nearly zero across the overlap at each edge, so a tile's
least reliable pixels (its borders, where the network saw no context) count least and no seam
can appear. Nodata pixels get weight 0; a pixel whose weights sum to 0 is nodata in the output.

The sums are *integers*: each probability is rounded to ``1 / PROB_SCALE`` and each weight to a
whole number of ``1 / WEIGHT_SCALE`` (at least 1 where the pixel is valid), so a pixel's sum is
exact and the same whichever blocks added its tiles and in whatever order (floating-point sums
are not associative). That is what keeps the class raster byte-identical across block sizes and
executors while every tile is computed once and its contributions travel between blocks.

The accumulator covers one block's window, never the scene: memory is bounded by the block size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geoseg.conventions import NODATA_CLASS
from geoseg.geo.window import Window

Slices = tuple[slice, slice]
PROB_SCALE = 1 << 16
"""Probabilities are summed in units of 1/65536."""
WEIGHT_SCALE = 1 << 15
"""Tile weights are whole numbers of 1/32768 (at least 1 on a valid pixel)."""


def ramp(overlap: int) -> np.ndarray:
    """Raised-cosine ramp of ``overlap`` values rising from near 0 to near 1 (never 0).

    Examples
    --------
    >>> np.round(ramp(4), 3)
    array([0.038, 0.309, 0.691, 0.962], dtype=float32)
    """
    x = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def axis_weights(tile: int, overlap: int) -> np.ndarray:
    """1-D weights along a tile: ramps of ``overlap`` pixels at both ends, 1 in between."""
    weights = np.ones(tile, dtype=np.float32)
    if overlap:
        weights[:overlap] = ramp(overlap)
        weights[-overlap:] = ramp(overlap)[::-1]
    return weights


def tile_weights(tile: int, overlap: int) -> np.ndarray:
    """2-D weight window ``(tile, tile)``: the outer product of :func:`axis_weights`.

    Strictly positive everywhere, so every valid pixel of the scene has a positive total weight.
    """
    w = axis_weights(tile, overlap)
    return np.outer(w, w)


def fixed_point_weights(weights: np.ndarray) -> np.ndarray:
    """Weights as int64 multiples of ``1 / WEIGHT_SCALE``; every positive weight stays >= 1.

    Examples
    --------
    >>> fixed_point_weights(np.array([1.0, 0.5, 1e-9, 0.0])).tolist()
    [32768, 16384, 1, 0]
    """
    fixed = np.rint(np.asarray(weights, dtype=np.float64) * WEIGHT_SCALE).astype(np.int64)
    fixed[(fixed == 0) & (np.asarray(weights) > 0)] = 1
    return fixed


def fixed_point_probabilities(probs: np.ndarray) -> np.ndarray:
    """Probabilities as int64 multiples of ``1 / PROB_SCALE``.

    Examples
    --------
    >>> fixed_point_probabilities(np.array([0.25, 1.0], np.float32)).tolist()
    [16384, 65536]
    """
    return np.rint(np.asarray(probs, dtype=np.float32) * np.float32(PROB_SCALE)).astype(np.int64)


def paste_slices(tile: Window, window: Window) -> tuple[Slices, Slices] | None:
    """Where ``tile`` overlaps ``window``: the slices in the tile's array and in the window's
    (None if they do not overlap).

    Examples
    --------
    >>> paste_slices(Window(-2, 3, 4, 4), Window(0, 0, 10, 5))
    ((slice(2, 4, None), slice(0, 2, None)), (slice(0, 2, None), slice(3, 5, None)))
    """
    inside = tile.intersection(window)
    if inside is None:
        return None
    return inside.relative_to(tile).slices(), inside.relative_to(window).slices()


@dataclass
class BlockAccumulator:
    """Exact integer sums of weighted class probabilities over one window.

    Parameters
    ----------
    window
        The window summed over (scene coordinates).
    num_classes
        Number of probability channels the predictor returns.

    Examples
    --------
    >>> acc = BlockAccumulator(Window(0, 0, 1, 2), num_classes=2)
    >>> acc.add(Window(0, 0, 1, 2), np.array([[[0.2, 0.6]], [[0.8, 0.4]]]), np.array([[1.0, 0.0]]))
    >>> [a.tolist() for a in acc.classes_and_confidence()]
    [[[1, 255]], [[80, 255]]]
    """

    window: Window
    num_classes: int
    scores: np.ndarray = field(init=False, repr=False)
    weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = (self.window.height, self.window.width)
        self.scores = np.zeros((self.num_classes, *shape), dtype=np.int64)
        self.weights = np.zeros(shape, dtype=np.int64)

    def add(self, tile: Window, probs: np.ndarray, weight: np.ndarray) -> None:
        """Add one tile's probabilities ``(K, T, T)`` with its weights ``(T, T)``.

        ``tile`` is in scene coordinates; only its part inside the window is used. Float weights
        are converted with :func:`fixed_point_weights`; integer weights are taken as they are.
        """
        where = paste_slices(tile, self.window)
        if where is None:
            return
        src, dst = where
        w = weight[src]
        w = w.astype(np.int64) if w.dtype.kind in "iub" else fixed_point_weights(w)
        self.scores[(slice(None), *dst)] += (
            fixed_point_probabilities(probs[(slice(None), *src)]) * w
        )
        self.weights[dst] += w

    def merge(self, other: BlockAccumulator) -> None:
        """Add another accumulator's sums over the same window (exact, in any order)."""
        assert other.window == self.window, (other.window, self.window)
        self.scores += other.scores
        self.weights += other.weights

    def probabilities(self) -> np.ndarray:
        """Blended probabilities ``(K, H, W)`` float32; NaN where no valid pixel contributed."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.scores / (self.weights * float(PROB_SCALE))).astype(np.float32)

    @classmethod
    def of(cls, window: Window, scores: np.ndarray, weights: np.ndarray) -> BlockAccumulator:
        """An accumulator holding given int64 sums ``(K, h, w)`` and weights ``(h, w)``."""
        part = cls.__new__(cls)
        part.window, part.num_classes = window, scores.shape[0]
        part.scores, part.weights = scores, weights
        return part

    def crop(self, window: Window) -> BlockAccumulator:
        """The sums over ``window`` (inside this accumulator's window), as a view."""
        local = window.relative_to(self.window).slices()
        return BlockAccumulator.of(window, self.scores[(slice(None), *local)], self.weights[local])

    def classes_and_confidence(self) -> tuple[np.ndarray, np.ndarray]:
        """Arg-max classes and the winning probability in percent, both uint8 (nodata 255)."""
        valid = self.weights > 0
        classes = np.argmax(self.scores, axis=0).astype(np.uint8)
        classes[~valid] = NODATA_CLASS
        top = np.max(self.scores, axis=0) / (np.where(valid, self.weights, 1) * float(PROB_SCALE))
        confidence = np.clip(np.rint(top * 100.0), 0, 100).astype(np.uint8)
        confidence[~valid] = NODATA_CLASS
        return classes, confidence


def classes_of_probabilities(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max classes and the winning probability in percent of ``(K, H, W)`` probabilities.

    NaN pixels (no valid input) are nodata (255) in both.

    Examples
    --------
    >>> probs = np.array([[[0.2, np.nan]], [[0.8, np.nan]]], np.float32)
    >>> [a.tolist() for a in classes_of_probabilities(probs)]
    [[[1, 255]], [[80, 255]]]
    """
    valid = np.isfinite(probs).all(axis=0)
    filled = np.where(valid, probs, 0.0)
    classes = np.argmax(filled, axis=0).astype(np.uint8)
    confidence = np.clip(np.rint(filled.max(axis=0) * 100.0), 0, 100).astype(np.uint8)
    classes[~valid] = NODATA_CLASS
    confidence[~valid] = NODATA_CLASS
    return classes, confidence
