import itertools

import numpy as np
import pytest

from geoseg.errors import InvalidInputError
from geoseg.geo.tiling import TileGrid, axis_tile_starts, computed_pixels, plan_blocks
from geoseg.geo.window import Window


def test_window_intersection_and_relative():
    a, b = Window(0, 0, 10, 10), Window(5, -3, 10, 10)
    assert a.intersection(b) == Window(5, 0, 5, 7)
    assert a.intersection(Window(10, 0, 5, 5)) is None
    assert Window(7, 8, 2, 2).relative_to(Window(5, 5, 10, 10)) == Window(2, 3, 2, 2)


@pytest.mark.parametrize("length", [1, 31, 64, 100, 257, 1000, 4099])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 16), (256, 32)])
def test_tiles_cover_scene_and_margin(length, tile, overlap):
    margin = overlap // 2
    starts = axis_tile_starts(length, tile, tile - overlap, margin)
    assert starts[0] == -margin
    assert list(starts) == sorted(set(starts))
    covered = set()
    for s in starts:
        covered.update(range(s, s + tile))
    assert set(range(length)) <= covered
    if length + 2 * margin >= tile:
        assert starts[-1] + tile == length + margin  # never past the margin
    steps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0 < s <= tile - overlap for s in steps)


@pytest.mark.parametrize("block_size", [17, 100, 448, 5000])
def test_blocks_partition_scene_and_tiles_cover_writes(block_size):
    grid = TileGrid(1000, 700, tile=256, overlap=32)
    blocks = plan_blocks(grid, block_size)
    owners = np.zeros((1000, 700), dtype=np.int32)
    for b in blocks:
        owners[b.write.slices()] += 1
        assert b.extent.intersection(b.write) == b.write
        assert b.read == b.extent.intersection(grid.scene)
        (top, bottom), (left, right) = b.pad
        assert min(top, bottom, left, right) >= 0
        assert b.read.height + top + bottom == b.extent.height
    assert (owners == 1).all()  # every pixel written by exactly one block


def test_larger_blocks_recompute_fewer_tiles():
    grid = TileGrid(4000, 4000, tile=256, overlap=32)
    small = computed_pixels(plan_blocks(grid, 448), 256)
    large = computed_pixels(plan_blocks(grid, 1792), 256)
    whole = grid.num_tiles * 256 * 256
    assert whole <= large < small


@pytest.mark.parametrize(("tile", "overlap"), [(100, 0), (16, 0), (64, 32), (64, -1)])
def test_bad_tiling_is_refused(tile, overlap):
    with pytest.raises(InvalidInputError):
        TileGrid(100, 100, tile, overlap)
