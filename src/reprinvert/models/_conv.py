"""Small convolutional models: an autoencoder and the classifier of the depth study."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ._init import check_positive, seeded

__all__ = ["ConvAutoencoder", "ConvClassifier"]


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder.

    ``encoder``: ``[Conv3x3 stride 2 -> ReLU]`` per entry of ``channels``; ``decoder``: the mirror image with
    4x4 transposed convolutions, ReLU between them and none at the end. ``(B, C, H, W) -> (B, C, H, W)`` for H
    and W divisible by ``2 ** len(channels)``; the code is ``(B, channels[-1], H / 2^k, W / 2^k)``.

    Args:
        in_channels: image channels.
        channels: encoder widths, e.g. ``(32, 64)``.
        seed: seed of the initial weights (global RNG untouched); None draws from it.

    Example:
        >>> import torch
        >>> from reprinvert.models import ConvAutoencoder
        >>> ConvAutoencoder(channels=(8, 16))(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, in_channels: int = 3, channels: Sequence[int] = (32, 64), seed: int | None = 0) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels=(): expected at least one encoder width")
        for c in channels:
            check_positive("channel width", c)
        widths = (in_channels, *channels)
        with seeded(seed):
            enc: list[nn.Module] = []
            for a, b in pairwise(widths):
                enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
            dec: list[nn.Module] = []
            rev = widths[::-1]
            for i, (a, b) in enumerate(pairwise(rev)):
                dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
                if i < len(rev) - 2:
                    dec.append(nn.ReLU())
            self.encoder = nn.Sequential(*enc)
            self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.decoder(self.encoder(x))


class ConvClassifier(nn.Module):
    """A plain convolutional classifier for the depth study.

    ``stages.<i>`` = Conv3x3 (no bias, stride ``strides[i]``) -> BatchNorm -> ReLU with ``widths[i]`` channels;
    then global average pooling and ``head`` (Linear to ``classes``). Each ``stages.<i>`` is one layer of the
    depth curve.

    Args:
        in_channels: image channels.
        widths: channels of each stage.
        strides: stride of each stage (same length as ``widths``).
        classes: number of classes.
        seed: seed of the initial weights (global RNG untouched); None draws from it.

    Example:
        >>> import torch
        >>> from reprinvert.models import ConvClassifier
        >>> ConvClassifier(widths=(8, 16), strides=(1, 2), classes=4)(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 32, 64, 64, 128),
        strides: Sequence[int] = (1, 2, 1, 2, 1, 2),
        classes: int = 10,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        widths, strides = tuple(widths), tuple(strides)
        if not widths or len(widths) != len(strides):
            raise ValueError(
                f"widths={widths!r} and strides={strides!r}: expected two non-empty sequences of the same length"
            )
        for w in (*widths, *strides, classes, in_channels):
            check_positive("widths/strides/classes/in_channels entry", w)
        with seeded(seed):
            stages = []
            prev = in_channels
            for w, s in zip(widths, strides):
                stages.append(
                    nn.Sequential(nn.Conv2d(prev, w, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
                )
                prev = w
            self.stages = nn.Sequential(*stages)
            self.head = nn.Linear(prev, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, classes)``."""
        return self.head(self.stages(x).mean(dim=(2, 3)))
