import numpy as np
import pytest

from geoseg.conventions import NODATA_CLASS
from geoseg.engine.blend import BlockAccumulator, axis_weights, tile_weights
from geoseg.geo.window import Window


def test_weights_positive_smooth_and_flat_in_the_middle():
    w = tile_weights(64, 16)
    assert w.shape == (64, 64)
    assert (w > 0).all()
    assert np.all(w[16:48, 16:48] == 1.0)
    a = axis_weights(64, 16)
    assert np.all(np.diff(a[:16]) > 0)
    np.testing.assert_array_equal(a, a[::-1])  # symmetric


def test_overlapping_ramps_sum_to_one():
    # two tiles overlapping by exactly the ramp: the weights are a partition of unity
    a = axis_weights(64, 16)
    np.testing.assert_allclose(a[-16:] + a[:16], 1.0, atol=1e-6)


def test_accumulator_weighted_mean_and_nodata():
    acc = BlockAccumulator(Window(0, 0, 4, 6), num_classes=2)
    p1 = np.stack([np.full((4, 4), 0.8), np.full((4, 4), 0.2)]).astype(np.float32)
    p2 = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.8)]).astype(np.float32)
    w = np.ones((4, 4), np.float32)
    acc.add(Window(0, 0, 4, 4), p1, w)
    w2 = w.copy()
    w2[:, 2:] = 0  # the right half of tile 2 is nodata
    acc.add(Window(0, 2, 4, 4), p2, w2 * 3)
    probs = acc.probabilities()
    np.testing.assert_allclose(probs[0, :, :2], 0.8, atol=2e-5)  # 1/65536 steps
    np.testing.assert_allclose(probs[0, :, 2:4], (0.8 + 3 * 0.2) / 4, atol=2e-5)
    classes, conf = acc.classes_and_confidence()
    assert (classes[:, :2] == 0).all() and (classes[:, 2:4] == 1).all()
    assert (classes[:, 4:] == NODATA_CLASS).all() and (conf[:, 4:] == NODATA_CLASS).all()
    assert conf[0, 0] == 80


def test_tiles_outside_the_window_are_ignored():
    acc = BlockAccumulator(Window(10, 10, 4, 4), num_classes=1)
    acc.add(Window(0, 0, 4, 4), np.ones((1, 4, 4), np.float32), np.ones((4, 4), np.float32))
    assert not acc.weights.any()


def test_integer_sums_do_not_depend_on_order_or_grouping(rng):
    """Blocks add tiles in different groupings (own sums, then shared windows merged in any
    order): the sums must be exactly equal, which float32 sums are not."""
    tiles = [Window(r, c, 8, 8) for r in (0, 5, 9) for c in (0, 6)]
    probs = [rng.random((3, 8, 8)).astype(np.float32) for _ in tiles]
    weights = [tile_weights(8, 3) * (rng.random((8, 8)) > 0.1) for _ in tiles]
    window = Window(0, 0, 17, 14)
    one = BlockAccumulator(window, 3)
    for t, p, w in zip(tiles, probs, weights, strict=True):
        one.add(t, p, w)
    groups = [BlockAccumulator(window, 3) for _ in range(3)]
    for i in (5, 2, 0, 4, 1, 3):
        groups[i % 3].add(tiles[i], probs[i], weights[i])
    merged = BlockAccumulator(window, 3)
    for g in reversed(groups):
        merged.merge(g)
    np.testing.assert_array_equal(merged.scores, one.scores)
    np.testing.assert_array_equal(merged.weights, one.weights)


def device_and_host_sums(rng, device):
    import torch

    from geoseg.engine.blend import fixed_point_weights
    from geoseg.engine.device_blend import DeviceAccumulator

    window = Window(3, 2, 20, 17)
    host, dev = BlockAccumulator(window, 4), DeviceAccumulator(window, 4, device)
    for r, c in [(0, 0), (5, 7), (11, 3), (14, 12)]:
        tile = Window(r, c, 10, 10)
        probs = rng.dirichlet(np.ones(4), size=(10, 10)).transpose(2, 0, 1).astype(np.float32)
        probs[:, 0, 0] = [0.5, 0.5, 0.0, 0.0]  # a tie: both must pick the first class
        weight = fixed_point_weights(tile_weights(10, 3) * (rng.random((10, 10)) > 0.2))
        host.add(tile, probs, weight)
        dev.add(tile, torch.from_numpy(probs).to(device), torch.from_numpy(weight).to(device))
    return host, dev


def test_device_blending_is_bit_identical_to_numpy(rng):
    """The block is blended in torch (on the predictor's device); the writer finishes shared
    windows in NumPy: both must give the same bytes."""
    host, dev = device_and_host_sums(rng, "cpu")
    part = Window(5, 4, 9, 11)
    back = dev.to_host(part)
    np.testing.assert_array_equal(back.scores, host.crop(part).scores)
    np.testing.assert_array_equal(back.weights, host.crop(part).weights)
    for a, b in zip(
        dev.classes_and_confidence(part), host.crop(part).classes_and_confidence(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert (host.weights == 0).any() and (host.weights > 0).any()  # nodata and data both seen


@pytest.mark.gpu
def test_cuda_blending_is_bit_identical_to_numpy(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    host, dev = device_and_host_sums(rng, "cuda")
    for a, b in zip(
        dev.classes_and_confidence(host.window), host.classes_and_confidence(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(dev.to_host(host.window).scores, host.scores)


def test_tta_on_the_device_equals_the_numpy_mean(rng):
    from geoseg.models.predictor import D4Predictor
    from geoseg.testing import ContextPredictor

    inner = ContextPredictor(3, 4)
    batch = rng.random((2, 3, 32, 32)).astype(np.float32)
    expected = np.zeros((2, 4, 32, 32), np.float32)
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(np.flip(batch, -1) if flip else batch, k, axes=(-2, -1))
            y = np.rot90(inner(np.ascontiguousarray(x)), -k, axes=(-2, -1))
            expected += np.flip(y, -1) if flip else y
    np.testing.assert_allclose(D4Predictor(inner).tensor(batch).numpy(), expected / 8, atol=1e-6)
