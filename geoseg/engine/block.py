"""Segment one block (NumPy in, classes out) and describe the work for a whole scene.

:func:`segment_block` is the per-block function, like the user function of
``dask.array.map_overlap``: plain NumPy arrays in, plain NumPy arrays out, no knowledge of files,
executors or Dask. :func:`run_block` adds the read; executors decide where it runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geoseg.engine.blend import (
    BlockAccumulator,
    classes_of_probabilities,
    fixed_point_weights,
    tile_weights,
)
from geoseg.engine.device_blend import DeviceAccumulator, predict_tensor, predictor_device
from geoseg.geo.tiling import Block
from geoseg.geo.window import Window
from geoseg.io.raster import SceneReader
from geoseg.models.contract import Normalization
from geoseg.models.predictor import Predictor, load_predictor, resolve_device
from geoseg.options import CrfParams, InputOptions

TileCallback = Callable[[int], None]


@dataclass(frozen=True, kw_only=True)
class BlockResult:
    """What a block produces: uint8 classes and confidence over its write window, and its
    partial sums over the windows it shares with neighbouring blocks (for the writer to finish).
    """

    block: Block
    classes: np.ndarray
    confidence: np.ndarray
    tiles: int
    shares: tuple[BlockAccumulator, ...] = ()

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class (nodata excluded)."""
        return np.bincount(self.classes.ravel(), minlength=256)[:num_classes]


@dataclass(frozen=True)
class ModelSpec:
    """A picklable recipe for a predictor: a model file loaded once per process (by its hash)."""

    path: str
    sha256: str
    device: str = "auto"
    tta: bool = False

    def __call__(self) -> Predictor:
        return load_predictor(self.path, self.device, self.tta, self.sha256)

    def identity(self) -> dict[str, Any]:
        """What shapes the predictions: the weights, TTA and the device this resolves to here."""

        return {"sha256": self.sha256, "tta": self.tta, "device": resolve_device(self.device)}


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to segment any block of one scene (small and picklable).

    Pixels never travel: a worker reads its own window from ``scene`` (a path or GDAL URL).
    The tile weight window is made where it is used (cached per process), never pickled.

    Attributes
    ----------
    scene
        The input (a path or GDAL URL).
    predictor
        A picklable zero-argument callable returning a :class:`Predictor` (e.g. :class:`ModelSpec`).
    normalization
        Per-band scaling from the model contract; None passes pixels through as float32.
    tile, overlap, batch_size
        Tiling of the scene-wide grid and tiles per model call.
    input
        Bands to read and the nodata value for files that declare none.
    crf
        CRF refinement of the blended probabilities (None: off); blocks then need a halo of
        ``crf.reach`` pixels.
    """

    scene: str
    predictor: Callable[[], Predictor]
    normalization: Normalization | None
    tile: int
    overlap: int
    batch_size: int = 4
    input: InputOptions = field(default_factory=InputOptions)
    crf: CrfParams | None = None

    @property
    def halo(self) -> int:
        """Pixels of blended context each block needs around its write window."""
        return self.crf.reach if self.crf else 0

    @property
    def weights(self) -> np.ndarray:
        """The tile weight window ``(tile, tile)`` in fixed point (int64)."""
        return shared_tile_weights(self.tile, self.overlap)


@functools.cache
def shared_tile_weights(tile: int, overlap: int) -> np.ndarray:
    """:func:`~geoseg.engine.blend.tile_weights` in fixed point, made once per process
    (read-only)."""
    weights = fixed_point_weights(tile_weights(tile, overlap))
    weights.flags.writeable = False
    return weights


def prepare_block(
    pixels: np.ndarray, valid: np.ndarray, block: Block, normalization: Normalization | None
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a block's pixels, zero its nodata, and reflect-pad it from ``read`` to ``extent``.

    Returns float32 pixels ``(C, extent.height, extent.width)`` and the matching valid mask.
    """
    x = normalization.apply(pixels) if normalization else pixels.astype(np.float32)
    x[:, ~valid] = 0.0
    pad = block.pad
    if any(p for side in pad for p in side):
        x = np.pad(x, ((0, 0), *pad), mode="reflect")
        valid = np.pad(valid, pad, mode="reflect")
    return x, valid


