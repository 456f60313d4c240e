"""The geoseg model file: a safetensors file holding the weights and, in its metadata, the contract.

safetensors stores raw tensors and a JSON header; loading it can never execute code. Foreign
``.pt``/``.pth`` state dicts (weights trained elsewhere with SMP) are read with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ModelFileError
from geoseg.io.files import atomic_output, require_file
from geoseg.models.contract import ModelContract

CONTRACT_KEY = "geoseg_contract"
FORMAT_KEY = "format"
FORMAT = "geoseg-model"
SAFETENSORS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: contract, weights (``name -> tensor``) and the file's hash."""

    path: Path
    contract: ModelContract
    state_dict: dict[str, Any]
    sha256: str


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_contract(path: str | os.PathLike[str]) -> ModelContract:
    """Read only the contract (no weights) from a model file.

    Raises :class:`ModelFileError` naming the file and what is wrong with it.
    """
    text = _metadata(path)[CONTRACT_KEY]
    try:
        return ModelContract.from_json(text)
    except ModelFileError as exc:
        raise ModelFileError(
            f"{path}: {exc}; recreate the file with 'geoseg model-create' or 'geoseg train'"
        ) from exc


def _metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    require_file(path, "model file")
    try:
        with safe_open(os.fspath(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: not a geoseg model file (safetensors) ({exc}); create one with "
            "'geoseg model-create' or 'geoseg train'"
        ) from exc
    if meta.get(FORMAT_KEY) != FORMAT or CONTRACT_KEY not in meta:
        raise ModelFileError(
            f"{path}: a safetensors file without a geoseg contract; wrap the weights in a model "
            "file with geoseg model-create"
        )
    return meta


def load_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Load weights and contract. Never executes code from the file."""
    from safetensors.torch import load_file

    contract = read_contract(path)
    state = _load_tensors(path, load_file)
    return ModelFile(Path(path), contract, state, file_sha256(path))


def _load_tensors(path: str | os.PathLike[str], load: Any) -> dict[str, Any]:
    """``load(path)`` (a safetensors loader); a corrupt or truncated file is a ModelFileError."""
    from safetensors import SafetensorError

    try:
        return dict(load(os.fspath(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: not a readable safetensors file ({first_line(exc)}); is it truncated or "
            "another format? save weights with torch.save(model.state_dict(), 'weights.pt') or "
            "safetensors.torch.save_file"
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_model_file(
    path: str | os.PathLike[str],
    state_dict: dict[str, Any],
    contract: ModelContract,
    overwrite: bool = False,
) -> Path:
    """Write weights and contract atomically; returns the path."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {FORMAT_KEY: FORMAT, CONTRACT_KEY: contract.to_json()}
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=meta)
    return Path(path)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a foreign state dict: safetensors, or a torch file loaded with ``weights_only=True``.

    A torch file holding anything but tensors and plain containers (for example a pickled object
    whose loading would run code) is refused.
    """
    import pickle

    import torch

    require_file(path, "weights file")
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        return _load_tensors(path, load_file)
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: refused to load: not a plain tensor state dict ({first_line(exc)}); "
            "save it with torch.save(model.state_dict(), path) or as safetensors"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("model.").removeprefix("module."): v for k, v in obj.items()}
