"""Training data without whole scenes in memory: spatial split, label survey, chips, augmentation.

- :func:`split_areas` holds out validation *areas*: whole images when there are several, else
  the bottom strip of each image. Training chips lie wholly inside training areas.
- :func:`survey_image` passes once over an image, window by window, and keeps only a coarse grid
  of class pixel counts (cells of :data:`CELL` pixels) and a sample of valid pixels for the
  normalisation.
- :class:`ChipSampler` draws chip centres from those cells: half of the draws pick a class
  uniformly and then a cell in proportion to that class's pixels in it (so a class covering 0.1 %
  of the scene is seen as often as background), half in proportion to labeled pixels.
- :func:`load_chip` reads one window of pixels and labels; :func:`augment` applies random D4
  flips/rotations, scale jitter and radiometric jitter within the scaled range.
- :class:`TrainingSet` owns the open images and labels of a run and assembles batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass

import numpy as np

from geoseg.conventions import TILE_MULTIPLE
from geoseg.errors import InvalidInputError
from geoseg.geo.window import Window, cover
from geoseg.io.labels import (
    IGNORE,
    LabelSource,
    LabelSpec,
    VectorLabels,
    crs_name,
    layer_extent,
)
from geoseg.io.raster import SceneReader
from geoseg.models.contract import Normalization

CELL = 32
"""Side in pixels of a cell of the coarse class-count grid."""
SURVEY_BLOCK = 32 * CELL
"""Side of the windows the survey reads (a multiple of :data:`CELL`)."""
PERCENTILES = (1.0, 99.0)
"""Robust low/high percentiles of the per-band scaling."""


@dataclass(frozen=True)
class ImageArea:
    """A rectangle of pixels of one of the training images (by index)."""

    image: int
    window: Window


@dataclass(frozen=True)
class Split:
    """Training and validation areas."""

    train: list[ImageArea]
    val: list[ImageArea]


def split_areas(shapes: Sequence[tuple[int, int]], val_fraction: float, tile: int) -> Split:
    """Hold out validation areas that no training chip overlaps.

    With ``round(val_fraction * n) >= 1`` images, that many whole images (the last ones) are held
    out; otherwise the bottom ``val_fraction`` of each image's rows. Training areas must fit a tile.

    Examples
    --------
    >>> split = split_areas([(1000, 800)], 0.2, 256)
    >>> split.train[0].window, split.val[0].window
    (Window(row=0, col=0, height=800, width=800), Window(row=800, col=0, height=200, width=800))
    """
    if not 0 <= val_fraction < 1:
        raise InvalidInputError(
            f"val fraction {val_fraction} is invalid; set `val_fraction` in [0, 1)",
            option="val_fraction",
        )
    whole = [ImageArea(i, Window(0, 0, h, w)) for i, (h, w) in enumerate(shapes)]
    held = round(val_fraction * len(shapes))
    if val_fraction == 0:
        split = Split(whole, [])
    elif held >= 1:
        held = min(held, len(shapes) - 1)
        split = Split(whole[: len(whole) - held], whole[len(whole) - held :])
    else:
        split = Split(*strips(shapes, val_fraction))
    check_fits(split.train, tile)
    return split


def strips(
    shapes: Sequence[tuple[int, int]], val_fraction: float
) -> tuple[list[ImageArea], list[ImageArea]]:
    """Top (training) and bottom (validation) strips of every image."""
    train, val = [], []
    for i, (h, w) in enumerate(shapes):
        cut = h - max(1, round(h * val_fraction))
        train.append(ImageArea(i, Window(0, 0, cut, w)))
        val.append(ImageArea(i, Window(cut, 0, h - cut, w)))
    return train, val


def check_fits(areas: Sequence[ImageArea], tile: int) -> None:
    """Raise when a training area is smaller than a tile."""
    for area in areas:
        if area.window.height < tile or area.window.width < tile:
            raise InvalidInputError(
                f"image {area.image + 1}: its training area ({area.window.height} x "
                f"{area.window.width} px) is smaller than the tile ({tile}); use a smaller `tile` "
                "or `val_fraction`",
                options=("tile", "val_fraction"),
            )


# --- survey ------------------------------------------------------------------------------------


@dataclass
class Survey:
    """One image's coarse class-count grid ``(K, rows, cols)`` and a pixel sample ``(C, N)``."""

    counts: np.ndarray
    samples: np.ndarray


