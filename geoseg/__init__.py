"""geoseg: land-cover segmentation of large GeoTIFFs with seam-free blending and GIS-ready outputs.

The Python API; the ``geoseg`` command line is a thin shell over these functions.
"""

from geoseg.errors import GeosegError
from geoseg.models.contract import ModelContract
from geoseg.models.create import create_model
from geoseg.models.modelfile import read_contract
from geoseg.engine.scene import PredictResult, TilingOptions, predict_scene, segment_scene


def __getattr__(name: str) -> object:
    """Import the heavier parts of the API (training, evaluation, the demo) on first use."""
    lazy = {
        "train_model": "geoseg.training.train",
        "evaluate": "geoseg.training.evaluate",
        "run_demo": "geoseg.demo",
        "vectorize_raster": "geoseg.vector.vectorize",
        "make_executor": "geoseg.engine.executors",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "GeosegError",
    "ModelContract",
    "PredictResult",
    "TilingOptions",
    "__version__",
    "create_model",
    "evaluate",
    "make_executor",
    "predict_scene",
    "read_contract",
    "run_demo",
    "segment_scene",
    "train_model",
    "vectorize_raster",
]
