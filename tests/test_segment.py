"""The tiling engine against oracles: identity reconstruction, block-size invariance, whole image."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from geoseg.conventions import NODATA_CLASS
from geoseg.engine import block
from geoseg.engine.block import BlockAccumulator, SceneJob, prepare_block, tiles_to_compute
from geoseg.engine.executors import SequentialExecutor
from geoseg.engine.scene import OutputPaths, segment_scene
from geoseg.geo.tiling import TileGrid, plan_blocks
from geoseg.io.class_raster import Legend
from geoseg.io.raster import SceneReader
from geoseg.models.contract import default_colors
from geoseg.options import InputOptions
from geoseg.testing import (
    ContextPredictor,
    IdentityPredictor,
    PixelwisePredictor,
    coordinate_image,
    write_test_scene,
)


def blend_scene(path, predictor, tile, overlap, block_size, nodata=None):
    """Blended probabilities of a whole scene: the sums of every block added (test-only assembly).

    Each tile belongs to one block, so adding every block's sums over its read window gives each
    pixel's sum over all its tiles exactly once.
    """
    job = SceneJob(
        str(path), lambda: predictor, None, tile, overlap, 3, InputOptions(nodata=nodata)
    )
    with SceneReader(path, InputOptions(nodata=nodata)) as reader:
        grid = reader.grid
        total = BlockAccumulator(grid.window, predictor.num_classes)
        plan = plan_blocks(TileGrid(grid.height, grid.width, tile, overlap), block_size)
        for block in plan.blocks:
            pixels, valid = reader.read(block.read)
            x, v = prepare_block(pixels, valid, block, None)
            acc = BlockAccumulator(block.blended, predictor.num_classes)
            for t in tiles_to_compute(block, v, tile):
                s = t.relative_to(block.extent).slices()
                acc.add(t, predictor(x[(slice(None), *s)][None])[0], job.weights * v[s])
            total.crop(block.blended).merge(acc)
    return total.probabilities()


@pytest.mark.parametrize(("height", "width"), [(150, 230), (40, 50), (97, 300)])
@pytest.mark.parametrize("block_size", [48, 1000])
def test_identity_predictor_reconstructs_input_exactly(tmp_path, height, width, block_size):
    data = coordinate_image(height, width, "uint16")
    path = write_test_scene(tmp_path / "coords.tif", data)
    probs = blend_scene(path, IdentityPredictor(3), tile=64, overlap=16, block_size=block_size)
    assert np.abs(probs - data).max() < 1e-2  # float32 weighted mean of identical values
    np.testing.assert_array_equal(np.rint(probs).astype(np.uint16), data)


def read_band(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize("predictor", [ContextPredictor(3, 4), PixelwisePredictor(3, 4)])
def test_block_size_does_not_change_output(tmp_path, smooth_scene, predictor):
    path, _ = smooth_scene()
    job = SceneJob(path, functools.partial(_same, predictor), None, 64, 16, 4)
    outputs = []
    for block_size in (40, 96, 10_000):
        paths = OutputPaths(
            classes=tmp_path / f"b{block_size}.tif", confidence=tmp_path / f"c{block_size}.tif"
        )
        segment_scene(
            job, paths, Legend(["a", "b", "c", "d"], default_colors(4)), block_size=block_size
        )
        outputs.append((paths.classes.read_bytes(), read_band(paths.confidence)))
    assert outputs[0][0] == outputs[1][0] == outputs[2][0]  # byte-identical class COG
    np.testing.assert_array_equal(outputs[0][1], outputs[2][1])


def _same(predictor):
    return predictor


def whole_image_classes(data, predictor):
    return np.argmax(predictor(data.astype(np.float32)[None])[0], axis=0)


def tiled_classes(path, predictor, out):
    job = SceneJob(path, functools.partial(_same, predictor), None, 64, 16, 4)
    paths = OutputPaths(classes=out)
    segment_scene(job, paths, Legend(["a", "b", "c", "d"], default_colors(4)), block_size=100)
    return read_band(paths.classes)


def test_tiled_agrees_with_whole_image(tmp_path, smooth_scene, monkeypatch):
    """Near the whole-image answer, and measurably nearer than with a flat weight window.

    A flat window gives a tile's border pixels (where the model lacked context) full weight:
    on this scene it disagrees with the whole image about 2.5 times as often.
    """
    path, data = smooth_scene(height=300, width=420)
    predictor = ContextPredictor(3, 4, radius=4)
    reference = whole_image_classes(data, predictor)
    smooth = np.mean(tiled_classes(path, predictor, tmp_path / "smooth.tif") != reference)
    monkeypatch.setattr(block, "tile_weights", lambda tile, _: np.ones((tile, tile), np.float32))
    block.shared_tile_weights.cache_clear()
    try:
        flat = np.mean(tiled_classes(path, predictor, tmp_path / "flat.tif") != reference)
    finally:
        block.shared_tile_weights.cache_clear()
    assert smooth <= 5e-4, smooth
    assert flat >= 2 * smooth > 0, (flat, smooth)


def test_nodata_gets_nodata_and_never_reaches_the_model(tmp_path, rng):
    data = rng.integers(1, 255, size=(3, 120, 160)).astype(np.uint8)
    data[:, :, :40] = 0  # a zero collar
    data[:, 50:, 90:] = 0  # the bottom-right tile is all nodata
    path = write_test_scene(tmp_path / "collar.tif", data, nodata=0)
    seen = []

    class Spy(PixelwisePredictor):
        def __call__(self, batch):
            seen.append(batch.copy())
            return super().__call__(batch)

    job = SceneJob(path, functools.partial(_same, Spy(3, 3)), None, 64, 16, 2)
    paths = OutputPaths(classes=tmp_path / "classes.tif", confidence=tmp_path / "conf.tif")
    result = segment_scene(job, paths, Legend(["a", "b", "c"], default_colors(3)), block_size=64)
    classes, conf = read_band(paths.classes), read_band(paths.confidence)
    invalid = np.all(data == 0, axis=0)
    assert (classes[invalid] == NODATA_CLASS).all() and (conf[invalid] == NODATA_CLASS).all()
    assert (classes[~invalid] < 3).all()
    assert result.class_pixels.sum() == (~invalid).sum()
    assert result.tiles < TileGrid(120, 160, 64, 16).num_tiles  # all-nodata tiles skipped
    assert all(np.any(b != 0) for b in seen)


def test_block_size_does_not_change_a_real_smp_models_output(tmp_path, smooth_scene):
    from geoseg.engine.block import ModelSpec
    from geoseg.models.modelfile import file_sha256, read_contract
    from geoseg.testing import create_test_model

    path, _ = smooth_scene(height=260, width=330)
    model = create_test_model(tmp_path / "m.safetensors", "unet", "resnet18", 3, ["a", "b", "c"],
                         tile_size=128)  # fmt: skip
    contract = read_contract(model)
    spec = ModelSpec(str(model), file_sha256(model), "cpu")
    job = SceneJob(path, spec, contract.normalization, 128, 32, 3)
    outputs = []
    for block_size in (96, 10_000):
        paths = OutputPaths(classes=tmp_path / f"b{block_size}.tif")
        segment_scene(job, paths, Legend(contract.classes, contract.colors), block_size=block_size)
        outputs.append(paths.classes.read_bytes())
    assert outputs[0] == outputs[1]


class TileRecorder(IdentityPredictor):
    """Records where each tile it is given sits: its centre pixel's (row, col) bands."""

    def __init__(self) -> None:
        super().__init__(3)
        self.centres: list[tuple[int, int]] = []

    def __call__(self, batch):
        middle = batch.shape[-1] // 2
        self.centres += [(int(t[0, middle, middle]), int(t[1, middle, middle])) for t in batch]
        return super().__call__(batch)


