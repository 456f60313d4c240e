"""Pure pixel geometry: the scene-wide tile grid and the block plan.

Nothing here opens a file. Coordinates are pixel rows and columns of the scene; a window may
reach outside the scene (negative offsets, or past the last row), which is how the reflect-padded
margin around the scene is described.

Why a *scene-wide* tile grid: every tile sits at a fixed position in the scene, whatever the block
size, so each output pixel is the weighted sum of the same tiles for every block size and every
executor.

Why *every tile once*: a block is a rectangle of whole tiles of that grid (:func:`plan_blocks`),
and each tile belongs to exactly one block. Neighbouring blocks' tiles overlap in bands
``overlap`` pixels wide; a block finishes the pixels only its own tiles cover (its ``write``
window) and hands its partial sums over each shared window (its ``shares``) to the writer, which
adds the contributions of every block touching a shared window and finishes it when the last one
arrives (overlap-add, like ``dask.array.map_overlap`` in reverse). The sums are integers, so the
order in which blocks arrive cannot change a single pixel (see :mod:`geoseg.engine.blend`).

A neighbourhood step on the blended probabilities (a CRF) needs finished probabilities around
every pixel; :func:`plan_halo_blocks` plans pixel-aligned blocks that blend a halo themselves,
recomputing the tiles under it.

Examples
--------
>>> grid = TileGrid(height=1000, width=700, tile=256, overlap=32)
>>> grid.row_starts[:3], grid.row_starts[-1]
((-16, 208, 432), 760)
>>> plan = plan_blocks(grid, block_size=480)  # 2 tiles a side: 2 x 1 blocks (3 columns of tiles)
>>> [b.write for b in plan.blocks]
[Window(row=0, col=0, height=432, width=700), Window(row=464, col=0, height=536, width=700)]
>>> list(plan.shares.values())  # the band between them, where both blocks' tiles add
[2]
>>> plan.num_tiles == grid.num_tiles  # each tile once
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from geoseg.conventions import TILE_MULTIPLE
from geoseg.errors import InvalidInputError
from geoseg.geo.window import Window, cover
from geoseg.options import check_overlap, check_tile

Span = tuple[int, int]
"""A half-open pixel range ``[start, stop)`` along one axis."""


def axis_tile_starts(length: int, tile: int, stride: int, margin: int) -> tuple[int, ...]:
    """Start offsets of the tiles covering ``[-margin, length + margin)`` along one axis.

    Tiles step by ``stride``; the last tile is pulled back to end exactly at ``length + margin``
    so no tile reaches further past the scene than the margin. A scene shorter than one tile gets
    a single tile starting at ``-margin``.

    Examples
    --------
    >>> axis_tile_starts(1000, 256, 224, 16)
    (-16, 208, 432, 656, 760)
    >>> axis_tile_starts(100, 256, 224, 16)
    (-16,)
    """
    last = length + margin - tile
    if last <= -margin:
        return (-margin,)
    starts = list(range(-margin, last, stride))
    if starts[-1] != last:
        starts.append(last)
    return tuple(starts)


def axis_margin(length: int, tile: int, overlap: int) -> int:
    """The reflect margin along one axis: up to half the overlap, but never an extra tile.

    The fewest tiles that cover ``length`` pixels usually reach past it; the margin takes (half)
    that slack, so edge pixels are not at a tile's edge where it costs nothing.

    Examples
    --------
    >>> axis_margin(1000, 256, 32)  # 5 tiles cover 1152 px: room for the full margin
    16
    >>> axis_margin(4096, 512, 64)  # 9 tiles cover 4096 px exactly: a margin would add a 10th
    0
    """
    stride = tile - overlap
    count = len(axis_tile_starts(length, tile, stride, 0))
    slack = (count - 1) * stride + tile - length
    return min(overlap // 2, max(slack, 0) // 2)


@dataclass(frozen=True)
class TileGrid:
    """The scene-wide grid of overlapping model tiles.

    Parameters
    ----------
    height, width
        Scene size in pixels.
    tile
        Tile size in pixels; a multiple of 32.
    overlap
        Pixels shared by neighbouring tiles; blended with a smooth weight window.
    margin
        Reflect-padded pixels added around the scene so edge pixels are not at a tile's edge.
        Default (None): per axis, up to half the overlap as long as it adds no tile
        (:func:`axis_margin`), so the grid has the fewest tiles that cover the scene.
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int | None = None

    def __post_init__(self) -> None:
        check_overlap(self.overlap, check_tile(self.tile))
        if self.height < 1 or self.width < 1:
            raise InvalidInputError(
                f"scene size must be positive, got {self.height} x {self.width}"
            )

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return self.tile - self.overlap

    def _starts(self, length: int) -> tuple[int, ...]:
        margin = (
            axis_margin(length, self.tile, self.overlap) if self.margin is None else self.margin
        )
        return axis_tile_starts(length, self.tile, self.stride, margin)

    @cached_property
    def row_starts(self) -> tuple[int, ...]:
        """Start row of every tile row."""
        return self._starts(self.height)

    @cached_property
    def col_starts(self) -> tuple[int, ...]:
        """Start column of every tile column."""
        return self._starts(self.width)

    @property
    def num_tiles(self) -> int:
        """Number of tiles covering the scene."""
        return len(self.row_starts) * len(self.col_starts)

    @property
    def scene(self) -> Window:
        """The scene as a window."""
        return Window(0, 0, self.height, self.width)


