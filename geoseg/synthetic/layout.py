"""A synthetic scene's geometry and look, in map coordinates (no pixels yet).

Ponds, a road network with markings, tree clusters and buildings are shapely polygons made from
one random generator; :func:`make_layout` places them on a grid (UTM, 0.5 m pixels by default)
with a rotated, corner-cut footprint that marks the valid data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely import LineString

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
class Layer:
    """Polygons of one class with per-polygon colour, shading style and (cx, cy, a, b)."""

    cls: int
    geoms: np.ndarray
    colors: np.ndarray
    style: np.ndarray
    attrs: np.ndarray

    @classmethod
    def plain(cls, class_id: int, geoms: np.ndarray, color: tuple[float, ...]) -> Layer:
        n = len(geoms)
        colors = np.tile(np.asarray(color, np.float32), (n, 1))
        return cls(class_id, geoms, colors, np.zeros(n, np.uint8), np.zeros((n, 4)))

    def moved(self, dx: float, dy: float) -> Layer:
        attrs = self.attrs + np.array([dx, dy, 0.0, 0.0])
        return Layer(self.cls, _moved(self.geoms, dx, dy), self.colors, self.style, attrs)


@dataclass(frozen=True, eq=False)
class Layout:
    """A scene's geometry and look, in map coordinates; layers are in painter's order."""

    shape: tuple[int, int]
    transform: Affine
    crs: CRS
    bands: int
    dtype: str
    layers: tuple[Layer, ...]
    shadows: np.ndarray
    footprint: shapely.Geometry
    sun: np.ndarray  # unit vector towards the sun (x east, y north)
    cast: np.ndarray  # per-band colour cast
    salts: tuple[int, ...]

    def table(self, name: str) -> np.ndarray:
        """Per-id lookup table of a layer attribute; id = 1 + index in painter's order."""
        column = np.concatenate([getattr(layer, name) for layer in self.layers])
        return np.concatenate([np.zeros((1, *column.shape[1:]), column.dtype), column])


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
) -> tuple[Layer, np.ndarray, np.ndarray]:
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
    layer = Layer(BUILDING, polys[ok], colors[ok], style[ok], np.column_stack([centre, normal])[ok])
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
) -> tuple[Layer, np.ndarray]:
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
    layer = Layer(TREE, crowns, (np.asarray(CANOPY) * tint).astype(np.float32), style, attrs)
    return layer, rng.uniform(6, 15, ok.sum())


def _shadows(
    parts: np.ndarray,
    heights: np.ndarray,
    crowns: Layer,
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


def make_layout(
    shape: tuple[int, int],
    seed: int,
    gsd: float,
    crs: str,
    origin: tuple[float, float],
    bands: int,
    dtype: str,
) -> Layout:
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
        Layer.plain(WATER, ponds, POND),
        Layer.plain(ROAD, roads, ASPHALT),
        Layer.plain(ROAD, markings, MARKING),
        trees,
        houses,
    )
    dx, dy = origin[0], origin[1] - h
    return Layout(
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
