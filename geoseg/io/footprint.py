"""The footprint of a class raster's *valid* pixels in WGS84, for a STAC Item's geometry.

The raster's outline would include a nodata collar (a rotated scene in a north-up frame, an
orthophoto's black corners). Instead the valid mask is read at a decimated resolution (GDAL
picks the COG's overviews), polygonized, simplified by one decimated pixel and reprojected: a
few hundred vertices whatever the scene size, outer rings counter-clockwise (RFC 7946).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.warp import transform_geom

from geoseg.conventions import NODATA_CLASS
from geoseg.io.raster import raster_grid, read_resampled

FOOTPRINT_SIZE = 512
"""Longest side, in pixels, of the mask that is polygonized."""


def valid_outline(valid: np.ndarray, transform: Affine) -> shapely.Geometry:
    """The union of the ``True`` regions of a mask, in the CRS of ``transform``, simplified.

    Examples
    --------
    >>> mask = np.zeros((4, 4), bool); mask[1:3, :] = True
    >>> valid_outline(mask, Affine.identity()).bounds
    (0.0, 1.0, 4.0, 3.0)
    """
    parts = [
        shapely.geometry.shape(geom)
        for geom, value in shapes(valid.astype(np.uint8), mask=valid, transform=transform)
        if value
    ]
    if not parts:
        return shapely.Polygon()
    pixel = max(abs(transform.a), abs(transform.e))
    return shapely.union_all(parts).simplify(pixel, preserve_topology=True)


def valid_footprint_wgs84(
    classes_path: str | os.PathLike[str], max_size: int = FOOTPRINT_SIZE
) -> tuple[dict[str, Any] | None, list[float] | None]:
    """GeoJSON geometry (WGS84, counter-clockwise outer rings) and bbox of the valid pixels.

    ``(None, None)`` when the raster has no CRS or no valid pixel.
    """
    grid = raster_grid(classes_path)
    if grid.crs is None:
        return None, None
    scale = min(1.0, max_size / max(grid.shape))
    shape = (max(1, round(grid.height * scale)), max(1, round(grid.width * scale)))
    classes = read_resampled(classes_path, [1], shape, "nearest")[0]
    transform = grid.transform @ Affine.scale(grid.width / shape[1], grid.height / shape[0])
    outline = valid_outline(classes != NODATA_CLASS, transform)
    if outline.is_empty:
        return None, None
    lonlat = transform_geom(grid.rasterio_crs, "EPSG:4326", outline.__geo_interface__, precision=7)
    geometry = shapely.orient_polygons(shapely.make_valid(shapely.geometry.shape(lonlat)))
    return dict(geometry.__geo_interface__), [round(v, 7) for v in geometry.bounds]
