"""Rendering a layout into pixels: classes in painter's order, textured image, valid mask.

The image is rendered from the classes with per-class textures, cast shadows, smooth
illumination, a 3x3 blur and sensor noise; every texture hashes global pixel positions
(:mod:`geoseg.synthetic.noise`), so any window renders the same pixels.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.conventions import NODATA_CLASS
from geoseg.geo.window import Window
from geoseg.synthetic.layout import (
    BACKGROUND,
    BUILDING,
    CROWN,
    DTYPE_MAX,
    FINE,
    GABLE,
    GRASS,
    HALO,
    MOTTLE,
    RIPPLE,
    ROAD,
    SHADED,
    SOIL,
    SYNTH_CLASSES,
    TREE,
    WATER,
    Layout,
)
from geoseg.synthetic.noise import fbm, lattice_hash, value_noise


def _burn(
    geoms: np.ndarray,
    values: np.ndarray | int,
    transform: Affine,
    shape: tuple[int, int],
    dtype: str,
) -> np.ndarray:
    """Rasterize ``geoms`` (later ones on top; pixel centres decide)."""
    if not len(geoms):
        return np.zeros(shape, dtype)
    vals = np.broadcast_to(np.asarray(values), len(geoms)).tolist()
    pairs = zip(geoms, vals, strict=True)
    return rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype=dtype)


def _bounds(transform: Affine, shape: tuple[int, int]) -> shapely.Geometry:
    (x0, y0), (x1, y1) = transform @ (0, 0), transform @ (shape[1], shape[0])
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _box_blur(stack: np.ndarray) -> np.ndarray:
    """3x3 mean of ``(C, h, w)``, trimming one pixel each side (sums in a fixed order)."""
    rows = stack[:, :-2] + stack[:, 1:-1] + stack[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / np.float32(9)


class Renderer:
    """Renders any window of a layout; the result depends only on global pixel positions."""

    def __init__(self, layout: Layout) -> None:
        self.lay = layout
        self.shapes = np.concatenate([layer.geoms for layer in layout.layers])
        self.shape_index = shapely.STRtree(self.shapes)
        self.shadow_index = shapely.STRtree(layout.shadows)
        self.class_of = self._classes()
        self.colors, self.style = layout.table("colors"), layout.table("style")
        self.attrs = layout.table("attrs")

    def _classes(self) -> np.ndarray:
        per_layer = [np.full(len(la.geoms), la.cls, np.uint8) for la in self.lay.layers]
        return np.concatenate([[np.uint8(BACKGROUND)], *per_layer])

    def render(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``(C, h, w)``, classes ``(h, w)`` (255 outside the footprint), valid mask."""
        lay = self.lay
        rows = np.arange(window.row - HALO, window.row_stop + HALO)
        cols = np.arange(window.col - HALO, window.col_stop + HALO)
        transform = lay.transform @ Affine.translation(int(cols[0]), int(rows[0]))
        shape = (len(rows), len(cols))
        idx = np.sort(self.shape_index.query(_bounds(transform, shape)))
        ids = _burn(self.shapes[idx], idx + 1, transform, shape, "int32")
        in_shade = lay.shadows[self.shadow_index.query(_bounds(transform, shape))]
        cls = self.class_of[ids]
        light = self._texture(cls, rows, cols) * self._shading(ids, rows, cols)
        light[_burn(in_shade, 1, transform, shape, "uint8").astype(bool) & SHADED[cls]] *= 0.5
        soil = np.clip((fbm(rows, cols, 160.0, 3, lay.salts[0]) - 0.35) / 0.3, 0, 1)
        albedo = np.stack(
            [
                np.where(ids > 0, self.colors[:, b][ids], GRASS[b] + (SOIL[b] - GRASS[b]) * soil)
                * (light * lay.cast[b])
                for b in range(lay.bands)
            ]
        )
        image = self._finish(_box_blur(albedo), rows[HALO:-HALO], cols[HALO:-HALO])
        inner = transform @ Affine.translation(HALO, HALO)
        valid = _burn(np.array([lay.footprint]), 1, inner, image.shape[1:], "uint8").astype(bool)
        image[:, ~valid] = 0
        classes = cls[HALO:-HALO, HALO:-HALO].copy()
        classes[~valid] = NODATA_CLASS
        return image, classes, valid

    def _texture(self, cls: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Brightness: per-class grain, mottling and ripples, times smooth illumination."""
        salts = self.lay.salts
        fine = value_noise(rows, cols, (1.6, 1.6), salts[1]) - 0.5
        mottle = fbm(rows, cols, 10.0, 2, salts[2]) - 0.5
        light = 1 + 2 * (FINE[cls] * fine + MOTTLE[cls] * mottle)
        if (cls == WATER).any():
            light += 2 * RIPPLE[cls] * (value_noise(rows, cols, (2.5, 9.0), salts[3]) - 0.5)
        return light * (0.92 + 0.16 * fbm(rows, cols, 400.0, 2, salts[4]))

    def _shading(self, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Tree crowns lit on the sun side; gable roofs with a bright and a dark slope."""
        shade, style, sun, t = (
            np.ones(ids.shape, np.float32),
            self.style[ids],
            self.lay.sun,
            self.lay.transform,
        )
        for kind in (CROWN, GABLE):
            r, c = np.nonzero(style == kind)
            i = ids[r, c]
            x = t.c + (cols[c] + 0.5) * t.a - self.attrs[i, 0]
            y = t.f + (rows[r] + 0.5) * t.e - self.attrs[i, 1]
            a, b = self.attrs[i, 2], self.attrs[i, 3]
            if kind == CROWN:  # a = radius
                d2 = ((x - 0.35 * a * sun[0]) ** 2 + (y - 0.35 * a * sun[1]) ** 2) / a**2
                shade[r, c] = 1.25 - 0.5 * np.minimum(d2, 1.5)
            else:  # (a, b) = normal of the ridge
                shade[r, c] = 1 + 0.13 * np.sign(x * a + y * b) * np.sign(a * sun[0] + b * sun[1])
        return shade

    def _finish(self, value: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Add sensor noise (one hashed byte per band) and scale to the output dtype."""
        noise, top = (
            lattice_hash(cols[None, :], rows[:, None], self.lay.salts[5]),
            DTYPE_MAX[self.lay.dtype],
        )
        out = np.empty(value.shape, self.lay.dtype)
        for b in range(len(value)):
            grain = ((noise >> np.uint32(8 * b)) & np.uint32(255)).astype(np.float32) / 255 - 0.5
            out[b] = np.clip((value[b] + 0.05 * grain) * top + 0.5, 1, top)
        return out


def label_frame(layout: Layout) -> gpd.GeoDataFrame:
    """Non-overlapping label polygons clipped to the footprint: exactly what the classes show."""
    above, ids, parts = shapely.Polygon(), [], []
    for k in (BUILDING, TREE, ROAD, WATER):  # reverse painter's order
        own = shapely.union_all(np.concatenate([la.geoms for la in layout.layers if la.cls == k]))
        visible = shapely.intersection(shapely.difference(own, above), layout.footprint)
        above = shapely.union(above, own)
        polys = shapely.get_parts(shapely.get_parts(visible))
        parts.append(polys[shapely.get_type_id(polys) == shapely.GeometryType.POLYGON])
        ids.append(np.full(len(parts[-1]), k, np.int32))
    class_id = np.concatenate(ids)
    order = np.argsort(class_id, kind="stable")
    names = np.array(SYNTH_CLASSES, dtype=object)[class_id[order]]
    columns = {"class_id": class_id[order], "class_name": names}
    return gpd.GeoDataFrame(columns, geometry=np.concatenate(parts)[order], crs=layout.crs)
