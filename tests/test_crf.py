"""The local mean-field CRF (geoseg.models.crf): locality, effect, normalisation, NaN, params."""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import pytest
import torch

from geoseg.errors import GeosegError
from geoseg.models import crf as engine_crf
from geoseg.models.crf import crf_refine, crf_refine_tensor
from geoseg.options import CrfParams
from geoseg.training import metrics

TOL = 1e-5


def random_inputs(rng: np.random.Generator, k: int = 3, h: int = 96, w: int = 96, c: int = 3):
    """Uncertain probabilities (softmax of noise) and an image of noisy 8 px blocks."""
    logits = rng.normal(scale=1.0, size=(k, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    coarse = rng.normal(size=(c, h // 8 + 1, w // 8 + 1))
    image = np.kron(coarse, np.ones((8, 8)))[:, :h, :w] + rng.normal(scale=0.1, size=(c, h, w))
    return probs.astype(np.float32), image.astype(np.float32)


def refine_window(probs, image, params, window, halo):
    """Refine the crop of ``window`` grown by ``halo`` (clipped at the array) and cut it back."""
    (y0, y1), (x0, x1) = window
    h, w = probs.shape[1:]
    cy0, cy1, cx0, cx1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
    out = crf_refine(probs[:, cy0:cy1, cx0:cx1], image[:, cy0:cy1, cx0:cx1], params)
    return out[:, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]


# Windows of the 96 x 96 array: interior, a corner and an edge (where the halo is clipped).
WINDOWS = [((40, 56), (40, 56)), ((0, 16), (0, 16)), ((80, 96), (30, 50))]
WEAK: dict[str, Any] = {"smoothness_weight": 0.3, "appearance_weight": 0.5}
"""Weights low enough that ``Q`` does not saturate, so far pixels still measurably matter."""
SHORT_REACH = [
    CrfParams(iterations=1, window=3),
    CrfParams(iterations=3, window=5, **WEAK),
    CrfParams(iterations=2, window=9, **WEAK),
]


def pid(params: CrfParams) -> str:
    return f"it{params.iterations}w{params.window}s{params.smoothness_weight}"


@pytest.mark.parametrize("params", [CrfParams(), CrfParams(**WEAK), *SHORT_REACH], ids=pid)
def test_halo_of_reach_gives_the_whole_image_result(rng, params):
    probs, image = random_inputs(rng)
    whole = crf_refine(probs, image, params)
    for window in WINDOWS:
        block = refine_window(probs, image, params, window, params.reach)
        (y0, y1), (x0, x1) = window
        np.testing.assert_allclose(block, whole[:, y0:y1, x0:x1], rtol=0, atol=TOL)


@pytest.mark.parametrize("params", SHORT_REACH, ids=pid)
def test_halo_of_reach_minus_one_is_not_enough(rng, params):
    """The reach is tight: one pixel less of halo changes the window's edge pixels."""
    probs, image = random_inputs(rng)
    whole = crf_refine(probs, image, params)
    for window in WINDOWS:
        block = refine_window(probs, image, params, window, params.reach - 1)
        (y0, y1), (x0, x1) = window
        assert np.abs(block - whole[:, y0:y1, x0:x1]).max() > 100 * TOL


def test_reach_is_tight_for_the_default_window_and_iterations(rng):
    """With 5 iterations of a 7 px window the effect of the pixels at exactly ``reach`` is small
    (about 1e-5 with weak weights; with the default weights ``Q`` saturates and it vanishes
    altogether), so this is measured in float64: exact with ``reach``, not with ``reach - 1``."""
    params = CrfParams(**WEAK)
    probs, image = random_inputs(rng)
    p, x = torch.from_numpy(probs).double()[None], torch.from_numpy(image).double()[None]
    whole = crf_refine_tensor(p, x, params)[0].numpy()
    for (y0, y1), (x0, x1) in WINDOWS:
        errors = []
        for halo in (params.reach, params.reach - 1):
            cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
            crop = np.s_[..., cy0 : y1 + halo, cx0 : x1 + halo]
            block = crf_refine_tensor(p[crop], x[crop], params)[0].numpy()
            block = block[:, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
            errors.append(np.abs(block - whole[:, y0:y1, x0:x1]).max())
        assert errors[0] < 1e-14
        assert errors[1] > 1e-6


def test_reach_is_iterations_times_half_window():
    assert CrfParams().reach == 15
    assert CrfParams(iterations=3, window=9).reach == 12
    assert CrfParams(iterations=0).reach == 0


# 2. It changes boundaries --------------------------------------------------------------------


def two_regions(rng, h=64, w=64, edge=32):
    """Left ``x < edge`` is class 0 (dark), the rest class 1 (bright); 3 bands, a little noise."""
    truth = (np.arange(w)[None, :] >= edge).repeat(h, 0).astype(np.int64)
    image = np.where(truth, 1.0, -1.0)[None].repeat(3, 0) + rng.normal(scale=0.05, size=(3, h, w))
    return truth, image.astype(np.float32)


def confident(labels, k=3, p=0.6):
    """Probabilities giving ``p`` to ``labels`` and the rest evenly to the other classes."""
    probs = np.full((k, *labels.shape), (1 - p) / (k - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[None], p, axis=0)
    return probs


def test_salt_and_pepper_labels_are_fixed(rng):
    truth, image = two_regions(rng)
    noisy = truth.copy()
    flip = rng.random(truth.shape) < 0.1
    noisy[flip] = (truth[flip] + rng.integers(1, 3, size=int(flip.sum()))) % 3
    probs = confident(noisy)
    out = crf_refine(probs, image, CrfParams())
    before = (probs.argmax(0) == truth).mean()
    after = (out.argmax(0) == truth).mean()
    assert before < 0.92
    assert after > before + 0.07
    assert after == 1.0
    # Isolated wrong pixels (all 8 neighbours right) in particular are all fixed.
    wrong = noisy != truth
    padded = np.pad(wrong, 1)
    neighbours_wrong = sum(
        padded[1 + dy : 1 + dy + 64, 1 + dx : 1 + dx + 64]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    )
    isolated = wrong & (neighbours_wrong == 0)
    assert isolated.sum() > 10
    assert (out.argmax(0)[isolated] == truth[isolated]).all()


def test_clean_edge_on_an_image_edge_stays_put(rng):
    truth, image = two_regions(rng)
    out = crf_refine(confident(truth), image, CrfParams())
    np.testing.assert_array_equal(out.argmax(0), truth)
    # And it is sharpened, not just kept: the pixels either side of the edge grow more confident.
    assert out[0, :, 31].min() > 0.9 and out[1, :, 32].min() > 0.9


def test_misplaced_edge_snaps_to_the_image_edge(rng):
    """Probabilities whose class edge is 2 px off the image edge: the CRF moves it there."""
    truth, image = two_regions(rng)
    shifted = (np.arange(64)[None, :] >= 34).repeat(64, 0).astype(np.int64)
    probs = confident(shifted)
    out = crf_refine(probs, image, CrfParams())
    assert (probs.argmax(0) != truth).sum() == 2 * 64
    np.testing.assert_array_equal(out.argmax(0), truth)


# 3. Normalisation and NaN --------------------------------------------------------------------


def test_probabilities_stay_normalised(rng):
    probs, image = random_inputs(rng, k=4, h=48, w=40)
    out = crf_refine(probs, image, CrfParams())
    assert out.dtype == np.float32 and out.shape == probs.shape
    assert (out >= 0).all() and (out <= 1).all()
    np.testing.assert_allclose(out.sum(0), 1.0, rtol=0, atol=TOL)


def with_invalid(probs, image, invalid, prob_fill, image_fill) -> tuple[np.ndarray, np.ndarray]:
    p, x = probs.copy(), image.copy()
    p[:, invalid] = prob_fill
    p[0, invalid] = np.nan  # one NaN class makes the pixel invalid
    x[:, invalid] = image_fill
    return p, x


def test_nan_pixels_stay_nan_and_do_not_influence_neighbours(rng):
    probs, image = random_inputs(rng, h=48, w=48)
    invalid = np.zeros((48, 48), dtype=bool)
    invalid[20:26, 10:30] = True  # a block
    invalid[5, 40] = True  # a single pixel
    invalid[40:, 40:] = True  # a corner
    params = CrfParams()
    outs = [
        crf_refine(*with_invalid(probs, image, invalid, fill, image_fill), params)
        for fill, image_fill in [(np.nan, np.nan), (0.9, 0.0), (1e9, 1e6), (-5.0, -3.0)]
    ]
    for out in outs:
        assert np.isnan(out[:, invalid]).all()
        assert np.isfinite(out[:, ~invalid]).all()
        np.testing.assert_array_equal(out, outs[0])
    # The NaN pixels are really near the others: were they valid, the neighbours would change.
    valid_there = crf_refine(probs, image, params)
    assert np.abs(valid_there[:, ~invalid] - outs[0][:, ~invalid]).max() > 0.01


def test_invalid_pixels_act_like_the_array_edge(rng):
    """NaN columns at the right give exactly the result of the array without them."""
    probs, image = random_inputs(rng, h=40, w=40)
    p = probs.copy()
    p[:, :, 30:] = np.nan
    out = crf_refine(p, image, CrfParams())
    cut = crf_refine(probs[:, :, :30], image[:, :, :30], CrfParams())
    np.testing.assert_allclose(out[:, :, :30], cut, rtol=0, atol=1e-6)


def test_nonfinite_image_at_a_valid_pixel_is_an_error(rng):
    probs, image = random_inputs(rng, h=16, w=16)
    image[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        crf_refine(probs, image, CrfParams())


# 4. Parameter and input validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", -1),
        ("iterations", 2.0),
        ("iterations", True),
        ("window", 4),
        ("window", 1),
        ("window", "7"),
        ("smoothness_weight", -0.1),
        ("smoothness_weight", float("nan")),
        ("smoothness_sigma", 0.0),
        ("appearance_weight", float("inf")),
        ("appearance_sigma_xy", -1.0),
        ("appearance_sigma_rgb", 0),
        ("appearance_sigma_rgb", None),
        ("compatibility", "dense"),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(GeosegError) as info:
        CrfParams(**{field: value})
    assert info.value.option == f"crf_{field}"


def test_params_are_frozen_and_keyword_only():
    with pytest.raises(AttributeError):
        CrfParams().iterations = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        CrfParams(5)  # type: ignore[call-arg]
    assert CrfParams(smoothness_weight=0, appearance_weight=0).smoothness_weight == 0


def test_mismatched_shapes_are_errors(rng):
    probs, image = random_inputs(rng, h=16, w=16)
    with pytest.raises(ValueError, match="match"):
        crf_refine(probs, image[:, :15], CrfParams())
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        crf_refine(probs[0], image, CrfParams())


# 5. Determinism and the tensor API -----------------------------------------------------------


def test_deterministic_on_cpu(rng):
    probs, image = random_inputs(rng, h=64, w=64)
    first = crf_refine(probs, image, CrfParams())
    second = crf_refine(probs.copy(), image.copy(), CrfParams())
    assert first.tobytes() == second.tobytes()


def test_batched_tensor_api_matches_per_image(rng):
    a, xa = random_inputs(rng, h=32, w=40)
    b, xb = random_inputs(rng, h=32, w=40)
    out = crf_refine_tensor(
        torch.from_numpy(np.stack([a, b])), torch.from_numpy(np.stack([xa, xb])), CrfParams()
    )
    assert out.shape == (2, 3, 32, 40) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), crf_refine(a, xa, CrfParams()), rtol=0, atol=TOL)
    np.testing.assert_allclose(out[1].numpy(), crf_refine(b, xb, CrfParams()), rtol=0, atol=TOL)


def test_unfold_method_agrees_with_shift_at_any_chunking(rng):
    """The ConvCRF unfold formulation is an independent check of the shifted-view messages."""
    probs, image = random_inputs(rng, h=40, w=36)
    p, x = torch.from_numpy(probs)[None], torch.from_numpy(image)[None]
    p, x = p.double(), x.double()  # float32 rounding, amplified by 5 iterations, reaches 1e-4
    shift = crf_refine_tensor(p, x, CrfParams()).numpy()
    for rows in (None, 1, 7):
        unfolded = crf_refine_tensor(p, x, CrfParams(), method="unfold", chunk_rows=rows)
        np.testing.assert_allclose(unfolded.numpy(), shift, rtol=0, atol=1e-10)


def test_zero_iterations_renormalises_only(rng):
    probs, image = random_inputs(rng, h=16, w=16)
    out = crf_refine(probs * 0.5, image, CrfParams(iterations=0))
    np.testing.assert_allclose(out, probs, rtol=0, atol=1e-6)


def test_doctests():
    for module in (engine_crf, metrics):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
