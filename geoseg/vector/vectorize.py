"""Class raster -> polygons, streamed to GeoPackage, GeoJSON, FlatGeobuf, GeoParquet or Shapefile.

How a scene larger than memory becomes whole polygons:

1. The raster is read in blocks of ``block_size`` pixels, row by row. With ``min_area`` each
   block is read with a halo and sieved (:func:`~geoseg.vector.polygons.sieve_block`), so a small
   region is measured whole even when it straddles a block line.
2. :func:`~geoseg.vector.polygons.polygonize_block` polygonizes a block in *pixel* coordinates
   (4-connectivity, exact integer vertices), simplifies the block as one coverage with its
   outline fixed, and records which piece lies along each pixel of each internal block edge.
3. Pieces that touch no internal edge are finished and written at once. The others wait in a
   :class:`~geoseg.vector.polygons.SceneMerger`: pieces of one class that face each other across a
   block line along at least one pixel edge (a shared segment, not a corner) are linked; after
   each block row, groups that cannot grow any more are unioned and written, and only groups
   touching the next row are kept, so memory follows a block row, not the scene.
4. Finished polygons are moved to the CRS with the raster's affine transform, measured in m²
   (:class:`GroundArea`), filtered by ``min_area`` and streamed in batches
   (:mod:`geoseg.io.vector`) to a temporary file renamed into place when complete.

Every polygon is one 4-connected region. Without ``simplify`` or ``min_area`` the output is the
same for any block size (tested against the whole image). ``simplify`` keeps the points where
borders cross block lines in place, so its result differs slightly between block sizes;
``min_area`` removes the same regions for any block size, and joins each to the same neighbour
unless two large neighbours are too close in size to tell apart within the sieve halo.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyproj
import shapely
from affine import Affine
from rasterio.io import DatasetReader

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import InvalidInputError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window, cover, rows_of
from geoseg.io.files import (
    check_writable,
    output_lock,
    remove_stale_temporaries,
    require_file,
)
from geoseg.io.raster import ClassRasterInfo, open_dataset, read_class_info, read_pixels
from geoseg.io.vector import SCHEMA, rebatch, resolve_output, write_vector
from geoseg.options import VECTOR_FORMATS, VectorOptions
from geoseg.vector.polygons import (
    BlockPieces,
    SceneMerger,
    canonical,
    polygonize_block,
    sieve_block,
)

__all__ = ["VECTOR_FORMATS", "GroundArea", "VectorizeResult", "vectorize_raster"]

CLASS_DTYPES = ("uint8", "uint16", "int16", "int32")
"""Class raster types that GDAL's polygonize and sieve accept."""
SIEVE_HALO_FACTOR = 4
"""Sieve halo in multiples of the sieve size. One sieve size is enough to measure every small
region touching a block whole; a wider halo also measures its neighbours better, so the one it
joins (the largest) is the same as in a whole-image sieve."""
SMALL_FEATURE_PIXELS = 4
"""A polygon below this many pixels' area is counted as sub-pixel scale (likely noise)."""
SIEVE_HALO_MAX = 1024
"""Largest sieve halo in pixels (bounds memory for a large ``min_area``)."""

