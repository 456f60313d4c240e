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
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from shapely import LineString

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import InvalidInputError, choice_error
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window, cover
from geoseg.io.files import atomic_output, check_writable
from geoseg.io.raster import RasterBlockWriter, write_raster

SYNTH_CLASSES: tuple[str, ...] = ("background", "building", "road", "water", "tree")
SYNTH_COLORS: tuple[tuple[int, int, int], ...] = (
    (222, 214, 178),  # background: beige
    (215, 48, 39),  # building: red
    (120, 120, 120),  # road: grey
    (49, 130, 189),  # water: blue
    (35, 139, 69),  # tree: green
)
"""Map colours of the classes (for class rasters and legends, not the image)."""
BACKGROUND, BUILDING, ROAD, WATER, TREE = range(5)
DEFAULT_ORIGIN = (690_000.0, 5_336_000.0)
"""Top-left corner in EPSG:32632 (UTM 32N), near Munich."""
DTYPE_MAX = {"uint8": 255, "uint16": 4095}
"""Brightest value per dtype; uint16 scenes use a 12-bit range like many aerial cameras."""
STRIP_ROWS = 512
HALO = 1  # context pixels around a strip for the 3x3 blur
SCENE_GAP = 500.0  # metres between the scenes of write_scenes

# Reflectance-like colours (R, G, B, NIR), 0..1.
GRASS, SOIL = (0.34, 0.42, 0.22, 0.55), (0.56, 0.49, 0.37, 0.38)
ASPHALT, MARKING = (0.42, 0.42, 0.43, 0.24), (0.80, 0.80, 0.76, 0.60)
POND, CANOPY = (0.10, 0.21, 0.24, 0.04), (0.13, 0.28, 0.11, 0.52)
ROOFS = np.array(
    [
        [0.62, 0.29, 0.21, 0.42],
        [0.50, 0.33, 0.26, 0.40],
        [0.26, 0.27, 0.33, 0.25],
        [0.72, 0.71, 0.68, 0.55],
    ],
    np.float32,
)
# Per class: amplitude of fine grain, mottling and ripples; whether shadows darken it.
FINE = np.array([0.22, 0.06, 0.16, 0.03, 0.45], np.float32)
MOTTLE = np.array([0.30, 0.06, 0.10, 0.06, 0.12], np.float32)
RIPPLE = np.array([0.0, 0.0, 0.0, 0.25, 0.0], np.float32)
SHADED = np.array([True, False, True, True, False])
FLAT, CROWN, GABLE = 0, 1, 2  # shading styles of a polygon


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


@dataclass(frozen=True, eq=False)
class _Layer:
    """Polygons of one class with per-polygon colour, shading style and (cx, cy, a, b)."""

    cls: int
    geoms: np.ndarray
    colors: np.ndarray
    style: np.ndarray
    attrs: np.ndarray

    @classmethod
    def plain(cls, class_id: int, geoms: np.ndarray, color: tuple[float, ...]) -> _Layer:
        n = len(geoms)
        colors = np.tile(np.asarray(color, np.float32), (n, 1))
        return cls(class_id, geoms, colors, np.zeros(n, np.uint8), np.zeros((n, 4)))

    def moved(self, dx: float, dy: float) -> _Layer:
        attrs = self.attrs + np.array([dx, dy, 0.0, 0.0])
        return _Layer(self.cls, _moved(self.geoms, dx, dy), self.colors, self.style, attrs)


@dataclass(frozen=True, eq=False)
class _Layout:
    """A scene's geometry and look, in map coordinates; layers are in painter's order."""

    shape: tuple[int, int]
    transform: Affine
    crs: CRS
    bands: int
    dtype: str
    layers: tuple[_Layer, ...]
    shadows: np.ndarray
    footprint: shapely.Geometry
    sun: np.ndarray  # unit vector towards the sun (x east, y north)
    cast: np.ndarray  # per-band colour cast
    salts: tuple[int, ...]

    def table(self, name: str) -> np.ndarray:
        """Per-id lookup table of a layer attribute; id = 1 + index in painter's order."""
        column = np.concatenate([getattr(layer, name) for layer in self.layers])
        return np.concatenate([np.zeros((1, *column.shape[1:]), column.dtype), column])


# ------------------------------------------------------------------------------ noise (pure)


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A uint32 hash of integer lattice coordinates (broadcast)."""
    h = (np.asarray(ix, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x8DA6B343)
    h = h ^ (np.asarray(iy, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0xD8163841)
    h ^= np.uint32(salt & 0xFFFFFFFF)
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h ^= h >> np.uint32(shift)
        h *= np.uint32(mult)
    return h ^ (h >> np.uint32(16))


def _axis(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index and smoothstep weight of each coordinate."""
    f = coords / cell
    i = np.floor(f).astype(np.int64)
    t = f - i
    return i, (t * t * (3 - 2 * t)).astype(np.float32)


