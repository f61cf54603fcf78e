"""Private: a differentiable, separable Gaussian blur for 1-D ``(B, C, L)`` and 2-D ``(B, C, H, W)`` signals.

The result matches ``torchvision.transforms.functional.gaussian_blur`` (same kernel, reflect padding of
``(k - 1) // 2``) without depending on torchvision. The kernel weights are computed in double precision
and then cast to the input's dtype, so float32 and float64 inputs both get the most accurate kernel their
dtype can hold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_blur", "gaussian_kernel1d"]


def _check_kernel_args(kernel_size: int, sigma: float) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"kernel_size must be an int, got {kernel_size!r} ({type(kernel_size).__name__})")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int (1, 3, 5, ...), got {kernel_size}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float, got {sigma!r} ({type(sigma).__name__})")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")


def gaussian_kernel1d(
    kernel_size: int,
    sigma: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A normalized 1-D Gaussian kernel, as torchvision builds it.

    Positions are ``linspace(-(k - 1) / 2, (k - 1) / 2, k)``; weights are ``exp(-0.5 * (pos / sigma) ** 2)``
    divided by their sum.

    Args:
        kernel_size: ``k``, an odd positive int.
        sigma: the standard deviation in samples, > 0.
        dtype: dtype of the result (default: torch's default dtype).
        device: device of the result (default: CPU).

    Returns:
        Tensor of shape ``(k,)`` summing to 1 (up to rounding in ``dtype``).

    Raises:
        ValueError: if ``kernel_size`` is not odd and positive or ``sigma`` is not > 0.

    Example:
        >>> gaussian_kernel1d(3, 1.0, dtype=torch.float64)
        tensor([0.2741, 0.4519, 0.2741], dtype=torch.float64)
    """
    _check_kernel_args(kernel_size, sigma)
    half = (kernel_size - 1) / 2
    weights = [math.exp(-0.5 * ((i - half) / sigma) ** 2) for i in range(kernel_size)]
    total = math.fsum(weights)
    return torch.tensor([w / total for w in weights], dtype=dtype, device=device)


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Blur each channel of ``x`` with a Gaussian kernel (separable, reflect padding, differentiable).

    Args:
        x: ``(B, C, L)`` (blurred along ``L``) or ``(B, C, H, W)`` (blurred along ``H`` and ``W``), floating.
        kernel_size: odd positive int ``k``; the same size is used along every blurred dimension.
        sigma: standard deviation of the Gaussian in samples, > 0.

    Returns:
        A new tensor of the same shape, dtype and device as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``x`` has another layout, the kernel arguments are invalid, or a blurred dimension is
            not longer than the padding ``(k - 1) // 2`` (reflect padding needs that).

    Example:
        >>> x = torch.ones(1, 3, 8, 8)
        >>> torch.allclose(gaussian_blur(x, 3, 1.0), x)
        True
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor to blur, got dtype {x.dtype}; convert it with x.float()"
        )
    if x.ndim not in (3, 4):
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but gaussian_blur needs (B, C, L) for 1-D signals "
            f"or (B, C, H, W) for images"
        )
    _check_kernel_args(kernel_size, sigma)
    pad = (kernel_size - 1) // 2
    spatial = tuple(x.shape[2:])
    if pad and min(spatial) <= pad:
        raise ValueError(
            f"kernel_size={kernel_size} needs reflect padding of {pad}, so every blurred dimension must be "
            f"longer than {pad}, but x has shape {tuple(x.shape)}; use a smaller kernel_size"
        )
    channels = x.shape[1]
    if x.device.type == "cpu":
        kernel = gaussian_kernel1d(kernel_size, sigma, dtype=x.dtype, device=x.device)
    else:  # built on the device from the float sigma: no host-to-device copy (and no wait) per call
        pos = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, device=x.device,
                             dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        pdf = torch.exp(-0.5 * (pos / sigma) ** 2)
        kernel = (pdf / pdf.sum()).to(x.dtype)
    if x.ndim == 3:
        weight = kernel.view(1, 1, kernel_size).repeat(channels, 1, 1)
        padded = F.pad(x, (pad, pad), mode="reflect") if pad else x
        return F.conv1d(padded, weight, groups=channels)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    vertical = kernel.view(1, 1, kernel_size, 1).repeat(channels, 1, 1, 1)
    horizontal = kernel.view(1, 1, 1, kernel_size).repeat(channels, 1, 1, 1)
    return F.conv2d(F.conv2d(padded, vertical, groups=channels), horizontal, groups=channels)
