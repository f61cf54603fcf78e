"""How the searched input is parametrised: plain pixels, a multi-scale pyramid, or a Fourier spectrum.

An inversion searches for an input x_g. *What* the optimizer updates need not be x_g's pixels: a
parametrisation maps a few tensors of parameters to the input, and the optimizer steps on those. The function
being minimised is the same; what changes is which directions a step favours. This is preconditioning, and on
real trained networks it decides whether the search converges (``docs/benchmarks.md`` has the measurements):

* :class:`Pixel` (``"pixel"``): the input itself. Every entry moves on its own.
* :class:`Pyramid` (``"pyramid"``): x_g = detail + up(level_1) + up(level_2) + ..., a Laplacian-style pyramid
  of images at 1/2, 1/4, ... of the resolution, each upsampled (bilinear) to full size. With Adam every
  parameter moves by about the learning rate per step, so a coarse level moves a whole region at once: the
  search finds the coarse layout of the image first, where per-pixel steps would fit high-frequency detail into a
  wrong basin (ReLU6 networks). Optionally in a decorrelated colour basis for RGB images.
* :class:`Fourier` (``"fourier"``): the input's 2-D spectrum, scaled by 1/frequency (Olah et al. 2017,
  lucid/lucent's ``fft_image``), optionally with decorrelated colour.

Every parametrisation keeps the inversion's contracts: the caller's tensors are never touched; clamping,
blur and other after-step regularizers act on the input and are written back into the parameters exactly;
the best iterate is tracked on the input; the per-sample independence of a batch is kept (so a batched sweep
equals separate inversions).

Inputs without the layout a parametrisation needs (flat vectors for a pyramid, a ``start=`` activation) are
searched in plain pixels; ``Inversion.parametrization`` records what actually ran. L-BFGS always searches pixels.

Example:
    >>> import torch, reprinvert as ri
    >>> from reprinvert.parametrizations import Pyramid
    >>> p = Pyramid(levels=2)._build(torch.rand(1, 3, 16, 16), spatial=True)
    >>> [tuple(t.shape) for t in p.params]
    [(1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 16, 16)]
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["COLOR_CORRELATION", "Fourier", "Parametrization", "Pixel", "Pyramid", "get"]

#: Square root of the colour covariance of natural (ImageNet) photos, RGB rows, as published with lucid's
#: ``fft_image`` / ``to_valid_rgb`` (Olah et al. 2017, "Feature Visualization"). Columns are the luminance and
#: two opponent-colour directions, scaled by the square root of their variance.
COLOR_CORRELATION = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


class Parametrization(abc.ABC):
    """Base class of the ways to parametrise the searched input.

    Subclasses implement :meth:`_build`, which returns a :class:`Parametrized` holding the parameter tensors
    for a given starting input.
    """

    name: ClassVar[str] = "parametrization"
    until: float = 1.0
    polish_lr: float = 1.0

    @abc.abstractmethod
    def _build(self, init: Tensor, *, spatial: bool) -> Parametrized:
        """The parameters for a search that starts at ``init`` (a raw input when ``spatial``)."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        out: dict[str, object] = {"name": self.name}
        out.update({k: v for k, v in vars(self).items() if not k.startswith("_")})
        return out


class Parametrized:
    """The parameters of one search and the map from them to the input (private protocol of the search loop).

    Attributes:
        params: the leaf tensors the optimizer updates (``requires_grad`` set).
        lr_scales: per parameter tensor, the factor applied to the recipe's learning rate.
        kind: what actually ran (``"pixel"``, ``"pyramid"`` or ``"fourier"``).
    """

    kind: str = "pixel"

    def __init__(self, params: list[Tensor], lr_scales: list[float]) -> None:
        self.params = params
        self.lr_scales = lr_scales

    def render(self) -> Tensor:
        """The input for the current parameters, differentiable with respect to them."""
        return self.params[0]

    def assign(self, new: Tensor, current: Tensor) -> None:
        """Make :meth:`render` return ``new`` (under no_grad); ``current`` is what it returns now."""
        self.params[0].copy_(new)


class _PixelParams(Parametrized):
    kind = "pixel"


@dataclass(frozen=True)
class Pixel(Parametrization):
    """The input itself: each entry is a parameter (the classic search, and the seed's)."""

    name: ClassVar[str] = "pixel"

    def _build(self, init: Tensor, *, spatial: bool) -> Parametrized:
        return _PixelParams([init.requires_grad_(True)], [1.0])


def _check_until(owner: str, until: object, polish_lr: object) -> None:
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 < until <= 1:
        raise ValueError(f"{owner}.until={until!r}: expected a fraction of the steps in (0, 1]")
    if isinstance(polish_lr, bool) or not isinstance(polish_lr, (int, float)) or not polish_lr > 0:
        raise ValueError(f"{owner}.polish_lr={polish_lr!r}: expected a positive factor of the learning rate")