def _value_noise(
    rows: np.ndarray, cols: np.ndarray, cell: tuple[float, float], salt: int
) -> np.ndarray:
    """Smooth noise in [0, 1) on a lattice of ``cell`` (rows, cols) pixels: ``(rows, cols)``.

    Lattice values hash global lattice indices, so any window gives the same values.
    """
    iy, ty = _axis(rows, cell[0])
    ix, tx = _axis(cols, cell[1])
    ly, lx = np.arange(iy[0], iy[-1] + 2), np.arange(ix[0], ix[-1] + 2)
    lattice = (_hash(lx[None, :], ly[:, None], salt) >> np.uint32(8)).astype(np.float32) / 2**24
    jx, jy = ix - lx[0], iy - ly[0]
    along_x = lattice[:, jx] * (1 - tx) + lattice[:, jx + 1] * tx
    return along_x[jy] * (1 - ty)[:, None] + along_x[jy + 1] * ty[:, None]


def _fbm(rows: np.ndarray, cols: np.ndarray, cell: float, octaves: int, salt: int) -> np.ndarray:
    """Fractal value noise in [0, 1): octaves of halving cell size and amplitude."""
    total = np.zeros((len(rows), len(cols)), np.float32)
    for k in range(octaves):
        total += _value_noise(rows, cols, (cell / 2**k, cell / 2**k), salt + k) / 2**k
    return total / (2 - 2 ** (1 - octaves))


# ------------------------------------------------------------------------------ geometry
# Generated in local metres (x east, y north, origin at the scene's lower-left corner).


def _wiggly_line(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, wiggle: float
) -> LineString:
    """A gently curving polyline: heading + smoothed noise (mean-reverting, no drift)."""
    step, kernel = 20.0, np.hanning(11)[1:-1]
    n = max(2, int(length / step) + 1)
    noise = np.convolve(rng.normal(0, 1, n + 8), kernel / np.linalg.norm(kernel), mode="valid")
    angles = heading + np.radians(wiggle) * noise[:n]
    steps = step * np.column_stack([np.cos(angles), np.sin(angles)])
    return LineString(start + np.vstack([[0, 0], np.cumsum(steps, axis=0)]))


