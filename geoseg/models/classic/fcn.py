"""Fully convolutional networks: FCN-32s, FCN-16s and FCN-8s.

Long, J., Shelhamer, E., Darrell, T. (2015). "Fully Convolutional Networks for Semantic
Segmentation". CVPR 2015, 3431-3440. https://doi.org/10.1109/CVPR.2015.7298965

The paper turns VGG16's classifier into convolutions (``fc6`` 7 x 7 and ``fc7`` 1 x 1, each with
ReLU and dropout), adds a 1 x 1 *score* layer and upsamples the coarse score map (stride 32) back
to the input. FCN-16s adds a score layer on ``pool4`` (stride 16) and fuses by upsampling the
stride-32 scores 2x (a deconvolution initialised to bilinear) and summing; FCN-8s does the same
once more with ``pool3`` (stride 8). The skip score layers start at zero, so a fresh FCN-16s or
FCN-8s computes what FCN-32s computes and learns how much of the finer layers to use.

Here the backbone is any SMP encoder (depth 5, features at strides 1 to 32) instead of VGG16,
and ``fc6`` is a 3 x 3 convolution of ``head_channels`` channels (the 7 x 7 x 4096 of the paper
is far too large for small tiles).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as nnf

from geoseg.models.classic._common import (
    bilinear_up2,
    check_arguments,
    check_tile,
    encoder_channels,
    smp_encoder,
)


class _FCN(nn.Module):
    """FCN over an SMP encoder, fusing the score maps of the ``skips`` finest extra stages.

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
    head_channels
        Width of ``fc6``/``fc7`` (4096 in the paper).
    dropout
        Dropout after ``fc6`` and ``fc7`` (0.5 in the paper).
    """

    SKIPS: ClassVar[int] = 0
    TILE_MULTIPLE: ClassVar[int] = 32

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        head_channels: int = 256,
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments(type(self).__name__, in_channels, classes, encoder_weights, kwargs)
        self.encoder = smp_encoder(encoder_name, in_channels)
        channels = encoder_channels(self.encoder)
        self.fc = nn.Sequential(
            nn.Conv2d(channels[5], head_channels, 3, padding=1),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score = nn.Conv2d(head_channels, classes, 1)
        # score_pool4 (stride 16), score_pool3 (stride 8): zero-initialised as in the paper.
        self.score_skips = nn.ModuleList()
        self.upscores = nn.ModuleList()
        for stage in range(4, 4 - self.SKIPS, -1):
            skip = nn.Conv2d(channels[stage], classes, 1)
            with torch.no_grad():
                skip.weight.zero_()
                assert skip.bias is not None
                skip.bias.zero_()
            self.score_skips.append(skip)
            self.upscores.append(bilinear_up2(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, type(self).__name__)
        features = self.encoder(x)
        score = self.score(self.fc(features[5]))
        for i, (skip, up) in enumerate(zip(self.score_skips, self.upscores, strict=True)):
            score = up(score) + skip(features[4 - i])
        return nnf.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FCN32s(_FCN):
    """FCN-32s (Long et al. 2015): stride-32 scores upsampled 32x to the input.

    Uses an SMP encoder; see :class:`_FCN` for the parameters.
    """

    SKIPS = 0


class FCN16s(_FCN):
    """FCN-16s (Long et al. 2015): stride-32 scores upsampled 2x and summed with stride-16 scores.

    Uses an SMP encoder; see :class:`_FCN` for the parameters.
    """

    SKIPS = 1


class FCN8s(_FCN):
    """FCN-8s (Long et al. 2015): FCN-16s fused once more with stride-8 scores, upsampled 8x.

    Uses an SMP encoder; see :class:`_FCN` for the parameters.
    """

    SKIPS = 2
