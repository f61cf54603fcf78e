"""Regularizers for inversion: total variation, alpha-norm, a blur schedule and jitter.

An inversion loop calls three hooks of every regularizer, all no-ops unless a subclass overrides them:

1. :meth:`Regularizer.transform` on the current input before each forward pass (differentiably);
2. :meth:`Regularizer.penalty`, a per-sample term of shape ``(B,)`` added to the loss and recorded in the
   history under :attr:`Regularizer.name`;
3. :meth:`Regularizer.after_step`, under ``torch.no_grad()`` after each optimizer update, which may replace
   the input (the seed author's Gaussian blur works this way).

Every hook receives ``t = step / steps``, the progress fraction in ``[0, 1)``, so schedules need no state.

The penalties follow Mahendran & Vedaldi (2015, "Understanding deep image representations by inverting
them"): :class:`TotalVariation` is their ``R_V^beta`` and :class:`AlphaNorm` their ``R_alpha``, both divided
by the number of terms and by ``scale ** exponent`` so that a weight of 1 means the same on any image size.

Example:
    >>> import torch
    >>> from reprinvert.regularizers import AlphaNorm, TotalVariation
    >>> x = torch.zeros(2, 3, 8, 8)
    >>> TotalVariation().penalty(x, 0.0)
    tensor([0., 0.])
    >>> AlphaNorm(alpha=2.0, center=1.0).penalty(x, 0.0)
    tensor([1., 1.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._filters import gaussian_blur

__all__ = ["AlphaNorm", "GaussianBlur", "Jitter", "Regularizer", "TotalVariation"]


class Regularizer:
    """Base class: three hooks an inversion loop calls, all no-ops by default.

    Subclasses override any of :meth:`penalty`, :meth:`transform` and :meth:`after_step`, and set the class
    attribute :attr:`name`, the key of their loss term in an inversion's history.
    """

    name: ClassVar[str] = "regularizer"

    def penalty(self, x: Tensor, t: float) -> Tensor | None:
        """A differentiable per-sample penalty added to the loss, or None for no penalty.

        Args:
            x: the current input, ``(B, ...)``.
            t: progress fraction ``step / steps`` in ``[0, 1)``.

        Returns:
            Tensor of shape ``(B,)``, or None.
        """
        return None

    def transform(self, x: Tensor, t: float, generator: torch.Generator) -> Tensor:
        """Transform the input (differentiably) before the forward pass; the default returns ``x``.

        Args:
            x: the current input, ``(B, ...)``.
            t: progress fraction ``step / steps`` in ``[0, 1)``.
            generator: the inversion's random number generator; draw every random number from it.

        Returns:
            A tensor of the same shape as ``x``.
        """
        return x

    def after_step(self, x: Tensor, t: float) -> Tensor | None:
        """Called under ``torch.no_grad()`` after each optimizer update; return the new input or None.

        Args:
            x: the input just updated by the optimizer, ``(B, ...)``.
            t: progress fraction ``step / steps`` in ``[0, 1)``.

        Returns:
            The replacement for ``x`` (same shape), or None to keep ``x`` unchanged.
        """
        return None


def _check_real(owner: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}.{field} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{field} must be finite, got {value}")
    return float(value)


def _check_at_least(owner: str, field: str, value: object, low: float, *, strict: bool) -> None:
    v = _check_real(owner, field, value)
    if (strict and v <= low) or (not strict and v < low):
        expected = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(f"{owner}.{field} must be {expected}, got {value!r}")


def _check_kernel_size(owner: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.kernel_size must be an int, got {value!r} ({type(value).__name__})")
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{owner}.kernel_size must be an odd positive int (1, 3, 5, ...), got {value}")


def _check_batched(owner: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner} needs a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{owner} needs a batched tensor (B, ...), got a 0-dim tensor")


def _check_t(owner: str, t: float) -> float:
    v = _check_real(owner, "t", t)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{owner}: t is the progress fraction step / steps and must lie in [0, 1], got {t}")
    return v


@dataclass(frozen=True, kw_only=True)
class TotalVariation(Regularizer):
    """Total variation ``R_V^beta`` of Mahendran & Vedaldi (2015), per sample.

    For an image ``(B, C, H, W)`` with forward differences ``dx = x[..., i, j+1] - x[..., i, j]`` and
    ``dy = x[..., i+1, j] - x[..., i, j]`` taken on the common ``(H - 1, W - 1)`` region::

        penalty[b] = weight * sum_{c,i,j} (dx**2 + dy**2) ** (beta / 2) / (H * W * scale**beta)

    For a signal ``(B, C, L)`` only ``dx`` exists and the divisor is ``L * scale**beta``. The total
    variation of a constant input is exactly 0.

    For ``beta < 2`` the power has an infinite derivative at 0; there the power is evaluated on a guarded
    branch, so an entry with zero difference contributes exactly 0 to the value and 0 (a subgradient) to the
    gradient, never NaN.

    Attributes:
        weight: multiplier of the term, >= 0.
        beta: exponent, > 0. ``beta = 2`` is the classic smoothness prior, ``beta = 1`` the edge-preserving
            (isotropic) total variation.
        scale: the input's typical range ``B`` in M&V's normalisation, > 0.

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
        >>> TotalVariation().penalty(x, 0.0)  # (1 + 9) / 4
        tensor([2.5000])
    """

    name: ClassVar[str] = "tv"

    weight: float = 1.0
    beta: float = 2.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_at_least("TotalVariation", "weight", self.weight, 0.0, strict=False)
        _check_at_least("TotalVariation", "beta", self.beta, 0.0, strict=True)
        _check_at_least("TotalVariation", "scale", self.scale, 0.0, strict=True)

    def penalty(self, x: Tensor, t: float) -> Tensor:
        """Per-sample total variation.

        Args:
            x: ``(B, C, L)`` or ``(B, C, H, W)``, floating; every spatial dimension of length >= 2.
            t: progress fraction (unused).

        Returns:
            Tensor of shape ``(B,)`` in ``x``'s dtype, differentiable with respect to ``x``.

        Raises:
            ValueError: for other layouts (a flat ``(B, D)`` vector has no neighbours) or spatial dimensions
                shorter than 2.
        """
        _check_batched("TotalVariation.penalty", x)
        if x.ndim not in (3, 4):
            raise ValueError(
                f"TotalVariation needs (B, C, L) or (B, C, H, W) input with a spatial layout, got shape "
                f"{tuple(x.shape)}; for flat (B, D) vectors use AlphaNorm, or reshape the input to its "
                f"spatial form first"
            )
        if min(x.shape[2:]) < 2:
            raise ValueError(
                f"TotalVariation needs at least 2 positions along every spatial dimension, got shape "
                f"{tuple(x.shape)}"
            )
        if x.ndim == 3:
            squared = (x[..., 1:] - x[..., :-1]).square()
        else:
            corner = x[..., :-1, :-1]
            squared = (x[..., :-1, 1:] - corner).square() + (x[..., 1:, :-1] - corner).square()
        exponent = self.beta / 2
        if exponent < 1:
            # d/ds s**e is infinite at s = 0 for e < 1: take the power only where s > 0 (double-where trick).
            positive = squared > 0
            safe = torch.where(positive, squared, torch.ones_like(squared))
            powered = torch.where(positive, safe.pow(exponent), torch.zeros_like(squared))
        elif exponent == 1:
            powered = squared
        else:
            powered = squared.pow(exponent)
        n_positions = math.prod(x.shape[2:])
        total = powered.flatten(1).sum(dim=1)
        return total * (self.weight / (n_positions * self.scale**self.beta))


@dataclass(frozen=True, kw_only=True)
class AlphaNorm(Regularizer):
    """The alpha-norm ``R_alpha`` of Mahendran & Vedaldi (2015), per sample, for any shape ``(B, ...)``::

        penalty[b] = weight * sum_k |x[b, k] - center| ** alpha / (numel_per_sample * scale**alpha)

    A large ``alpha`` (M&V use 6) leaves moderate values almost free and penalises outliers steeply, which
    keeps an inversion inside the input's range.

    Attributes:
        weight: multiplier of the term, >= 0.
        alpha: exponent, >= 1 (so the gradient at ``x == center`` is finite).
        center: the value the input is pulled towards (for example 0.5 for images in ``[0, 1]``).
        scale: the input's typical deviation from ``center``, > 0.

    Example:
        >>> AlphaNorm(alpha=2.0).penalty(torch.tensor([[1.0, -3.0]]), 0.0)  # (1 + 9) / 2
        tensor([5.])
    """

    name: ClassVar[str] = "alpha_norm"

    weight: float = 1.0
    alpha: float = 6.0
    center: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_at_least("AlphaNorm", "weight", self.weight, 0.0, strict=False)
        _check_at_least("AlphaNorm", "alpha", self.alpha, 1.0, strict=False)
        _check_real("AlphaNorm", "center", self.center)
        _check_at_least("AlphaNorm", "scale", self.scale, 0.0, strict=True)

    def penalty(self, x: Tensor, t: float) -> Tensor:
        """Per-sample alpha-norm.

        Args:
            x: ``(B, ...)``, floating.
            t: progress fraction (unused).

        Returns:
            Tensor of shape ``(B,)`` in ``x``'s dtype, differentiable with respect to ``x``.
        """
        _check_batched("AlphaNorm.penalty", x)
        per_sample = math.prod(x.shape[1:])
        deviation = (x - self.center).abs()
        powered = deviation if self.alpha == 1 else deviation.pow(self.alpha)
        total = powered.reshape(x.shape[0], -1).sum(dim=1)
        return total * (self.weight / (per_sample * self.scale**self.alpha))


@dataclass(frozen=True, kw_only=True)
class GaussianBlur(Regularizer):
    """Blur the input after every optimizer step; sigma moves linearly from ``sigma_start`` to ``sigma_end``.

    This is the seed author's regularizer for image classifiers (kernel 3, sigma 2.4 -> 0.4 over the run,
    after each plain gradient step). It adds no loss term; it works through :meth:`after_step`.

    Attributes:
        sigma_start: sigma at ``t = 0``, > 0.
        sigma_end: sigma at ``t = 1``, > 0.
        kernel_size: odd positive kernel size used along every spatial dimension.

    Example:
        >>> GaussianBlur().sigma(0.5)
        1.4
    """

    name: ClassVar[str] = "blur"

    sigma_start: float = 2.4
    sigma_end: float = 0.4
    kernel_size: int = 3

    def __post_init__(self) -> None:
        _check_at_least("GaussianBlur", "sigma_start", self.sigma_start, 0.0, strict=True)
        _check_at_least("GaussianBlur", "sigma_end", self.sigma_end, 0.0, strict=True)
        _check_kernel_size("GaussianBlur", self.kernel_size)

    def sigma(self, t: float) -> float:
        """Sigma at progress ``t`` in ``[0, 1]``: ``sigma_start + (sigma_end - sigma_start) * t``."""
        t = _check_t("GaussianBlur.sigma", t)
        return self.sigma_start + (self.sigma_end - self.sigma_start) * t

    def after_step(self, x: Tensor, t: float) -> Tensor:
        """Return ``x`` blurred with ``sigma(t)``.

        Args:
            x: ``(B, C, L)`` or ``(B, C, H, W)``, floating.
            t: progress fraction in ``[0, 1)``.

        Returns:
            A new tensor of ``x``'s shape.
        """
        return gaussian_blur(x, self.kernel_size, self.sigma(t))


@dataclass(frozen=True, kw_only=True)
class Jitter(Regularizer):
    """Roll the input by a random integer shift along every spatial dimension before each forward pass.

    One shift per spatial dimension (all dimensions after the first two) is drawn uniformly from
    ``[-max_shift, max_shift]`` with the inversion's generator and applied to the whole batch with
    ``torch.roll`` (differentiable, wraps around). Inputs without spatial dimensions are returned unchanged.

    With ``until``, the largest shift falls linearly to 0 at that fraction of the run (rounded to whole samples:
    ``round(max_shift * (1 - t / until))``) and the rest of the search is exact. Jitter keeps a search from
    matching a layer by fine detail the layer confuses; annealed, it still lets the end of the run recover the
    detail a layer keeps. On EfficientNet-Lite0's layers with fewer outputs than inputs from ``_blocks.2`` to
    ``_blocks.10``, ``Jitter(max_shift=2, until=0.75)`` (best with ``weight_decay=0.1`` in the recipe) stops the
    input distance from climbing back and gains dB over the default, trained or untrained; on a trained network's
    last blocks it does not, and on layers that keep everything it costs precision, so it is not in the default
    (``benchmarks/drift.py --rule``, in ``docs/benchmarks.md``).

    Attributes:
        max_shift: largest shift in samples, >= 0 (0 disables the jitter).
        until: None (the default) keeps ``max_shift`` for the whole run; a fraction in (0, 1] anneals it to 0 by
            then.

    Example:
        >>> x = torch.arange(5.0).view(1, 1, 5)
        >>> Jitter(max_shift=0).transform(x, 0.0, torch.Generator())
        tensor([[[0., 1., 2., 3., 4.]]])
        >>> [Jitter(max_shift=2, until=0.5).shift(t) for t in (0.0, 0.2, 0.4, 0.5, 0.9)]
        [2, 1, 0, 0, 0]
    """

    name: ClassVar[str] = "jitter"

    max_shift: int = 1
    until: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int):
            raise TypeError(
                f"Jitter.max_shift must be an int, got {self.max_shift!r} ({type(self.max_shift).__name__})"
            )
        if self.max_shift < 0:
            raise ValueError(f"Jitter.max_shift must be >= 0, got {self.max_shift}")
        if self.until is not None:
            if isinstance(self.until, bool) or not isinstance(self.until, (int, float)):
                raise TypeError(
                    f"Jitter.until must be None or a fraction of the run, got {self.until!r} "
                    f"({type(self.until).__name__})"
                )
            if not 0 < self.until <= 1:
                raise ValueError(
                    f"Jitter.until must be in (0, 1] (the fraction of the run by which the shift reaches 0), got "
                    f"{self.until}; use None for a constant shift"
                )

    def shift(self, t: float) -> int:
        """The largest shift at progress ``t``: ``max_shift``, or with ``until`` annealed linearly to 0 by then.

        Args:
            t: progress fraction ``step / steps`` in ``[0, 1)`` (checked when ``until`` is given).
        """
        if self.until is None:
            return self.max_shift
        return round(self.max_shift * max(0.0, 1 - _check_t("Jitter.shift", t) / self.until))

    def transform(self, x: Tensor, t: float, generator: torch.Generator) -> Tensor:
        """Roll ``x`` by one random shift per spatial dimension.

        Args:
            x: ``(B, C, *spatial)``; ``(B, D)`` and ``(B,)`` inputs come back unchanged.
            t: progress fraction (sets the largest shift when ``until`` is given; see :meth:`shift`).
            generator: source of the shifts; it advances by one draw per call when there is anything to do.

        Returns:
            ``x`` rolled, same shape.
        """
        _check_batched("Jitter.transform", x)
        dims = tuple(range(2, x.ndim))
        largest = self.shift(t)
        if not dims or largest == 0:
            return x
        shifts = torch.randint(-largest, largest + 1, (len(dims),), generator=generator, device=generator.device)
        # ``shifts`` lives on the generator's device; the search hands transforms a CPU generator, so reading the
        # shifts never waits for an accelerator.
        return torch.roll(x, shifts=tuple(int(s) for s in shifts.tolist()), dims=dims)
