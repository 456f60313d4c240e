"""Pure pixel geometry: the scene-wide tile grid and the block plan.

Nothing here opens a file. Coordinates are pixel rows and columns of the scene; a window may
reach outside the scene (negative offsets, or past the last row), which is how the reflect-padded
margin around the scene is described.

Why a *scene-wide* tile grid: every tile sits at a fixed position in the scene, whatever the block
size. A block computes exactly the tiles that overlap its write window and blends them in the
tiles' global order, so each output pixel is the same weighted sum of the same tiles in the same
order for every block size. That makes the class raster byte-identical across block sizes and
across executors (one process or many Dask workers).

Examples
--------
>>> grid = TileGrid(height=1000, width=700, tile=256, overlap=32)
>>> grid.row_starts[:3], grid.row_starts[-1]
((-16, 208, 432), 760)
>>> blocks = plan_blocks(grid, block_size=448)
>>> [b.write for b in blocks][:2]
[Window(row=0, col=0, height=448, width=448), Window(row=0, col=448, height=448, width=252)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from geoseg.errors import InvalidInputError
from geoseg.geo.window import Window, cover
from geoseg.options import check_overlap, check_tile


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
        Defaults to half the overlap.
    """

    height: int
    width: int
    tile: int
    overlap: int
    margin: int = -1

    def __post_init__(self) -> None:
        check_overlap(self.overlap, check_tile(self.tile))
        if self.height < 1 or self.width < 1:
            raise InvalidInputError(
                f"scene size must be positive, got {self.height} x {self.width}"
            )
        if self.margin < 0:
            object.__setattr__(self, "margin", self.overlap // 2)

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return self.tile - self.overlap

    @cached_property
    def row_starts(self) -> tuple[int, ...]:
        """Start row of every tile row."""
        return axis_tile_starts(self.height, self.tile, self.stride, self.margin)

    @cached_property
    def col_starts(self) -> tuple[int, ...]:
        """Start column of every tile column."""
        return axis_tile_starts(self.width, self.tile, self.stride, self.margin)

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
    """One unit of work: the pixels it writes and the tiles it must compute for them.

    Attributes
    ----------
    row, col
        Position of the block in the block plan (used as its id).
    write
        Scene pixels this block owns in the output.
    extent
        The union of the block's tiles; may reach into the reflect-padded margin.
    read
        ``extent`` clipped to the scene: the pixels to read from the raster.
    tile_rows, tile_cols
        Start offsets (scene coordinates) of the block's tiles, in global grid order.
    blend
        Pixels whose blended probabilities the block needs: ``write``, or ``write`` with a halo
        (clipped to the scene) for a neighbourhood step such as a CRF.
    """

    row: int
    col: int
    write: Window
    extent: Window
    read: Window
    tile_rows: tuple[int, ...]
    tile_cols: tuple[int, ...]
    blend: Window | None = None

    @property
    def blended(self) -> Window:
        """The window the block blends probabilities over (``write`` unless it has a halo)."""
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

    def tiles(self, tile: int) -> Iterator[Window]:
        """The block's tiles in scene coordinates, row-major (the global blending order)."""
        for row in self.tile_rows:
            for col in self.tile_cols:
                yield Window(row, col, tile, tile)


def starts_overlapping(starts: tuple[int, ...], tile: int, lo: int, hi: int) -> tuple[int, ...]:
    """The tile starts whose tiles ``[s, s + tile)`` overlap ``[lo, hi)``."""
    return tuple(s for s in starts if s < hi and s + tile > lo)


def make_block(grid: TileGrid, row: int, col: int, write: Window, halo: int = 0) -> Block:
    """The block that writes ``write``: its tiles, their extent, and what to read.

    With a ``halo``, the block blends (and so computes the tiles of) ``write`` grown by ``halo``
    pixels, clipped to the scene.
    """
    blend = write.buffer(halo).clip(grid.scene) if halo else write
    rows = starts_overlapping(grid.row_starts, grid.tile, blend.row, blend.row_stop)
    cols = starts_overlapping(grid.col_starts, grid.tile, blend.col, blend.col_stop)
    extent = Window(
        rows[0], cols[0], rows[-1] + grid.tile - rows[0], cols[-1] + grid.tile - cols[0]
    )
    read = extent.intersection(grid.scene)
    assert read is not None  # the extent always covers the (non-empty) write window
    return Block(row, col, write, extent, read, rows, cols, blend if halo else None)


def default_block_size(tile: int, overlap: int, scene: int | None = None, strides: int = 8) -> int:
    """At most ``strides`` tile strides, balanced so the scene splits into near-equal blocks.

    Blocks of 8 strides recompute few boundary tiles and need a few hundred MB of RAM; balancing
    avoids a thin last block (which would recompute a whole row of tiles for a few pixels).

    Examples
    --------
    >>> default_block_size(512, 64), default_block_size(512, 64, scene=4096)
    (3584, 2048)
    """
    largest = (tile - overlap) * strides
    if scene is None or scene <= largest:
        return largest if scene is None else scene
    pieces = -(-scene // largest)
    return -(-scene // pieces)


def plan_blocks(grid: TileGrid, block_size: int, halo: int = 0) -> list[Block]:
    """Cut the scene into square blocks of ``block_size`` pixels (smaller at the right and bottom).

    Any block size gives the same output; larger blocks recompute fewer boundary tiles but hold
    more memory (about ``block_size**2 * (classes + 1) * 4`` bytes for the blend accumulator).
    ``halo`` grows each block's blended window (see :func:`make_block`).
    """
    if block_size < 1:
        raise InvalidInputError(
            f"block size {block_size} is invalid; set `block_size` to a positive number of pixels",
            option="block_size",
        )
    rows = {w.row: i for i, w in enumerate(cover(grid.scene, (block_size, grid.width)))}
    cols = {w.col: j for j, w in enumerate(cover(grid.scene, (grid.height, block_size)))}
    return [
        make_block(grid, rows[w.row], cols[w.col], w, halo) for w in cover(grid.scene, block_size)
    ]


def computed_pixels(blocks: list[Block], tile: int) -> int:
    """Pixels pushed through the model for a block plan (for the overlap-redundancy figure)."""
    return sum(b.num_tiles for b in blocks) * tile * tile