def _color_matrices(channels: int, decorrelate: bool, like: Tensor) -> tuple[Tensor, Tensor] | None:
    """(M, M^-1): input colour = M @ parameter colour, or None for no colour transform."""
    if not decorrelate or channels != 3:
        return None
    m = torch.tensor(COLOR_CORRELATION, dtype=torch.float64)
    m = m / m.norm(dim=0).max()
    return m.to(like.device, like.dtype), torch.linalg.inv(m).to(like.device, like.dtype)


def _mix(m: Tensor | None, t: Tensor) -> Tensor:
    """Apply a 3x3 colour matrix along dimension 1 of ``t`` (B, 3, ...)."""
    if m is None:
        return t
    return torch.einsum("ij,bj...->bi...", m, t)


def _resize(t: Tensor, size: tuple[int, ...]) -> Tensor:
    mode = "linear" if len(size) == 1 else "bilinear"
    return F.interpolate(t, size=size, mode=mode, align_corners=False)


@dataclass(frozen=True, kw_only=True)
class Pyramid(Parametrization):
    """x_g = detail + up(level_1) + ... + up(level_n): full resolution plus ``levels`` coarser images.

    Level k has ``ceil(size / 2**k)`` entries along every spatial dimension; levels whose smallest side would
    fall below ``min_size`` are not made. Coarse levels start at 0, the detail level at the starting input. Each
    coarse level moves at the recipe's learning rate, the detail level at ``detail_lr`` times it.

    Applies to inputs with ``spatial_dims`` spatial dimensions after batch and channel, large enough for at least
    one coarse level: ``(B, C, H, W)`` images by default, ``(B, C, L)`` signals with ``spatial_dims=1`` (a 3-D
    input may as well be a ``(B, T, D)`` sequence, which has no spatial layout, so signals are opt-in). Other
    inputs (flat vectors, sequences, ``start=`` activations) are searched in plain pixels.

    Attributes:
        levels: number of coarser levels (each half the size of the one above).
        detail_lr: learning rate of the full-resolution level relative to the recipe's ``lr``.
        decorrelate: for 3-channel inputs, parametrise colour in the decorrelated basis of
            :data:`COLOR_CORRELATION` (luminance moves faster than colour): ``"coarse"`` for the coarse levels only
            (the detail level stays RGB and can reach any colour, random ones included), ``True`` for every level
            (colour detail then moves 4-8 times slower than luminance), ``False`` for none.
        min_size: smallest side of a coarse level.
        spatial_dims: 2 for images ``(B, C, H, W)``, 1 for signals ``(B, C, L)``.
        until: the fraction of the steps after which the search continues in plain pixels (the pyramid is
            summed into one image and the optimizer starts afresh): the pyramid finds the image's layout, the
            pixel steps then fit what the slower detail level and colour basis hold back. 1.0: never. Each
            phase runs the recipe's whole learning-rate schedule over its own steps.
        polish_lr: the learning rate of the pixel phase relative to the recipe's schedule.
    """

    name: ClassVar[str] = "pyramid"

    levels: int = 4
    detail_lr: float = 0.1
    decorrelate: bool | Literal["coarse"] = "coarse"
    min_size: int = 4
    spatial_dims: int = 2
    until: float = 1.0
    polish_lr: float = 1.0

    def __post_init__(self) -> None:
        _check_until("Pyramid", self.until, self.polish_lr)
        if self.decorrelate not in (True, False, "coarse"):
            raise ValueError(f"Pyramid.decorrelate={self.decorrelate!r}: expected True, False or 'coarse'")
        if self.spatial_dims not in (1, 2) or isinstance(self.spatial_dims, bool):
            raise ValueError(f"Pyramid.spatial_dims={self.spatial_dims!r}: expected 2 (images) or 1 (signals)")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 0:
            raise ValueError(f"Pyramid.levels={self.levels!r}: expected a non-negative int")
        if not (isinstance(self.detail_lr, (int, float)) and math.isfinite(self.detail_lr) and self.detail_lr > 0):
            raise ValueError(f"Pyramid.detail_lr={self.detail_lr!r}: expected a positive number (e.g. 0.1)")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"Pyramid.min_size={self.min_size!r}: expected a positive int")

    def sizes(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The spatial sizes of the coarse levels for an input of ``shape`` (B, C, *spatial), coarsest first."""
        spatial = shape[2:]
        out = []
        for k in range(1, self.levels + 1):
            size = tuple(math.ceil(s / 2**k) for s in spatial)
            if min(size) < self.min_size:
                break
            out.append(size)
        return out[::-1]

    def _build(self, init: Tensor, *, spatial: bool) -> Parametrized:
        if not spatial or init.dim() != 2 + self.spatial_dims or not self.sizes(tuple(init.shape)):
            return Pixel()._build(init, spatial=spatial)  # no layout, or too small for any coarse level
        return _PyramidParams(self, init)


class _PyramidParams(Parametrized):
    kind = "pyramid"

    def __init__(self, spec: Pyramid, init: Tensor) -> None:
        self.size = tuple(init.shape[2:])
        self.channels_last = (
            init.dim() == 4 and not init.is_contiguous() and init.is_contiguous(memory_format=torch.channels_last)
        )
        self.color = _color_matrices(init.shape[1], bool(spec.decorrelate), init)
        # The detail level in the colour basis too (True), or in plain RGB ("coarse": only the coarse levels carry
        # the natural-image colour prior, so the detail level can reach any colour at its own pace).
        self.detail_color = self.color if spec.decorrelate is True else None
        coarse = [
            torch.zeros((*init.shape[:2], *s), dtype=init.dtype, device=init.device).requires_grad_(True)
            for s in spec.sizes(tuple(init.shape))
        ]
        detail = _mix(self.detail_color[1] if self.detail_color else None, init).contiguous().requires_grad_(True)
        super().__init__([*coarse, detail], [1.0] * len(coarse) + [spec.detail_lr])

    def render(self) -> Tensor:
        *coarse, detail = self.params
        out: Tensor | None = None
        for p in coarse:
            out = p if out is None else p + _resize(out, tuple(p.shape[2:]))
        if self.detail_color is not None:  # every level in the colour basis: one mix at the end
            image = _mix(self.detail_color[0], detail if out is None else detail + _resize(out, self.size))
        else:
            image = detail
            if out is not None:
                image = image + _mix(self.color[0] if self.color else None, _resize(out, self.size))
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image

    def assign(self, new: Tensor, current: Tensor) -> None:
        self.params[-1].add_(_mix(self.detail_color[1] if self.detail_color else None, new - current))


@dataclass(frozen=True, kw_only=True)
class Fourier(Parametrization):
    """x_g = irfft2(scale * spectrum) with scale = 1 / max(frequency, 1 / max(H, W)) ** decay (lucid's image).

    Applies to ``(B, C, H, W)`` images; other inputs are searched in plain pixels.

    Attributes:
        decay: exponent of the 1 / frequency scaling (1: each octave moves equally; 0: plain pixels in Fourier
            space).
        decorrelate: for 3-channel inputs, parametrise colour in the decorrelated basis of
            :data:`COLOR_CORRELATION`.
        until: the fraction of the steps after which the search continues in plain pixels (1.0: never), as
            for :class:`Pyramid`.
        polish_lr: the learning rate of the pixel phase relative to the recipe's schedule.
    """

    name: ClassVar[str] = "fourier"

    decay: float = 1.0
    decorrelate: bool = True
    until: float = 1.0
    polish_lr: float = 1.0

    def __post_init__(self) -> None:
        _check_until("Fourier", self.until, self.polish_lr)
        if not (isinstance(self.decay, (int, float)) and math.isfinite(self.decay) and self.decay >= 0):
            raise ValueError(f"Fourier.decay={self.decay!r}: expected a non-negative number")

    def _build(self, init: Tensor, *, spatial: bool) -> Parametrized:
        if not spatial or init.dim() != 4:
            return Pixel()._build(init, spatial=spatial)
        return _FourierParams(self, init)


class _FourierParams(Parametrized):
    kind = "fourier"

    def __init__(self, spec: Fourier, init: Tensor) -> None:
        h, w = init.shape[-2:]
        self.hw = (h, w)
        self.color = _color_matrices(init.shape[1], spec.decorrelate, init)
        work = init.dtype
        fy = torch.fft.fftfreq(h, dtype=work, device=init.device).view(-1, 1)
        fx = torch.fft.rfftfreq(w, dtype=work, device=init.device).view(1, -1)
        freq = torch.sqrt(fx**2 + fy**2)
        self.scale = 1.0 / torch.clamp(freq, min=1.0 / max(h, w)) ** spec.decay
        spectrum = torch.fft.rfft2(_mix(self.color[1] if self.color else None, init), norm="ortho") / self.scale
        super().__init__([torch.view_as_real(spectrum).contiguous().requires_grad_(True)], [1.0])

    def _spectrum_to_image(self, real: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.view_as_complex(real) * self.scale, s=self.hw, norm="ortho")

    def render(self) -> Tensor:
        return _mix(self.color[0] if self.color else None, self._spectrum_to_image(self.params[0]))

    def assign(self, new: Tensor, current: Tensor) -> None:
        delta = torch.fft.rfft2(_mix(self.color[1] if self.color else None, new - current), norm="ortho")
        self.params[0].add_(torch.view_as_real(delta / self.scale))


_NAMES: dict[str, type[Parametrization]] = {"pixel": Pixel, "pyramid": Pyramid, "fourier": Fourier}


def get(spec: Parametrization | str) -> Parametrization:
    """A parametrisation from a name (``"pixel"``, ``"pyramid"``, ``"fourier"``, with default settings) or an
    instance."""
    if isinstance(spec, Parametrization):
        return spec
    if isinstance(spec, str) and spec.lower() in _NAMES:
        return _NAMES[spec.lower()]()
    raise ValueError(
        f"parametrization={spec!r}: expected one of {sorted(_NAMES)} or a reprinvert.parametrizations object "
        "(Pixel(), Pyramid(...), Fourier(...))"
    )