def _frames(line: LineString, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points and unit tangents at distances along ``line``."""
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(line, dist - 1.0))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(line, dist + 1.0))
    tangent = p1 - p0
    return (p0 + p1) / 2, tangent / np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)


def _roads(
    rng: np.random.Generator, w: float, h: float
) -> tuple[list[LineString], list[LineString]]:
    """Main roads crossing the scene about every 450 m each way, and side streets off them."""
    mains, sides, margin = [], [], 60.0
    for along, across, vertical in ((w, h, True), (h, w, False)):
        count = max(1, round(along / 450))
        for i in range(count):
            pos = (i + rng.uniform(0.2, 0.8)) * along / count
            heading = np.radians(rng.uniform(-12, 12)) + (np.pi / 2 if vertical else 0.0)
            start = np.array([pos, -margin] if vertical else [-margin, pos])
            mains.append(_wiggly_line(rng, start, heading, 1.3 * (across + 2 * margin), 5.0))
    for line in mains:
        dist = np.cumsum(rng.uniform(90, 220, int(line.length / 90) + 1))
        points, tangents = _frames(line, dist[dist < line.length - 5])
        for p, t in zip(points, tangents, strict=True):
            turn = rng.choice([-1, 1]) * np.pi / 2 + np.radians(rng.uniform(-10, 10))
            sides.append(
                _wiggly_line(rng, p, np.arctan2(t[1], t[0]) + turn, rng.uniform(60, 260), 8)
            )
    return mains, sides


def _markings(mains: list[LineString], half_width: np.ndarray) -> np.ndarray:
    """Dashed centre lines and solid edge lines of the main roads, as thin polygons."""
    parts = []
    for line, hw in zip(mains, half_width, strict=True):
        start = np.arange(0.0, line.length - 4.0, 12.0)
        ends = [shapely.line_interpolate_point(line, d) for d in (start, start + 4.0)]
        dashes = shapely.linestrings(np.stack([shapely.get_coordinates(p) for p in ends], axis=1))
        edges = np.array([shapely.offset_curve(line, s * (hw - 0.6)) for s in (-1, 1)])
        parts += [shapely.buffer(dashes, 0.2, cap_style="flat"), shapely.buffer(edges, 0.15)]
    return np.concatenate(parts)


def _ponds(rng: np.random.Generator, w: float, h: float, roads: np.ndarray) -> np.ndarray:
    """Smooth irregular ponds (radius plus a few harmonics) clear of roads; at least one."""
    count, theta = max(1, rng.poisson(w * h / 1e6 * 1.5)), np.linspace(0, 2 * np.pi, 72, False)
    k = np.arange(2, 6)[:, None]
    ponds = []
    for _ in range(3 * count):
        radius = min(rng.uniform(18, 70), 0.22 * min(w, h))
        wobble = rng.uniform(0, 0.25, (4, 1)) / k * np.cos(k * theta + rng.uniform(0, 7, (4, 1)))
        r = radius * (1 + wobble.sum(axis=0))
        xy = rng.uniform(0.2, 0.8, 2) * (w, h) + np.column_stack(
            [r * np.cos(theta), r * np.sin(theta)]
        )
        ponds.append(shapely.Polygon(xy))
    ok = _free(shapely.buffer(np.array(ponds), 3.0), [roads])
    return np.array(ponds)[ok][:count] if ok.any() else np.array(ponds[:1])


def _rectangles(centre: np.ndarray, axis: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Corners ``(n, 4, 2)`` of rectangles from centres, unit x-axes and half sizes ``(n, 2)``."""
    normal = np.column_stack([-axis[:, 1], axis[:, 0]])
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    u = signs[None, :, :1] * (half[:, None, :1] * axis[:, None])
    return centre[:, None] + u + signs[None, :, 1:] * (half[:, None, 1:] * normal[:, None])


def _building_slots(
    rng: np.random.Generator, lines: list[LineString], half_widths: np.ndarray
) -> list[np.ndarray]:
    """Candidate houses along both sides of every road: centre, axis, back direction, half size."""
    out: list[list[np.ndarray]] = [[], [], [], []]
    for line, hw in zip(lines, half_widths, strict=True):
        for side in (-1.0, 1.0):
            dist = np.cumsum(rng.uniform(13, 24, int(line.length / 13) + 1))
            p, t = _frames(line, dist[dist < line.length])
            half = np.column_stack([rng.uniform(4, 8, len(p)), rng.uniform(4, 7, len(p))])
            back = side * np.column_stack([-t[:, 1], t[:, 0]])
            angle = np.radians(rng.uniform(-4, 4, len(p)))[:, None]
            axis = t * np.cos(angle) + back * side * np.sin(angle)
            centre = p + back * (hw + rng.uniform(3, 9, (len(p), 1)) + half[:, 1:])
            for store, value in zip(out, (centre, axis, back, half), strict=True):
                store.append(value)
    return [np.concatenate(v) for v in out]


def _town_density(rng: np.random.Generator, w: float, h: float, xy: np.ndarray) -> np.ndarray:
    """Probability of a house at ``xy``: high in a few town centres, low in the country."""
    towns = rng.uniform(0, 1, (max(1, rng.poisson(w * h / 1e6 * 1.5)), 2)) * (w, h)
    sigma = rng.uniform(250, 700, len(towns))
    near = np.zeros(len(xy))
    for town, s in zip(towns, sigma, strict=True):
        near = np.maximum(near, np.exp(-((xy - town) ** 2).sum(axis=1) / (2 * s**2)))
    return 0.15 + 0.75 * near


def _buildings(
    rng: np.random.Generator,
    w: float,
    h: float,
    lines: list[LineString],
    hw: np.ndarray,
    blocked: list[np.ndarray],
) -> tuple[_Layer, np.ndarray, np.ndarray]:
    """Rectangular and L-shaped houses facing the roads; also their parts and heights."""
    centre, axis, back, half = _building_slots(rng, lines, hw)
    keep = (rng.uniform(0, 1, len(centre)) < _town_density(rng, w, h, centre)) & np.all(
        (centre > 0) & (centre < (w, h)), axis=1
    )
    centre, axis, back, half = centre[keep], axis[keep], back[keep], half[keep]
    n, normal = len(centre), np.column_stack([-axis[:, 1], axis[:, 0]])
    lshape, end = rng.uniform(0, 1, n) < 0.3, rng.choice([-1.0, 1.0], (n, 1))
    wing_half = half * np.column_stack([rng.uniform(0.3, 0.45, n), rng.uniform(0.5, 0.9, n)])
    behind = np.sign((back * normal).sum(axis=1, keepdims=True)) * normal
    wing_c = centre + end * (half[:, :1] - wing_half[:, :1]) * axis
    wing_c += (half[:, 1:] + wing_half[:, 1:] - 0.5) * behind
    main, wing = _rectangles(centre, axis, half), _rectangles(wing_c, axis, wing_half)
    polys = shapely.polygons(main)
    polys[lshape] = shapely.union(polys[lshape], shapely.polygons(wing[lshape]))
    ok = _free(polys, blocked)
    roof = rng.integers(0, len(ROOFS), n)
    colors = ROOFS[roof] * rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32)
    style = np.where((roof < 3) & ~lshape, GABLE, FLAT).astype(np.uint8)
    heights = np.where(roof == 3, rng.uniform(4, 14, n), rng.uniform(5, 9, n))
    layer = _Layer(
        BUILDING, polys[ok], colors[ok], style[ok], np.column_stack([centre, normal])[ok]
    )
    parts = np.concatenate([main[ok], wing[ok & lshape]])
    return layer, parts, np.concatenate([heights[ok], heights[ok & lshape]])


