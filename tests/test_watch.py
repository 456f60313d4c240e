"""The learning watch: one warning when a class stays near zero, early stopping on patience."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from geoseg.errors import StalledClassWarning
from geoseg.training.train import EpochRecord
from geoseg.training.watch import LearningWatch

CLASSES = ("background", "building")


def history(building: list[float]) -> list[EpochRecord]:
    """Epoch records whose building IoU follows ``building`` (background 0.95)."""
    return [
        EpochRecord(i + 1, 0.5, 1e-3, 1.0, miou=(0.95 + b) / 2, iou={"background": 0.95,
                    "building": b})
        for i, b in enumerate(building)
    ]  # fmt: skip


def test_a_class_near_zero_is_reported_once_with_its_share_and_the_fix():
    watch = LearningWatch(CLASSES, np.array([0.996, 0.004]), epochs=20)
    records = history([0.03, 0.05, 0.08, 0.06, 0.07, 0.04, 0.08, 0.05, 0.06, 0.02])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, len(records) + 1):
            watch.after_epoch(records[:n])
    assert len(caught) == 1 and caught[0].category is StalledClassWarning
    assert str(caught[0].message) == (
        "building: IoU 0.08 after 8 epochs; few labelled pixels (0.4 %); "
        "try encoder_weights or more labels"
    )
    assert "--encoder-weights" in caught[0].message.render(lambda o: "--" + o.replace("_", "-"))


def test_a_class_that_learns_is_not_reported():
    watch = LearningWatch(CLASSES, np.array([0.9, 0.1]), epochs=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watch.after_epoch(history([0.05, 0.12, 0.35, 0.5]))


@pytest.mark.parametrize(
    ("patience", "best", "stops"), [(3, 2, True), (3, 3, False), (0, 1, False)]
)
def test_early_stopping_waits_patience_epochs_after_the_best(patience, best, stops):
    watch = LearningWatch(CLASSES, np.array([0.9, 0.1]), epochs=10, patience=patience)
    assert watch.should_stop(history([0.1, 0.5, 0.4, 0.4, 0.3]), best_epoch=best) is stops
