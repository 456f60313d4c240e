"""The STAC Item of a ``predict`` run (the batch runner writes its own, with catalog fields)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoseg.engine.scene import PredictResult
from geoseg.io.stac import ModelInfo, fingerprint, record_path, scene_item, write_item
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.options import PredictOptions


def predict_parameters(options: PredictOptions, model_tile: int) -> dict[str, Any]:
    """The options that shape a prediction's outputs, as the item records them.

    Examples
    --------
    >>> predict_parameters(PredictOptions(), 256)["tile"]  # picked per scene
    'auto'
    """
    _, overlap = options.tiling.resolve(model_tile)
    out = options.output
    return {
        "tile": options.tiling.tile or "auto",
        "overlap": overlap,
        "tta": options.inference.tta,
        "crf": options.inference.crf,
        "bands": list(options.input.bands) if options.input.bands else None,
        "nodata": options.input.nodata,
        "confidence": out.confidence,
        "vector_formats": list(out.vector_formats),
        "simplify": out.simplify,
        "min_area": out.min_area,
    }


def write_predict_item(
    result: PredictResult, model: str | os.PathLike[str], options: PredictOptions
) -> Path:
    """Write ``<stem>.stac.json`` beside the class COG of a :func:`predict_scene` result.

    Examples
    --------
    >>> write_predict_item(result, "model.safetensors", options)  # doctest: +SKIP
    PosixPath('out/scene.stac.json')
    """
    seg = result.segment
    contract = read_contract(model)
    stem = Path(result.scene.rstrip("/")).stem
    info = ModelInfo(Path(model).stem, os.fspath(model), file_sha256(model), contract)
    item = scene_item(
        stem,
        seg.classes_path,
        source=result.scene,
        source_fingerprint=fingerprint(result.scene),
        model=info,
        parameters={
            **predict_parameters(options, contract.tile_size),
            "tile": seg.tile,  # what ran (the option may be "auto")
            "overlap": seg.overlap,
        },
        outputs=[p for p in (seg.confidence_path, *result.vector_paths) if p is not None],
        areas_ha=seg.area_ha(),
    )
    return write_item(item, record_path(seg.classes_path.parent, stem))
