"""Watching a run's validation: say when a class is not being learned, and stop when nothing improves.

:class:`LearningWatch` looks at the history of :class:`~geoseg.training.train.EpochRecord` after
every epoch. It warns once per run (:class:`~geoseg.errors.StalledClassWarning`, one line) when a
class's best validation IoU is still near zero after a good part of the planned epochs, naming
the class's share of the labelled pixels and what usually helps. It also decides early stopping:
no better validation mIoU for ``patience`` epochs ends the run (the best model is already kept).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import StalledClassWarning

STALLED_IOU = 0.2
"""A class whose best validation IoU stays below this is reported as not being learned."""
STALL_SHARE = 0.4
"""Share of the planned epochs (at least :data:`MIN_WATCH_EPOCHS`) before a class is judged."""
MIN_WATCH_EPOCHS = 3


def stalled_classes(
    history: Sequence[Any], classes: Sequence[str], threshold: float = STALLED_IOU
) -> list[tuple[str, float]]:
    """Classes (background excepted) whose best IoU over ``history`` is below ``threshold``.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> history = [R(iou={"background": 0.9, "building": 0.05}), R(iou={"building": 0.08})]
    >>> stalled_classes(history, ["background", "building"])
    [('building', 0.08)]
    """
    found = []
    for name in classes[1:]:
        scores = [r.iou[name] for r in history if name in r.iou and not math.isnan(r.iou[name])]
        if scores and max(scores) < threshold:
            found.append((name, max(scores)))
    return found


def stalled_message(name: str, iou: float, epochs: int, share: float) -> str:
    """One line: the class, its best IoU, the epochs so far, its labelled share and the fixes.

    Examples
    --------
    >>> stalled_message("building", 0.08, 8, 0.004)
    'building: IoU 0.08 after 8 epochs; few labelled pixels (0.4 %); try `encoder_weights` or more labels'
    """
    few = "few labelled pixels" if share < 0.05 else "labelled pixels"
    return (
        f"{name}: IoU {iou:.2f} after {epochs} epochs; {few} ({100 * share:.1f} %); "
        "try `encoder_weights` or more labels"
    )


@dataclass
class LearningWatch:
    """Per-run state of the watch: classes, their labelled shares, the plan and what was said.

    Parameters
    ----------
    classes
        Class names by id (background first).
    shares
        Share of each class among the labelled training pixels.
    epochs
        Planned epochs.
    patience
        Epochs without a better validation mIoU before the run stops (0: never stops early).
    """

    classes: Sequence[str]
    shares: np.ndarray
    epochs: int
    patience: int = 0
    warned: bool = False

    def after_epoch(self, history: Sequence[Any]) -> None:
        """Warn (once per run) when a class is still near zero after enough epochs."""
        if self.warned or len(history) < max(MIN_WATCH_EPOCHS, STALL_SHARE * self.epochs):
            return
        stalled = stalled_classes(history, self.classes)
        if stalled:
            self.warned = True
            name, iou = stalled[0]
            share = float(self.shares[list(self.classes).index(name)])
            warnings.warn(
                StalledClassWarning(stalled_message(name, iou, len(history), share),
                                    option="encoder_weights"),
                stacklevel=2,
            )  # fmt: skip

    def should_stop(self, history: Sequence[Any], best_epoch: int | None) -> bool:
        """True after ``patience`` validated epochs without a better mIoU than the best one."""
        if not self.patience or best_epoch is None or not history:
            return False
        if history[-1].miou is None:
            return False
        return history[-1].epoch - best_epoch >= self.patience
