"""Input corruptions for denoising and copy experiments.

Every function returns a new tensor of ``x``'s shape, dtype and device and leaves ``x`` (its values and its
``requires_grad``) as it was. The result stays connected to ``x``'s autograd graph where ``x`` requires grad.
Random corruptions take ``seed=`` or ``generator=`` (not both); with neither they use seed 0, so an unseeded
call is deterministic. Torch's global random state is never used. Random numbers are drawn in ``x``'s dtype
and in one stream for the whole tensor, so the draws depend on the shape, not on the values.

Example:
    >>> import torch
    >>> from reprinvert import corruptions
    >>> x = torch.full((1, 3, 4, 4), 0.5)
    >>> x_noisy = corruptions.noise_mix(x, alpha=0.3, seed=1)  # the seed author's 0.3 * x + 0.7 * eps
    >>> x_noisy.shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._filters import gaussian_blur
from ._rng import make_generator

__all__ = ["blur", "gaussian", "mask", "noise_mix", "salt_and_pepper"]


def _check_input(function: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{function}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{function}: x must be a floating-point tensor, got dtype {x.dtype}; convert it with x.float()"
        )


def _check_real(function: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{function}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{function}: {name} must be finite, got {value}")
    return float(value)


def _check_probability(function: str, name: str, value: object) -> float:
    v = _check_real(function, name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{function}: {name} must lie in [0, 1], got {value!r}")
    return v


def _check_non_negative(function: str, name: str, value: object) -> float:
    v = _check_real(function, name, value)
    if v < 0:
        raise ValueError(f"{function}: {name} must be >= 0, got {value!r}")
    return v


def gaussian(
    x: Tensor, *, sigma: float, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Additive Gaussian noise: ``x + sigma * N(0, 1)``.

    Args:
        x: any shape, floating.
        sigma: standard deviation of the noise, >= 0 (the design's reference perturbation uses 1/25).
        seed: seed of a fresh generator (0 when neither ``seed`` nor ``generator`` is given).
        generator: a ``torch.Generator`` on ``x``'s device type, advanced by the draw.

    Returns:
        A new tensor like ``x``.

    Example:
        >>> x = torch.zeros(2, 3)
        >>> torch.equal(gaussian(x, sigma=0.1, seed=3), gaussian(x, sigma=0.1, seed=3))
        True
    """
    _check_input("gaussian", x)
    sigma = _check_non_negative("gaussian", "sigma", sigma)
    g = make_generator(seed, generator, x.device)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
    return x + sigma * noise


