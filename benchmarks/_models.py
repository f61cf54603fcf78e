"""Small, seeded benchmark models and inputs shared by the scripts in ``benchmarks/``.

Every model is untrained, built under a fixed seed, and returned in eval mode. BatchNorm layers get running
statistics from a few forward passes in training mode on seeded synthetic images (never the benchmark's own
inputs), so they act like the normalisation of a real network rather than the identity.

Inputs are real photos from scikit-image's bundled data when ``skimage`` imports (astronaut, chelsea, coffee),
resized with Pillow and scaled to [0, 1]; otherwise smooth seeded synthetic images. Signals for the 1-D net are
seeded sums of sinusoids, a chirp and a smoothed step, in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "conv1d_net",
    "image_source",
    "images",
    "mlp",
    "residual_cnn",
    "signals",
    "small_cnn",
]


def _calibrate_batchnorm(model: nn.Module, make_input: Callable[[torch.Generator], torch.Tensor], seed: int) -> None:
    """Set BatchNorm running statistics from a few seeded synthetic batches (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    g = torch.Generator().manual_seed(seed)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(make_input(g))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def _smooth_images(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Smooth random images in [0, 1]: low-resolution noise upsampled bicubically, plus a few colour gradients."""
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0, 1, size)
    grad = 0.25 * torch.rand(n, 3, 1, 1, generator=g) * (ramp.view(1, 1, 1, -1) + ramp.view(1, 1, -1, 1))
    return (0.8 * x + grad).clamp(0, 1)


def image_source() -> str:
    """``"scikit-image"`` if the bundled photos can be loaded, else ``"synthetic"``."""
    try:
        import skimage.data  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError:
        return "synthetic"
    return "scikit-image"


def images(size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """Three RGB images ``(3, 3, size, size)`` in [0, 1] and their names."""
    if image_source() == "scikit-image":
        import numpy as np
        import skimage.data
        from PIL import Image

        names = ["astronaut", "chelsea", "coffee"]
        out = []
        for name in names:
            arr = getattr(skimage.data, name)()
            img = Image.fromarray(arr).convert("RGB")
            w, h = img.size
            s = min(w, h)  # centre square crop, then resize
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            img = img.resize((size, size), Image.Resampling.LANCZOS)
            out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
        return torch.stack(out).contiguous(), names
    g = torch.Generator().manual_seed(1234)
    return _smooth_images(3, size, g), ["synthetic-0", "synthetic-1", "synthetic-2"]


def signals(n: int = 3, channels: int = 2, length: int = 256, seed: int = 7) -> torch.Tensor:
    """Seeded smooth signals ``(n, channels, length)`` in [-1, 1]: sinusoids, a chirp and a smoothed step."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, length)
    out = torch.empty(n, channels, length)
    for i in range(n):
        for c in range(channels):
            f1, f2 = 1 + 6 * torch.rand(2, generator=g)
            p1, p2 = 2 * math.pi * torch.rand(2, generator=g)
            chirp = torch.sin(2 * math.pi * (2 + 10 * t) * t + p2)
            step = torch.sigmoid((t - 0.3 - 0.4 * torch.rand(1, generator=g)) * 40)
            s = (
                0.5 * torch.sin(2 * math.pi * f1 * t + p1)
                + 0.3 * chirp
                + 0.4 * (step - 0.5)
                + 0.1 * torch.sin(2 * math.pi * 4 * f2 * t)
            )
            out[i, c] = s / s.abs().max()
    return out


def small_cnn(seed: int = 0) -> nn.Sequential:
    """4 conv blocks (conv 3x3, BatchNorm, ReLU): 3 -> 32 -> 64 (stride 2) -> 64 -> 128 (stride 2).

    Layers used by the benchmarks: ``"2"`` (shallow: first ReLU, 32x32x32) and ``"8"`` (middle: third ReLU,
    64x16x16).
    """
    torch.manual_seed(seed)
    chans = [(3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
    layers: list[nn.Module] = []
    for cin, cout, stride in chans:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    model = nn.Sequential(*layers)
    _calibrate_batchnorm(model, lambda g: _smooth_images(8, 32, g), seed + 100)
    return model


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = _Block(32, 32, 1)
        self.layer2 = _Block(32, 64, 2)
        self.layer3 = _Block(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def residual_cnn(seed: int = 0) -> nn.Module:
    """A small ResNet: stem (32 ch), three basic blocks 32 -> 64 (stride 2) -> 128 (stride 2), pool, linear.

    Layer used by the benchmarks: ``"layer2"`` (middle: 64x16x16 after the second block).
    """
    torch.manual_seed(seed)
    model = _ResNet()
    _calibrate_batchnorm(model, lambda g: _smooth_images(8, 32, g), seed + 100)
    return model


def mlp(in_features: int = 768, width: int = 2048, seed: int = 0) -> nn.Sequential:
    """Fully connected ReLU net on flattened input: in -> width -> width -> 10.

    Layer used by the benchmarks: ``"3"`` (the second hidden ReLU, ``width`` wide, over 2.5x the input).
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    return model.eval()


def conv1d_net(channels: int = 2, seed: int = 0) -> nn.Sequential:
    """1-D conv net on ``(B, C, L)`` signals: C -> 16 -> 32 (stride 2) -> 32 -> 64 (stride 2), ReLU after each.

    Layer used by the benchmarks: ``"5"`` (middle: third ReLU, 32 x L/2).
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(channels, 16, 7, padding=3),
        nn.ReLU(),
        nn.Conv1d(16, 32, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 64, 5, stride=2, padding=2),
        nn.ReLU(),
    )
    return model.eval()
