"""ICNet: image cascade network for real-time segmentation.

Zhao, H., Qi, X., Shen, X., Shi, J., Jia, J. (2018). "ICNet for Real-Time Semantic Segmentation
on High-Resolution Images". ECCV 2018, LNCS 11207, 418-434.
https://doi.org/10.1007/978-3-030-01219-9_25

Three branches see the image at three resolutions (paper Figure 2):

* low (1/4 input): the deep, dilated part of the backbone plus a pyramid pooling module, output
  at 1/32 of the input. As in the authors' implementation it shares its first layers with the
  medium branch, continuing from the medium branch's features instead of re-reading a 1/4 image;
* medium (1/2 input): the backbone's first stages, output at 1/16;
* high (full input): three light 3 x 3 convolutions with stride 2, output at 1/8.

Two *cascade feature fusion* (CFF) units merge them: the coarser map is upsampled 2x and goes
through a 3 x 3 conv with dilation 2 and BN, the finer one through a 1 x 1 conv and BN; they are
summed and passed through ReLU. Each CFF also has a 1 x 1 classifier on its upsampled coarse
input. The fused 1/8 map is upsampled to 1/4 and classified.

Here the backbone is an SMP encoder run on the 1/2 image with output stride 16 (its deepest
stage dilated, as ICNet's PSPNet backbone is): its stride-8 stage is the medium branch (1/16 of
the input) and its last stage the low branch (1/32). The encoder must support dilation
(``output_stride=16``); ResNets, EfficientNets, MobileNets and most SMP encoders do.

Cascade label guidance
----------------------
``forward`` always returns the main logits at the input size. In training mode it also stores
the three guided outputs on ``self.aux_logits``: logits at 1/16, 1/8 and 1/4 of the input (in
that order; the last is the main output before the final 4x upsampling). In eval mode
``self.aux_logits`` is the empty tuple. :meth:`ICNet.forward_with_aux` returns both at once, and
:func:`cascade_loss` weights the three losses by ``AUX_LOSS_WEIGHTS`` = (0.4, 0.4, 1.0), the
paper's lambda_1..3, against the target downsampled (nearest) to each output's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as nnf

from geoseg.models.classic._common import (
    check_arguments,
    check_tile,
    conv_bn_relu,
    encoder_channels,
    resize,
    smp_encoder,
)

AUX_LOSS_WEIGHTS = (0.4, 0.4, 1.0)
"""The paper's loss weights for the 1/16, 1/8 and 1/4 outputs (section 3.4)."""


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling as ICNet uses it: average pools (bins 1, 2, 3, 6) summed on."""

    def __init__(self, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = x
        for b in self.bins:
            out = out + resize(nnf.adaptive_avg_pool2d(x, b), size)
        return out


class CascadeFeatureFusion(nn.Module):
    """CFF: upsample the coarse map 2x, dilated 3 x 3 conv + BN; 1 x 1 conv + BN on the fine map;
    sum and ReLU. Also returns class logits from the upsampled coarse map (label guidance).
    """

    def __init__(self, coarse: int, fine: int, out: int, classes: int) -> None:
        super().__init__()
        self.coarse = nn.Sequential(
            nn.Conv2d(coarse, out, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(out)
        )
        self.fine = nn.Sequential(nn.Conv2d(fine, out, 1, bias=False), nn.BatchNorm2d(out))
        self.classifier = nn.Conv2d(coarse, classes, 1)

    def forward(
        self, coarse: torch.Tensor, fine: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the fused map (at ``fine``'s size) and the guidance logits (same size)."""
        up = resize(coarse, fine.shape[-2:])
        fused = nnf.relu(self.coarse(up) + self.fine(fine))
        return fused, self.classifier(up)


