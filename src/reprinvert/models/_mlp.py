"""Fully connected models: the seed's overcomplete autoencoder and the nets of the width study."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ._init import check_positive, seeded

__all__ = ["MLP_PRESETS", "FCNet", "MLPAutoencoder", "linear_net"]

Activation = Literal["gelu", "relu", "tanh", "linear"]
_ACTIVATIONS = ("gelu", "relu", "tanh", "linear")

#: Presets of :class:`MLPAutoencoder` (keyword arguments). ``"seed"`` is the seed author's overcomplete copier
#: on 32x32 colour images; the others are scaled down for CPUs and keep it overcomplete (hidden > input).
MLP_PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(in_features=3 * 32 * 32, hidden=(4000,) * 6, activation="gelu", norm="batch"),
    "quick": dict(in_features=3 * 16 * 16, hidden=(1024,) * 4, activation="gelu", norm="batch"),
    "tiny": dict(in_features=3 * 8 * 8, hidden=(256,) * 3, activation="gelu", norm="batch"),
}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation={name!r}: expected one of {list(_ACTIVATIONS)}")
    return {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}[name]()


class MLPAutoencoder(nn.Module):
    """A fully connected autoencoder on flattened inputs: ``[Linear -> act -> norm] * len(hidden) -> Linear``.

    ``forward`` accepts ``(B, C, H, W)`` (or any ``(B, ...)``) and returns the same shape; the model works on
    the flattened ``(B, in_features)`` view. Every layer lives in ``self.blocks`` (an ``nn.Sequential``) and
    ``self.head``, so every parameter is registered and trains.

    The seed's overcomplete copier is ``MLPAutoencoder.preset("seed")``: 3072 -> 4000, GELU, BatchNorm, five
    more hidden layers of 4000, -> 3072 (about 104.6M parameters).

    Args:
        in_features: elements per input sample (3072 for 32x32 RGB).
        hidden: widths of the hidden layers; ``hidden[0]`` is the width after the input layer.
        activation: ``"gelu"``, ``"relu"``, ``"tanh"`` or ``"linear"``.
        norm: ``"batch"`` (BatchNorm1d after each activation, as in the seed), ``"layer"`` or ``"none"``.
        output: ``"linear"`` (the seed's) or ``"sigmoid"``.
        seed: seed of the initial weights (torch's global RNG is left as it was); None draws from it.

    Example:
        >>> import torch
        >>> from reprinvert.models import MLPAutoencoder
        >>> ae = MLPAutoencoder(in_features=48, hidden=(64, 64))
        >>> ae(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(
        self,
        *,
        in_features: int = 3072,
        hidden: Sequence[int] = (4000,) * 6,
        activation: Activation = "gelu",
        norm: Literal["batch", "layer", "none"] = "batch",
        output: Literal["linear", "sigmoid"] = "linear",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_positive("in_features", in_features)
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError("hidden=(): expected at least one hidden width, e.g. hidden=(4000,) * 6")
        for w in hidden:
            check_positive("hidden width", w)
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"norm={norm!r}: expected 'batch', 'layer' or 'none'")
        if output not in ("linear", "sigmoid"):
            raise ValueError(f"output={output!r}: expected 'linear' or 'sigmoid'")
        _activation(activation)
        self.in_features = in_features
        self.hidden = hidden
        with seeded(seed):
            layers: list[nn.Module] = []
            prev = in_features
            for w in hidden:
                block = [nn.Linear(prev, w), _activation(activation)]
                if norm == "batch":
                    block.append(nn.BatchNorm1d(w))
                elif norm == "layer":
                    block.append(nn.LayerNorm(w))
                layers.append(nn.Sequential(*block))
                prev = w
            self.blocks = nn.Sequential(*layers)
            self.head = nn.Linear(prev, in_features)
        self.out_act: nn.Module = nn.Sigmoid() if output == "sigmoid" else nn.Identity()

    @classmethod
    def preset(cls, name: str = "seed", **overrides: Any) -> MLPAutoencoder:
        """Build a preset of :data:`MLP_PRESETS` (``"seed"``, ``"quick"``, ``"tiny"``) with overrides."""
        if name not in MLP_PRESETS:
            raise ValueError(f"preset={name!r}: expected one of {sorted(MLP_PRESETS)}")
        return cls(**{**MLP_PRESETS[name], **overrides})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` with ``in_features`` elements per sample -> the same shape."""
        if x[0].numel() != self.in_features:
            raise ValueError(
                f"MLPAutoencoder expects {self.in_features} elements per sample, got shape {tuple(x.shape)}"
            )
        y = self.out_act(self.head(self.blocks(x.reshape(x.shape[0], -1))))
        return y.reshape(x.shape)


class FCNet(nn.Module):
    """The fully connected nets of the width study: ``flatten -> [Linear -> act] * len(widths)``.

    Each layer is ``self.layers[i]`` (an ``nn.Sequential`` of Linear and activation; its name for
    :func:`reprinvert.invert` is ``"layers.<i>"``). ``init="orthogonal"`` draws orthogonal (semi-orthogonal
    for non-square) weights with zero bias, so a linear net of widths >= the input is an isometry.

    Args:
        in_features: elements per input sample (29 * 29 * 3 = 2523 in the seed's study).
        widths: output widths of the layers.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"`` or ``"linear"`` (no activation).
        bias: whether the linear layers have a bias.
        init: ``"default"`` (PyTorch's), ``"orthogonal"`` or ``"normal"`` (N(0, 1/fan_in)).
        seed: seed of the initial weights (global RNG untouched); None draws from it.

    Example:
        >>> import torch
        >>> from reprinvert.models import FCNet
        >>> FCNet(in_features=12, widths=(8, 24))(torch.rand(2, 3, 2, 2)).shape
        torch.Size([2, 24])
    """

    def __init__(
        self,
        *,
        in_features: int = 2523,
        widths: Sequence[int] = (5046, 5046),
        activation: Activation = "relu",
        bias: bool = True,
        init: Literal["default", "orthogonal", "normal"] = "default",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_positive("in_features", in_features)
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths=(): expected at least one layer width")
        for w in widths:
            check_positive("width", w)
        if init not in ("default", "orthogonal", "normal"):
            raise ValueError(f"init={init!r}: expected 'default', 'orthogonal' or 'normal'")
        _activation(activation)
        self.in_features = in_features
        self.widths = widths
        with seeded(seed):
            layers = []
            prev = in_features
            for w in widths:
                lin = nn.Linear(prev, w, bias=bias)
                if init == "orthogonal":
                    nn.init.orthogonal_(lin.weight)
                elif init == "normal":
                    nn.init.normal_(lin.weight, std=prev**-0.5)
                if init != "default" and lin.bias is not None:
                    nn.init.zeros_(lin.bias)
                layers.append(nn.Sequential(lin, _activation(activation)))
                prev = w
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` with ``in_features`` elements per sample -> ``(B, widths[-1])``."""
        return self.layers(x.reshape(x.shape[0], -1))


def linear_net(
    n: int, *, depth: int = 3, init: Literal["default", "orthogonal", "normal"] = "default", seed: int | None = 0
) -> FCNet:
    """A square linear net ``n -> n -> ... -> n`` without bias (invertible almost surely): the width study's
    "invertible is not the same as recoverable" model. Build it in float64 with ``.double()``."""
    return FCNet(in_features=n, widths=(n,) * depth, activation="linear", bias=False, init=init, seed=seed)
