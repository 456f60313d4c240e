"""Quicklooks: a small PNG of a class raster in its own colours, read from the COG's overviews.

A decimated read (``out_shape`` smaller than the raster) lets GDAL pick the closest overview,
so a quicklook of a 100 000 px scene reads a few hundred kilobytes, not the scene.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geoseg.io.files import atomic_output
from geoseg.io.raster import raster_grid, read_colormap, read_resampled

QUICKLOOK_SIZE = 256
"""Longest side of a quicklook in pixels."""


def quicklook_shape(height: int, width: int, max_size: int = QUICKLOOK_SIZE) -> tuple[int, int]:
    """The ``(height, width)`` that fits ``max_size`` keeping the aspect ratio (never upsampled).

    Examples
    --------
    >>> quicklook_shape(10000, 5000), quicklook_shape(100, 80)
    ((256, 128), (100, 80))
    """
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def quicklook_png(classes_path: str | os.PathLike[str], max_size: int = QUICKLOOK_SIZE) -> bytes:
    """PNG bytes of a class raster coloured with its colour table (nodata transparent).

    Examples
    --------
    >>> png = quicklook_png("out/scene_classes.tif")  # doctest: +SKIP
    >>> png[:4]  # doctest: +SKIP
    b'\\x89PNG'
    """
    from PIL import Image

    classes, palette, alpha = read_classes(classes_path, max_size)
    image = Image.fromarray(classes.astype(np.uint8), mode="P")
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, transparency=alpha.tobytes())
    return buffer.getvalue()


def read_classes(
    classes_path: str | os.PathLike[str], max_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes at quicklook size, and the palette: RGB ``(256, 3)`` and alpha ``(256,)``."""
    grid = raster_grid(classes_path)
    shape = quicklook_shape(grid.height, grid.width, max_size)
    classes = read_resampled(classes_path, [1], shape, "nearest")[0]
    palette, alpha = palette_of(*read_colormap(classes_path))
    return classes, palette, alpha


def palette_of(
    table: Mapping[int, Sequence[int]], nodata: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``(256, 3)`` and alpha ``(256,)`` from a colour table (grey ramp where it has none).

    Examples
    --------
    >>> rgb, alpha = palette_of({1: (0, 0, 255, 255)}, nodata=255)
    >>> rgb[1].tolist(), int(alpha[255])
    ([0, 0, 255], 0)
    """
    rgb = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    alpha = np.full(256, 255, np.uint8)
    for value, rgba in table.items():
        rgb[value], alpha[value] = rgba[:3], rgba[3]
    if nodata is not None and 0 <= nodata < 256:
        alpha[int(nodata)] = 0
    return rgb, alpha


def write_quicklook(
    classes_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    max_size: int = QUICKLOOK_SIZE,
) -> Path:
    """Write :func:`quicklook_png` to ``png_path`` (atomically, replacing an older one)."""
    png = quicklook_png(classes_path, max_size)
    with atomic_output(png_path, overwrite=True) as tmp:
        tmp.write_bytes(png)
    return Path(png_path)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI to embed a PNG in Markdown or HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