def batches(items: Sequence[Window], size: int) -> Iterator[Sequence[Window]]:
    """Consecutive chunks of ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def tiles_to_compute(block: Block, valid: np.ndarray, tile: int) -> list[Window]:
    """The block's tiles that have a valid pixel inside its blended window, in global order.

    For a block of :func:`~geoseg.geo.tiling.plan_blocks` that is any valid pixel of the tile
    inside the scene, so whether a tile is computed does not depend on the block plan.
    """
    keep = []
    for t in block.tiles(tile):
        inside = t.intersection(block.blended)
        if inside is not None and valid[inside.relative_to(block.extent).slices()].any():
            keep.append(t)
    return keep


def segment_block(
    pixels: np.ndarray,
    valid: np.ndarray,
    block: Block,
    predictor: Predictor,
    weights: np.ndarray,
    batch_size: int = 4,
    on_tiles: TileCallback | None = None,
    crf: CrfParams | None = None,
) -> BlockResult:
    """Predict and blend one block's tiles; finish its own window, hand over its shares.

    Parameters
    ----------
    pixels
        Normalised float32 ``(C, H, W)`` covering ``block.extent`` (see :func:`prepare_block`).
    valid
        Boolean ``(H, W)``: False where the input is nodata (weight 0).
    block
        The block: its write window and tiles.
    predictor
        ``(N, C, T, T) -> (N, K, T, T)`` probabilities; one with a ``tensor`` method and a
        ``device`` keeps them on its device, where the block is blended
        (:mod:`geoseg.engine.device_blend`).
    weights
        Tile weight window ``(T, T)``, float or fixed point (see :mod:`geoseg.engine.blend`).
    batch_size
        Tiles per predictor call.
    on_tiles
        Called with the number of tiles after each batch (for progress bars).
    crf
        Refine the blended probabilities with a local CRF on ``pixels`` before the arg-max. The
        block must blend a halo of at least ``crf.reach`` pixels (``plan_halo_blocks``),
        so the result is the same for any block size.

    Returns
    -------
    BlockResult
        uint8 classes (255 = nodata) and confidence (%) over ``block.write``, and the integer
        partial sums over each of ``block.shares``.
    """
    tile = weights.shape[0]
    device = predictor_device(predictor)
    acc = DeviceAccumulator(block.blended, predictor.num_classes, device)
    fixed = weights if weights.dtype.kind in "iu" else fixed_point_weights(weights)
    tile_weight = torch.from_numpy(np.array(fixed, dtype=np.int64)).to(device)  # (writable copy)
    valid_here = torch.from_numpy(np.ascontiguousarray(valid)).to(device)
    todo = tiles_to_compute(block, valid, tile)
    for group in batches(todo, batch_size):
        local = [t.relative_to(block.extent).slices() for t in group]
        probs = predict_tensor(predictor, np.stack([pixels[(slice(None), *s)] for s in local]))
        for t, s, p in zip(group, local, probs, strict=True):
            acc.add(t, p, tile_weight * valid_here[s])
        if on_tiles:
            on_tiles(len(group))
    if crf is None:
        classes, confidence = acc.classes_and_confidence(block.write)
    else:
        classes, confidence = refined_classes(acc, pixels, block, crf)
    shares = tuple(acc.to_host(window) for window in block.shares)
    return BlockResult(
        block=block, classes=classes, confidence=confidence, tiles=len(todo), shares=shares
    )


def refined_classes(
    acc: DeviceAccumulator, pixels: np.ndarray, block: Block, crf: CrfParams
) -> tuple[np.ndarray, np.ndarray]:
    """Classes and confidence over ``block.write`` after a CRF over the blended window."""
    from geoseg.models.crf import crf_refine

    image = pixels[(slice(None), *block.blended.relative_to(block.extent).slices())]
    refined = crf_refine(acc.probabilities(), image, crf)
    return classes_of_probabilities(
        refined[(slice(None), *block.write.relative_to(block.blended).slices())]
    )


def read_block(reader: SceneReader, block: Block, job: SceneJob) -> tuple[np.ndarray, np.ndarray]:
    """Read a block's pixels and prepare them for :func:`segment_block`."""
    pixels, valid = reader.read(block.read)
    return prepare_block(pixels, valid, block, job.normalization)


def run_block(
    job: SceneJob,
    block: Block,
    reader: SceneReader | None = None,
    predictor: Predictor | None = None,
    on_tiles: TileCallback | None = None,
) -> BlockResult:
    """Read, predict and blend one block of ``job``'s scene (opening what is not given)."""
    predictor = predictor or job.predictor()
    if reader is None:
        with SceneReader(job.scene, job.input) as own:
            pixels, valid = read_block(own, block, job)
    else:
        pixels, valid = read_block(reader, block, job)
    return segment_block(
        pixels, valid, block, predictor, job.weights, job.batch_size, on_tiles, job.crf
    )


def scene_path(path: str | os.PathLike[str]) -> str:
    """A scene path as a string that GDAL and workers on other machines understand."""
    text = os.fspath(path)
    return text if text.startswith("/vsi") or "://" in text else os.path.abspath(text)
