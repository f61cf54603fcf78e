"""Reference models for reprinvert's experiments: autoencoders that copy, and the nets of the seed's studies.

* :class:`MLPAutoencoder` — fully connected autoencoder; ``MLPAutoencoder.preset("seed")`` is the seed's
  overcomplete copier (3072 -> 4000, GELU, BatchNorm, five hidden layers of 4000, -> 3072).
* :class:`UNet` — DoubleConv UNet with ``skip="concat" | "none" | "add"`` and optional bottleneck attention;
  ``UNet.preset("seed")`` is the seed's no-skip UNet (~31.0M parameters).
* :class:`ConvAutoencoder` — a small convolutional autoencoder.
* :class:`ConvClassifier` — the plain CNN of the depth study.
* :class:`FCNet`, :func:`linear_net` — the fully connected nets of the width study.

Every model takes keyword-only configuration and ``seed=`` (initial weights drawn without touching torch's
global RNG), and registers every layer in ``nn.Sequential`` / ``nn.ModuleList`` containers so all parameters
train.

Example:
    >>> import torch
    >>> from reprinvert.models import UNet, count_parameters
    >>> with torch.device("meta"):
    ...     print(round(count_parameters(UNet.preset("seed")) / 1e6, 1))
    31.0
"""

from __future__ import annotations

from torch import nn

from ._conv import ConvAutoencoder, ConvClassifier
from ._mlp import MLP_PRESETS, FCNet, MLPAutoencoder, linear_net
from ._unet import UNET_PRESETS, DoubleConv, SelfAttention2d, UNet

__all__ = [
    "MLP_PRESETS",
    "UNET_PRESETS",
    "ConvAutoencoder",
    "ConvClassifier",
    "DoubleConv",
    "FCNet",
    "MLPAutoencoder",
    "SelfAttention2d",
    "UNet",
    "count_parameters",
    "linear_net",
]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """``sum(p.numel() for p in model.parameters())`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
