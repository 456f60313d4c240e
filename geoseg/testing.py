"""Test helpers shipped with the package: deterministic fake predictors and tiny rasters.

Like odc-geo's ``testutils``: :func:`coordinate_image` makes pixels that encode their own
coordinates, so any misplaced window, flipped tile or off-by-one in the stitching is visible as a
wrong value, not a blur.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.io.raster import write_raster
from geoseg.models.contract import ModelContract, Normalization, default_colors
from geoseg.models.create import create_model

UTM_CRS = "EPSG:32632"
UTM_ORIGIN = (500_000.0, 5_300_000.0)


def coordinate_image(height: int, width: int, dtype: str = "float32") -> np.ndarray:
    """Bands ``(row, col, row + col)``: every pixel knows where it is."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, rows + cols]).astype(dtype)


def utm_transform(gsd: float = 0.5, origin: tuple[float, float] = UTM_ORIGIN) -> Affine:
    """North-up transform with square pixels of ``gsd`` metres."""
    return Affine(gsd, 0.0, origin[0], 0.0, -gsd, origin[1])


def write_test_scene(
    path: str | os.PathLike[str],
    data: np.ndarray,
    nodata: float | None = None,
    crs: str = UTM_CRS,
    transform: Affine | None = None,
) -> str:
    """Write ``(C, H, W)`` pixels as a GeoTIFF on a UTM grid; returns the path."""
    write_raster(path, data, crs, transform or utm_transform(), nodata=nodata)
    return os.fspath(path)


@dataclass
class IdentityPredictor:
    """Returns its input as the 'probabilities': blending must reconstruct the input exactly."""

    num_classes: int

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=True)


@dataclass
class PixelwisePredictor:
    """A fixed random 1x1 convolution followed by a softmax: per-pixel, so tiling cannot matter."""

    bands: int
    num_classes: int
    seed: int = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        w = rng.normal(size=(self.num_classes, self.bands)).astype(np.float32)
        logits = np.einsum("kc,nchw->nkhw", w, batch)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class ContextPredictor:
    """Depends on a neighbourhood (a box blur before the 1x1 conv), like a real network's context.

    Its output near a tile's edge differs from the whole-image answer, so blending matters.
    """

    bands: int
    num_classes: int
    radius: int = 3
    seed: int = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        k = 2 * self.radius + 1
        padded = np.pad(batch, ((0, 0), (0, 0), (self.radius,) * 2, (self.radius,) * 2), "edge")
        csum = padded.cumsum(axis=2).cumsum(axis=3)
        csum = np.pad(csum, ((0, 0), (0, 0), (1, 0), (1, 0)))
        blurred = csum[..., k:, k:] - csum[..., :-k, k:] - csum[..., k:, :-k] + csum[..., :-k, :-k]
        return PixelwisePredictor(self.bands, self.num_classes, self.seed)(blurred / k**2)


def identity_normalization(bands: int) -> Normalization:
    """Scaling that leaves values unchanged: low 0, high 1, mean 0, std 1 (for values in [0, 1])."""
    return Normalization((0.0,) * bands, (1.0,) * bands, (0.0,) * bands, (1.0,) * bands)


def test_contract(
    bands: int = 3,
    classes: Sequence[str] = ("background", "building", "water"),
    dtype: str = "uint8",
    tile_size: int = 64,
    arch: str = "unet",
    encoder: str = "resnet18",
) -> ModelContract:
    """A small contract for tests."""
    return ModelContract(
        arch=arch,
        encoder=encoder,
        bands=bands,
        dtype=dtype,
        classes=tuple(classes),
        colors=default_colors(len(classes)),
        gsd=0.5,
        tile_size=tile_size,
    )


test_contract.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def create_test_model(
    out: str | os.PathLike[str],
    arch: str,
    encoder: str,
    bands: int,
    classes: Sequence[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    **contract: Any,
) -> Path:
    """A model file with random weights for a contract given field by field (tests, benchmarks)."""

    full = ModelContract(
        arch=arch,
        encoder=encoder,
        bands=bands,
        dtype=contract.pop("dtype", "uint8"),
        classes=tuple(classes),
        **contract,
    )
    return create_model(
        out, full, weights=weights, encoder_weights=encoder_weights, overwrite=overwrite
    )
