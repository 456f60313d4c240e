"""Create a model file from an architecture: random weights, or a state dict trained elsewhere."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from geoseg.errors import InvalidInputError, ModelFileError
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import read_state_dict, save_model_file
from geoseg.models.registry import (
    build_network,
    check_arch,
    check_encoder,
    tile_multiple,
    uses_encoder,
)


def create_model(
    out: str | os.PathLike[str],
    contract: ModelContract,
    *,
    weights: str | os.PathLike[str] | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a geoseg model file for ``contract``.

    Parameters
    ----------
    out
        Path of the model file (``.safetensors``).
    contract
        Architecture, encoder, bands, dtype, classes (background first), colours, mode,
        normalisation, GSD and default tile of the model.
    weights
        A full SMP state dict trained elsewhere (``.safetensors`` or ``.pt``, loaded with
        ``weights_only=True``); without it the network is randomly initialised.
    encoder_weights
        A local pretrained encoder state dict (ignored when ``weights`` is given).
    overwrite
        Replace an existing file.

    Examples
    --------
    >>> contract = ModelContract(arch="unet", encoder="resnet18", bands=3, dtype="uint8",
    ...                          classes=("background", "building"))
    >>> create_model("m.safetensors", contract)  # doctest: +SKIP
    PosixPath('m.safetensors')
    """
    if contract.bands < 1:
        raise InvalidInputError(
            f"bands {contract.bands} is invalid; set `bands` to 1 or more", option="bands"
        )
    if len(contract.classes) < 2:
        raise InvalidInputError(
            f"give at least 2 classes (background first) in `classes`, got {list(contract.classes)}",
            option="classes",
        )
    contract = replace(contract, arch=check_arch(contract.arch))
    if uses_encoder(contract.arch):
        check_encoder(contract.encoder)
    multiple = tile_multiple(contract.arch)
    if contract.tile_size % multiple:
        raise InvalidInputError(
            f"{contract.arch} needs tiles that are a multiple of {multiple} px, got "
            f"{contract.tile_size}; set `tile` to e.g. {contract.tile_size // multiple * multiple or multiple}",
            option="tile",
        )
    net = build_network(
        contract.arch,
        contract.encoder,
        contract.bands,
        contract.num_outputs,
        None if weights else encoder_weights,
    )
    if weights is not None:
        load_full_weights(net, weights)
    return save_model_file(out, net.state_dict(), contract, overwrite=overwrite)


def load_full_weights(net: object, path: str | os.PathLike[str]) -> None:
    """Load a whole-network state dict, explaining a mismatch in one line."""
    state = read_state_dict(path)
    try:
        net.load_state_dict(state)  # type: ignore[attr-defined]
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(
            f"{path}: the weights do not fit this architecture/encoder/bands/classes ({first}); "
            "check `arch`, `encoder`, `bands` and `classes`",
            options=("arch", "encoder", "bands", "classes"),
        ) from exc
