"""Private: what one public call decided, checked once and passed down (:class:`Plan`).

A Plan is the recipe with the call's overrides, the input domain (normalisation, data range, the reference
perturbation's size) and the call's options (start layer, output selection, randomness, callback, flags). The
public functions build it once; the runners below them read it, instead of passing the options on as keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import check_flag
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
