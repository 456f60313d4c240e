"""Accuracy of a class raster (or layer) against reference labels, window by window.

Prediction and truth are each a class raster or a vector layer; at least one must be a raster,
whose grid is the evaluation grid (the prediction's when both are rasters). The other side is
read as chips of that grid through :mod:`geoseg.io.labels` (vectors rasterized, rasters resampled
nearest), so memory stays bounded by the window size. Pixels that are nodata (255) or outside on
either side do not count.

Per class: IoU ``TP / (TP + FP + FN)``, F1 ``2 TP / (2 TP + FP + FN)``, precision ``TP / (TP + FP)``
and recall ``TP / (TP + FN)``; undefined ratios (0 / 0) are NaN (``null`` in JSON) and left out of
the mean IoU. Overall accuracy is the share of counted pixels on the diagonal of the confusion
matrix (rows: truth, columns: prediction).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InvalidInputError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import cover
from geoseg.io.files import atomic_output, require_file
from geoseg.io.labels import (
    IGNORE,
    FoundClasses,
    LabelSpec,
    check_unlabeled,
    is_raster_path,
    resolve_classes,
)
from geoseg.io.raster import raster_grid
from geoseg.options import LabelOptions
from geoseg.training.metrics import Scores, confusion_matrix, fmt, json_number

# --- the report -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EvaluationReport:
    """The result of :func:`evaluate`.

    Attributes
    ----------
    prediction, truth
        The inputs.
    classes
        Class names; index = id in the confusion matrix.
    confusion
        ``(K, K)`` pixel counts, rows truth, columns prediction.
    """

    prediction: str
    truth: str
    classes: list[str]
    confusion: np.ndarray
    seconds: float = 0.0
    scores: Scores = field(init=False)

    def __post_init__(self) -> None:
        self.scores = Scores.from_confusion(self.confusion)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes present in truth or prediction."""
        return self.scores.miou

    @property
    def accuracy(self) -> float:
        """Overall accuracy."""
        return self.scores.accuracy

    @property
    def pixels(self) -> int:
        """Pixels counted."""
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as None)."""
        s = self.scores
        rows = {
            name: {
                "iou": json_number(s.iou[i]),
                "f1": json_number(s.f1[i]),
                "precision": json_number(s.precision[i]),
                "recall": json_number(s.recall[i]),
                "support": int(s.support[i]),
            }
            for i, name in enumerate(self.classes)
        }
        return {
            "prediction": self.prediction,
            "truth": self.truth,
            "classes": self.classes,
            "per_class": rows,
            "miou": json_number(s.miou),
            "overall_accuracy": json_number(s.accuracy),
            "pixels": self.pixels,
            "confusion_matrix": self.confusion.tolist(),
            "confusion_axes": "rows truth, columns prediction",
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomically, replacing an existing file)."""
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Rows ``(class, IoU, F1, precision, recall, pixels)``, then the mean and accuracy."""
        s = self.scores
        rows = [
            (
                name,
                fmt(s.iou[i]),
                fmt(s.f1[i]),
                fmt(s.precision[i]),
                fmt(s.recall[i]),
                f"{int(s.support[i]):,}",
            )
            for i, name in enumerate(self.classes)
        ]
        rows.append(("mean IoU", fmt(s.miou), "", "", "", f"{self.pixels:,}"))
        rows.append(("overall accuracy", fmt(s.accuracy), "", "", "", ""))
        return rows


# --- evaluation -------------------------------------------------------------------------------


def reference_grid(prediction: str, truth: str) -> RasterGrid:
    """The evaluation grid: the prediction raster's, else the truth raster's."""
    if is_raster_path(prediction):
        path = prediction
    elif is_raster_path(truth):
        path = truth
    else:
        raise InvalidInputError(
            f"{prediction} and {truth} are both vector layers; give one as a class raster "
            "(e.g. the prediction's _classes.tif, or gdal_rasterize the truth)"
        )
    return raster_grid(path)


def evaluation_classes(
    found: Sequence[FoundClasses], classes: Sequence[str] | None
) -> tuple[str, ...]:
    """The class scheme of an evaluation; inputs with names are matched by name, others by id.

    Without ``classes``: the first named raster's names (keeping its ids), else vector names in
    training order (background, then sorted); then other names, sorted; then ``class_<id>`` up to
    the largest id of the inputs without names.
    """
    if classes:
        return resolve_classes(found, classes)
    named = [f for f in found if f.names is not None]
    rasters = [f for f in named if is_raster_path(f.source)]
    if rasters:
        base: tuple[str, ...] = tuple(rasters[0].names or ())
    else:
        base = resolve_classes(named, None) if named else ()
    extra = sorted({n for f in named for n in f.names or ()} - set(base))
    top = max((f.max_id for f in found if f.names is None), default=-1)
    scheme = (*base, *extra)
    return (*scheme, *(f"class_{i}" for i in range(len(scheme), top + 1)))


def evaluate(
    prediction: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    labels: LabelOptions | None = None,
    *,
    out_json: str | os.PathLike[str] | None = None,
    block_size: int = 1024,
) -> EvaluationReport:
    """Compare a predicted class raster (or layer) with reference labels.

    Parameters
    ----------
    prediction
        A class raster (e.g. ``<stem>_classes.tif`` from ``geoseg predict``) or a vector layer.
    truth
        A class raster on any grid, or a vector layer in any CRS with a class field.
    labels
        How vector inputs are read (class field, class names by id, unlabeled pixels).
    out_json
        Also write the report here as JSON.
    block_size
        Side of the windows read at a time (memory bound).

    Examples
    --------
    >>> report = evaluate("out/scene_classes.tif", "truth.gpkg")  # doctest: +SKIP
    >>> round(report.miou, 3)  # doctest: +SKIP
    0.912
    """
    started = time.perf_counter()
    labels = labels or LabelOptions()
    pred_path, truth_path = os.fspath(prediction), os.fspath(truth)
    require_file(pred_path, "prediction")
    require_file(truth_path, "truth")
    grid = reference_grid(pred_path, truth_path)
    mode = check_unlabeled(labels.unlabeled)
    specs = [LabelSpec(p, labels.class_field, mode) for p in (pred_path, truth_path)]
    names = evaluation_classes([spec.inspect() for spec in specs], labels.classes)
    confusion = accumulate(specs[0], specs[1], grid, names, block_size)
    report = EvaluationReport(
        prediction=pred_path,
        truth=truth_path,
        classes=list(names),
        confusion=confusion,
        seconds=time.perf_counter() - started,
    )
    if out_json is not None:
        report.write_json(out_json)
    return report


def accumulate(
    pred: LabelSpec, truth: LabelSpec, grid: RasterGrid, names: Sequence[str], block_size: int
) -> np.ndarray:
    """The confusion matrix, summed window by window over ``grid``."""
    confusion = np.zeros((len(names), len(names)), np.int64)
    with closing(pred.open(grid, names)) as p, closing(truth.open(grid, names)) as t:
        for window in cover(grid.window, block_size):
            confusion += window_confusion(p.chip(window), t.chip(window), len(names))
    return confusion


def window_confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion of one window; 255 on either side is not counted."""
    keep = (pred != IGNORE) & (truth != IGNORE)
    return confusion_matrix(truth[keep], pred[keep], num_classes)
