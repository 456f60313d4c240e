"""RefineNet: multi-path refinement with residual conv units and chained residual pooling.

Lin, G., Milan, A., Shen, C., Reid, I. (2017). "RefineNet: Multi-Path Refinement Networks for
High-Resolution Semantic Segmentation". CVPR 2017, 1925-1934.
https://doi.org/10.1109/CVPR.2017.549

A 4-cascaded RefineNet over the encoder's features at strides 32, 16, 8 and 4. Each RefineNet
block has, per input path, an adaptive convolution of two *residual conv units* (RCU: ReLU,
3 x 3 conv, ReLU, 3 x 3 conv, plus the identity); a *multi-resolution fusion* (a 3 x 3 conv per
path to the smallest width, upsampling to the finest resolution, sum); *chained residual
pooling* (ReLU, then a chain of 5 x 5 max-pool (stride 1) + 3 x 3 conv blocks whose outputs are
all added to the input); and one output RCU. RefineNet-4 takes the stride-32 features alone;
RefineNet-3, -2 and -1 each fuse the previous block's output with the next finer features. Two
RCUs and a 1 x 1 convolution at stride 4 give scores, upsampled to the input.

In the paper the features are first reduced to 512 (stride 32) and 256 (others) channels; here
to ``2 * channels`` and ``channels`` (default 64). Uses an SMP encoder (``encoder_name``).
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
    encoder_channels,
    resize,
    smp_encoder,
)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3 x 3 convolution with same padding."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class RCU(nn.Module):
    """Residual conv unit: ReLU, 3 x 3 conv, ReLU, 3 x 3 conv, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(nnf.relu(self.conv1(nnf.relu(x))))


class ChainedResidualPooling(nn.Module):
    """ReLU, then ``blocks`` chained (5 x 5 max-pool, stride 1; 3 x 3 conv), each added on."""

    def __init__(self, channels: int, blocks: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(channels, channels) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nnf.relu(x)
        path = x
        for conv in self.convs:
            path = conv(nnf.max_pool2d(path, 5, stride=1, padding=2))
            x = x + path
        return x


class RefineNetBlock(nn.Module):
    """One RefineNet block over inputs of ``widths`` channels, coarsest first.

    Parameters
    ----------
    widths
        Channels of each input path; the output has ``min(widths)`` channels at the resolution
        of the finest (last) input.
    pool_blocks
        Number of pooling blocks in the chained residual pooling.
    """

    def __init__(self, widths: Sequence[int], pool_blocks: int = 2) -> None:
        super().__init__()
        out = min(widths)
        self.adaptive = nn.ModuleList(nn.Sequential(RCU(w), RCU(w)) for w in widths)
        self.fusion = nn.ModuleList(conv3x3(w, out) for w in widths) if len(widths) > 1 else None
        self.pooling = ChainedResidualPooling(out, pool_blocks)
        self.output = RCU(out)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        paths = [adapt(x) for adapt, x in zip(self.adaptive, inputs, strict=True)]
        if self.fusion is None:
            fused = paths[0]
        else:
            size = paths[-1].shape[-2:]
            scores = [resize(conv(p), size) for conv, p in zip(self.fusion, paths, strict=True)]
            fused = scores[0]
            for score in scores[1:]:
                fused = fused + score
        return self.output(self.pooling(fused))


class RefineNet(nn.Module):
    """4-cascaded RefineNet (Lin et al. 2017) over an SMP encoder.

    Parameters
    ----------
    encoder_name
        SMP encoder (random weights; nothing is downloaded).
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    channels
        Width of RefineNet-3/-2/-1 (256 in the paper); RefineNet-4 has twice as many.
    pool_blocks
        Pooling blocks in each chained residual pooling.
    """

    TILE_MULTIPLE: ClassVar[int] = 32  # the encoder's stride

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        channels: int = 64,
        pool_blocks: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("RefineNet", in_channels, classes, encoder_weights, kwargs)
        self.encoder = smp_encoder(encoder_name, in_channels)
        features = encoder_channels(self.encoder)
        widths = [2 * channels, channels, channels, channels]  # strides 32, 16, 8, 4
        self.reduce = nn.ModuleList(
            conv3x3(features[stage], width)
            for stage, width in zip((5, 4, 3, 2), widths, strict=True)
        )
        self.refine4 = RefineNetBlock([widths[0]], pool_blocks)
        self.refine3 = RefineNetBlock([widths[0], widths[1]], pool_blocks)
        self.refine2 = RefineNetBlock([widths[1], widths[2]], pool_blocks)
        self.refine1 = RefineNetBlock([widths[2], widths[3]], pool_blocks)
        self.head = nn.Sequential(RCU(channels), RCU(channels), nn.Conv2d(channels, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, "RefineNet")
        features = self.encoder(x)
        f32, f16, f8, f4 = (
            reduce(features[stage]) for reduce, stage in zip(self.reduce, (5, 4, 3, 2), strict=True)
        )
        y = self.refine4(f32)
        y = self.refine3(y, f16)
        y = self.refine2(y, f8)
        y = self.refine1(y, f4)
        return resize(self.head(y), x.shape[-2:])
