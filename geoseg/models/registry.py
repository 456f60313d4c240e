"""Architectures and encoders by name, and the factory that builds a network.

Like SMP's own ``create_model``: a dict registry, one factory, errors that list valid choices.
The registry holds SMP's architectures and geoseg's classic ones
(:mod:`geoseg.models.classic`: FCN, SegNet, FRRN, FC-DenseNet, RefineNet, GCN, ICNet, ENet).
Encoders are always built with ``encoder_weights=None`` (nothing is downloaded); pretrained
encoder weights can be loaded from a local file.
"""

from __future__ import annotations

import difflib
import functools
import os
from typing import Any

from geoseg.errors import ModelFileError, choice_error
from geoseg.models._smp import smp
from geoseg.models.modelfile import file_sha256, read_state_dict
from geoseg.models.pretrained import MIN_MATCHED, EncoderLoad, map_encoder_state, weight_count


@functools.cache
def architectures() -> dict[str, type]:
    """Lower-case architecture name -> network class (``unet``, ``deeplabv3plus``, ``fcn8s``...)."""
    from geoseg.models.classic import CLASSIC_ARCHITECTURES  # torch: imported on first use

    smp_archs = {name.lower(): cls for name, cls in smp().MODEL_ARCHITECTURES_MAPPING.items()}
    return {**smp_archs, **CLASSIC_ARCHITECTURES}


def uses_encoder(arch: str) -> bool:
    """Whether ``arch`` is built over an SMP encoder (every SMP one; some classic ones)."""
    from geoseg.models.classic import CLASSIC_ARCHITECTURES, USES_ENCODER

    key = arch.lower()
    return key not in CLASSIC_ARCHITECTURES or key in USES_ENCODER


def tile_multiple(arch: str) -> int:
    """What tile sides must be a multiple of for ``arch`` (32 for SMP's; see each classic one)."""
    from geoseg.models.classic import CLASSIC_ARCHITECTURES
    from geoseg.models.classic import tile_multiple as classic_multiple

    return classic_multiple(arch) if arch.lower() in CLASSIC_ARCHITECTURES else 32


@functools.cache
def encoders() -> tuple[str, ...]:
    """Every encoder name SMP knows."""
    return tuple(smp().encoders.get_encoder_names())


def check_arch(arch: str) -> str:
    """Normalise an architecture name or raise listing the valid ones."""
    key = arch.lower()
    if key not in architectures():
        raise choice_error("architecture", arch, list(architectures()), option="arch")
    return key


TIMM_PREFIX = "tu-"
"""SMP's prefix for any timm model used as an encoder (``tu-convnext_tiny``)."""


def is_timm_encoder(encoder: str) -> bool:
    """True for ``tu-<name>`` where ``<name>`` is a timm model."""
    if not encoder.startswith(TIMM_PREFIX):
        return False
    import timm

    return bool(timm.is_model(encoder.removeprefix(TIMM_PREFIX)))


def check_encoder(encoder: str) -> str:
    """Return ``encoder`` or raise with the closest valid names (SMP's, or ``tu-`` + a timm model)."""
    smp()  # timm must be imported through the torchvision work-around
    if encoder in encoders() or is_timm_encoder(encoder):
        return encoder
    close = difflib.get_close_matches(encoder, encoders(), n=8, cutoff=0.5)
    raise choice_error("encoder", encoder, close or list(encoders()), option="encoder")


def build_network(
    arch: str,
    encoder: str,
    in_channels: int,
    outputs: int,
    encoder_weights_file: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Build an SMP network with random weights (or a local pretrained encoder).

    Parameters
    ----------
    arch, encoder
        SMP names, e.g. ``unet`` and ``resnet34``.
    in_channels
        Number of input bands.
    outputs
        Output channels (classes, or 1 for binary).
    encoder_weights_file
        A local state dict for the encoder (``.safetensors`` or ``.pt`` / ``.pth``).

    Examples
    --------
    >>> net = build_network("unet", "resnet18", in_channels=4, outputs=3)  # doctest: +SKIP
    """
    cls = architectures()[check_arch(arch)]
    if uses_encoder(arch):
        check_encoder(encoder)
    elif encoder_weights_file is not None:
        raise ModelFileError(
            f"{arch} has its own encoder, so `encoder_weights` cannot be loaded into it; choose "
            "an architecture built over an SMP encoder (unet, fpn, fcn8s, ...)",
            option="encoder_weights",
        )
    try:
        net = cls(
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=outputs,
            **kwargs,
        )
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelFileError(f"cannot build {arch} with encoder {encoder}: {exc}") from exc
    if encoder_weights_file is not None:
        load_encoder_weights(net, encoder_weights_file)
    return net


def load_encoder_weights(net: Any, path: str | os.PathLike[str]) -> EncoderLoad:
    """Load a local timm / torchvision / SMP encoder checkpoint into ``net.encoder``.

    Names are matched after removing wrapper prefixes (:func:`~geoseg.models.pretrained.canonical`)
    and the first convolution is adapted to the band count; a file providing less than 90 % of
    the encoder's weights is refused in one line naming it.
    """
    expected = net.encoder.state_dict()
    mapped, adapted = map_encoder_state(read_state_dict(path), expected)
    matched, total = weight_count(mapped), weight_count(expected)
    report = EncoderLoad(os.fspath(path), matched, total, file_sha256(path), adapted)
    if report.share < MIN_MATCHED:
        raise ModelFileError(
            f"{path}: only {report.matched} of the encoder's {report.total} tensors match by "
            f"name and shape (e.g. {next(iter(expected))!r}); give `encoder_weights` for this "
            "encoder",
            option="encoder_weights",
        )
    net.encoder.load_state_dict({**expected, **mapped})
    return report
