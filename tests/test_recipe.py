"""The recipe that scales with the data: augmentation, defaults from the labelled pixels, early stop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from geoseg.errors import StalledClassWarning
from geoseg.io.labels import IGNORE
from geoseg.options import TrainOptions
from geoseg.training.sampling import augment, radiometric
from geoseg.training.train import default_encoder, make_plan, make_watch


def test_augmented_pixels_and_labels_stay_aligned():
    """Pixels encode their label (label / 10), so any misaligned warp shows."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (32, 32)).astype(np.uint8)
    target[3:9, 20:30] = IGNORE
    scaled = np.stack([target / 10, 1 - target / 10]).astype(np.float32)
    shapes = set()
    for _ in range(40):
        x, y = augment(scaled, target, rng, jitter=0.0)
        known = y != IGNORE
        shapes.add(int(known.sum()))
        np.testing.assert_allclose(x[0][known], y[known] / 10, atol=1e-6)
        np.testing.assert_allclose(x[1][known], 1 - y[known] / 10, atol=1e-6)
    assert len(shapes) > 5  # scale jitter changed what the chips cover


def test_radiometric_jitter_stays_in_the_scaled_range():
    rng = np.random.default_rng(1)
    scaled = np.stack([np.zeros((8, 8)), np.ones((8, 8)), np.full((8, 8), 0.5)]).astype(np.float32)
    out = np.stack([radiometric(scaled, rng, jitter=0.3) for _ in range(50)])
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.dtype == np.float32
    assert out[:, 2].std() > 0.02  # it does jitter


@pytest.mark.parametrize(
    ("labelled", "steps", "epochs"),
    [(300_000, 4, 300), (3_000_000, 6, 200), (40_000_000, 77, 20)],
)
def test_steps_and_epochs_follow_the_labelled_pixels(labelled, steps, epochs):
    data = SimpleNamespace(labelled_pixels=lambda: labelled)
    plan = make_plan(TrainOptions(tile=256, batch_size=8), data, None)  # type: ignore[arg-type]
    assert (plan.steps, plan.epochs) == (steps, epochs)
    given = make_plan(TrainOptions(epochs=3, steps_per_epoch=2), data, None)  # type: ignore[arg-type]
    assert (given.steps, given.epochs) == (2, 3)


@pytest.mark.parametrize(
    ("given", "epochs", "patience"), [(None, 200, 50), (None, 20, 10), (7, 200, 7), (0, 200, 0)]
)
def test_patience_is_a_quarter_of_the_planned_epochs_unless_given(given, epochs, patience):
    data = SimpleNamespace(split=SimpleNamespace(val=[object()]), frequencies=lambda: np.ones(2))
    options = TrainOptions(patience=given)
    watch = make_watch(options, data, ["background", "tree"], epochs)  # type: ignore[arg-type]
    assert watch is not None and watch.patience == patience


def test_the_encoder_grows_with_the_data():
    assert default_encoder(1_000_000) == "resnet18" and default_encoder(30_000_000) == "resnet34"


def test_training_stops_when_validation_stops_improving(tmp_path):
    from test_train import FAST, easy_scene

    from geoseg.training.train import train_model

    image, labels, _, _ = easy_scene(tmp_path, size=96)
    options = TrainOptions(epochs=8, steps_per_epoch=1, val_fraction=0.3, lr=1e-9, patience=2,
                           **FAST)  # fmt: skip
    with pytest.warns(StalledClassWarning, match=r"IoU 0\.\d\d after 4 epochs"):  # said once
        result = train_model([image], labels, tmp_path / "m.safetensors", options)
    assert len(result.history) < 8
    assert result.history[-1].epoch - result.best_epoch == 2