def noise_mix(
    x: Tensor,
    *,
    alpha: float,
    mean: float = 0.7,
    std: float = 0.2,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The seed author's corruption: ``alpha * x + (1 - alpha) * eps`` with ``eps ~ N(mean, std**2)``.

    The author's copy experiment used ``alpha = 0.3`` (and 1, 0.5, 0.3, 0.1 for the UNet study) with the
    default ``mean = 0.7`` and ``std = 0.2``. ``alpha = 1`` returns ``x``'s values exactly.

    Args:
        x: any shape, floating (images in ``[0, 1]`` in the author's experiments).
        alpha: weight of the clean input, in ``[0, 1]``.
        mean: mean of the noise ``eps``.
        std: standard deviation of ``eps``, >= 0.
        seed: seed of a fresh generator (0 when neither ``seed`` nor ``generator`` is given).
        generator: a ``torch.Generator`` on ``x``'s device type, advanced by the draw.

    Returns:
        A new tensor like ``x``.

    Example:
        >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(noise_mix(x, alpha=1.0), x)
        True
    """
    _check_input("noise_mix", x)
    alpha = _check_probability("noise_mix", "alpha", alpha)
    mean = _check_real("noise_mix", "mean", mean)
    std = _check_non_negative("noise_mix", "std", std)
    g = make_generator(seed, generator, x.device)
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device) * std + mean
    return alpha * x + (1.0 - alpha) * eps


def salt_and_pepper(
    x: Tensor,
    *,
    p: float,
    low: float = 0.0,
    high: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Impulse noise: each element independently becomes ``low`` with probability ``p / 2`` and ``high`` with
    probability ``p / 2``, and keeps its value otherwise.

    Args:
        x: any shape, floating.
        p: probability that an element is replaced, in ``[0, 1]``.
        low: the "pepper" value.
        high: the "salt" value.
        seed: seed of a fresh generator (0 when neither ``seed`` nor ``generator`` is given).
        generator: a ``torch.Generator`` on ``x``'s device type, advanced by the draw.

    Returns:
        A new tensor like ``x``.

    Example:
        >>> y = salt_and_pepper(torch.full((100,), 0.5), p=1.0, seed=0)
        >>> sorted(set(y.tolist()))
        [0.0, 1.0]
    """
    _check_input("salt_and_pepper", x)
    p = _check_probability("salt_and_pepper", "p", p)
    low = _check_real("salt_and_pepper", "low", low)
    high = _check_real("salt_and_pepper", "high", high)
    g = make_generator(seed, generator, x.device)
    u = torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device)
    fill = torch.where(u < p / 2, torch.full_like(x, low), torch.full_like(x, high))
    return torch.where(u < p, fill, x)


def mask(
    x: Tensor,
    *,
    p: float,
    value: float = 0.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Set whole positions to ``value``: each spatial position independently, across all channels, with
    probability ``p``.

    For ``(B, C, *spatial)`` inputs one decision is drawn per sample and spatial position and applies to
    every channel; for flat ``(B, D)`` inputs each element is its own position.

    Args:
        x: ``(B, D)`` or ``(B, C, *spatial)``, floating.
        p: probability that a position is masked, in ``[0, 1]``.
        value: the value written at masked positions.
        seed: seed of a fresh generator (0 when neither ``seed`` nor ``generator`` is given).
        generator: a ``torch.Generator`` on ``x``'s device type, advanced by the draw.

    Returns:
        A new tensor like ``x``.

    Raises:
        ValueError: if ``x`` has fewer than 2 dimensions.

    Example:
        >>> y = mask(torch.ones(1, 3, 4, 4), p=0.5, seed=0)
        >>> bool((y.amin(dim=1) == y.amax(dim=1)).all())  # channels agree at every position
        True
    """
    _check_input("mask", x)
    if x.ndim < 2:
        raise ValueError(
            f"mask: x must be (B, D) or (B, C, *spatial), got shape {tuple(x.shape)}; add a batch dimension "
            f"with x.unsqueeze(0)"
        )
    p = _check_probability("mask", "p", p)
    value = _check_real("mask", "value", value)
    g = make_generator(seed, generator, x.device)
    shape = x.shape if x.ndim == 2 else (x.shape[0], 1, *x.shape[2:])
    hit = torch.rand(shape, generator=g, dtype=x.dtype, device=x.device) < p
    return torch.where(hit, torch.full_like(x, value), x)


def blur(x: Tensor, *, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Gaussian blur of every channel (reflect padding), as ``torchvision``'s ``gaussian_blur`` computes it.

    Args:
        x: ``(B, C, L)`` (blurred along ``L``) or ``(B, C, H, W)``, floating.
        sigma: standard deviation in samples, > 0.
        kernel_size: odd positive kernel size; default ``2 * ceil(3 * sigma) + 1`` (covers +-3 sigma).
            Every blurred dimension must be longer than ``(kernel_size - 1) // 2``.

    Returns:
        A new tensor like ``x``.

    Example:
        >>> blur(torch.ones(1, 1, 16, 16), sigma=1.0).allclose(torch.ones(1, 1, 16, 16))
        True
    """
    _check_input("blur", x)
    sigma = _check_real("blur", "sigma", sigma)
    if sigma <= 0:
        raise ValueError(f"blur: sigma must be > 0, got {sigma!r}")
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x, kernel_size, sigma)
