"""Private: the input domain: how a model expects its input normalised, and the baselines' scale.

Pretrained image models take ``(x - mean) / std``; reprinvert keeps x in pixel space (initialisation, clamping,
regularizers, metrics, PSNR and figures) and normalises only what is fed to the model. :func:`resolve_normalize`
turns the user's ``normalize=`` into a :class:`Normalize`, which every place that feeds the model applies.

:class:`Domain` carries the options that travel together (``normalize``, ``data_range``, ``sigma``) as one
checked value: ``invert`` and ``sweep`` build it once, and the search, the batched sweep and the result share it.
An option of the input domain is added here, once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

from ._tensors import flatten_batch

__all__ = [
    "DEFAULT_SIGMA", "NORMALIZATIONS", "Domain", "Normalize", "NormalizeSpec", "chance_input", "resolve_normalize",
    "resolve_sigma",
]

#: The reference perturbation's standard deviation, as a fraction of the data range (the seed's 1/25).
DEFAULT_SIGMA = 1.0 / 25.0

#: Named normalisations: ``(mean, std)`` per RGB channel for inputs in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision / timm ImageNet models
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Inception / TF-style models and Hugging Face ViT: (x - 0.5) / 0.5 maps [0, 1] to [-1, 1]
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

NormalizeSpec = Union[None, str, tuple[Sequence[float], Sequence[float]], "Normalize"]
"""``None``, a name from :data:`NORMALIZATIONS` (``"imagenet"``, ``"inception"``) or ``(mean, std)``."""


@dataclass(frozen=True)
class Normalize:
    """Feed the model ``(x - mean) / std``, per channel (dimension 1 of a ``(B, C, ...)`` input).

    Attributes:
        mean: per channel (or one value for all channels).
        std: per channel (or one value for all channels), every value > 0.
        name: the name it was given by, if any.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` broadcast over channels (a new tensor; x is not changed)."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}

    def __str__(self) -> str:
        if self.name:
            return self.name
        return f"{','.join(f'{v:g}' for v in self.mean)}/{','.join(f'{v:g}' for v in self.std)}"


def resolve_normalize(spec: NormalizeSpec, x: torch.Tensor | None = None) -> Normalize | None:
    """Check ``normalize=`` and turn it into a :class:`Normalize` (or None).

    Args:
        spec: ``None``, ``"imagenet"``, ``"inception"``, ``(mean, std)`` (numbers or per-channel sequences) or a
            :class:`Normalize`.
        x: the input, to check that it is a floating ``(B, C, ...)`` tensor with as many channels as given.

    Raises:
        ValueError, TypeError: naming the value and what is expected.
    """
    if spec is None:
        return None
    if isinstance(spec, Normalize):
        norm = spec
    elif isinstance(spec, str):
        key = spec.strip().lower()
        if key not in NORMALIZATIONS:
            raise ValueError(
                f"normalize={spec!r} is unknown; expected one of {sorted(NORMALIZATIONS)}, (mean, std) per channel, "
                "or None (the model takes x as it is)"
            )
        mean, std = NORMALIZATIONS[key]
        norm = Normalize(mean=tuple(mean), std=tuple(std), name=key)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        mean_t, std_t = (_floats(v, "mean" if k == 0 else "std", spec) for k, v in enumerate(spec))
        norm = Normalize(mean=mean_t, std=std_t)
    else:
        raise TypeError(
            f"normalize must be None, a name ({', '.join(sorted(NORMALIZATIONS))}) or a pair (mean, std), got "
            f"{type(spec).__name__}: {spec!r}"
        )
    if len(norm.mean) != len(norm.std):
        raise ValueError(
            f"normalize: mean has {len(norm.mean)} values and std {len(norm.std)}; give one per channel for both"
        )
    if any(not (math.isfinite(s) and s > 0) for s in norm.std) or any(not math.isfinite(m) for m in norm.mean):
        raise ValueError(f"normalize: std must be positive and finite and mean finite, got {norm.mean}, {norm.std}")
    if x is not None:
        if not x.is_floating_point():
            raise TypeError(
                f"normalize={spec!r} applies to floating inputs, but x has dtype {x.dtype}; token ids are not "
                "normalised (leave normalize=None)"
            )
        channels = x.shape[1] if x.dim() >= 2 else 1
        if len(norm.mean) not in (1, channels):
            raise ValueError(
                f"normalize has {len(norm.mean)} values per statistic, but x has {channels} channels (dimension 1 "
                f"of shape {tuple(x.shape)}); give 1 or {channels} values"
            )
    return norm


def _floats(value: Any, name: str, spec: Any) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) else list(value) if isinstance(value, Sequence) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise TypeError(f"normalize={spec!r}: {name} must be a number or a sequence of numbers per channel")
    return tuple(float(v) for v in values)


def feed(x: torch.Tensor, normalize: Normalize | None) -> torch.Tensor:
    """What the model is fed for the pixel-space input ``x``."""
    return x if normalize is None else normalize.apply(x)


def chance_input(x: torch.Tensor) -> torch.Tensor:
    """An input unrelated to each sample of ``x``: the previous sample of the batch (cyclically), or, for a batch
    of one, a fixed shuffle of its entries (the same permutation every time, whatever the seed)."""
    if x.shape[0] > 1:
        return torch.roll(x, shifts=1, dims=0)
    flat = x.reshape(1, -1)
    g = torch.Generator().manual_seed(25)
    perm = torch.randperm(flat.shape[1], generator=g).to(x.device)
    return flat[:, perm].reshape(x.shape)


def resolve_sigma(sigma: float | None, data_range: float) -> float:
    """The reference perturbation's standard deviation: ``sigma``, or 1/25 of ``data_range`` when None."""
    if sigma is None:
        return DEFAULT_SIGMA * data_range
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
        raise ValueError(
            f"sigma={sigma!r}: expected a non-negative standard deviation (default 1/25): None is 1/25 of data_range"
        )
    return float(sigma)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Domain:
    """Where the input lives: what the model is fed, the data range, and the reference perturbation's size.

    Attributes:
        normalize: feed the model ``(x - mean) / std`` (None: x as it is).
        data_range: the range of the data (1 for images in [0, 1]): PSNR, and ``sigma=None``'s scale.
        sigma: the reference perturbation's standard deviation; None is 1/25 of ``data_range`` for a raw input and
            1/25 of each sample's root-mean-square value for a ``start=`` activation.
    """

    normalize: Normalize | None = None
    data_range: float = 1.0
    sigma: float | None = None

    @classmethod
    def of(
        cls, x: torch.Tensor | None, *, normalize: NormalizeSpec = None, data_range: Any = 1.0, sigma: Any = None
    ) -> Domain:
        """Check the user's options (naming the bad one and the fix) and bundle them."""
        if sigma is not None and (not _is_number(sigma) or not sigma >= 0):
            raise ValueError(
                f"sigma={sigma!r}: expected a non-negative standard deviation (default 1/25): None is 1/25 of "
                "data_range, or of the start activation's RMS with start="
            )
        if not _is_number(data_range) or not data_range > 0:
            raise ValueError(f"data_range={data_range!r}: expected a positive number (1.0 for images in [0, 1])")
        return cls(resolve_normalize(normalize, x), float(data_range), None if sigma is None else float(sigma))

    def feed(self, x: torch.Tensor) -> torch.Tensor:
        """What the model is fed for the pixel-space input ``x``."""
        return feed(x, self.normalize)

    def keywords(self) -> dict[str, Any]:
        """The options as the public functions' keyword arguments (``invert(..., **domain.keywords())``)."""
        return {"normalize": self.normalize, "data_range": self.data_range, "sigma": self.sigma}

    def reference(self, original: torch.Tensor, g: torch.Generator, dtype: torch.dtype, *, raw: bool) -> torch.Tensor:
        """The reference input x' = x + N(0, sigma^2) of the metric m_r, drawn from ``g``.

        ``raw``: ``original`` is the model's input (sigma None: 1/25 of ``data_range``); otherwise a ``start=``
        activation (sigma None: 1/25 of each sample's root-mean-square value, faint whatever its scale).
        """
        base = original.to(dtype)
        noise = torch.randn(original.shape, generator=g, device=original.device, dtype=dtype)
        if self.sigma is None and not raw:
            rms = flatten_batch(base, base.shape[0]).pow(2).mean(1).sqrt()
            return base + (DEFAULT_SIGMA * rms).view((-1,) + (1,) * (base.dim() - 1)) * noise
        return base + resolve_sigma(self.sigma, self.data_range) * noise
