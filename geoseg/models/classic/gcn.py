"""Global Convolutional Network (GCN) with boundary refinement.

Peng, C., Zhang, X., Yu, G., Luo, G., Sun, J. (2017). "Large Kernel Matters -- Improve Semantic
Segmentation by Global Convolutional Network". CVPR 2017, 4353-4361.
https://doi.org/10.1109/CVPR.2017.189

The encoder's features at strides 4, 8, 16 and 32 (ResNet's res-2 to res-5) each go through a
*GCN block*, a large k x k receptive field at low cost: the sum of a (k x 1 then 1 x k) branch
and a (1 x k then k x 1) branch, with no non-linearity, giving class score maps directly; then a
*boundary refinement* (BR) block, ``x + conv(ReLU(conv(x)))`` with 3 x 3 convs. From the coarsest
score map down, each map is upsampled 2x by a deconvolution, added to the next finer one and
refined by another BR. At stride 4 two more (deconvolution, BR) steps reach the input size
(paper Figure 2). The paper's best kernel is k = 15 (Table 1).

Uses an SMP encoder (``encoder_name``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from geoseg.models.classic._common import (
    bilinear_up2,
    check_arguments,
    check_tile,
    encoder_channels,
    smp_encoder,
)


class GCNBlock(nn.Module):
    """Global convolution: (k x 1 -> 1 x k) + (1 x k -> k x 1), no BN or ReLU.

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out (``out_channels`` is the number of classes in the paper).
    kernel_size
        k, odd.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 15) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"GCN kernel size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0)),
            nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, pad)),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class BoundaryRefinement(nn.Module):
    """BR: ``x + conv3x3(ReLU(conv3x3(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GCN(nn.Module):
    """GCN with boundary refinement (Peng et al. 2017) over an SMP encoder.

    Parameters
    ----------
    encoder_name
        SMP encoder (random weights; nothing is downloaded).
    in_channels
        Number of input bands.
    classes
        Number of output channels (also the width of every GCN and BR block, as in the paper).
    encoder_weights
        Must be ``None``.
    kernel_size
        The GCN's k (15 in the paper).
    """

    TILE_MULTIPLE: ClassVar[int] = 32  # the encoder's stride

    STAGES: ClassVar[tuple[int, ...]] = (5, 4, 3, 2)  # strides 32, 16, 8, 4

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        kernel_size: int = 15,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("GCN", in_channels, classes, encoder_weights, kwargs)
        self.encoder = smp_encoder(encoder_name, in_channels)
        features = encoder_channels(self.encoder)
        self.gcn = nn.ModuleList(GCNBlock(features[s], classes, kernel_size) for s in self.STAGES)
        self.br = nn.ModuleList(BoundaryRefinement(classes) for _ in self.STAGES)
        # One BR after each fusion (strides 16, 8, 4) and after each final deconv (2, 1).
        self.br_fused = nn.ModuleList(BoundaryRefinement(classes) for _ in range(3))
        self.deconv = nn.ModuleList(bilinear_up2(classes) for _ in range(5))
        self.br_final = nn.ModuleList(BoundaryRefinement(classes) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        check_tile(x, self.TILE_MULTIPLE, "GCN")
        features = self.encoder(x)
        scores = [
            br(gcn(features[s])) for gcn, br, s in zip(self.gcn, self.br, self.STAGES, strict=True)
        ]
        y = scores[0]
        for i, finer in enumerate(scores[1:]):
            y = self.br_fused[i](self.deconv[i](y) + finer)
        for i, br in enumerate(self.br_final):
            y = br(self.deconv[3 + i](y))
        return y
