import itertools

import numpy as np
import pytest

from geoseg.errors import InvalidInputError
from geoseg.geo.tiling import (
    TileGrid,
    axis_tile_starts,
    block_size_for_memory,
    plan_blocks,
    plan_halo_blocks,
    share_id,
)
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


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "fewest"),
    [
        (4096, 512, 64, 9),
        (8192, 512, 64, 19),
        (1000, 256, 32, 5),
        (100, 256, 32, 1),
        (960, 64, 0, 15),
    ],
)
def test_default_grid_has_the_fewest_tiles_that_cover_the_scene(length, tile, overlap, fewest):
    grid = TileGrid(length, length, tile, overlap)
    assert (
        len(grid.row_starts)
        == fewest
        == len(TileGrid(length, 9, tile, overlap, margin=0).row_starts)
    )
    starts = grid.row_starts
    assert starts[0] <= 0 and starts[-1] + tile >= length  # still covers the scene
    assert -starts[0] <= overlap // 2
    if length >= tile:
        assert starts[-1] + tile - length <= overlap // 2


def tile_cover(grid, blocks):
    """How many times each scene pixel is covered by the blocks' tiles, per block."""
    per_block = []
    for b in blocks:
        cover = np.zeros((grid.height, grid.width), dtype=np.int32)
        for t in b.tiles(grid.tile):
            inside = t.intersection(grid.scene)
            cover[inside.slices()] += 1
        per_block.append(cover > 0)
    return per_block


@pytest.mark.parametrize("block_size", [17, 100, 448, 700, 5000])
@pytest.mark.parametrize(("height", "width"), [(1000, 700), (130, 1900), (64, 64)])
def test_plan_computes_each_tile_once_and_finishes_each_pixel_once(block_size, height, width):
    grid = (
        TileGrid(height, width, tile=256, overlap=32)
        if min(height, width) > 64
        else (TileGrid(height, width, tile=32, overlap=8))
    )
    plan = plan_blocks(grid, block_size)
    tiles = [t for b in plan.blocks for t in b.tiles(grid.tile)]
    assert len(tiles) == len(set(tiles)) == grid.num_tiles == plan.num_tiles
    covered_by = tile_cover(grid, plan.blocks)
    finished = np.zeros((height, width), dtype=np.int32)
    for b, covered in zip(plan.blocks, covered_by, strict=True):
        finished[b.write.slices()] += 1
        others = [c for other, c in zip(plan.blocks, covered_by, strict=True) if other is not b]
        assert covered[b.write.slices()].all()
        assert not any(c[b.write.slices()].any() for c in others)  # nobody else adds here
        assert b.read == b.extent.intersection(grid.scene) and b.blended == b.read
        (top, bottom), (left, right) = b.pad
        assert min(top, bottom, left, right) >= 0
    pieces = [p for b in plan.blocks for p in b.pieces]
    for window, count in plan.shares.items():
        finished[window.slices()] += 1
        adders = [c for c in covered_by if c[window.slices()].any()]
        assert len(adders) == count >= 2 and all(c[window.slices()].all() for c in adders)
        assert pieces.count(share_id(window)) == count
    assert (finished == 1).all()  # every pixel finished by exactly one piece


def test_halo_blocks_partition_the_scene_and_blend_their_halo():
    grid = TileGrid(1000, 700, tile=256, overlap=32)
    plan = plan_halo_blocks(grid, 300, halo=20)
    owners = np.zeros((1000, 700), dtype=np.int32)
    for b in plan.blocks:
        owners[b.write.slices()] += 1
        assert b.blended == b.write.buffer(20).clip(grid.scene) and not b.shares
        assert b.extent.intersection(b.blended) == b.blended
    assert (owners == 1).all() and not plan.shares
    assert plan.num_tiles > grid.num_tiles  # halo tiles are computed twice


def test_default_block_size_comes_from_the_memory_budget_not_the_scene():
    small = block_size_for_memory(256, 512, 64, bands=3, classes=2)
    large = block_size_for_memory(1024, 512, 64, bands=3, classes=2)
    assert small < large and (small - 64) % 448 == 0 and (large - 64) % 448 == 0
    assert block_size_for_memory(256, 512, 64, bands=12, classes=10) < small
    assert block_size_for_memory(1, 512, 64, bands=3, classes=2) == 2 * 448 + 64  # two tiles


@pytest.mark.parametrize(("tile", "overlap"), [(100, 0), (16, 0), (64, 32), (64, -1)])
def test_bad_tiling_is_refused(tile, overlap):
    with pytest.raises(InvalidInputError):
        TileGrid(100, 100, tile, overlap)
