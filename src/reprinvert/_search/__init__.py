"""Private: the search itself, used by :func:`reprinvert.invert` and the batched sweep.

Given a :class:`Problem` (a differentiable forward from the searched tensor to the layer's representation, or to a
list of them for a batched sweep, and the targets), :func:`search` runs a :class:`~reprinvert.recipes.Recipe`: the
starting point, the parametrisation of the input, the optimizer and its schedule, regularizers, clamping, restarts,
and the bookkeeping every run needs (per-sample best iterate, a deferred check for non-finite losses, history,
progress, callbacks). Nothing here knows about models, hooks or metrics.

* ``_objective``: the problem, the start and the per-sample loss;
* ``_steps``: the learning-rate plan and the optimisers' updates;
* ``_best``: the best iterate per sample, one rule for every device;
* ``_history``: what each step records;
* ``_loop``: one run (:class:`~reprinvert._search._loop.Run`), whose loop reads in one screen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..recipes import Init, Recipe
from ._history import History, StepInfo
from ._loop import CHECK_EVERY, Found, Run
from ._objective import Problem, Targets, data_loss, initial
from ._steps import adam

__all__ = [
    "CHECK_EVERY", "Found", "History", "Problem", "StepInfo", "Targets", "adam", "data_loss", "initial", "search",
]


def search(
    problem: Problem, rcp: Recipe, *, init: Init | torch.Tensor, generator: torch.Generator,
    callback: Callable[[StepInfo], bool | None] | None = None, progress: bool = False,
) -> Found:
    """Run ``rcp`` (all its restarts) on ``problem`` and return, per sample, the best iterate.

    Args:
        problem: what is inverted (see :class:`Problem`).
        rcp: the recipe (``clamp="auto"`` resolved).
        init: the recipe's ``init`` or a tensor.
        generator: all randomness (starting points, random transforms).
        callback: called after every step; returning True stops.
        progress: a progress bar (or lines) per run.
    """
    best: Found | None = None
    for restart in range(rcp.restarts):
        run = Run(problem, rcp, init, generator, callback, progress, restart)()
        best = run if best is None else _merge(best, run)
    assert best is not None
    return best


def _merge(a: Found, b: Found) -> Found:
    """Per sample, keep the restart with the lower best loss."""
    take_b = b.best_loss < a.best_loss
    mask = take_b.view((-1,) + (1,) * (a.best_x.dim() - 1))
    history = b.history if bool(take_b.float().mean() > 0.5) else a.history
    return Found(
        best_x=torch.where(mask, b.best_x, a.best_x),
        best_loss=torch.where(take_b, b.best_loss, a.best_loss),
        best_step=torch.where(take_b, b.best_step, a.best_step),
        final_x=torch.where(mask, b.final_x, a.final_x),
        history=history,
        steps_run=max(a.steps_run, b.steps_run),
        stopped=a.stopped or b.stopped,
        nonfinite=a.nonfinite or b.nonfinite,
        parametrization=a.parametrization,
    )
