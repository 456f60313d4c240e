"""Tune the CRF on the validation areas: the parameters that help this model most.

A small grid of :class:`~geoseg.options.CrfParams` is scored on the held-out areas with the kept
model: mean IoU first, boundary F1 to break ties. The best set is stored in the model contract
(``predict --crf`` uses it) only if it beats no CRF at all; otherwise the contract says nothing
and ``--crf`` falls back to the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import InvalidInputError
from geoseg.geo.window import cover
from geoseg.models.contract import ModelContract, Normalization
from geoseg.models.crf import crf_refine
from geoseg.models.modelfile import load_model_file, save_model_file
from geoseg.models.predictor import load_predictor
from geoseg.options import CrfParams
from geoseg.training.metrics import Scores, boundary_f1, confusion_matrix
from geoseg.training.sampling import TrainingSet

CANDIDATES: tuple[CrfParams, ...] = tuple(
    CrfParams(iterations=iterations, smoothness_weight=smooth, appearance_weight=appearance,
              appearance_sigma_rgb=rgb)
    for iterations in (3, 5)
    for smooth, appearance in ((1.0, 5.0), (1.0, 10.0), (3.0, 5.0))
    for rgb in (0.3, 0.6)
)  # fmt: skip
"""The grid tried (12 sets, all with the default 7-px window)."""


@dataclass(frozen=True, kw_only=True)
class CrfScore:
    """Validation scores of one CRF setting (None: no CRF)."""

    params: CrfParams | None
    miou: float
    boundary_f1: float


def validation_chips(data: TrainingSet, norm: Normalization) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised pixels and labels of every validation tile (padded to a multiple of 32)."""
    return [
        data.validation_chip(area.image, window, norm)
        for area in data.split.val
        for window in cover(area.window, data.tile)
    ]


def score(
    chips: Sequence[tuple[np.ndarray, np.ndarray]],
    probabilities: Sequence[np.ndarray],
    params: CrfParams | None,
    num_classes: int,
) -> CrfScore:
    """Mean IoU and boundary F1 over the chips after a CRF with ``params`` (None: none)."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    boundary = []
    for (x, target), probs in zip(chips, probabilities, strict=True):
        refined = probs if params is None else crf_refine(probs, x, params)
        pred = refined.argmax(0)
        confusion += confusion_matrix(target, pred, num_classes)
        boundary.append(boundary_f1(pred, target, valid=target != NODATA_CLASS))
    miou = Scores.from_confusion(confusion).miou
    return CrfScore(params=params, miou=float(miou), boundary_f1=float(np.mean(boundary)))


def tune_crf(
    predict_probabilities: object, data: TrainingSet, norm: Normalization, num_classes: int
) -> tuple[CrfParams | None, list[CrfScore]]:
    """The best CRF setting on the validation areas (None when none beats no CRF), all scores.

    ``predict_probabilities`` maps a normalised batch ``(N, C, H, W)`` to probabilities.
    """
    chips = validation_chips(data, norm)
    probs = [predict_probabilities(x[None])[0] for x, _ in chips]  # type: ignore[operator]
    scores = [score(chips, probs, p, num_classes) for p in (None, *CANDIDATES)]
    best = max(scores, key=lambda s: (s.miou, s.boundary_f1))
    return (best.params if best.params is not None else None), scores


def store_tuned_crf(
    model: Path, data: TrainingSet, contract: ModelContract, device: str
) -> tuple[ModelContract, list[CrfScore]]:
    """Tune the CRF for the model file ``model`` and store the best setting in its contract."""
    assert contract.normalization is not None
    if not data.split.val:
        raise InvalidInputError(
            "tuning the CRF needs validation areas; set `val_fraction` above 0",
            option="val_fraction",
        )
    predictor = load_predictor(model, device)
    best, scores = tune_crf(predictor, data, contract.normalization, contract.num_classes)
    tuned = replace(contract, crf=best)
    save_model_file(model, load_model_file(model).state_dict, tuned, overwrite=True)
    return tuned, scores
