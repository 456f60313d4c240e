"""One immutable grid object: shape, affine transform and CRS together (odc-geo's ``GeoBox``).

Everything geoseg needs to know about where pixels are on Earth is a property or method of
:class:`GeoBox`: sub-grids of windows, padding, bounds, centre, ground sample distance in metres,
and the footprint in WGS84. :class:`RasterGrid` adds a raster's pixel type and band count. No
file is opened here.

Examples
--------
>>> from affine import Affine
>>> box = GeoBox(200, 100, "EPSG:32632", Affine(0.5, 0, 500_000, 0, -0.5, 5_300_000))
>>> box.bounds
(500000.0, 5299950.0, 500100.0, 5300000.0)
>>> box[Window(10, 20, 5, 5)].transform.c, box.gsd
(500010.0, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS

from geoseg.geo.window import Window

FOOTPRINT_POINTS = 16
"""Points per edge of a densified boundary (edges curve when reprojected)."""
METRES_PER_DEGREE = 111_320.0


SHEAR_TOLERANCE = 1e-6
"""Largest cosine of the angle between the pixel axes still taken as perpendicular."""


def is_sheared(transform: Affine) -> bool:
    """Whether the pixel axes of ``transform`` are not perpendicular (rotation alone is fine).

    Examples
    --------
    >>> is_sheared(Affine(0.5, 0, 0, 0, -0.5, 0)), is_sheared(Affine.rotation(30) * Affine.scale(2))
    (False, False)
    >>> is_sheared(Affine(0.5, 0.2, 0, 0, -0.5, 0))
    True
    """
    column, row = (transform.a, transform.d), (transform.b, transform.e)
    lengths = math.hypot(*column) * math.hypot(*row)
    dot = column[0] * row[0] + column[1] * row[1]
    return lengths > 0 and abs(dot) > SHEAR_TOLERANCE * lengths


@dataclass(frozen=True)
class GeoBox:
    """A georeferenced pixel grid: ``width`` x ``height`` pixels, ``transform`` and ``crs``."""

    width: int
    height: int
    crs: CRS | None
    transform: Affine

    def __post_init__(self) -> None:
        # a CRS may be given as text ("EPSG:32632", WKT); it is kept as a rasterio CRS
        if isinstance(self.crs, str):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def window(self) -> Window:
        """The whole grid as a window."""
        return Window(0, 0, self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units: the lengths of a column and a row step.

        For a north-up grid these are ``|a|`` and ``|e|``; for a rotated grid the rotation does
        not change them (``hypot(a, d)``, ``hypot(b, e)``).
        """
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    def __getitem__(self, window: Window) -> GeoBox:
        """The grid of ``window`` (which may reach outside this grid)."""
        shifted = self.transform @ Affine.translation(window.col, window.row)
        return GeoBox(window.width, window.height, self.crs, shifted)

    def window_transform(self, window: Window) -> Affine:
        """The affine transform of ``window``'s top-left pixel."""
        return self[window].transform

    def pad(self, pixels: int) -> GeoBox:
        """This grid grown by ``pixels`` on every side."""
        return self[self.window.buffer(pixels)]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in the CRS (of the corners, for rotated grids too)."""
        xs, ys = zip(*self.corners(), strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def corners(self) -> list[tuple[float, float]]:
        """The four corners in CRS coordinates, clockwise from the top left."""
        h, w = self.shape
        return [self.transform @ xy for xy in ((0, 0), (w, 0), (w, h), (0, h))]

    @property
    def centre(self) -> tuple[float, float]:
        """CRS coordinates of the middle of the grid."""
        x, y = self.transform @ (self.width / 2, self.height / 2)
        return float(x), float(y)

    @property
    def gsd(self) -> float | None:
        """Pixel size in metres (mean of x and y); at the centre for geographic CRSs."""
        if self.crs is None:
            return None
        xres, yres = self.resolution
        crs = self.rasterio_crs
        if crs.is_geographic:
            lat = math.radians(self.centre[1])
            return (xres * math.cos(lat) + yres) / 2 * METRES_PER_DEGREE
        return (xres + yres) / 2 * crs.linear_units_factor[1]

    @property
    def rasterio_crs(self) -> CRS:
        """The CRS (raises when the grid has none)."""
        if self.crs is None:
            raise ValueError("the grid has no CRS")
        return CRS.from_user_input(self.crs)

    @property
    def pyproj_crs(self) -> Any:
        """The CRS as a ``pyproj.CRS`` (None when the grid has none)."""
        import pyproj

        return None if self.crs is None else pyproj.CRS.from_user_input(self.rasterio_crs.to_wkt())

    def boundary(self, points: int = FOOTPRINT_POINTS) -> list[tuple[float, float]]:
        """The outline in CRS coordinates, ``points`` per edge, counter-clockwise on the map.

        Counter-clockwise for a north-up grid (RFC 7946 exterior rings), closed.
        """
        h, w = self.shape
        steps = [i / points for i in range(points)]
        ring = (
            [(0.0, s * h) for s in steps]
            + [(s * w, float(h)) for s in steps]
            + [(float(w), (1 - s) * h) for s in steps]
            + [((1 - s) * w, 0.0) for s in steps]
        )
        coords = [self.transform @ xy for xy in ring]
        return [*coords, coords[0]]

    def footprint_wgs84(self) -> tuple[dict[str, Any], list[float]]:
        """The outline as a GeoJSON polygon in WGS84 (edges densified) and its bbox."""
        from rasterio.warp import transform_geom

        polygon = {"type": "Polygon", "coordinates": [self.boundary()]}
        geometry = transform_geom(self.rasterio_crs, "EPSG:4326", polygon, precision=7)
        lons, lats = zip(*geometry["coordinates"][0], strict=True)
        return dict(geometry), [min(lons), min(lats), max(lons), max(lats)]


@dataclass(frozen=True)
class RasterGrid(GeoBox):
    """A :class:`GeoBox` with a raster's pixel ``dtype`` and band ``count`` (picklable)."""

    dtype: str = "uint8"
    count: int = 1
