"""Pure building blocks of vectorization: NumPy classes in, shapely polygons out, no file I/O.

Everything here is picklable and works in scene *pixel* coordinates, where every vertex of a
pixel polygon is an integer, so merging pieces cut by block lines is exact. A distributed
executor can run :func:`sieve_block` and :func:`polygonize_block` on workers and feed the
results, block row by block row, to one :class:`SceneMerger`.

Examples
--------
>>> classes = np.array([[1, 1, 1, 1]], dtype=np.uint8)
>>> left = polygonize_block(classes[:, :2], Window(0, 0, 1, 2), (1, 4))
>>> right = polygonize_block(classes[:, 2:], Window(0, 2, 1, 2), (1, 4))
>>> finished, _, pending_left = left.split()
>>> len(finished), len(pending_left.geometries)  # the piece on the block line waits
(0, 1)
>>> merged, class_ids = SceneMerger().close_row([pending_left, right.split()[2]])
>>> canonical(merged)[0].wkt, class_ids.tolist()  # one polygon, no vertex left on the line
('POLYGON ((0 0, 0 1, 4 1, 4 0, 0 0))', [1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from geoseg.conventions import NODATA_CLASS
from geoseg.geo.window import Window

SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class EdgeStrip:
    """The classes along one internal block edge and the piece owning each pixel (-1: none)."""

    values: np.ndarray
    ids: np.ndarray


@dataclass(frozen=True)
class BlockPieces:
    """Polygons of one block in scene pixel coordinates, and the pieces along its edges.

    Attributes
    ----------
    window
        The block's pixels in the scene.
    geometries, class_ids
        One polygon (and its class) per 4-connected region of the block.
    edges
        For each internal side (``top``, ``bottom``, ``left``, ``right``), an :class:`EdgeStrip`
        whose ids index ``geometries``. Sides on the scene edge are absent.
    """

    window: Window
    geometries: np.ndarray
    class_ids: np.ndarray
    edges: dict[str, EdgeStrip]

    def split(self) -> tuple[np.ndarray, np.ndarray, BlockPieces]:
        """Finished polygons (on no internal edge), their classes, and the pieces still pending."""
        pending = np.zeros(len(self.geometries), dtype=bool)
        for strip in self.edges.values():
            pending[strip.ids[strip.ids >= 0]] = True
        renumber = np.full(len(pending) + 1, -1, dtype=np.int64)  # the extra -1 maps id -1
        renumber[np.flatnonzero(pending)] = np.arange(np.count_nonzero(pending))
        edges = {side: EdgeStrip(s.values, renumber[s.ids]) for side, s in self.edges.items()}
        rest = BlockPieces(self.window, self.geometries[pending], self.class_ids[pending], edges)
        return self.geometries[~pending], self.class_ids[~pending], rest


def sieve_block(classes: np.ndarray, size: int, nodata: int, crop: Window) -> np.ndarray:
    """Replace regions of fewer than ``size`` pixels by their largest neighbour; return ``crop``.

    ``classes`` is a block read with a halo of at least ``size`` pixels around ``crop`` (given in
    the array's coordinates): a region smaller than ``size`` that touches ``crop`` then lies
    inside the array and is measured whole, whatever the block size. Nodata is neither sieved
    nor a neighbour.

    Examples
    --------
    >>> a = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 1]], dtype=np.uint8)
    >>> sieve_block(a, 2, 255, Window(0, 0, 3, 3))[1, 1]
    np.uint8(1)
    """
    sieved = rasterio.features.sieve(classes, size, mask=classes != nodata, connectivity=4)
    return sieved[crop.slices()]


def polygonize_block(
    classes: np.ndarray,
    window: Window,
    scene_shape: tuple[int, int],
    *,
    nodata: int = NODATA_CLASS,
    background: int | None = 0,
    tolerance: float = 0.0,
) -> BlockPieces:
    """Polygonize one block of a class raster in scene pixel coordinates.

    Parameters
    ----------
    classes
        The block's classes ``(h, w)``.
    window
        Where the block lies in the scene.
    scene_shape
        ``(height, width)`` of the scene, to tell internal block edges from the scene's edge.
    nodata, background
        Classes that get no polygon (``background=None`` vectorizes every class).
    tolerance
        Coverage-simplification tolerance in pixels (0: none). The block, background included,
        is simplified as one coverage whose outline stays fixed, so borders shared with
        neighbouring polygons, here or in other blocks, stay shared.

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [0, 2, 2]], dtype=np.uint8)
    >>> pieces = polygonize_block(a, Window(0, 2, 2, 3), (2, 10))
    >>> pieces.class_ids.tolist(), sorted(pieces.edges)
    ([1, 2], ['left', 'right'])
    >>> pieces.edges["right"].ids.tolist()  # which piece lies along the right edge, per row
    [-1, 1]
    """
    simplify_background = tolerance > 0 and background is not None
    mask = classes != nodata
    if background is not None and not simplify_background:
        mask &= classes != background
    geometries, values = _shapes(classes, window, mask)
    if tolerance > 0 and len(geometries):
        coverage = unit_segments(geometries)  # neighbours' shared edges now match vertex for vertex
        geometries = shapely.coverage_simplify(coverage, tolerance, simplify_boundary=False)
    if simplify_background:
        keep = values != background
        geometries, values = geometries[keep], values[keep]
    geometries = valid(geometries)
    tree = shapely.STRtree(geometries)
    edges = {
        side: _edge_strip(classes, window, side, tree, nodata, background)
        for side in internal_sides(window, scene_shape)
    }
    return BlockPieces(window, geometries, values.astype(np.int32), edges)


def _shapes(classes: np.ndarray, window: Window, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygons of ``classes`` in scene pixel coordinates, built in one shapely call."""
    shift = Affine.translation(window.col, window.row)
    found = list(rasterio.features.shapes(classes, mask, connectivity=4, transform=shift))
    values = np.array([v for _, v in found], dtype=np.int64)
    if not found:
        return np.empty(0, dtype=object), values
    rings = [np.asarray(ring, dtype=np.float64) for g, _ in found for ring in g["coordinates"]]
    ring_ends = np.cumsum([len(r) for r in rings])
    polygon_ends = np.cumsum([len(g["coordinates"]) for g, _ in found])
    offsets = (np.r_[0, ring_ends], np.r_[0, polygon_ends])
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, np.concatenate(rings), offsets
    )
    return polygons, values


