"""Full-Resolution Residual Network, variant A (FRRN-A).

Pohlen, T., Hermans, A., Mathias, M., Leibe, B. (2017). "Full-Resolution Residual Networks for
Semantic Segmentation in Street Scenes". CVPR 2017, 3309-3318.
https://doi.org/10.1109/CVPR.2017.353

Two streams run side by side. The *residual stream* stays at full resolution and is only ever
added to; the *pooling stream* goes down and up through max-pooling and unpooling. They meet in
full-resolution residual units (FRRUs): an FRRU max-pools the residual stream to the pooling
stream's scale, concatenates both, applies two conv-BN-ReLU layers (the new pooling stream) and
adds a 1 x 1 projection of the result, upsampled back to full resolution, to the residual stream.

FRRN-A (Table 1 of the paper): 5 x 5 conv (48) and 3 residual units (RUs); FRRU blocks of
3 x 96 (1/2), 4 x 192 (1/4), 2 x 384 (1/8), 2 x 384 (1/16) on the way down and 2 x 192 (1/8),
2 x 192 (1/4), 2 x 96 (1/2) on the way up; the streams are merged, 3 RUs and a 1 x 1 classifier
follow. The residual stream has 32 channels. Here every width is scaled by
``base_width / 48`` (default 16, i.e. a third) and the residual stream has ``residual_channels``.

FRRN has its own encoder; ``encoder_name`` is accepted for a uniform signature and ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as nnf

from geoseg.models.classic._common import (
    check_arguments,
    check_tile,
    conv_bn_relu,
)

# (width multiplier of base_width, number of FRRUs, scale) per FRRN-A block (paper Table 1).
FRRN_A_DOWN = ((2, 3, 2), (4, 4, 4), (8, 2, 8), (8, 2, 16))
FRRN_A_UP = ((4, 2, 8), (4, 2, 4), (2, 2, 2))


class ResidualUnit(nn.Module):
    """RU: conv-BN-ReLU, conv-BN, plus the identity (He et al. 2016), as FRRN uses it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FRRU(nn.Module):
    """Full-resolution residual unit at ``scale`` (1/scale of the input for the pooling stream).

    Parameters
    ----------
    in_channels
        Channels of the incoming pooling stream.
    out_channels
        Channels of the outgoing pooling stream.
    residual_channels
        Channels of the full-resolution residual stream.
    scale
        Down-sampling factor of the pooling stream relative to the residual stream.
    """

    def __init__(
        self, in_channels: int, out_channels: int, residual_channels: int, scale: int
    ) -> None:
        super().__init__()
        self.scale = scale
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels + residual_channels, out_channels),
            conv_bn_relu(out_channels, out_channels),
        )
        self.to_residual = nn.Conv2d(out_channels, residual_channels, 1)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the new pooling stream ``y`` and residual stream ``z``."""
        pooled = nnf.max_pool2d(z, self.scale, stride=self.scale)
        y = self.convs(torch.cat([y, pooled], dim=1))
        z = z + nnf.interpolate(self.to_residual(y), scale_factor=self.scale, mode="nearest")
        return y, z


class FRRUBlock(nn.Module):
    """``count`` FRRUs at the same scale; the first maps ``in_channels`` to ``out_channels``."""

    def __init__(
        self, in_channels: int, out_channels: int, residual_channels: int, scale: int, count: int
    ) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            FRRU(in_channels if i == 0 else out_channels, out_channels, residual_channels, scale)
            for i in range(count)
        )

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for unit in self.units:
            y, z = unit(y, z)
        return y, z


class FRRN(nn.Module):
    """FRRN-A (Pohlen et al. 2017). Own encoder; ``encoder_name`` is ignored.

    Parameters
    ----------
    encoder_name
        Ignored (FRRN's two-stream design is its own encoder).
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    base_width
        Width of the first stage (48 in the paper); the others are 2x, 4x and 8x of it.
    residual_channels
        Channels of the full-resolution residual stream (32 in the paper).
    """

    TILE_MULTIPLE: ClassVar[int] = 16  # four 2x2 poolings of the pooling stream

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        base_width: int = 16,
        residual_channels: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("FRRN", in_channels, classes, encoder_weights, kwargs)
        self.stem = nn.Sequential(
            conv_bn_relu(in_channels, base_width, kernel_size=5),
            *(ResidualUnit(base_width) for _ in range(3)),
        )
        self.split = nn.Conv2d(base_width, residual_channels, 1)
        width = base_width
        self.down = nn.ModuleList()
        for mult, count, scale in FRRN_A_DOWN:
            self.down.append(FRRUBlock(width, base_width * mult, residual_channels, scale, count))
            width = base_width * mult
        self.up = nn.ModuleList()
        for mult, count, scale in FRRN_A_UP:
            self.up.append(FRRUBlock(width, base_width * mult, residual_channels, scale, count))
            width = base_width * mult
        self.merge = nn.Conv2d(width + residual_channels, base_width, 1)
        self.head = nn.Sequential(*(ResidualUnit(base_width) for _ in range(3)))
        self.classifier = nn.Conv2d(base_width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, "FRRN")
        y = self.stem(x)
        z = self.split(y)
        for block in self.down:
            y = nnf.max_pool2d(y, 2, stride=2)
            y, z = block(y, z)
        for block in self.up:
            y = nnf.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y, z = block(y, z)
        y = nnf.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.merge(torch.cat([y, z], dim=1))
        return self.classifier(self.head(y))
