"""SegNet: encoder-decoder that upsamples with the encoder's max-pooling indices.

Badrinarayanan, V., Kendall, A., Cipolla, R. (2017). "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation". IEEE TPAMI 39(12), 2481-2495.
https://doi.org/10.1109/TPAMI.2016.2644615

The encoder is VGG16's 13 convolutional layers (blocks of 2, 2, 3, 3, 3 conv-BN-ReLU layers),
each block ending in a 2 x 2 max-pool that *remembers the argmax indices*. The decoder mirrors
it: each block first upsamples with ``max_unpool2d`` at those indices (a sparse map), then
densifies with conv-BN-ReLU layers; a final convolution gives the class scores.

SegNet has its own encoder (SMP encoders do not return pooling indices): ``encoder_name`` is
accepted for a uniform signature and ignored. The paper's widths are (64, 128, 256, 512, 512);
the default here is a quarter of that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as nnf

from geoseg.models.classic._common import (
    check_arguments,
    check_tile,
    conv_bn_relu,
)

VGG16_LAYERS = (2, 2, 3, 3, 3)
"""Convolutions per VGG16 block (SegNet's encoder)."""


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al. 2017). Own VGG16-style encoder; ``encoder_name`` is ignored.

    Parameters
    ----------
    encoder_name
        Ignored (SegNet needs pooling indices, so it builds its own encoder).
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    widths
        Channels of the five encoder blocks; the paper's are (64, 128, 256, 512, 512).
    """

    TILE_MULTIPLE: ClassVar[int] = 32  # five 2x2 poolings

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        widths: Sequence[int] = (16, 32, 64, 128, 128),
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("SegNet", in_channels, classes, encoder_weights, kwargs)
        if len(widths) != len(VGG16_LAYERS):
            raise ValueError(f"SegNet needs {len(VGG16_LAYERS)} widths, got {list(widths)}")
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width, layers in zip(widths, VGG16_LAYERS, strict=True):
            convs = [conv_bn_relu(previous if i == 0 else width, width) for i in range(layers)]
            self.encoder.append(nn.Sequential(*convs))
            previous = width
        # Decoder block i mirrors encoder block 4 - i; its last conv maps to the next width down.
        self.decoder = nn.ModuleList()
        for block in range(len(widths) - 1, -1, -1):
            width, layers = widths[block], VGG16_LAYERS[block]
            out = widths[block - 1] if block > 0 else widths[0]
            convs = [conv_bn_relu(width, width if i < layers - 1 else out) for i in range(layers)]
            self.decoder.append(nn.Sequential(*convs))
        self.classifier = nn.Conv2d(widths[0], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, "SegNet")
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for block in self.encoder:
            x = block(x)
            size = x.shape
            x, indices = nnf.max_pool2d(x, 2, stride=2, return_indices=True)
            pooled.append((indices, size))
        for block, (indices, size) in zip(self.decoder, reversed(pooled), strict=True):
            x = nnf.max_unpool2d(x, indices, (2, 2), stride=(2, 2), output_size=size[-2:])
            x = block(x)
        return self.classifier(x)