@pytest.mark.parametrize("block_size", [40, 100, 150, 10_000])
def test_every_tile_of_the_grid_is_inferred_exactly_once(tmp_path, block_size):
    height, width = 300, 420
    path = write_test_scene(tmp_path / "coords.tif", coordinate_image(height, width, "uint16"))
    recorder = TileRecorder()
    job = SceneJob(path, functools.partial(_same, recorder), None, 64, 16, 3)
    paths = OutputPaths(classes=tmp_path / "classes.tif")
    result = segment_scene(
        job, paths, Legend(["a", "b", "c"], default_colors(3)), block_size=block_size
    )
    grid = TileGrid(height, width, 64, 16)
    expected = sorted((r + 32, c + 32) for r in grid.row_starts for c in grid.col_starts)
    assert len(recorder.centres) == grid.num_tiles == result.tiles == result.planned_tiles
    assert len(set(recorder.centres)) == len(recorder.centres)  # no tile twice
    assert sorted(recorder.centres) == expected


class ReversedExecutor(SequentialExecutor):
    """Hands block results over last first, as a parallel executor may."""

    def map_blocks(self, job, blocks, on_tiles=None):
        yield from reversed(list(super().map_blocks(job, blocks, on_tiles)))


def test_arrival_order_of_blocks_does_not_change_a_byte(tmp_path, smooth_scene):
    path, _ = smooth_scene(height=260, width=330)
    job = SceneJob(path, functools.partial(_same, ContextPredictor(3, 4)), None, 64, 16, 4)
    legend = Legend(["a", "b", "c", "d"], default_colors(4))
    outputs = []
    for name, executor in (("seq", SequentialExecutor()), ("rev", ReversedExecutor())):
        paths = OutputPaths(classes=tmp_path / f"{name}.tif", confidence=tmp_path / f"{name}_c.tif")
        segment_scene(job, paths, legend, block_size=100, executor=executor)
        outputs.append((paths.classes.read_bytes(), paths.confidence.read_bytes()))
    assert outputs[0] == outputs[1]


def test_read_threads_decode_the_same_pixels(tmp_path, smooth_scene):
    from geoseg.geo.window import Window

    path, _ = smooth_scene(height=260, width=330)
    reads = []
    for threads in (1, 4):
        with SceneReader(path, InputOptions(read_threads=threads)) as reader:
            reads.append(reader.read(Window(3, 5, 250, 300)))
            assert reader._ds.options.get("NUM_THREADS") == (None if threads == 1 else "4")
    np.testing.assert_array_equal(reads[0][0], reads[1][0])
    np.testing.assert_array_equal(reads[0][1], reads[1][1])