@dataclass(frozen=True)
class Block:
    """One unit of work: the tiles it computes and the pixels it finishes.

    Attributes
    ----------
    row, col
        Position of the block in the block plan (used as its id).
    write
        Scene pixels the block finishes itself (classes and confidence).
    extent
        The union of the block's tiles; may reach into the reflect-padded margin.
    read
        ``extent`` clipped to the scene: the pixels to read from the raster.
    tile_rows, tile_cols
        Start offsets (scene coordinates) of the block's tiles, in global grid order.
    blend
        Pixels the block sums tile contributions over (default ``write``): ``read`` for a block
        of :func:`plan_blocks`, or ``write`` with a halo for :func:`plan_halo_blocks`.
    shares
        Windows that the tiles of neighbouring blocks cover too: the block hands its partial sums
        over them to the writer (empty for halo blocks).
    """

    row: int
    col: int
    write: Window
    extent: Window
    read: Window
    tile_rows: tuple[int, ...]
    tile_cols: tuple[int, ...]
    blend: Window | None = None
    shares: tuple[Window, ...] = ()

    @property
    def blended(self) -> Window:
        """The window the block sums probabilities over (``write`` unless set)."""
        return self.blend or self.write

    @property
    def id(self) -> str:
        """A stable name, e.g. ``r0003_c0012``."""
        return f"r{self.row:04d}_c{self.col:04d}"

    @property
    def pad(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Reflect padding ``((top, bottom), (left, right))`` that turns ``read`` into ``extent``."""
        return (
            (self.read.row - self.extent.row, self.extent.row_stop - self.read.row_stop),
            (self.read.col - self.extent.col, self.extent.col_stop - self.read.col_stop),
        )

    @property
    def num_tiles(self) -> int:
        """Number of tiles this block computes."""
        return len(self.tile_rows) * len(self.tile_cols)

    @property
    def pieces(self) -> tuple[str, ...]:
        """Ids of every output piece this block contributes to: its own, then its shares'."""
        return (self.id, *map(share_id, self.shares))

    def tiles(self, tile: int) -> Iterator[Window]:
        """The block's tiles in scene coordinates, row-major (the global blending order)."""
        for row in self.tile_rows:
            for col in self.tile_cols:
                yield Window(row, col, tile, tile)


def share_id(window: Window) -> str:
    """The stable name of a shared window, e.g. ``s000448_001344`` (its top-left pixel).

    Examples
    --------
    >>> share_id(Window(448, 1344, 64, 64))
    's000448_001344'
    """
    return f"s{window.row:06d}_{window.col:06d}"


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of a scene and, for each shared window, how many blocks contribute to it."""

    blocks: tuple[Block, ...]
    shares: Mapping[Window, int] = field(default_factory=dict)

    @property
    def num_tiles(self) -> int:
        """Tiles the plan computes (with :func:`plan_blocks`: the grid's, each once)."""
        return sum(b.num_tiles for b in self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)


def group_sizes(count: int, most: int) -> list[int]:
    """Split ``count`` tiles into runs of ``most`` (the last ones shorter), at least 2 each.

    Full-size runs keep a block's memory at what the budget allows whatever the scene's size;
    at least two tiles per block keep each block's own window non-empty (a single tile can be
    covered entirely by its neighbours' overlaps).

    Examples
    --------
    >>> group_sizes(9, 4), group_sizes(8, 4), group_sizes(3, 2), group_sizes(1, 4)
    ([4, 3, 2], [4, 4], [3], [1])
    """
    most = max(most, 2)
    if count <= most:
        return [count]
    sizes = [most] * (count // most)
    rest = count % most
    if rest == 1 and most > 2:
        sizes[-1] -= 1
        sizes.append(2)
    elif rest == 1:
        sizes[-1] += 1
    elif rest:
        sizes.append(rest)
    return sizes


def split_starts(starts: Sequence[int], most: int) -> list[tuple[int, ...]]:
    """Consecutive runs of tile starts, as :func:`group_sizes` cuts them."""
    runs, first = [], 0
    for size in group_sizes(len(starts), most):
        runs.append(tuple(starts[first : first + size]))
        first += size
    return runs


def axis_segments(spans: Sequence[Span]) -> list[tuple[Span, tuple[int, ...]]]:
    """Cut an axis at every span's ends; each piece with the indices of the spans covering it.

    Examples
    --------
    >>> axis_segments([(0, 480), (416, 700)])
    [((0, 416), (0,)), ((416, 480), (0, 1)), ((480, 700), (1,))]
    """
    cuts = sorted({p for span in spans for p in span})
    return [
        ((lo, hi), tuple(k for k, (a, b) in enumerate(spans) if a <= lo and hi <= b))
        for lo, hi in itertools.pairwise(cuts)
    ]


def tiles_per_block(block_size: int, tile: int, overlap: int) -> int:
    """Tiles along a side of a block of about ``block_size`` pixels (at least one).

    Examples
    --------
    >>> tiles_per_block(2048, 512, 64)  # 4 tiles span 4 * 448 + 64 = 1856 px
    4
    """
    if block_size < 1:
        raise InvalidInputError(
            f"block size {block_size} is invalid; set `block_size` to a positive number of pixels",
            option="block_size",
        )
    return max(1, (block_size - overlap) // (tile - overlap))


def plan_blocks(grid: TileGrid, block_size: int) -> BlockPlan:
    """Group the grid's tiles into blocks of about ``block_size`` pixels; each tile in one block.

    Returns every block with the window it finishes and the windows it shares, and for each
    shared window the number of blocks adding to it. Any block size gives the same output;
    larger blocks hold more memory (see :func:`block_size_for_memory`) and share fewer windows.
    """
    most = tiles_per_block(block_size, grid.tile, grid.overlap)
    row_runs = split_starts(grid.row_starts, most)
    col_runs = split_starts(grid.col_starts, most)
    row_spans = [(max(r[0], 0), min(r[-1] + grid.tile, grid.height)) for r in row_runs]
    col_spans = [(max(c[0], 0), min(c[-1] + grid.tile, grid.width)) for c in col_runs]
    own: dict[tuple[int, int], Window] = {}
    shared: dict[Window, tuple[tuple[int, int], ...]] = {}
    for (r0, r1), row_owners in axis_segments(row_spans):
        for (c0, c1), col_owners in axis_segments(col_spans):
            window = Window(r0, c0, r1 - r0, c1 - c0)
            owners = tuple((i, j) for i in row_owners for j in col_owners)
            if len(owners) == 1:
                own[owners[0]] = window
            else:
                shared[window] = owners
    blocks = []
    for i, rows in enumerate(row_runs):
        for j, cols in enumerate(col_runs):
            extent = Window(
                rows[0], cols[0], rows[-1] + grid.tile - rows[0], cols[-1] + grid.tile - cols[0]
            )
            read = extent.intersection(grid.scene)
            assert read is not None and (i, j) in own  # see group_sizes
            shares = tuple(w for w, owners in shared.items() if (i, j) in owners)
            blocks.append(Block(i, j, own[(i, j)], extent, read, rows, cols, read, shares))
    return BlockPlan(tuple(blocks), {w: len(owners) for w, owners in shared.items()})


def starts_overlapping(starts: tuple[int, ...], tile: int, lo: int, hi: int) -> tuple[int, ...]:
    """The tile starts whose tiles ``[s, s + tile)`` overlap ``[lo, hi)``."""
    return tuple(s for s in starts if s < hi and s + tile > lo)


def make_halo_block(grid: TileGrid, row: int, col: int, write: Window, halo: int) -> Block:
    """The block that finishes ``write`` by itself, blending ``write`` grown by ``halo`` pixels.

    It computes every tile that overlaps the blended window, including tiles its neighbours
    compute too.
    """
    blend = write.buffer(halo).clip(grid.scene)
    rows = starts_overlapping(grid.row_starts, grid.tile, blend.row, blend.row_stop)
    cols = starts_overlapping(grid.col_starts, grid.tile, blend.col, blend.col_stop)
    extent = Window(
        rows[0], cols[0], rows[-1] + grid.tile - rows[0], cols[-1] + grid.tile - cols[0]
    )
    read = extent.intersection(grid.scene)
    assert read is not None  # the extent always covers the (non-empty) write window
    return Block(row, col, write, extent, read, rows, cols, blend)


def plan_halo_blocks(grid: TileGrid, block_size: int, halo: int) -> BlockPlan:
    """Square pixel blocks of ``block_size`` that each blend a ``halo`` around their window.

    For a neighbourhood step (a CRF) that needs finished probabilities ``halo`` pixels around
    each pixel it refines. Tiles near block edges are computed by every block they reach.
    """
    tiles_per_block(block_size, grid.tile, grid.overlap)  # validates
    rows = {w.row: i for i, w in enumerate(cover(grid.scene, (block_size, grid.width)))}
    cols = {w.col: j for j, w in enumerate(cover(grid.scene, (grid.height, block_size)))}
    return BlockPlan(
        tuple(
            make_halo_block(grid, rows[w.row], cols[w.col], w, halo)
            for w in cover(grid.scene, block_size)
        )
    )


def fastest_tile(height: int, width: int, tile: int, overlap: int, largest: int) -> int:
    """The tile size, from ``tile`` to ``largest`` in steps of 32, that pushes the fewest pixels
    through the network to cover a ``height`` x ``width`` scene with ``overlap`` (ties: smaller).

    A fully convolutional network accepts any multiple of 32; a tile that fits the scene's size
    wastes less of it on overlaps and on the last row and column of tiles.

    Examples
    --------
    >>> fastest_tile(4096, 4096, 512, 64, 1024)  # 6 x 6 tiles of 736 px instead of 9 x 9 of 512
    736
    >>> fastest_tile(300, 300, 512, 64, 1024)  # a small scene keeps the model's tile
    512
    """
    step = TILE_MULTIPLE

    def pixels(size: int) -> int:
        rows = len(axis_tile_starts(height, size, size - overlap, 0))
        cols = len(axis_tile_starts(width, size, size - overlap, 0))
        return rows * cols * size * size

    return min(range(tile, max(largest, tile) + 1, step), key=lambda size: (pixels(size), size))


def auto_tile(
    height: int, width: int, model_tile: int, overlap: int, batch_size: int
) -> tuple[int, int]:
    """The tile and batch size for a prediction with the tile left to geoseg.

    :func:`fastest_tile` between the model's tile and twice it (or less, so that one call never
    holds more pixels than ``batch_size`` tiles of the model's size); the batch shrinks so each
    call holds about as many pixels as ``batch_size`` model tiles (the network's memory).

    Examples
    --------
    >>> auto_tile(4096, 4096, 512, 64, batch_size=4)
    (736, 2)
    >>> auto_tile(300, 300, 512, 64, batch_size=4)
    (512, 4)
    """
    growth = min(2.0, math.sqrt(batch_size))
    largest = int(model_tile * growth) // TILE_MULTIPLE * TILE_MULTIPLE
    tile = fastest_tile(height, width, model_tile, overlap, largest)
    batch = max(1, round(batch_size * model_tile**2 / tile**2))
    return tile, batch


def block_size_for_memory(
    budget_mb: int, tile: int, overlap: int, bands: int, classes: int, in_flight: int = 2
) -> int:
    """The largest block (in pixels, a whole number of tiles) whose buffers fit ``budget_mb``.

    Per pixel a block holds its input as read and as float32, 64-bit sums for each class and the
    weight, and uint8 outputs; ``in_flight`` blocks may be held at once (one computing, one
    read ahead). The network's own memory depends on the tile and batch, not on the block.

    Examples
    --------
    >>> block_size_for_memory(512, 512, 64, bands=3, classes=2)  # 5 tiles a side
    2304
    >>> block_size_for_memory(512, 512, 64, bands=3, classes=2) == block_size_for_memory(
    ...     512, 512, 64, bands=3, classes=2)  # never the scene's size
    True
    """
    per_pixel = 8 * bands + 8 * (classes + 1) + 2
    side = math.isqrt(budget_mb * 2**20 // (in_flight * per_pixel))
    stride = tile - overlap
    return max(2, (side - overlap) // stride) * stride + overlap
