"""ENet: efficient neural network for real-time semantic segmentation.

Paszke, A., Chaurasia, A., Kim, S., Culurciello, E. (2016). "ENet: A Deep Neural Network
Architecture for Real-Time Semantic Segmentation". arXiv:1606.02147.
https://arxiv.org/abs/1606.02147

Paper Table 1:

* initial block: a 3 x 3 stride-2 convolution concatenated with a 2 x 2 max-pool of the input
  (13 + 3 = 16 channels for RGB, 1/2);
* stage 1: downsampling bottleneck to 64 channels (1/4), 4 regular bottlenecks;
* stage 2: downsampling bottleneck to 128 (1/8), then regular, dilated 2, asymmetric 5,
  dilated 4, regular, dilated 8, asymmetric 5, dilated 16;
* stage 3: stage 2 without its downsampling bottleneck;
* stage 4: upsampling bottleneck to 64 (1/4), 2 regular; stage 5: upsampling bottleneck to 16
  (1/2), 1 regular;
* a transposed convolution to the classes at full resolution.

A bottleneck has a main branch and an extension: 1 x 1 projection (to a quarter of the width),
the main convolution (3 x 3, dilated 3 x 3, or asymmetric 5 x 1 then 1 x 5), 1 x 1 expansion,
spatial dropout (0.01 in stage 1, 0.1 after), added to the main branch. Downsampling bottlenecks
replace the projection with a 2 x 2 stride-2 conv, and their main branch max-pools (keeping the
indices) and zero-pads the channels; upsampling bottlenecks unpool the main branch with the
indices of the matching downsampling and use a transposed convolution in the extension.
BN follows every convolution; PReLU in the encoder, ReLU in the decoder.

The initial block keeps every input band, so its width is ``13 + bands`` (16 for RGB, as in the
paper), and so is stage 5's; a downsampling bottleneck whose input is wider than its output
(more than 51 bands) projects its main branch with a 1 x 1 convolution instead of padding. ENet has its own encoder; ``encoder_name`` is accepted for a uniform
signature and ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as nnf

from geoseg.models.classic._common import (
    check_arguments,
    check_tile,
)

Kind = Literal["regular", "dilated", "asymmetric"]


def _activation(prelu: bool, channels: int) -> nn.Module:
    return nn.PReLU(channels) if prelu else nn.ReLU(inplace=True)


class InitialBlock(nn.Module):
    """Concatenation of a 3 x 3 stride-2 conv and a 2 x 2 max-pool of the input; BN, PReLU."""

    def __init__(self, in_channels: int, conv_channels: int = 13) -> None:
        super().__init__()
        self.out_channels = conv_channels + in_channels
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(self.out_channels)
        self.act = nn.PReLU(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.conv(x), nnf.max_pool2d(x, 2, stride=2)], dim=1)
        return self.act(self.bn(y))


class Bottleneck(nn.Module):
    """Regular, dilated or asymmetric bottleneck (same width in and out).

    Parameters
    ----------
    channels
        Width in and out.
    kind
        ``regular`` (3 x 3), ``dilated`` (3 x 3 with ``dilation``) or ``asymmetric`` (5 x 1 then
        1 x 5).
    dilation
        Dilation of a ``dilated`` bottleneck.
    dropout
        Spatial dropout rate of the extension.
    prelu
        PReLU (encoder) or ReLU (decoder).
    """

    def __init__(
        self,
        channels: int,
        kind: Kind = "regular",
        dilation: int = 1,
        dropout: float = 0.1,
        prelu: bool = True,
    ) -> None:
        super().__init__()
        inner = channels // 4
        if kind == "asymmetric":
            middle: nn.Module = nn.Sequential(
                nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(inner, inner, (1, 5), padding=(0, 2), bias=False),
            )
        else:
            d = dilation if kind == "dilated" else 1
            middle = nn.Conv2d(inner, inner, 3, padding=d, dilation=d, bias=False)
        self.ext = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            _activation(prelu, inner),
            middle,
            nn.BatchNorm2d(inner),
            _activation(prelu, inner),
            nn.Conv2d(inner, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.act = _activation(prelu, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.ext(x))


class DownsamplingBottleneck(nn.Module):
    """Halves height and width; the main branch max-pools (returning indices) and pads channels."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        inner = out_channels // 4
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 2, stride=2, bias=False),
            nn.BatchNorm2d(inner),
            nn.PReLU(inner),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False),
            nn.BatchNorm2d(inner),
            nn.PReLU(inner),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.pad = out_channels - in_channels
        self.project = nn.Conv2d(in_channels, out_channels, 1, bias=False) if self.pad < 0 else None
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        """Return the output, the pooling indices and the input size (for unpooling)."""
        main, indices = nnf.max_pool2d(x, 2, stride=2, return_indices=True)
        if self.project is not None:
            main = self.project(main)
        elif self.pad > 0:
            main = nnf.pad(main, (0, 0, 0, 0, 0, self.pad))
        return self.act(main + self.ext(x)), indices, x.shape