Progress = Callable[[int, int], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class VectorizeResult:
    """What :func:`vectorize_raster` wrote: feature counts and areas (m²) per class name."""

    path: Path
    vector_format: str
    features: int
    class_features: dict[str, int]
    area_m2: dict[str, float]
    seconds: float
    small_features: int = 0
    """Features smaller than :data:`SMALL_FEATURE_PIXELS` pixels (sub-pixel-scale noise that a
    ``min_area`` would remove)."""


class GroundArea:
    """True areas in m² of polygons given in a CRS, vectorised.

    * Geographic CRS: polygons are projected to a Lambert azimuthal equal-area CRS centred on
      the scene (same ellipsoid), whose planar areas are true areas.
    * Projected CRS: planar area x (metres per unit)² ÷ the projection's areal scale factor at
      each polygon's centroid (0.9992-1.0008 in UTM, 1/cos²(latitude) in Web Mercator).
    * No CRS: planar area; the units are taken to be metres.

    Examples
    --------
    >>> meter = GroundArea(pyproj.CRS("EPSG:4326"), centre=(10.0, 0.0))
    >>> area = meter(np.array([shapely.box(10, 0, 10.001, 0.001)]))[0]  # 0.001 deg: ~111 m
    >>> round(float(area), -1)
    12310.0
    """

    def __init__(self, crs: pyproj.CRS | None, centre: tuple[float, float]) -> None:
        self.crs = crs
        self._to_equal_area = self._to_lonlat = None
        if crs is not None and crs.is_geographic:
            laea = pyproj.crs.ProjectedCRS(
                pyproj.crs.coordinate_operation.LambertAzimuthalEqualAreaConversion(
                    latitude_natural_origin=centre[1], longitude_natural_origin=centre[0]
                ),
                geodetic_crs=crs.geodetic_crs,
            )
            self._to_equal_area = pyproj.Transformer.from_crs(crs, laea, always_xy=True)
        elif crs is not None and crs.geodetic_crs is not None:
            self._to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)

    def __call__(self, geometries: np.ndarray) -> np.ndarray:
        """Area in m² of each polygon."""
        if self._to_equal_area is not None:
            to_laea = self._to_equal_area.transform
            return shapely.area(shapely.transform(geometries, to_laea, interleaved=False))
        area = shapely.area(geometries)
        if self.crs is None or not len(geometries):
            return area
        unit = self.crs.axis_info[0].unit_conversion_factor
        return area * unit**2 / self._areal_scale(shapely.centroid(geometries))

    def _areal_scale(self, centroids: np.ndarray) -> np.ndarray | float:
        if self._to_lonlat is None:
            return 1.0
        try:
            lon, lat = self._to_lonlat.transform(shapely.get_x(centroids), shapely.get_y(centroids))
            scale = np.asarray(pyproj.Proj(self.crs).get_factors(lon, lat).areal_scale)
        except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError):
            return 1.0  # a CRS PROJ has no scale factors for: take it as true to scale
        return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


