"""Synthetic georeferenced aerial scenes whose answer is known.

A scene is built geometry first: ponds, a road network, tree clusters and buildings are shapely
polygons in map coordinates (UTM, 0.5 m pixels by default). The class raster burns them in
painter's order (water, roads, trees, buildings); the image is rendered from the classes with
per-class textures, cast shadows, smooth illumination, a 3x3 blur and sensor noise. A rotated,
corner-cut footprint marks the valid data: outside it the image is 0 and the classes 255.

Every texture is a function of the *global* pixel position (hashed value noise), never of the
order numbers are drawn in, so a scene rendered in row strips is byte-identical to the whole
scene: :func:`write_large_scene` writes scenes far larger than memory, strip by strip.

Examples
--------
>>> scene = make_scene((256, 384), seed=1)
>>> scene.image.shape, scene.classes.shape, str(scene.crs)
((3, 256, 384), (256, 384), 'EPSG:32632')
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import InvalidInputError, choice_error
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window, cover
from geoseg.io.files import atomic_output, check_writable
from geoseg.io.raster import RasterBlockWriter, write_raster
from geoseg.synthetic.layout import (
    DEFAULT_ORIGIN,
    DTYPE_MAX,
    SCENE_GAP,
    STRIP_ROWS,
    SYNTH_CLASSES,
    SYNTH_COLORS,
    make_layout,
)
from geoseg.synthetic.render import Renderer, label_frame

__all__ = [
    "SYNTH_CLASSES",
    "SYNTH_COLORS",
    "SceneFiles",
    "SynthScene",
    "make_scene",
    "write_large_scene",
    "write_scenes",
]


@dataclass(frozen=True, eq=False)
class SynthScene:
    """One generated scene.

    ``image`` is ``(C, H, W)`` (0 = nodata), ``classes`` ``(H, W)`` uint8 (255 = nodata),
    ``valid`` the footprint mask, ``labels`` the non-overlapping label polygons (``class_id``,
    ``class_name``) in ``crs``, clipped to the footprint.
    """

    image: np.ndarray
    classes: np.ndarray
    valid: np.ndarray
    labels: gpd.GeoDataFrame
    transform: Affine
    crs: CRS


@dataclass(frozen=True)
class SceneFiles:
    """Paths of one scene written by :func:`write_scenes`."""

    image: Path
    classes: Path
    labels: Path


def _check(size: int | tuple[int, int], bands: int, dtype: str) -> tuple[int, int]:
    shape = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(shape) != 2 or min(shape) < 16:
        raise InvalidInputError(f"size {size!r}: expected an int or (height, width), each >= 16")
    if bands not in (3, 4):
        raise InvalidInputError(f"bands {bands!r}: expected 3 (RGB) or 4 (RGB + NIR)")
    if dtype not in DTYPE_MAX:
        raise choice_error("dtype", dtype, list(DTYPE_MAX))
    return int(shape[0]), int(shape[1])


def make_scene(
    size: int | tuple[int, int] = 1024,
    seed: int = 0,
    gsd: float = 0.5,
    crs: str = "EPSG:32632",
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    bands: int = 3,
    dtype: str = "uint8",
) -> SynthScene:
    """Generate one scene in memory.

    Parameters
    ----------
    size
        Pixels: ``int`` for a square scene or ``(height, width)``.
    seed
        Everything derives from ``numpy.random.default_rng(seed)``: same seed, same bytes.
    gsd
        Pixel size in CRS units (metres for UTM).
    crs, origin
        A projected CRS and the scene's top-left corner in it.
    bands
        3 (RGB) or 4 (RGB + near infrared).
    dtype
        ``uint8`` (values 1..255) or ``uint16`` (1..4095, a 12-bit range); 0 is nodata.

    Examples
    --------
    >>> scene = make_scene((64, 96), seed=3, bands=4, dtype="uint16")
    >>> scene.image.shape, scene.image.dtype.name, int(scene.image.max()) <= 4095
    ((4, 64, 96), 'uint16', True)
    """
    height, width = _check(size, bands, dtype)
    layout = make_layout((height, width), seed, gsd, crs, origin, bands, dtype)
    renderer = Renderer(layout)
    image = np.empty((bands, height, width), dtype)
    classes = np.empty((height, width), np.uint8)
    valid = np.empty((height, width), bool)
    for win in cover(Window(0, 0, height, width), (STRIP_ROWS, width)):
        rows = slice(win.row, win.row_stop)
        image[:, rows], classes[rows], valid[rows] = renderer.render(win)
    return SynthScene(image, classes, valid, label_frame(layout), layout.transform, layout.crs)


def _class_tags() -> dict[str, str]:
    colors = [list(c) for c in SYNTH_COLORS]
    return {"CLASS_NAMES": json.dumps(list(SYNTH_CLASSES)), "CLASS_COLORS": json.dumps(colors)}


def write_large_scene(
    path: str | os.PathLike[str],
    size: int | tuple[int, int],
    seed: int = 0,
    *,
    gsd: float = 0.5,
    crs: str = "EPSG:32632",
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    bands: int = 3,
    dtype: str = "uint8",
    classes_path: str | os.PathLike[str] | None = None,
    strip_rows: int = STRIP_ROWS,
    overwrite: bool = False,
) -> None:
    """Render a scene of any size in row strips straight into a GeoTIFF (and its class raster).

    The geometry is made once; each strip is rasterized and rendered with its own transform, so
    memory is bounded by ``strip_rows`` x width and the pixels equal :func:`make_scene`'s for the
    same arguments. No label polygons are made.

    Examples
    --------
    >>> write_large_scene("big.tif", 16384, classes_path="big_classes.tif")  # doctest: +SKIP
    """
    height, width = _check(size, bands, dtype)
    if strip_rows < 1:
        raise InvalidInputError(f"strip_rows {strip_rows}: expected a positive number of rows")
    for target in (path, classes_path):
        if target is not None:
            check_writable(Path(target), overwrite)
    layout = make_layout((height, width), seed, gsd, crs, origin, bands, dtype)
    renderer = Renderer(layout)
    grid = RasterGrid(width, height, layout.crs, layout.transform, dtype, bands)
    with contextlib.ExitStack() as stack:
        image_out = stack.enter_context(RasterBlockWriter(path, grid, 0, overwrite=overwrite))
        classes_out = None
        if classes_path is not None:
            class_grid = RasterGrid(width, height, layout.crs, layout.transform, "uint8", 1)
            writer = RasterBlockWriter(
                classes_path, class_grid, NODATA_CLASS, SYNTH_COLORS, _class_tags(), overwrite
            )
            classes_out = stack.enter_context(writer)
        for win in cover(Window(0, 0, height, width), (strip_rows, width)):
            image, classes, _ = renderer.render(win)
            image_out.write(win, image)
            if classes_out is not None:
                classes_out.write(win, classes)


def _write_scene(scene: SynthScene, files: SceneFiles, overwrite: bool) -> None:
    if overwrite or not files.image.exists():
        write_raster(files.image, scene.image, scene.crs, scene.transform, nodata=0)
    if overwrite or not files.classes.exists():
        write_raster(
            files.classes,
            scene.classes,
            scene.crs,
            scene.transform,
            NODATA_CLASS,
            colors=SYNTH_COLORS,
            tags=_class_tags(),
        )
    if overwrite or not files.labels.exists():
        with atomic_output(files.labels, overwrite=True) as tmp:
            scene.labels.to_file(tmp, layer="labels", driver="GPKG")


def write_scenes(
    outdir: str | os.PathLike[str],
    scenes: int = 3,
    size: int | tuple[int, int] = 1024,
    seed: int = 0,
    *,
    gsd: float = 0.5,
    crs: str = "EPSG:32632",
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    bands: int = 3,
    dtype: str = "uint8",
    overwrite: bool = False,
) -> list[SceneFiles]:
    """Write ``scenes`` scenes side by side (west to east, 500 m apart) into ``outdir``.

    Per scene ``scene_XX.tif`` (image, nodata 0), ``scene_XX_classes.tif`` (colour table,
    ``CLASS_NAMES`` tag, nodata 255) and ``scene_XX_labels.gpkg`` (layer ``labels``: ``class_id``,
    ``class_name``). Files that exist are kept, and a scene whose files all exist is not even
    generated, unless ``overwrite``. Scene ``i`` uses a seed derived from ``(seed, i)``.

    Examples
    --------
    >>> files = write_scenes("demo", scenes=2, size=512)  # doctest: +SKIP
    >>> files[1].labels.name  # doctest: +SKIP
    'scene_01_labels.gpkg'
    """
    _, width = _check(size, bands, dtype)
    written = []
    for i in range(scenes):
        stem = Path(outdir) / f"scene_{i:02d}"
        files = SceneFiles(
            *(Path(f"{stem}{end}") for end in (".tif", "_classes.tif", "_labels.gpkg"))
        )
        written.append(files)
        if not overwrite and all(p.exists() for p in (files.image, files.classes, files.labels)):
            continue
        shifted = (origin[0] + i * (width * gsd + SCENE_GAP), origin[1])
        scene_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        _write_scene(
            make_scene(size, scene_seed, gsd, crs, shifted, bands, dtype), files, overwrite
        )
    return written