class UpsamplingBottleneck(nn.Module):
    """Doubles height and width; the main branch (1 x 1 conv + BN) is unpooled with indices."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        inner = in_channels // 4
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.ext = nn.Sequential(
            nn.Conv2d(in_channels, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(inner, inner, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        main = nnf.max_unpool2d(self.main(x), indices, (2, 2), stride=(2, 2), output_size=size[-2:])
        return self.act(main + self.ext(x))


STAGE2: tuple[tuple[Kind, int], ...] = (
    ("regular", 1),
    ("dilated", 2),
    ("asymmetric", 1),
    ("dilated", 4),
    ("regular", 1),
    ("dilated", 8),
    ("asymmetric", 1),
    ("dilated", 16),
)
"""Bottlenecks 2.1-2.8 (and 3.1-3.8) of paper Table 1: (kind, dilation)."""


class ENet(nn.Module):
    """ENet (Paszke et al. 2016), the paper's widths. Own encoder; ``encoder_name`` is ignored.

    Parameters
    ----------
    encoder_name
        Ignored (ENet is its own encoder).
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    dropout
        Spatial dropout from stage 2 on (0.1 in the paper; stage 1 uses a tenth of it).
    """

    TILE_MULTIPLE: ClassVar[int] = 8  # three stride-2 stages

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("ENet", in_channels, classes, encoder_weights, kwargs)
        self.initial = InitialBlock(in_channels)
        self.down1 = DownsamplingBottleneck(self.initial.out_channels, 64, dropout / 10)
        self.stage1 = nn.Sequential(*(Bottleneck(64, dropout=dropout / 10) for _ in range(4)))
        self.down2 = DownsamplingBottleneck(64, 128, dropout)
        self.stage2 = nn.Sequential(*(Bottleneck(128, k, d, dropout) for k, d in STAGE2))
        self.stage3 = nn.Sequential(*(Bottleneck(128, k, d, dropout) for k, d in STAGE2))
        self.up4 = UpsamplingBottleneck(128, 64, dropout)
        self.stage4 = nn.Sequential(
            *(Bottleneck(64, dropout=dropout, prelu=False) for _ in range(2))
        )
        # Unpooling uses the indices of down1, whose input had the initial block's width.
        self.up5 = UpsamplingBottleneck(64, self.initial.out_channels, dropout)
        self.stage5 = Bottleneck(self.initial.out_channels, dropout=dropout, prelu=False)
        self.fullconv = nn.ConvTranspose2d(self.initial.out_channels, classes, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, "ENet")
        y = self.initial(x)
        y, indices1, size1 = self.down1(y)
        y = self.stage1(y)
        y, indices2, size2 = self.down2(y)
        y = self.stage3(self.stage2(y))
        y = self.stage4(self.up4(y, indices2, size2))
        y = self.stage5(self.up5(y, indices1, size1))
        return self.fullconv(y)
