"""Private: what one public call decided, checked once and passed down (:class:`Plan`).

A Plan is the recipe with the call's overrides, the input domain (normalisation, data range, the reference
perturbation's size) and the call's options (start layer, output selection, randomness, callback, flags). The
public functions build it once; the runners below them read it, instead of passing the options on as keywords.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import check_flag, warn_user
from ._domain import Domain
from ._layers import LayerSpec
from ._outputs import Selector
from ._search import StepInfo
from .recipes import Recipe

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """The checked options of one call of :func:`reprinvert.invert` or :func:`reprinvert.sweep`.

    Attributes:
        recipe: the recipe with the call's overrides (``clamp="auto"`` still unresolved: it depends on the input).
        domain: normalisation, data range and the reference perturbation's size.
        init: a tensor start given by the call (None: the recipe's ``init``).
        start: optimise the output of this layer instead of the input.
        select: which tensor of the layer's output.
        call: which call of a module that runs more than once.
        seed: the seed of all randomness (None with a generator; 0 when neither is given).
        generator: the caller's generator instead of a seed.
        callback: called after every step.
        track_best: return the best iterate per sample rather than the last.
        train: keep the model's training flags.
        progress: show progress.
    """

    recipe: Recipe
    domain: Domain = field(default_factory=Domain)
    init: torch.Tensor | None = None
    start: LayerSpec | None = None
    select: Selector = None
    call: int | None = None
    seed: int | None = None
    generator: torch.Generator | None = None
    callback: Callable[[StepInfo], bool | None] | None = None
    track_best: bool = True
    train: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        check_flag("train", self.train)
        check_flag("track_best", self.track_best)
        if self.callback is not None and not callable(self.callback):
            raise TypeError(
                f"callback must be callable (StepInfo -> bool | None), got {type(self.callback).__name__}"
            )

    @property
    def init_or_recipe(self) -> Any:
        """The start of the search: the call's tensor, or the recipe's ``init``."""
        return self.init if self.init is not None else self.recipe.init

    @property
    def recorded_seed(self) -> int | None:
        """The seed a result records (None when the randomness came from the caller's generator)."""
        return self.seed if self.generator is None else None

    def check_range(self, x: Any) -> None:
        """Warn, before the run, where ``x`` cannot be what the options say it is (pixel-space input only: a
        ``start=`` activation has no range): with ``normalize=``, x outside ``[0, data_range]`` (already
        normalised, or in 0-255); without, x spanning far more than ``data_range`` (PSNR and the reference
        perturbation are on that scale); and x outside a clamp range the search is kept in."""
        if self.start is not None or not isinstance(x, torch.Tensor) or x.layout != torch.strided or \
                x.device.type == "meta" or not x.is_floating_point() or x.numel() == 0:
            return  # (the input checks proper refuse what cannot be inverted, with their own messages)
        try:
            lo, hi = float(x.detach().min()), float(x.detach().max())
        except RuntimeError:  # a tensor whose values cannot be read here (inside a torch.func transform)
            return
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return
        r = self.domain.data_range
        slack = 1e-6 * max(1.0, r)
        if self.domain.normalize is not None and (lo < -slack or hi > r + slack):
            why = (f"x has negative values: it looks normalised already; pass the images before normalisation "
                   f"(pixel values in [0, {r:g}]), or drop normalize=" if lo < -slack else
                   f"an image in 0-255? divide it by 255 (normalize= expects pixel values in [0, {r:g}])")
            warn_user(f"x has values in [{lo:.4g}, {hi:.4g}], outside [0, data_range={r:g}] where normalize= "
                      f"expects them: {why}")
            return
        if self.domain.normalize is None and hi - lo > 10 * r:
            warn_user(
                f"x spans [{lo:.4g}, {hi:.4g}], more than 10 times data_range={r:g}, the scale of PSNR and of the "
                f"reference perturbation (sigma = data_range / 25 unless given): an image in 0-255? divide it by "
                f"255; other data: pass data_range= its range (here about {hi - lo:.3g})"
            )
            return
        clamp = self.recipe.for_input(x, raw=True).clamp
        if clamp is None or isinstance(clamp, str):
            return
        slack = 1e-6 * max(1.0, clamp[1] - clamp[0])
        if lo < clamp[0] - slack or hi > clamp[1] + slack:
            warn_user(
                f"x has values in [{lo:.4g}, {hi:.4g}], outside clamp={tuple(clamp)}: the search is kept in a range "
                "that x leaves, so it cannot land on x; if x is already normalised for the model, pass it in pixel "
                "space with normalize=(mean, std) (or 'imagenet'), or drop the clamp"
            )