def cell_counts(target: np.ndarray, num_classes: int, cell: int = CELL) -> np.ndarray:
    """Pixels of each class per cell: ``(K, ceil(h / cell), ceil(w / cell))``; ignores 255.

    Examples
    --------
    >>> cell_counts(np.array([[0, 1], [1, 255]], np.uint8), 2, cell=2)[:, 0, 0]
    array([1, 2])
    """
    h, w = target.shape
    rows, cols = math.ceil(h / cell), math.ceil(w / cell)
    padded = np.full((rows * cell, cols * cell), IGNORE, np.uint8)
    padded[:h, :w] = target
    cells = padded.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    return np.stack([(cells == k).sum(axis=2) for k in range(num_classes)]).astype(np.int64)


def load_chip(
    reader: SceneReader, labels: LabelSource, window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ``(C, h, w)``, labels ``(h, w)`` (255: unlabeled or nodata) and the valid mask."""
    pixels, valid = reader.read(window)
    target = labels.chip(window)
    target[~valid] = IGNORE
    return pixels, target, valid


def survey_image(
    reader: SceneReader,
    labels: LabelSource,
    num_classes: int,
    rng: np.random.Generator,
    max_samples: int = 100_000,
) -> Survey:
    """Class counts per cell and a random sample of valid pixels, one window at a time."""
    grid = reader.grid
    counts = np.zeros(
        (num_classes, math.ceil(grid.height / CELL), math.ceil(grid.width / CELL)), np.int64
    )
    samples = []
    share = max_samples / (grid.height * grid.width)
    for window in cover(grid.window, SURVEY_BLOCK):
        pixels, target, valid = load_chip(reader, labels, window)
        r, c = window.row // CELL, window.col // CELL
        block = cell_counts(target, num_classes)
        counts[:, r : r + block.shape[1], c : c + block.shape[2]] = block
        samples.append(sample_pixels(pixels, valid, math.ceil(share * window.size), rng))
    return Survey(counts, np.concatenate(samples, axis=1))


def sample_pixels(
    pixels: np.ndarray, valid: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` random valid pixels as float64 ``(C, n)``."""
    flat = pixels.reshape(pixels.shape[0], -1)[:, valid.ravel()]
    take = rng.choice(flat.shape[1], size=min(n, flat.shape[1]), replace=False)
    return flat[:, take].astype(np.float64)


def normalization_from_samples(samples: np.ndarray) -> Normalization:
    """Per-band robust scaling from pixel samples ``(C, N)`` of any dtype.

    ``low``/``high`` are the 1st/99th percentiles; ``mean``/``std`` those of the scaled values.

    Examples
    --------
    >>> norm = normalization_from_samples(np.linspace(1000, 3000, 10_001)[None])
    >>> round(norm.low[0]), round(norm.high[0]), round(norm.mean[0], 2)
    (1020, 2980, 0.5)
    """
    if samples.shape[1] == 0:
        raise InvalidInputError("the training images have no valid pixels; check their nodata")
    low, high = np.percentile(samples, PERCENTILES, axis=1)
    high = np.where(high > low, high, low + 1.0)
    scaled = np.clip((samples - low[:, None]) / (high - low)[:, None], 0.0, 1.0)
    std = np.maximum(scaled.std(axis=1), 1e-3)
    return Normalization(
        tuple(map(float, low)),
        tuple(map(float, high)),
        tuple(map(float, scaled.mean(axis=1))),
        tuple(map(float, std)),
    )


# --- chip sampling ----------------------------------------------------------------------------


def class_frequencies(surveys: Sequence[Survey], areas: Sequence[ImageArea]) -> np.ndarray:
    """Share of each class among the labeled pixels of ``areas`` (cell resolution)."""
    totals = sum(area_counts(surveys[a.image], a.window).sum(axis=(1, 2)) for a in areas)
    totals = np.asarray(totals, np.float64)
    return totals / max(totals.sum(), 1.0)


def area_cells(window: Window) -> tuple[slice, slice]:
    """Cells whose top-left pixel lies inside ``window``."""
    return (
        slice(math.ceil(window.row / CELL), math.ceil(window.row_stop / CELL)),
        slice(math.ceil(window.col / CELL), math.ceil(window.col_stop / CELL)),
    )


def area_counts(survey: Survey, window: Window) -> np.ndarray:
    """Class counts of the cells inside ``window``: ``(K, rows, cols)``."""
    rows, cols = area_cells(window)
    return survey.counts[:, rows, cols]


class ChipSampler:
    """Draws training chip windows, weighting chip centres towards rare classes.

    Parameters
    ----------
    surveys
        One :class:`Survey` per image.
    areas
        Training areas; every chip lies wholly inside one.
    tile
        Chip size in pixels.
    balance
        Share of draws that are class-balanced (the rest follow labeled pixels).
    """

    def __init__(
        self, surveys: Sequence[Survey], areas: Sequence[ImageArea], tile: int, balance: float = 0.5
    ) -> None:
        self.tile = tile
        self.areas = list(areas)
        per_area = [area_counts(surveys[a.image], a.window) for a in self.areas]
        counts = np.concatenate([c.reshape(c.shape[0], -1) for c in per_area], axis=1)
        labeled = counts.sum(axis=0).astype(np.float64)
        if labeled.sum() == 0:
            raise InvalidInputError(
                "no labeled, valid pixel in the training areas; check that the labels overlap the "
                "images (CRS, extent) and the class field"
            )
        totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
        present = totals[:, 0] > 0
        balanced = (counts[present] / totals[present]).sum(axis=0) / present.sum()
        self.weights = balance * balanced + (1 - balance) * labeled / labeled.sum()
        self.index = np.concatenate(
            [self._cells_of(i, c.shape[1:]) for i, c in enumerate(per_area)]
        )

    def _cells_of(self, area: int, shape: tuple[int, ...]) -> np.ndarray:
        rows, cols = area_cells(self.areas[area].window)
        r, c = np.meshgrid(
            np.arange(rows.start, rows.start + shape[0]),
            np.arange(cols.start, cols.start + shape[1]),
            indexing="ij",
        )
        return np.stack([np.full(r.size, area), r.ravel(), c.ravel()], axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> list[ImageArea]:
        """``n`` chip windows (image index and window)."""
        picks = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        return [self._chip(self.index[p], rng) for p in picks]

    def _chip(self, cell: np.ndarray, rng: np.random.Generator) -> ImageArea:
        area, cell_row, cell_col = (int(v) for v in cell)
        bounds = self.areas[area].window
        centre_row = cell_row * CELL + int(rng.integers(CELL))
        centre_col = cell_col * CELL + int(rng.integers(CELL))
        row = int(np.clip(centre_row - self.tile // 2, bounds.row, bounds.row_stop - self.tile))
        col = int(np.clip(centre_col - self.tile // 2, bounds.col, bounds.col_stop - self.tile))
        return ImageArea(self.areas[area].image, Window(row, col, self.tile, self.tile))


# --- pixels: scaling, augmentation, validation windows ----------------------------------------


def scale(pixels: np.ndarray, norm: Normalization) -> np.ndarray:
    """First half of :meth:`Normalization.apply`: ``clip((x - low) / (high - low), 0, 1)``."""
    low = np.asarray(norm.low, np.float32)[:, None, None]
    span = np.asarray(norm.high, np.float32)[:, None, None] - low
    return np.clip((pixels.astype(np.float32) - low) / np.maximum(span, 1e-12), 0.0, 1.0)


def standardize(scaled: np.ndarray, norm: Normalization) -> np.ndarray:
    """Second half of :meth:`Normalization.apply`: ``(x - mean) / std``."""
    mean = np.asarray(norm.mean, np.float32)[:, None, None]
    return (scaled - mean) / np.asarray(norm.std, np.float32)[:, None, None]


ZOOM = (0.8, 1.25)
"""Range of the random scale jitter (log-uniform; applied to half of the chips)."""


def augment(
    scaled: np.ndarray, target: np.ndarray, rng: np.random.Generator, jitter: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Random D4 flip/rotation and scale jitter of pixels and labels; radiometric jitter.

    The pixels are the *scaled* values (``[0, 1]`` between the normalisation's ``low`` and
    ``high``, whatever the dtype), so the radiometric jitter (:func:`radiometric`) keeps them
    in that range, as every pixel ``predict`` sees is.
    """
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    if flip:
        scaled, target = scaled[:, :, ::-1], target[:, ::-1]
    scaled, target = np.rot90(scaled, k, axes=(1, 2)), np.rot90(target, k)
    if rng.random() < 0.5:
        scaled, target = zoom(scaled, target, float(np.exp(rng.uniform(*np.log(ZOOM)))))
    return radiometric(scaled, rng, jitter), np.ascontiguousarray(target)


def zoom(scaled: np.ndarray, target: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Magnify a chip about its centre by ``factor`` (nearest neighbour; same shape).

    Zooming out (``factor < 1``) leaves a border with no source: its labels are :data:`IGNORE`
    and its pixels repeat the edge.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> zoom(x, np.zeros((4, 4), np.uint8), 2.0)[0][0]
    array([[ 5.,  5.,  6.,  6.],
           [ 5.,  5.,  6.,  6.],
           [ 9.,  9., 10., 10.],
           [ 9.,  9., 10., 10.]], dtype=float32)
    """
    h, w = target.shape
    rows = np.floor((np.arange(h) + 0.5 - h / 2) / factor + h / 2).astype(np.int64)
    cols = np.floor((np.arange(w) + 0.5 - w / 2) / factor + w / 2).astype(np.int64)
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    r, c = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    labels = np.where(inside, target[np.ix_(r, c)], IGNORE).astype(target.dtype)
    return scaled[:, r[:, None], c[None, :]], labels


def radiometric(scaled: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """Per-band gain, a gamma, then brightness/contrast jitter, clipped to the scaled ``[0, 1]``.

    ``x -> clip((clip(x * gain, 0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness, 0, 1)``
    with per-band ``gain`` in ``1 ± jitter / 2``, ``gamma`` in ``exp(± 2 * jitter)``,
    ``contrast`` in ``1 ± 2 * jitter`` and ``brightness`` in ``± jitter``.
    """
    gain = rng.uniform(1 - jitter / 2, 1 + jitter / 2, (scaled.shape[0], 1, 1))
    gamma = np.exp(rng.uniform(-2 * jitter, 2 * jitter))
    contrast = rng.uniform(1 - 2 * jitter, 1 + 2 * jitter)
    brightness = rng.uniform(-jitter, jitter)
    x = np.clip(scaled * gain, 0.0, 1.0) ** gamma
    return np.clip((x - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0).astype(np.float32)


def pad_to_multiple(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad pixels (labels: 255) at the bottom/right to a multiple of 32 (SMP's stride)."""
    h, w = target.shape
    ph, pw = -h % TILE_MULTIPLE, -w % TILE_MULTIPLE
    if not ph and not pw:
        return x, target
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
    return x, np.pad(target, ((0, ph), (0, pw)), constant_values=IGNORE)


# --- the training set ---------------------------------------------------------------------------


class TrainingSet:
    """Open images and labels, their split and survey, and the chip sampler (close when done)."""

    def __init__(
        self,
        images: Sequence[str],
        specs: Sequence[LabelSpec],
        classes: Sequence[str],
        tile: int,
        val_fraction: float,
        seed: int,
    ) -> None:
        self.stack = ExitStack()
        try:
            self.readers = [self.stack.enter_context(open_image(p)) for p in images]
            check_same_input(self.readers)
            self.labels: list[LabelSource] = [
                self.stack.enter_context(closing(s.open(r.grid, classes)))
                for s, r in zip(specs, self.readers, strict=True)
            ]
            check_overlap(self.labels, specs, self.readers)
            shapes = [(r.grid.height, r.grid.width) for r in self.readers]
            self.split: Split = split_areas(shapes, val_fraction, tile)
            rng = np.random.default_rng(seed)
            self.surveys: list[Survey] = [
                survey_image(r, lab, len(classes), rng)
                for r, lab in zip(self.readers, self.labels, strict=True)
            ]
            self.sampler = ChipSampler(self.surveys, self.split.train, tile)
        except BaseException:
            self.stack.close()
            raise
        self.tile = tile
        self.num_classes = len(classes)

    def normalization(self) -> Normalization:
        """Robust per-band scaling from pixel samples of the training images."""
        used = sorted({a.image for a in self.split.train})
        return normalization_from_samples(
            np.concatenate([self.surveys[i].samples for i in used], 1)
        )

    def labelled_pixels(self) -> int:
        """Labelled, valid pixels in the training areas (cell resolution)."""
        return int(
            sum(area_counts(self.surveys[a.image], a.window).sum() for a in self.split.train)
        )

    def frequencies(self) -> np.ndarray:
        """Class shares among labeled pixels of the training areas."""
        return class_frequencies(self.surveys, self.split.train)

    def batch(
        self, chips: Sequence[ImageArea], norm: Normalization, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augmented, normalised pixels ``(N, C, T, T)`` and labels ``(N, T, T)``."""
        xs, ys = [], []
        for chip in chips:
            pixels, target, valid = load_chip(
                self.readers[chip.image], self.labels[chip.image], chip.window
            )
            scaled = scale(pixels, norm)
            scaled[:, ~valid] = np.asarray(norm.mean, np.float32)[:, None]
            scaled, target = augment(scaled, target, rng)
            xs.append(standardize(scaled, norm))
            ys.append(target)
        return np.stack(xs).astype(np.float32), np.stack(ys)

    def validation_chip(
        self, image: int, window: Window, norm: Normalization
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels normalised as ``predict`` does (nodata zeroed) and labels, padded to 32."""
        pixels, target, valid = load_chip(self.readers[image], self.labels[image], window)
        x = norm.apply(pixels)
        x[:, ~valid] = 0.0
        return pad_to_multiple(x, target)

    def close(self) -> None:
        """Close every file."""
        self.stack.close()


def open_image(path: str) -> SceneReader:
    """A training image: every band but alpha *masks* (an alpha-flagged band holding data, such
    as NIR written with ``photometric=RGB``, is data; one warning says so)."""
    reader = SceneReader(path, alpha_as_data=True)
    reader.warn_about_alpha()
    return reader


def check_same_input(readers: Sequence[SceneReader]) -> None:
    """Raise unless every image has the first one's band count and dtype."""
    first = readers[0].grid
    for reader in readers[1:]:
        if (reader.grid.count, reader.grid.dtype) != (first.count, first.dtype):
            raise InvalidInputError(
                f"{reader.path}: {reader.grid.count} band(s) of {reader.grid.dtype}, but "
                f"{readers[0].path} has {first.count} of {first.dtype}; train on alike images"
            )


def check_overlap(
    labels: Sequence[LabelSource], specs: Sequence[LabelSpec], readers: Sequence[SceneReader]
) -> None:
    """Raise when vector labels place no feature on any image (wrong CRS, extent or file).

    Without this, ``unlabeled=background`` would quietly train on background only.
    """
    vectors = [(lab, spec) for lab, spec in zip(labels, specs, strict=True)
               if isinstance(lab, VectorLabels)]  # fmt: skip
    if not vectors or any(len(lab.geometries) for lab, _ in vectors):
        return
    grid = readers[0].grid
    path = vectors[0][1].path
    extent = layer_extent(path, grid.crs)
    where = f"its features lie in {fmt_bounds(extent)}" if extent else "it has no usable feature"
    raise InvalidInputError(
        f"{path}: no feature overlaps the image(s); {where}, {readers[0].path} covers "
        f"{fmt_bounds(grid.bounds)} (in {crs_name(grid.crs)}); check the labels' CRS and that "
        "they belong to these images"
    )


def fmt_bounds(bounds: Sequence[float] | None) -> str:
    """``(west, south, east, north)`` rounded for messages."""
    return "?" if bounds is None else "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"
