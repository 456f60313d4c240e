"""A quicklook people can read: the image and the class map side by side, with a legend.

The sheet shows the scene's name, the image (2-98 % stretch) beside the class map in its own
colours (nodata hatched grey), a scale bar, and a legend with each class's colour, name and
share of the valid area. Pillow only, with its default font; read from the COGs' overviews.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.conventions import NODATA_CLASS
from geoseg.io.files import atomic_output
from geoseg.io.quicklook import read_classes
from geoseg.io.raster import band_count, open_dataset, raster_grid, read_class_info, read_resampled

PANEL = 384
"""Longest side of each panel in pixels."""
MARGIN = 12
ROW = 16
NODATA_RGB = (200, 200, 200)


def class_shares(classes: np.ndarray, count: int) -> list[float]:
    """Share (0-1) of each class among the valid pixels.

    Examples
    --------
    >>> class_shares(np.array([[0, 1], [1, 255]], np.uint8), 2)
    [0.3333333333333333, 0.6666666666666666]
    """
    valid = classes[classes != NODATA_CLASS]
    counts = np.bincount(valid.ravel(), minlength=count)[:count]
    return [float(c) / max(valid.size, 1) for c in counts]


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``metres`` (a scale bar's length).

    Examples
    --------
    >>> nice_length(37.0), nice_length(1234.0)
    (20.0, 1000.0)
    """
    power = 10 ** math.floor(math.log10(max(metres, 1e-9)))
    return float(max(step * power for step in (1, 2, 5) if step * power <= metres))


def stretched(image_path: str | os.PathLike[str], shape: tuple[int, int]) -> np.ndarray:
    """RGB ``(h, w, 3)`` uint8 of the first three bands (or band 1 as grey), 2-98 % stretch."""
    bands = [1, 2, 3] if band_count(image_path) >= 3 else [1, 1, 1]
    rgb = read_resampled(image_path, bands, shape, "average").astype(float)
    lo, hi = np.percentile(rgb, (2, 98))
    return (
        np.clip((rgb - lo) / max(hi - lo, 1e-9) * 255, 0, 255).transpose(1, 2, 0).astype(np.uint8)
    )


def class_rgb(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The class map in its colours; nodata as grey hatching."""
    rgb = palette[classes].copy()
    rows, cols = np.indices(classes.shape)
    hatch = np.where(((rows + cols) // 3) % 2 == 0, 170, 215).astype(np.uint8)
    nodata = classes == NODATA_CLASS
    rgb[nodata] = hatch[nodata][:, None]
    return rgb


def legend_rows(names: Sequence[str], shares: Sequence[float]) -> list[str]:
    """``name  12.3 %`` for each class.

    Examples
    --------
    >>> legend_rows(["water"], [0.1234])
    ['water  12.3 %']
    """
    return [f"{name}  {100 * share:.1f} %" for name, share in zip(names, shares, strict=True)]


def write_sheet(
    image_path: str | os.PathLike[str],
    classes_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    title: str | None = None,
    max_size: int = PANEL,
) -> Path:
    """Write the quicklook sheet (see the module) to ``png_path`` atomically.

    Examples
    --------
    >>> write_sheet("scene.tif", "out/scene_classes.tif", "out/scene_quicklook.png")  # doctest: +SKIP
    PosixPath('out/scene_quicklook.png')
    """
    from PIL import Image, ImageDraw, ImageFont

    classes, palette, _ = read_classes(classes_path, max_size)
    with open_dataset(classes_path) as ds:
        names = read_class_info(ds).class_names
    h, w = classes.shape
    font = ImageFont.load_default()
    rows = [*legend_rows(names, class_shares(classes, len(names))), "no data (hatched)"]
    legend_h = ROW * (len(rows) + 2)
    sheet = Image.new("RGB", (3 * MARGIN + 2 * w, 2 * MARGIN + ROW + h + legend_h), "white")
    sheet.paste(Image.fromarray(stretched(image_path, (h, w))), (MARGIN, MARGIN + ROW))
    sheet.paste(Image.fromarray(class_rgb(classes, palette)), (2 * MARGIN + w, MARGIN + ROW))
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, MARGIN // 2), title or Path(image_path).name, fill="black", font=font)
    top = MARGIN + ROW + h + ROW // 2
    _scale_bar(draw, font, classes_path, w, (MARGIN, top))
    for i, text in enumerate(rows):
        y = top + ROW * (i + 1)
        color = tuple(int(v) for v in palette[i]) if i < len(names) else NODATA_RGB
        draw.rectangle(
            (2 * MARGIN + w, y, 2 * MARGIN + w + 12, y + 10), fill=color, outline="black"
        )
        draw.text((2 * MARGIN + w + 18, y), text, fill="black", font=font)
    with atomic_output(png_path, overwrite=True) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return Path(png_path)


def _scale_bar(
    draw: Any,
    font: Any,
    classes_path: str | os.PathLike[str],
    width_px: int,
    origin: tuple[int, int],
) -> None:
    """A scale bar of a round length under the image panel (none without a ground size)."""
    grid = raster_grid(classes_path)
    if not grid.gsd:
        return
    metres_per_px = grid.gsd * grid.width / width_px
    length = nice_length(metres_per_px * width_px / 3)
    bar = round(length / metres_per_px)
    x, y = origin
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    draw.rectangle((x, y + 2, x + bar, y + 6), fill="black")
    draw.text((x + bar + 6, y), label, fill="black", font=font)
