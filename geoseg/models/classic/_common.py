"""Building blocks shared by the classic architectures.

Nothing here is specific to one paper: argument checks, the SMP encoder factory (always offline,
``weights=None``), conv-BN-ReLU, bilinear initialisation of transposed convolutions and resizing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as nnf


def check_sizes(in_channels: int, classes: int) -> None:
    """Raise ``ValueError`` unless both the band count and the class count are positive."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")


def check_no_weights(encoder_weights: str | None) -> None:
    """Refuse pretrained weights by name: nothing is ever downloaded."""
    if encoder_weights is not None:
        raise ValueError(
            f"encoder_weights={encoder_weights!r}: classic architectures never download weights; "
            "pass encoder_weights=None and load a local state dict instead"
        )


def check_no_kwargs(arch: str, kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the keyword arguments an architecture does not take."""
    if kwargs:
        raise TypeError(f"{arch} got unexpected keyword arguments: {sorted(kwargs)}")


def check_arguments(
    arch: str, in_channels: int, classes: int, encoder_weights: str | None, kwargs: dict[str, Any]
) -> None:
    """The checks every classic architecture runs first (sizes, no downloads, no stray keywords)."""
    check_sizes(in_channels, classes)
    check_no_weights(encoder_weights)
    check_no_kwargs(arch, kwargs)


def smp_encoder(name: str, in_channels: int, output_stride: int = 32, **kwargs: Any) -> nn.Module:
    """An SMP encoder of depth 5 with random weights (features at strides 1, 2, 4, 8, 16, 32).

    Parameters
    ----------
    name
        SMP encoder name, e.g. ``resnet18``.
    in_channels
        Number of input bands.
    output_stride
        32 for a plain encoder, 16 or 8 to dilate the deepest stages instead of striding them.
    **kwargs
        Passed on to ``get_encoder``.
    """
    from geoseg.models._smp import smp

    return smp().encoders.get_encoder(
        name,
        in_channels=in_channels,
        depth=5,
        weights=None,
        output_stride=output_stride,
        **kwargs,
    )


def encoder_channels(encoder: nn.Module) -> list[int]:
    """Channels of the six feature maps an SMP encoder returns (strides 1 to 32)."""
    return [int(c) for c in encoder.out_channels]  # type: ignore[union-attr]


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
) -> nn.Sequential:
    """``Conv2d`` (same padding, no bias) -> ``BatchNorm2d`` -> ``ReLU``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights of a per-channel bilinear upsampling filter, shape ``(C, C, k, k)``.

    FCN (Long et al. 2015, section 3.3) initialises its learnable deconvolutions this way.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - torch.abs(torch.arange(kernel_size, dtype=torch.float32) - center) / factor
    filt = ramp[:, None] * ramp[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    for c in range(channels):
        weight[c, c] = filt
    return weight


def bilinear_up2(channels: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """A 2x transposed convolution (kernel 4, stride 2, padding 1) initialised to bilinear."""
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 4))
    up.weight.requires_grad_(learnable)
    return up


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of a feature or score map to ``size`` (H, W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return nnf.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def check_tile(x: torch.Tensor, multiple: int, arch: str) -> None:
    """Raise ``ValueError`` unless the input's height and width are multiples of ``multiple``."""
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"{arch} needs tiles whose height and width are multiples of {multiple}; "
            f"got {height} x {width}"
        )
