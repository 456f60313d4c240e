"""Fully convolutional DenseNets: FC-DenseNet56, FC-DenseNet67 and FC-DenseNet103.

Jégou, S., Drozdzal, M., Vazquez, D., Romero, A., Bengio, Y. (2017). "The One Hundred Layers
Tiramisu: Fully Convolutional DenseNets for Semantic Segmentation". CVPR Workshops 2017,
1175-1183. https://doi.org/10.1109/CVPRW.2017.156

A 3 x 3 convolution (48 channels) is followed by five dense blocks, each concatenated with its
input and followed by a *transition down* (BN, ReLU, 1 x 1 conv, dropout, 2 x 2 max-pool); a
bottleneck dense block; then five *transitions up* (3 x 3 transposed conv, stride 2), each
concatenated with the skip from the matching down block and followed by a dense block. A dense
layer is BN, ReLU, 3 x 3 conv giving ``growth`` channels, dropout 0.2. To keep the up path
tractable, a transition up only upsamples the feature maps *created* by the previous dense block,
not its input. A 1 x 1 convolution gives the class scores.

Layer counts and growth rates are the paper's (Table 2 and section 4):

* FC-DenseNet56: 4 layers per dense block, growth 12;
* FC-DenseNet67: 5 layers per dense block, growth 16;
* FC-DenseNet103: 4, 5, 7, 10, 12 layers down, 15 in the bottleneck, 12, 10, 7, 5, 4 up,
  growth 16.

These networks have their own encoder; ``encoder_name`` is accepted for a uniform signature and
ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from geoseg.models.classic._common import (
    check_arguments,
    check_tile,
)


class DenseLayer(nn.Sequential):
    """BN, ReLU, 3 x 3 conv (``growth`` channels), dropout."""

    def __init__(self, in_channels: int, growth: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth, 3, padding=1),
            nn.Dropout2d(dropout),
        )


class DenseBlock(nn.Module):
    """``layers`` dense layers, each seeing the concatenation of the input and all earlier ones.

    ``forward`` returns only the new feature maps (``layers * growth`` channels); the caller
    concatenates them with the input where the architecture does.
    """

    def __init__(self, in_channels: int, layers: int, growth: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth, growth, dropout) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new: list[torch.Tensor] = []
        for layer in self.layers:
            new.append(layer(torch.cat([x, *new], dim=1)))
        return torch.cat(new, dim=1)


class TransitionDown(nn.Sequential):
    """BN, ReLU, 1 x 1 conv (same width), dropout, 2 x 2 max-pool."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
        )


class TransitionUp(nn.ConvTranspose2d):
    """3 x 3 transposed convolution with stride 2 (exactly doubles height and width)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1, output_padding=1)


class _FCDenseNet(nn.Module):
    """FC-DenseNet with the class's ``DOWN``, ``BOTTLENECK``, ``UP`` layer counts and ``GROWTH``.

    Parameters
    ----------
    encoder_name
        Ignored (the dense down path is the encoder).
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    dropout
        Dropout rate of dense layers and transitions down (0.2 in the paper).
    first_channels
        Channels of the first 3 x 3 convolution (48 in the paper).
    """

    DOWN: ClassVar[Sequence[int]] = ()
    BOTTLENECK: ClassVar[int] = 0
    UP: ClassVar[Sequence[int]] = ()
    GROWTH: ClassVar[int] = 0
    TILE_MULTIPLE: ClassVar[int] = 32  # five transitions down

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        dropout: float = 0.2,
        first_channels: int = 48,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments(type(self).__name__, in_channels, classes, encoder_weights, kwargs)
        growth = self.GROWTH
        self.first = nn.Conv2d(in_channels, first_channels, 3, padding=1)
        channels = first_channels
        skips: list[int] = []
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        for layers in self.DOWN:
            self.down_blocks.append(DenseBlock(channels, layers, growth, dropout))
            channels += layers * growth
            skips.append(channels)
            self.transitions_down.append(TransitionDown(channels, dropout))
        self.bottleneck = DenseBlock(channels, self.BOTTLENECK, growth, dropout)
        upsampled = self.BOTTLENECK * growth
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for layers, skip in zip(self.UP, reversed(skips), strict=True):
            self.transitions_up.append(TransitionUp(upsampled))
            channels = upsampled + skip
            self.up_blocks.append(DenseBlock(channels, layers, growth, dropout))
            upsampled = layers * growth
        self.classifier = nn.Conv2d(channels + upsampled, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, type(self).__name__)
        stack = self.first(x)
        skips: list[torch.Tensor] = []
        for block, down in zip(self.down_blocks, self.transitions_down, strict=True):
            stack = torch.cat([stack, block(stack)], dim=1)
            skips.append(stack)
            stack = down(stack)
        new = self.bottleneck(stack)
        for up, block, skip in zip(
            self.transitions_up, self.up_blocks, reversed(skips), strict=True
        ):
            stack = torch.cat([up(new), skip], dim=1)
            new = block(stack)
        return self.classifier(torch.cat([stack, new], dim=1))


class FCDenseNet56(_FCDenseNet):
    """FC-DenseNet56 (Jégou et al. 2017): 4 layers per dense block, growth rate 12."""

    DOWN = (4, 4, 4, 4, 4)
    BOTTLENECK = 4
    UP = (4, 4, 4, 4, 4)
    GROWTH = 12


class FCDenseNet67(_FCDenseNet):
    """FC-DenseNet67 (Jégou et al. 2017): 5 layers per dense block, growth rate 16."""

    DOWN = (5, 5, 5, 5, 5)
    BOTTLENECK = 5
    UP = (5, 5, 5, 5, 5)
    GROWTH = 16


class FCDenseNet103(_FCDenseNet):
    """FC-DenseNet103 (Jégou et al. 2017): 4-5-7-10-12 layers, bottleneck 15, growth rate 16."""

    DOWN = (4, 5, 7, 10, 12)
    BOTTLENECK = 15
    UP = (12, 10, 7, 5, 4)
    GROWTH = 16