def valid(geometries: np.ndarray) -> np.ndarray:
    """``geometries`` with any invalid one repaired (GDAL's 4-connected polygons never are)."""
    invalid = ~shapely.is_valid(geometries)
    if not invalid.any():
        return geometries
    repaired = geometries.copy()
    repaired[invalid] = shapely.make_valid(repaired[invalid])
    return repaired


def unit_segments(geometries: np.ndarray) -> np.ndarray:
    """Pixel polygons with a vertex at every pixel corner along their edges.

    GDAL leaves out vertices in the middle of straight edges, so two neighbours can describe a
    shared edge with different vertices; with every corner present (rounded, as the densifier's
    arithmetic can be 1e-12 off) shared edges match exactly, as coverage operations require.
    """
    return shapely.transform(shapely.segmentize(geometries, 1.0), np.round)


def internal_sides(window: Window, scene_shape: tuple[int, int]) -> list[str]:
    """The sides of ``window`` that face another block rather than the scene's edge."""
    height, width = scene_shape
    inside = (window.row > 0, window.row_stop < height, window.col > 0, window.col_stop < width)
    return [side for side, ok in zip(SIDES, inside, strict=True) if ok]


def _keep(values: np.ndarray, nodata: int, background: int | None) -> np.ndarray:
    keep = values != nodata
    return keep if background is None else keep & (values != background)


def _edge_strip(
    classes: np.ndarray,
    window: Window,
    side: str,
    tree: shapely.STRtree,
    nodata: int,
    background: int | None,
) -> EdgeStrip:
    """Which piece owns each pixel along ``side``: one point query per run of equal classes.

    The query point is the middle of a pixel's edge *on* the block line. That edge belongs to
    the block's outline, which simplification leaves in place, so it lies on exactly one piece.
    """
    values = {"top": classes[0], "bottom": classes[-1], "left": classes[:, 0]}.get(side)
    values = classes[:, -1] if values is None else values
    keep = _keep(values, nodata, background)
    starts = keep.copy()
    starts[1:] &= (values[1:] != values[:-1]) | ~keep[:-1]
    along = np.flatnonzero(starts) + 0.5
    if side in ("top", "bottom"):
        y = window.row if side == "top" else window.row_stop
        points = shapely.points(window.col + along, np.full_like(along, y))
    else:
        x = window.col if side == "left" else window.col_stop
        points = shapely.points(np.full_like(along, x), window.row + along)
    hit_point, hit_piece = _intersecting(tree, points)
    run_piece = np.full(len(along), -1, dtype=np.int64)
    run_piece[hit_point] = hit_piece
    ids = np.full(len(values), -1, dtype=np.int64)
    ids[keep] = run_piece[np.cumsum(starts)[keep] - 1]
    return EdgeStrip(values.copy(), ids)