def _hits(geoms: np.ndarray, blocked: list[np.ndarray]) -> np.ndarray:
    """Indices of ``geoms`` that intersect any blocked geometry (large ones are prepared once)."""
    return shapely.STRtree(geoms).query(np.concatenate(blocked), "intersects")[1]


def _free(geoms: np.ndarray, blocked: list[np.ndarray]) -> np.ndarray:
    """Mask of geometries that touch no blocked geometry and no earlier geometry."""
    ok = np.ones(len(geoms), bool)
    ok[_hits(geoms, blocked)] = False
    first, second = shapely.STRtree(geoms).query(geoms, "intersects")
    ok[second[first < second]] = False
    return ok


def _trees(
    rng: np.random.Generator, w: float, h: float, blocked: list[np.ndarray]
) -> tuple[_Layer, np.ndarray]:
    """Clusters of round crowns (single trees to small woods) and their heights."""
    clusters = max(4, rng.poisson(w * h / 1e6 * 200))
    sizes = 1 + rng.poisson(rng.choice([2.0, 12.0, 45.0], clusters, p=[0.4, 0.4, 0.2]))
    spread = np.repeat(rng.uniform(4, 30, clusters), sizes)[:, None]
    xy = np.repeat(rng.uniform(0, 1, (clusters, 2)) * (w, h), sizes, axis=0)
    xy += rng.normal(0, 1, xy.shape) * spread
    radius = rng.uniform(2.0, 5.0, len(xy))
    points = shapely.points(xy)
    ok = np.ones(len(xy), bool)
    ok[_hits(points, blocked)] = False
    tint = rng.uniform(0.85, 1.15, (ok.sum(), 1)) * np.array([[0.9, 1.0, 0.9, 1.0]])
    attrs = np.column_stack([xy[ok], radius[ok], np.zeros(ok.sum())])
    crowns = shapely.buffer(points[ok], radius[ok], quad_segs=6)
    style = np.full(ok.sum(), CROWN, np.uint8)
    layer = _Layer(TREE, crowns, (np.asarray(CANOPY) * tint).astype(np.float32), style, attrs)
    return layer, rng.uniform(6, 15, ok.sum())


def _shadows(
    parts: np.ndarray,
    heights: np.ndarray,
    crowns: _Layer,
    tree_heights: np.ndarray,
    shadow: np.ndarray,
) -> np.ndarray:
    """Shadows: house parts swept along the shadow vector (convex hulls); trees as capsules."""
    shifted = parts + heights[:, None, None] * shadow
    hulls = shapely.convex_hull(shapely.multipoints(np.concatenate([parts, shifted], axis=1)))
    xy = crowns.attrs[:, :2]
    segments = shapely.linestrings(np.stack([xy, xy + tree_heights[:, None] * shadow], axis=1))
    return np.concatenate([hulls, shapely.buffer(segments, crowns.attrs[:, 2], quad_segs=6)])


def _footprint(rng: np.random.Generator, w: float, h: float) -> shapely.Geometry:
    """Valid data: the scene inset a little, rotated a few degrees, with one corner cut off."""
    inset = rng.uniform(0.01, 0.04, 4) * (w, h, w, h)
    poly = shapely.box(inset[0], inset[1], w - inset[2], h - inset[3])
    poly = shapely.affinity.rotate(poly, rng.uniform(-3, 3), origin="centroid")
    cx, cy = [(0, 0), (w, 0), (w, h), (0, h)][rng.integers(4)]
    cut, sx, sy = (
        rng.uniform(0.15, 0.35) * min(w, h),
        (1 if cx == 0 else -1),
        (1 if cy == 0 else -1),
    )
    corner = shapely.Polygon([(cx, cy), (cx + sx * cut, cy), (cx, cy + sy * cut)])
    return poly.difference(corner).intersection(shapely.box(0, 0, w, h))