class ICNet(nn.Module):
    """ICNet (Zhao et al. 2018) over a dilated SMP encoder; see the module docstring.

    Parameters
    ----------
    encoder_name
        SMP encoder (random weights; nothing is downloaded); must support ``output_stride=16``.
    in_channels
        Number of input bands.
    classes
        Number of output channels.
    encoder_weights
        Must be ``None``.
    channels
        Width of the low branch after pyramid pooling (256 in the paper).
    fusion_channels
        Width of the CFF outputs (128 in the paper).

    Attributes
    ----------
    aux_logits
        After a training-mode forward: logits at 1/16, 1/8 and 1/4 of the input; else ``()``.
    """

    TILE_MULTIPLE: ClassVar[int] = 32  # encoder stride 16 on the 1/2 image

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 3,
        classes: int = 1,
        *,
        encoder_weights: str | None = None,
        channels: int = 128,
        fusion_channels: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_arguments("ICNet", in_channels, classes, encoder_weights, kwargs)
        try:
            self.encoder = smp_encoder(encoder_name, in_channels, output_stride=16)
        except (ValueError, NotImplementedError, AttributeError) as exc:
            raise ValueError(
                f"ICNet needs an encoder that can be dilated (output_stride=16); "
                f"{encoder_name} cannot: {exc}"
            ) from exc
        features = encoder_channels(self.encoder)
        self.high = nn.Sequential(
            conv_bn_relu(in_channels, 32, stride=2),
            conv_bn_relu(32, 32, stride=2),
            conv_bn_relu(32, 64, stride=2),
        )
        self.pyramid = PyramidPooling()
        self.low_reduce = conv_bn_relu(features[5], channels, kernel_size=1)
        self.cff_low_medium = CascadeFeatureFusion(channels, features[3], fusion_channels, classes)
        self.cff_medium_high = CascadeFeatureFusion(fusion_channels, 64, fusion_channels, classes)
        self.classifier = nn.Conv2d(fusion_channels, classes, 1)
        self.aux_logits: tuple[torch.Tensor, ...] = ()

    def forward_with_aux(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Main logits at the input size and the logits at 1/16, 1/8 and 1/4 of it."""
        check_tile(x, self.TILE_MULTIPLE, "ICNet")
        height, width = x.shape[-2:]
        half = nnf.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        features = self.encoder(half)
        medium = features[3]  # 1/16 of the input
        low = self.low_reduce(self.pyramid(features[5]))  # 1/32 of the input
        high = self.high(x)  # 1/8 of the input
        fused16, logits16 = self.cff_low_medium(low, medium)
        fused8, logits8 = self.cff_medium_high(fused16, high)
        logits4 = self.classifier(resize(fused8, (height // 4, width // 4)))
        return resize(logits4, (height, width)), (logits16, logits8, logits4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes, H, W)``; in training mode also sets ``self.aux_logits``."""
        logits, aux = self.forward_with_aux(x)
        self.aux_logits = aux if self.training else ()
        return logits

    def __getstate__(self) -> dict[str, Any]:
        # Stored training outputs are not part of the model (and non-leaf tensors cannot be
        # deep-copied): copies and pickles start without them.
        state = super().__getstate__()
        state["aux_logits"] = ()
        return state


def cascade_loss(
    aux_logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nnf.cross_entropy,
    weights: Sequence[float] = AUX_LOSS_WEIGHTS,
) -> torch.Tensor:
    """Cascade label guidance: the weighted sum of ``loss`` over ICNet's guided outputs.

    Parameters
    ----------
    aux_logits
        ``ICNet.aux_logits`` (or the second value of ``forward_with_aux``).
    target
        Full-resolution target: class indices ``(N, H, W)`` or ``(N, C, H, W)`` maps; it is
        downsampled with nearest neighbour to each output's size.
    loss
        ``loss(logits, target)``; cross-entropy by default.
    weights
        One weight per output; the paper's are (0.4, 0.4, 1.0).
    """
    if len(aux_logits) != len(weights):
        raise ValueError(f"{len(aux_logits)} outputs but {len(weights)} weights")
    total = torch.zeros((), device=target.device)
    for logits, weight in zip(aux_logits, weights, strict=True):
        t = target if target.dim() == 4 else target[:, None]
        small = nnf.interpolate(t.float(), size=logits.shape[-2:], mode="nearest").to(target.dtype)
        total = total + weight * loss(logits, small if target.dim() == 4 else small[:, 0])
    return total
