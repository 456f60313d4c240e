"""geoseg: land-cover segmentation of large GeoTIFFs with seam-free blending and GIS-ready outputs.

The Python API; the ``geoseg`` command line is a thin shell over these functions.
"""

from geoseg.errors import GeosegError
from geoseg.models.contract import ModelContract
from geoseg.models.create import create_model
from geoseg.models.modelfile import read_contract
from geoseg.predict import PredictResult, TilingOptions, predict_scene, segment_scene

__version__ = "0.1.0"

__all__ = [
    "GeosegError",
    "ModelContract",
    "PredictResult",
    "TilingOptions",
    "__version__",
    "create_model",
    "predict_scene",
    "read_contract",
    "segment_scene",
]