def _moved(geoms: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return shapely.transform(geoms, lambda xy: xy + np.array([dx, dy]))


def _layout(
    shape: tuple[int, int],
    seed: int,
    gsd: float,
    crs: str,
    origin: tuple[float, float],
    bands: int,
    dtype: str,
) -> _Layout:
    """Every geometry of a scene, in map coordinates, drawn from ``seed`` in a fixed order."""
    rng = np.random.default_rng(seed)
    h, w = shape[0] * gsd, shape[1] * gsd
    footprint = _footprint(rng, w, h)
    mains, sides = _roads(rng, w, h)
    hw = np.concatenate([rng.uniform(4, 5.5, len(mains)), rng.uniform(2.5, 3.3, len(sides))])
    roads = shapely.buffer(np.array(mains + sides), hw, quad_segs=4)
    ponds = _ponds(rng, w, h, roads)
    markings = _markings(mains, hw[: len(mains)])
    houses, parts, heights = _buildings(rng, w, h, mains + sides, hw, [roads, ponds])
    trees, tree_heights = _trees(rng, w, h, [roads, ponds, houses.geoms])
    azimuth, tan_zenith = np.radians(rng.uniform(120, 240)), rng.uniform(0.5, 0.9)
    sun = np.array([np.sin(azimuth), np.cos(azimuth)])
    shadows = _shadows(parts, heights, trees, tree_heights, -sun * tan_zenith)
    layers = (
        _Layer.plain(WATER, ponds, POND),
        _Layer.plain(ROAD, roads, ASPHALT),
        _Layer.plain(ROAD, markings, MARKING),
        trees,
        houses,
    )
    dx, dy = origin[0], origin[1] - h
    return _Layout(
        shape=shape,
        transform=Affine(gsd, 0, origin[0], 0, -gsd, origin[1]),
        crs=CRS.from_user_input(crs),
        bands=bands,
        dtype=dtype,
        layers=tuple(layer.moved(dx, dy) for layer in layers),
        shadows=_moved(shadows, dx, dy),
        footprint=_moved(np.array([footprint]), dx, dy)[0],
        sun=sun,
        cast=rng.uniform(0.95, 1.05, 4).astype(np.float32),
        salts=tuple(int(s) for s in rng.integers(0, 2**31, 6)),
    )


# ------------------------------------------------------------------------------ rendering


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


class _Renderer:
    """Renders any window of a layout; the result depends only on global pixel positions."""

    def __init__(self, layout: _Layout) -> None:
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
        soil = np.clip((_fbm(rows, cols, 160.0, 3, lay.salts[0]) - 0.35) / 0.3, 0, 1)
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
        fine = _value_noise(rows, cols, (1.6, 1.6), salts[1]) - 0.5
        mottle = _fbm(rows, cols, 10.0, 2, salts[2]) - 0.5
        light = 1 + 2 * (FINE[cls] * fine + MOTTLE[cls] * mottle)
        if (cls == WATER).any():
            light += 2 * RIPPLE[cls] * (_value_noise(rows, cols, (2.5, 9.0), salts[3]) - 0.5)
        return light * (0.92 + 0.16 * _fbm(rows, cols, 400.0, 2, salts[4]))

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
            _hash(cols[None, :], rows[:, None], self.lay.salts[5]),
            DTYPE_MAX[self.lay.dtype],
        )
        out = np.empty(value.shape, self.lay.dtype)
        for b in range(len(value)):
            grain = ((noise >> np.uint32(8 * b)) & np.uint32(255)).astype(np.float32) / 255 - 0.5
            out[b] = np.clip((value[b] + 0.05 * grain) * top + 0.5, 1, top)
        return out


def _labels(layout: _Layout) -> gpd.GeoDataFrame:
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


# ------------------------------------------------------------------------------ public API


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
    layout = _layout((height, width), seed, gsd, crs, origin, bands, dtype)
    renderer = _Renderer(layout)
    image = np.empty((bands, height, width), dtype)
    classes = np.empty((height, width), np.uint8)
    valid = np.empty((height, width), bool)
    for win in cover(Window(0, 0, height, width), (STRIP_ROWS, width)):
        rows = slice(win.row, win.row_stop)
        image[:, rows], classes[rows], valid[rows] = renderer.render(win)
    return SynthScene(image, classes, valid, _labels(layout), layout.transform, layout.crs)


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
    layout = _layout((height, width), seed, gsd, crs, origin, bands, dtype)
    renderer = _Renderer(layout)
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
