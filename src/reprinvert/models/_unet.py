"""A UNet whose skip connections can be concatenated (the usual UNet), added, or removed (the seed's variant)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._init import check_positive, seeded

__all__ = ["UNET_PRESETS", "DoubleConv", "SelfAttention2d", "UNet"]

Skip = Literal["concat", "none", "add"]
_SKIPS = ("concat", "none", "add")

#: Presets of :class:`UNet`. ``"seed"`` is the seed author's no-skip UNet: DoubleConv blocks, channels
#: 64-128-256-512-1024, transposed-convolution upsampling, ~31.0M parameters (the same count with
#: ``skip="concat"``, since "none" concatenates the upsampled tensor with itself). The smaller ones are for CPUs.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(base=64, depth=4, skip="none"),
    "quick": dict(base=16, depth=3, skip="none"),
    "tiny": dict(base=4, depth=2, skip="none"),
}


class DoubleConv(nn.Sequential):
    """``[Conv3x3 (no bias) -> BatchNorm -> ReLU] * 2``: ``(B, in, H, W) -> (B, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class SelfAttention2d(nn.Module):
    """Residual multi-head self-attention over the H*W positions: ``x + attn(norm(x))``, shape kept."""

    def __init__(self, channels: int, *, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention heads={heads} must divide the bottleneck channels {channels}")
        self.norm = nn.GroupNorm(1, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        y, _ = self.attn(t, t, t, need_weights=False)
        return x + y.transpose(1, 2).reshape(b, c, h, w)


class _Up(nn.Module):
    """Transposed-conv upsampling by 2, the skip combined as ``skip`` says, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, skip: Skip) -> None:
        super().__init__()
        self.skip = skip
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(in_channels // 2 if skip == "add" else in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        if dh or dw:  # odd sizes: pad to the encoder's size (uses only its shape)
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        if self.skip == "concat":
            x = torch.cat([skip, x], dim=1)
        elif self.skip == "add":
            x = x + skip
        else:  # "none": the seed's variant, the upsampled tensor concatenated with itself
            x = torch.cat([x, x], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """A UNet of DoubleConv blocks with ``skip="concat" | "none" | "add"``.

    Layout (module names as :func:`reprinvert.list_layers` shows them): ``inc`` (DoubleConv to ``base``
    channels), ``downs.0 .. downs.<depth-1>`` (MaxPool then DoubleConv, doubling the channels; ``downs.<depth-1>``
    is the bottleneck), ``attention`` (optional), ``ups.0 .. ups.<depth-1>`` (transposed conv, skip, DoubleConv)
    and ``outc`` (1x1 conv to ``out_channels``, the last layer). Input ``(B, C, H, W)`` -> ``(B, out_channels,
    H, W)``.

    With ``skip="none"`` the decoder never sees an encoder tensor: the only path from the input to the output
    goes through the bottleneck. ``UNet.preset("seed")`` is the seed author's no-skip UNet (~31.0M parameters).

    Args:
        in_channels: input channels.
        out_channels: output channels (default ``in_channels``: an autoencoder).
        base: channels of the first level; level i has ``base * 2**i``.
        depth: number of downsamplings (4 in the classic UNet).
        skip: ``"concat"`` (ordinary UNet), ``"none"`` (the seed's no-skip variant) or ``"add"``.
        attention: add residual self-attention at the bottleneck.
        heads: attention heads.
        seed: seed of the initial weights (torch's global RNG is left as it was); None draws from it.

    Example:
        >>> import torch
        >>> from reprinvert.models import UNet
        >>> UNet(base=4, depth=2, skip="none")(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int | None = None,
        base: int = 64,
        depth: int = 4,
        skip: Skip = "concat",
        attention: bool = False,
        heads: int = 4,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("base", base)
        check_positive("depth", depth)
        if skip not in _SKIPS:
            raise ValueError(f"skip={skip!r}: expected one of {list(_SKIPS)} ('none' is the seed's no-skip UNet)")
        out_channels = in_channels if out_channels is None else check_positive("out_channels", out_channels)
        self.skip = skip
        self.depth = depth
        chans = [base * 2**i for i in range(depth + 1)]
        with seeded(seed):
            self.inc = DoubleConv(in_channels, chans[0])
            self.downs = nn.ModuleList(
                nn.Sequential(nn.MaxPool2d(2), DoubleConv(chans[i], chans[i + 1])) for i in range(depth)
            )
            self.attention: nn.Module = SelfAttention2d(chans[-1], heads=heads) if attention else nn.Identity()
            self.ups = nn.ModuleList(_Up(chans[i + 1], chans[i], skip) for i in reversed(range(depth)))
            self.outc = nn.Conv2d(chans[0], out_channels, 1)

    @classmethod
    def preset(cls, name: str = "seed", **overrides: Any) -> UNet:
        """Build a preset of :data:`UNET_PRESETS` (``"seed"``, ``"quick"``, ``"tiny"``) with overrides,
        e.g. ``UNet.preset("seed", skip="concat")``."""
        if name not in UNET_PRESETS:
            raise ValueError(f"preset={name!r}: expected one of {sorted(UNET_PRESETS)}")
        return cls(**{**UNET_PRESETS[name], **overrides})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""
        h = self.inc(x)
        encoder = [h]
        for down in self.downs:
            h = down(h)
            encoder.append(h)
        h = self.attention(h)
        for up, skip in zip(self.ups, reversed(encoder[:-1])):
            h = up(h, skip)
        return self.outc(h)