@dataclass(frozen=True)
class VectorizePlan:
    """Everything the block loop needs, fixed from the raster and the options (picklable)."""

    grid: RasterGrid
    class_names: tuple[str, ...]
    nodata: int
    background: int | None
    block_size: int
    pixel_area_m2: float
    sieve_pixels: int
    tolerance: float
    min_area: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the scene."""
        return self.grid.height, self.grid.width

    @property
    def sieve_halo(self) -> int:
        """Pixels read around each block for the sieve."""
        halo = SIEVE_HALO_FACTOR * self.sieve_pixels
        return min(halo, SIEVE_HALO_MAX) if self.sieve_pixels > 1 else 0

    def block_rows(self) -> list[list[Window]]:
        """Blocks of ``block_size`` pixels, row by row, left to right."""
        return rows_of(cover(self.grid.window, self.block_size))

    def class_name(self, class_id: int) -> str:
        """Name of a class id (``class_<id>`` beyond the raster's names)."""
        names = self.class_names
        return names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"


def pixel_to_crs(geometries: np.ndarray, transform: Affine) -> np.ndarray:
    """Move polygons from pixel coordinates to the raster's CRS with its affine transform."""
    a, b, c, d, e, f = transform[:6]

    def apply(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return a * x + b * y + c, d * x + e * y + f

    return shapely.transform(geometries, apply, interleaved=False)


def make_plan(info: ClassRasterInfo, options: VectorOptions) -> VectorizePlan:
    """Convert the options from metres to pixels at the scene centre."""
    grid = info.grid
    centre_px = shapely.box(
        grid.width // 2, grid.height // 2, grid.width // 2 + 1, grid.height // 2 + 1
    )
    centre = pixel_to_crs(np.array([centre_px]), grid.transform)
    meter = GroundArea(grid.pyproj_crs, grid.centre)
    pixel_area = float(meter(centre)[0])
    simplify, min_area = options.simplify, options.min_area
    return VectorizePlan(
        grid=grid,
        class_names=tuple(info.class_names),
        nodata=info.nodata,
        background=options.background,
        block_size=options.block_size,
        pixel_area_m2=pixel_area,
        sieve_pixels=math.ceil(min_area / pixel_area - 1e-9) if min_area > 0 else 0,
        tolerance=simplify / math.sqrt(pixel_area),
        min_area=min_area,
    )


def read_block(ds: DatasetReader, window: Window, plan: VectorizePlan) -> np.ndarray:
    """The classes of ``window``, sieved when ``min_area`` asks for it."""
    halo = plan.sieve_halo
    if not halo:
        return read_pixels(ds, window, [1])[0]
    read = window.buffer(halo).clip(plan.grid.window)
    classes = read_pixels(ds, read, [1])[0]
    return sieve_block(classes, plan.sieve_pixels, plan.nodata, window.relative_to(read))


def polygonize_window(
    path: str, plan: VectorizePlan, window: Window
) -> tuple[np.ndarray, np.ndarray, BlockPieces]:
    """Read, sieve and polygonize one block: finished polygons, their classes, and edge pieces.

    Self-contained (opens the raster itself), so it can run on any worker.
    """
    with open_dataset(path) as ds:
        classes = read_block(ds, window, plan)
    pieces = polygonize_block(
        classes,
        window,
        plan.shape,
        nodata=plan.nodata,
        background=plan.background,
        tolerance=plan.tolerance,
    )
    return pieces.split()


def iter_polygons(
    path: str,
    plan: VectorizePlan,
    progress: Progress | None = None,
    executor: OrderedMapper | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Finished polygons (pixel coordinates) and their classes, row of blocks by row of blocks.

    The blocks of a row are polygonized by ``executor`` (in parallel on Dask workers) and merged
    here in plan order, so the features are the same wherever the blocks ran.
    """
    rows = plan.block_rows()
    total, done = sum(len(r) for r in rows), 0
    merger = SceneMerger()
    work = functools.partial(polygonize_window, path, plan)
    for windows in rows:
        results = executor.map_ordered(work, windows) if executor else map(work, windows)
        pending = []
        for geometries, class_ids, rest in results:
            yield geometries, class_ids
            pending.append(rest)
            done += 1
            if progress is not None:
                progress(done, total)
        yield merger.close_row(pending)


class OrderedMapper(Protocol):
    """An executor's ``map_ordered`` (see :mod:`geoseg.engine.executors`)."""

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]: ...


class FeatureBuilder:
    """Turns finished pixel polygons into output records: CRS, m², ``min_area``, tallies."""

    def __init__(self, plan: VectorizePlan, to_wgs84: bool) -> None:
        self.plan = plan
        crs = plan.grid.pyproj_crs
        self.meter = GroundArea(crs, plan.grid.centre)
        self.reproject = None
        if to_wgs84 and crs is not None:
            self.reproject = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        self.class_features: dict[str, int] = {}
        self.area_m2: dict[str, float] = {}
        self.small_features = 0

    def __call__(self, geometries: np.ndarray, class_ids: np.ndarray) -> pa.RecordBatch:
        """One record batch (possibly empty) in :data:`geoseg.io.vector.SCHEMA`."""
        geometries = pixel_to_crs(canonical(geometries), self.plan.grid.transform)
        area = self.meter(geometries)
        keep = area >= self.plan.min_area
        geometries, class_ids, area = geometries[keep], class_ids[keep], area[keep]
        self.small_features += int(np.sum(area < SMALL_FEATURE_PIXELS * self.plan.pixel_area_m2))
        ids, index = np.unique(class_ids, return_inverse=True)
        names = [self.plan.class_name(int(i)) for i in ids]
        for name, count, total in zip(
            names,
            np.bincount(index, minlength=len(ids)),
            np.bincount(index, area, len(ids)),
            strict=True,
        ):
            self.class_features[name] = self.class_features.get(name, 0) + int(count)
            self.area_m2[name] = self.area_m2.get(name, 0.0) + float(total)
        if self.reproject is not None:
            geometries = shapely.transform(geometries, self.reproject.transform, interleaved=False)
        geometries = shapely.orient_polygons(geometries)  # exterior rings counter-clockwise
        columns = [
            class_ids,
            np.array(names, dtype=object)[index],
            area,
            shapely.to_wkb(geometries),
        ]
        return pa.record_batch(columns, schema=SCHEMA)


def class_style(
    info: ClassRasterInfo, background: int | None
) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    """Names and colours of the classes that get polygons (for the QGIS style)."""
    ids = [i for i in range(len(info.class_names)) if i not in (background, info.nodata)]
    names = {i: info.class_names[i] for i in ids}
    colors = {i: info.colors[i] if i < len(info.colors) else (128, 128, 128) for i in ids}
    return names, colors


def check_class_raster(ds: DatasetReader, background: int | None, vector_format: str) -> None:
    """Raise :class:`InvalidInputError` unless ``ds`` is a class raster these options can use."""
    if ds.count != 1 or ds.dtypes[0] not in CLASS_DTYPES:
        raise InvalidInputError(
            f"{ds.name}: {ds.count} band(s) of {ds.dtypes[0]} is not a class raster; expected one "
            f"band of {'/'.join(CLASS_DTYPES)} such as geoseg segment writes "
            "(convert with gdal_translate -b 1 -ot Byte)"
        )
    nodata = NODATA_CLASS if ds.nodata is None else int(ds.nodata)
    if background is not None and (background < 0 or background == nodata):
        raise InvalidInputError(
            f"{ds.name}: background={background} is invalid (nodata is {nodata}); "
            "pass a class id >= 0, or None to vectorize every class"
        )
    if vector_format == "geojson" and ds.crs is None:
        raise InvalidInputError(
            f"{ds.name}: has no CRS, so it cannot be written as GeoJSON (always WGS84); "
            "assign one (gdal_edit -a_srs) or write another format"
        )


def vectorize_raster(
    classes_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    options: VectorOptions | None = None,
    *,
    vector_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor: OrderedMapper | None = None,
) -> VectorizeResult:
    """Polygonize a class raster into one feature per connected region, in bounded memory.

    Parameters
    ----------
    classes_path
        A geoseg class raster: one band, nodata 255, ``CLASS_NAMES`` tag and colour table.
    out_path
        The vector file. Its suffix picks the format unless ``vector_format`` is given.
    options
        Polygon shaping: ``simplify`` (topology-preserving tolerance in metres, converted to
        pixels at the scene centre; shared borders stay shared, borders with nodata stay on
        pixel edges), ``min_area`` (m²: the raster is sieved first, so regions smaller than
        ``min_area`` / pixel area join their largest neighbour, then any feature still below
        ``min_area``, true area, is dropped), ``background`` (the class that gets no polygons;
        None vectorizes every class) and ``block_size`` (memory grows with its square, never
        with the scene).
    vector_format
        One of :data:`~geoseg.options.VECTOR_FORMATS`: ``gpkg`` (with a QGIS style inside),
        ``geojson`` (WGS84, RFC 7946), ``fgb``, ``parquet`` (GeoParquet), ``shp``. Formats other
        than GeoPackage get a ``.qml`` side-car that QGIS loads automatically.
    overwrite
        Replace an existing output.

        The output is locked while it is written (``.<stem>.lock`` beside it, the lock that
        ``predict`` holds for the scene of the same stem): a second run on it fails at once.
    progress
        Called with ``(blocks done, blocks total)`` after each block.
    executor
        Where blocks are polygonized (e.g. a :class:`~geoseg.engine.dask.DaskExecutor`);
        default this process. The output is the same either way.

    Returns
    -------
    VectorizeResult
        Path, format, feature counts and areas per class name, and the run time.

    Notes
    -----
    Fields: ``class_id`` (int), ``class_name`` (str), ``area_m2`` (true area, also for
    geographic CRSs). A GeoPackage holds the polygon layer (named after the file) and QGIS's
    ``layer_styles`` table, so read it with ``layer=<file stem>``.

    Examples
    --------
    >>> from geoseg.options import VectorOptions
    >>> result = vectorize_raster("classes.tif", "classes.gpkg", VectorOptions(min_area=100))  # doctest: +SKIP
    >>> result.class_features  # doctest: +SKIP
    {'water': 12, 'forest': 431}
    """
    started = time.perf_counter()
    opts = options or VectorOptions()
    vector_format, out = resolve_output(out_path, vector_format)
    require_file(classes_path, "class raster")
    check_writable(out, overwrite)
    with output_lock(out.parent, out.stem), open_dataset(classes_path) as ds:
        remove_stale_temporaries([out])
        check_class_raster(ds, opts.background, vector_format)
        info = read_class_info(ds)
        plan = make_plan(info, opts)
        builder = FeatureBuilder(plan, to_wgs84=vector_format == "geojson")
        polygons = iter_polygons(os.fspath(classes_path), plan, progress, executor)
        batches = rebatch(builder(g, c) for g, c in polygons)
        style = class_style(info, opts.background)
        write_vector(batches, out, vector_format, plan.grid.pyproj_crs, style, overwrite)
    return VectorizeResult(
        path=out,
        vector_format=vector_format,
        features=sum(builder.class_features.values()),
        class_features=dict(builder.class_features),
        area_m2=dict(builder.area_m2),
        seconds=time.perf_counter() - started,
        small_features=builder.small_features,
    )
