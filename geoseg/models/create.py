"""Create a model file from an SMP architecture: random weights, or a state dict trained elsewhere."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geoseg.errors import InvalidInputError, ModelFileError
from geoseg.models.contract import Mode, ModelContract, Normalization, default_colors
from geoseg.models.modelfile import read_state_dict, save_model_file
from geoseg.models.registry import build_network, check_arch, check_encoder


def create_model(
    out: str | os.PathLike[str],
    arch: str,
    encoder: str,
    bands: int,
    classes: Sequence[str],
    *,
    dtype: str = "uint8",
    colors: Sequence[tuple[int, int, int]] | None = None,
    mode: Mode = "multiclass",
    weights: str | os.PathLike[str] | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    normalization: Normalization | None = None,
    gsd: float | None = None,
    tile_size: int = 512,
    overwrite: bool = False,
) -> Path:
    """Write a geoseg model file.

    Parameters
    ----------
    out
        Path of the model file (``.safetensors``).
    arch, encoder
        SMP architecture (``unet``, ``deeplabv3plus``, ...) and encoder (``resnet34``, ...).
    bands
        Number of input bands.
    classes
        Class names, background first.
    weights
        A full SMP state dict trained elsewhere (``.safetensors`` or ``.pt``, loaded with
        ``weights_only=True``); without it the network is randomly initialised.
    encoder_weights
        A local pretrained encoder state dict (ignored when ``weights`` is given).

    Examples
    --------
    >>> create_model("m.safetensors", "unet", "resnet18", 3, ["background", "building"])  # doctest: +SKIP
    PosixPath('m.safetensors')
    """
    if bands < 1:
        raise InvalidInputError(f"--bands must be >= 1, got {bands}")
    if len(classes) < 2:
        raise InvalidInputError(f"give at least 2 classes (background first), got {list(classes)}")
    contract = ModelContract(
        arch=check_arch(arch), encoder=check_encoder(encoder), bands=bands, dtype=dtype,
        classes=tuple(classes), colors=tuple(colors or default_colors(len(classes))), mode=mode,
        normalization=normalization, gsd=gsd, tile_size=tile_size,
    )  # fmt: skip
    net = build_network(
        contract.arch, contract.encoder, bands, contract.num_outputs,
        None if weights else encoder_weights,
    )  # fmt: skip
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
            "check --arch, --encoder, --bands and --classes"
        ) from exc
