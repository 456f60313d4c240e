"""geoseg: land-cover segmentation of large GeoTIFFs with seam-free blending and GIS-ready outputs.

The Python API; the ``geoseg`` command line and the Prefect flows are thin shells over it.

Examples
--------
>>> import geoseg
>>> options = geoseg.PredictOptions(tiling=geoseg.TilingOptions(tile=512))
>>> options.tiling.resolve(model_tile=256)
(512, 64)
"""

from geoseg.engine.scene import PredictResult, predict_scene, segment_scene
from geoseg.errors import GeosegError
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import read_contract
from geoseg.options import (
    InferenceOptions,
    InputOptions,
    LabelOptions,
    OutputOptions,
    PredictOptions,
    TilingOptions,
    TrainOptions,
    VectorOptions,
)

LAZY = {
    "create_model": "geoseg.models.create",
    "train_model": "geoseg.training.train",
    "evaluate": "geoseg.training.evaluate",
    "run_demo": "geoseg.demo",
    "vectorize_raster": "geoseg.vector.vectorize",
    "make_executor": "geoseg.engine.executors",
    "load_catalog": "geoseg.batch.catalog",
    "run_batch": "geoseg.batch.runner",
}
"""Heavier parts of the API, imported on first use."""


def __getattr__(name: str) -> object:
    """Import the heavier parts of the API (training, evaluation, the demo) on first use."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "GeosegError",
    "InferenceOptions",
    "InputOptions",
    "LabelOptions",
    "ModelContract",
    "OutputOptions",
    "PredictOptions",
    "PredictResult",
    "TilingOptions",
    "TrainOptions",
    "VectorOptions",
    "__version__",
    "create_model",
    "evaluate",
    "load_catalog",
    "make_executor",
    "predict_scene",
    "read_contract",
    "run_batch",
    "run_demo",
    "segment_scene",
    "train_model",
    "vectorize_raster",
]
