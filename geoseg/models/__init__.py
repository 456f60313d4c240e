"""Models: the SMP registry, the model file (weights + contract) and predictors."""

from geoseg.models.contract import ModelContract, Normalization, check_input, default_colors
from geoseg.models.modelfile import ModelFile, load_model_file, read_contract, save_model_file
from geoseg.models.predictor import D4Predictor, Predictor, TorchPredictor, load_predictor

__all__ = [
    "D4Predictor",
    "ModelContract",
    "ModelFile",
    "Normalization",
    "Predictor",
    "TorchPredictor",
    "check_input",
    "default_colors",
    "load_model_file",
    "load_predictor",
    "read_contract",
    "save_model_file",
]
