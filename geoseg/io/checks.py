"""Up-front checks of an input raster: is it a readable raster, and is it placed on Earth usably?

Each check raises one :class:`~geoseg.errors.GeosegError` naming the file, the problem and the fix,
before any output is created. What is legitimately odd is accepted: no CRS (outputs then have
none, and GeoJSON, which is always WGS84, is refused), a geographic or WKT-only CRS, rotated
grids, any size down to one pixel. What cannot be placed correctly is refused: a grid whose pixel
axes are not perpendicular (sheared), a CRS without a geotransform, and ground control points
without a geotransform.

Examples
--------
>>> check_raster("scene.tif", "scene", vector_formats=("gpkg",))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from affine import Affine
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader

from geoseg.errors import InvalidInputError, RasterReadError
from geoseg.geo.geobox import is_sheared
from geoseg.geo.window import Window
from geoseg.io.files import is_virtual_path, require_file
from geoseg.io.raster import gdal_env, open_dataset, to_rio

WARP_FIX = "warp it north-up first (gdalwarp in.tif north_up.tif)"


def check_file_kind(path: str | os.PathLike[str], what: str = "scene") -> None:
    """Raise unless a local ``path`` is an existing, non-empty file (URLs are not checked)."""
    require_file(path, what)
    if is_virtual_path(path):
        return
    local = Path(path)
    if local.is_dir():
        raise InvalidInputError(
            f"{path}: is a directory, not a raster file; give the path of a GeoTIFF inside it"
        )
    if local.stat().st_size == 0:
        raise InvalidInputError(
            f"{path}: is empty (0 bytes); the copy or download failed, fetch the file again"
        )


def probe_windows(ds: DatasetReader) -> list[Window]:
    """One-pixel windows at the first, middle and last pixel: their blocks span the file."""
    h, w = ds.height, ds.width
    points = {(0, 0), (h // 2, w // 2), (h - 1, w - 1)}
    return [Window(r, c, 1, 1) for r, c in sorted(points)]


def check_readable(ds: DatasetReader) -> None:
    """Read the blocks under :func:`probe_windows` in every band; raise if GDAL cannot.

    A truncated or corrupt GeoTIFF opens fine (its header is intact) and fails only when a
    missing block is read; probing the first, middle and last blocks catches it before work.
    """
    for window in probe_windows(ds):
        try:
            with gdal_env():
                ds.read(window=to_rio(window))
        except RasterioError as exc:
            raise RasterReadError(
                f"{ds.name}: is truncated or corrupt (GDAL cannot read its pixels at row "
                f"{window.row}, col {window.col}); copy or export it again and check it with "
                "gdalinfo -checksum"
            ) from exc


def has_geotransform(transform: Affine) -> bool:
    """False for GDAL's stand-in of a missing geotransform (the identity)."""
    return not transform.almost_equals(Affine.identity())


def check_georeferencing(ds: DatasetReader) -> None:
    """Refuse grids geoseg cannot place: GCPs or a CRS without a geotransform, sheared pixels."""
    if not has_geotransform(ds.transform):
        if ds.gcps[0] or ds.rpcs:
            raise InvalidInputError(
                f"{ds.name}: is georeferenced by ground control points or RPCs only, not by a "
                f"geotransform; {WARP_FIX}"
            )
        if ds.crs is not None:
            raise InvalidInputError(
                f"{ds.name}: has a CRS ({ds.crs}) but no geotransform, so its pixels have no "
                "place on the map; set the corners (gdal_edit.py -a_ullr) or warp it"
            )
    if is_sheared(ds.transform):
        raise InvalidInputError(
            f"{ds.name}: has a sheared geotransform (pixel axes not perpendicular: "
            f"{tuple(round(v, 9) for v in ds.transform[:6])}); {WARP_FIX}"
        )


def check_geojson_crs(ds: DatasetReader, vector_formats: Sequence[str]) -> None:
    """Refuse GeoJSON output for a raster without a CRS (GeoJSON is always WGS84)."""
    if "geojson" in vector_formats and ds.crs is None:
        raise InvalidInputError(
            f"{ds.name}: has no CRS, so its polygons cannot be written as GeoJSON (always "
            "WGS84); assign one (gdal_edit.py -a_srs EPSG:<code>) or choose another "
            "`vector_formats` (e.g. gpkg)",
            option="vector_formats",
        )


def check_raster(
    path: str | os.PathLike[str], what: str = "scene", vector_formats: Sequence[str] = ()
) -> None:
    """Every check of this module on one input raster, cheapest first.

    Parameters
    ----------
    path
        A local file or a GDAL path (``/vsicurl/...``: only the GDAL checks apply).
    what
        What the file is to the user (``scene``, ``image``), for the not-found message.
    vector_formats
        The polygon formats that will be written (GeoJSON needs a CRS).
    """
    check_file_kind(path, what)
    with open_dataset(path) as ds:
        check_georeferencing(ds)
        check_geojson_crs(ds, vector_formats)
        check_readable(ds)