def _intersecting(tree: shapely.STRtree, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (point, tree polygon) that intersect, testing candidates against prepared polygons
    (a point in a large polygon is then a logarithmic, not a linear, test)."""
    hit_point, hit_piece = tree.query(points)
    candidates = tree.geometries[np.unique(hit_piece)]
    shapely.prepare(candidates)
    try:
        inside = shapely.intersects(tree.geometries[hit_piece], points[hit_point])
    finally:
        shapely.destroy_prepared(candidates)
    return hit_point[inside], hit_piece[inside]


def link_edges(first: EdgeStrip, second: EdgeStrip) -> np.ndarray:
    """Pairs ``(2, k)`` of pieces facing each other across a block line with the same class.

    Two pieces are linked when at least one pixel edge of the line lies between them, so pieces
    that meet only at a corner stay apart (4-connectivity).
    """
    same = (first.values == second.values) & (first.ids >= 0) & (second.ids >= 0)
    return np.unique(np.stack([first.ids[same], second.ids[same]]), axis=1)


def connected_groups(count: int, pairs: np.ndarray) -> np.ndarray:
    """Label ``0..k-1`` of the connected group of each of ``count`` nodes linked by ``pairs``.

    Examples
    --------
    >>> connected_groups(5, np.array([[0, 3], [1, 4]])).tolist()
    [0, 0, 1, 2, 2]
    """
    labels = np.arange(count)
    first, second = pairs
    while True:
        low = np.minimum(labels[first], labels[second])
        hooked = labels.copy()
        np.minimum.at(hooked, labels[first], low)
        np.minimum.at(hooked, labels[second], low)
        hooked = hooked[hooked]
        if np.array_equal(hooked, labels):
            return np.unique(labels, return_inverse=True)[1].reshape(-1)
        labels = hooked


def merge_pieces(
    geometries: np.ndarray, class_ids: np.ndarray, links: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Union each connected group of linked pieces: one polygon (and class) per group.

    Examples
    --------
    >>> pieces = np.array([shapely.box(0, 0, 2, 2), shapely.box(2, 0, 4, 1)])
    >>> merged, ids = merge_pieces(pieces, np.array([1, 1]), [np.array([[0], [1]])])
    >>> merged[0].area, ids.tolist()
    (6.0, [1])
    """
    pairs = np.concatenate([np.empty((2, 0), dtype=np.int64), *links], axis=1)
    return dissolve(geometries, class_ids, connected_groups(len(geometries), pairs))


def dissolve(
    geometries: np.ndarray, class_ids: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per label: the union of the pieces carrying it (exact for pixel polygons)."""
    order = np.argsort(labels, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []
    merged = np.empty(len(members), dtype=object)
    merged[:] = [geometries[m[0]] if len(m) == 1 else union_pieces(geometries[m]) for m in members]
    return merged, class_ids[[m[0] for m in members]].astype(np.int32)


def union_pieces(pieces: np.ndarray) -> shapely.Geometry:
    """The union of pieces of one region cut by block lines.

    A hole of a piece lies inside its block, away from every block line, so it is a hole of the
    region too: only the outer rings need an (exact, integer) overlay union, and the pieces'
    holes are added back to its result. Far faster than a union of the whole pieces, which must
    place thousands of holes.
    """
    outline = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(pieces)))
    if not isinstance(outline, shapely.Polygon):  # never for pieces linked along edges
        return shapely.union_all(pieces)
    holes = [*outline.interiors, *(ring for piece in pieces for ring in piece.interiors)]
    return shapely.Polygon(outline.exterior, holes)


def chain_links(labels: np.ndarray) -> np.ndarray:
    """Pairs ``(2, k)`` that chain the pieces sharing a label into one connected group."""
    order = np.argsort(labels, kind="stable")
    same = labels[order[1:]] == labels[order[:-1]]
    return np.stack([order[:-1][same], order[1:][same]])


class SceneMerger:
    """Holds pieces on block lines until every block they may continue into is done.

    Feed it the pending pieces (:meth:`BlockPieces.split`) of each block row, top to bottom;
    it returns the polygons that are complete and keeps the pieces of groups touching the next
    row, unmerged (each group is unioned once, when complete).
    """

    def __init__(self) -> None:
        self._geometries = np.empty(0, dtype=object)
        self._class_ids = np.empty(0, dtype=np.int32)
        self._labels = np.empty(0, dtype=np.int64)
        self._above: EdgeStrip | None = None

    def close_row(self, row: Sequence[BlockPieces]) -> tuple[np.ndarray, np.ndarray]:
        """Link one block row (left to right) to the held pieces; return finished polygons."""
        parts = [self._geometries, *(p.geometries for p in row)]
        offsets = np.cumsum([len(p) for p in parts])[:-1]
        geometries = np.concatenate(parts)
        class_ids = np.concatenate([self._class_ids, *(p.class_ids for p in row)])

        def strips(side: str, blocks: range) -> EdgeStrip:
            found = [(row[i].edges[side], offsets[i]) for i in blocks]
            ids = [np.where(s.ids >= 0, s.ids + base, -1) for s, base in found]
            return EdgeStrip(np.concatenate([s.values for s, _ in found]), np.concatenate(ids))

        links = [chain_links(self._labels)]
        links += [
            link_edges(strips("right", range(i, i + 1)), strips("left", range(i + 1, i + 2)))
            for i in range(len(row) - 1)
        ]
        if self._above is not None:
            links.append(link_edges(self._above, strips("top", range(len(row)))))
        labels = connected_groups(len(geometries), np.concatenate(links, axis=1))
        held = np.zeros(len(geometries), dtype=bool)
        self._above = None
        if "bottom" in row[0].edges:
            below = strips("bottom", range(len(row)))
            held = np.isin(labels, labels[below.ids[below.ids >= 0]])
            renumber = np.r_[np.cumsum(held) - 1, -1]  # the extra -1 maps id -1
            self._above = EdgeStrip(below.values, renumber[below.ids])
        self._geometries, self._class_ids = geometries[held], class_ids[held]
        self._labels = labels[held]
        return dissolve(geometries[~held], class_ids[~held], labels[~held])


def canonical(geometries: np.ndarray) -> np.ndarray:
    """Polygons in pixel coordinates without collinear vertices, in normalized vertex order.

    Unions and 1-pixel segments leave vertices in the middle of straight edges; dropping them
    (exactly: the coordinates are integers) makes a polygon the same whatever block it was cut
    from. Vectorised over all coordinates; the point set of each polygon does not change.

    Examples
    --------
    >>> canonical(np.array([shapely.box(0, 0, 2, 1).segmentize(0.5)]))[0].wkt
    'POLYGON ((0 0, 0 1, 2 1, 2 0, 0 0))'
    """
    polygon = shapely.get_type_id(geometries) == shapely.GeometryType.POLYGON
    if not polygon.all():  # a repaired MultiPolygon keeps its vertices
        out = geometries.copy()
        out[polygon] = canonical(geometries[polygon])
        return out
    if not len(geometries):
        return geometries
    kind, coords, (ring_ends, polygon_ends) = shapely.to_ragged_array(geometries)
    ring = np.repeat(np.arange(len(ring_ends) - 1), np.diff(ring_ends))
    last = ring_ends[1:] - 1  # the closing vertex repeats the first
    previous = np.roll(coords, 1, axis=0)
    following = np.roll(coords, -1, axis=0)
    first = ring_ends[:-1]
    previous[first] = coords[last - 1]  # the vertex before a ring's first is its last distinct one
    incoming, outgoing = coords - previous, following - coords
    cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
    straight = (cross == 0) & (np.einsum("ij,ij->i", incoming, outgoing) > 0)
    keep = ~straight
    keep[last] = False
    kept_ring = ring[keep]
    starts = np.flatnonzero(np.r_[True, kept_ring[1:] != kept_ring[:-1]])
    kept = coords[keep]
    out = np.insert(kept, np.r_[starts[1:], len(kept)], kept[starts], axis=0)  # close rings
    counts = np.bincount(kept_ring, minlength=len(ring_ends) - 1) + 1
    offsets = (np.r_[0, np.cumsum(counts)], polygon_ends)
    return shapely.normalize(shapely.from_ragged_array(kind, out, offsets))
