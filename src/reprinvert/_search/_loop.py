"""Private: one optimisation run from one starting point (:class:`Run`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .._checks import warn_user
from .._progress import Progress
from ..errors import NonFiniteWarning
from ..parametrizations import Pixel
from ..parametrizations import get as get_parametrization
from ..recipes import Init, Recipe
from ._best import Best
from ._history import History, Recorder, StepInfo
from ._objective import Objective, Problem, initial
from ._steps import Schedule, Updates

__all__ = ["CHECK_EVERY", "Found", "Run"]

# Steps between the loop's checks for a non-finite loss (each check synchronises with the device).
CHECK_EVERY = 32


@dataclass
class Found:
    """The outcome of a search (per sample: the best restart)."""

    best_x: torch.Tensor
    best_loss: torch.Tensor
    best_step: torch.Tensor
    final_x: torch.Tensor
    history: History
    steps_run: int
    stopped: str | None
    nonfinite: bool  # a NaN/Inf ended the run: its final iterate is unusable
    parametrization: str

    def result(self, track_best: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The input to return and the step it comes from, per sample. After a non-finite loss the final
        iterate is unusable, so the best finite one is returned whatever ``track_best``."""
        if track_best or self.nonfinite:
            return self.best_x, self.best_step
        return self.final_x, torch.full((self.best_x.shape[0],), self.steps_run)


class Run:
    """One run of a recipe: each step scores the iterate (history row, best iterate), checks now and then for a
    non-finite loss, updates the parameters, and reports (progress bar, callback)."""

    def __init__(
        self, problem: Problem, rcp: Recipe, init: Init | torch.Tensor, g: torch.Generator,
        callback: Callable[[StepInfo], bool | None] | None, progress: bool, restart: int,
    ) -> None:
        if rcp.clamp == "auto":
            raise ValueError("clamp='auto' must be resolved for the input first (Recipe.for_input)")
        self.problem, self.rcp, self.callback, self.steps = problem, rcp, callback, rcp.steps
        original, dtype = problem.original, problem.dtype
        # Random transforms (jitter) draw on the host, so reading their draws never waits for an accelerator: on a
        # CPU search from ``g`` itself, otherwise from a CPU generator seeded from ``g``'s seed and the restart.
        self.tg = g if g.device.type == "cpu" else torch.Generator().manual_seed(
            (g.initial_seed() * 6364136223846793005 + restart + 1) % (2**63)
        )
        self.objective = Objective(problem, rcp, self.tg)
        self.recorder = Recorder(self.objective.names, self.steps, original.shape[0], dtype, original.device)
        # L-BFGS has one step size for all parameters and a line search: it searches plain pixels.
        spec = Pixel() if rcp.optimizer == "lbfgs" else get_parametrization(rcp.parametrization)
        self.param = spec._build(initial(init, original, dtype, g, units=problem.units), spatial=problem.spatial)
        self.schedule = Schedule(rcp, spec, self.param.kind, problem.units)
        self.updates = Updates(rcp, self.param, self.schedule)
        self.best = Best(self.param.render().detach().clone(), dtype)
        self.ones = torch.ones(original.shape[0], dtype=dtype, device=original.device)
        self.bar = None if not progress else Progress(
            self.steps, "invert" if restart == 0 else f"invert (restart {restart})", "steps",
            lines_every=max(1, self.steps // 10), leave=False,
        )
        # A callback may stop the run at any step, so with one the loop checks every step (StepInfo never shows a
        # step after a non-finite loss); otherwise every CHECK_EVERY steps. After a late-found non-finite loss the
        # transforms' generator is put back where a per-step check would have left it (its state at the start of
        # each step since the last check), so later draws do not depend on the check interval.
        self.check_every = 1 if callback is not None else CHECK_EVERY
        self.rng_at_step: dict[int, torch.Tensor] | None = (
            {} if self.objective.transforms and self.check_every > 1 else None
        )
        self.stopped: str | None = None
        self.nonfinite = False
        self.steps_run = 0

    def __call__(self) -> Found:
        try:
            for i in range(self.steps):
                total, x, grads, lr = self._score(i)
                self.best.offer(total, x, i)
                if ((i + 1) % self.check_every == 0 or i == self.steps - 1) and self._found_nonfinite(i):
                    break
                self.updates.apply(self.param, grads, lr, i, i / self.steps)
                self.steps_run = i + 1
                if self.bar is not None:
                    # Reading the loss synchronises with a GPU: a bar shows it every CHECK_EVERY steps, lines never.
                    show = self.bar.bars and ((i + 1) % CHECK_EVERY == 0 or i == self.steps - 1)
                    self.bar.update(1, postfix={"loss": f"{float(total.mean()):.4g}"} if show else None)
                if self.callback is not None and self.callback(
                    StepInfo(step=i, steps=self.steps, loss=total, input=self.param.render().detach().clone(), lr=lr)
                ):
                    self.stopped = f"callback asked to stop after step {i}"
                    break
            final_x = self.param.render().detach().clone()
            if not self.nonfinite:
                # The iterate after the last update has not been scored yet. Scored as the steps are (gradients
                # on), so a model with a separate inference path is scored on the function the search minimises.
                with torch.enable_grad():
                    total = self.objective(final_x.clone().requires_grad_(True), 1.0, None).detach()
                self.best.offer(total, final_x, self.steps_run)
        finally:
            if self.bar is not None:
                self.bar.close()
        return Found(
            best_x=self.best.x, best_loss=self.best.losses(), best_step=self.best.steps(), final_x=final_x,
            history=self.recorder.history(self.steps_run), steps_run=self.steps_run, stopped=self.stopped,
            nonfinite=self.nonfinite, parametrization=self.schedule.label,
        )

    def _score(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor], float]:
        """Step ``i``'s total loss (detached) at the current iterate, the iterate, the gradients, the rate."""
        t = i / self.steps
        lr = self.schedule.lr(i)
        row = self.recorder.row(i)  # makes sure the block of step i exists
        self.recorder.lrs[i] = lr
        if self.rng_at_step is not None:
            self.rng_at_step[i] = self.tg.get_state()
        if i == self.schedule.switch:  # hand over to plain pixels, with a fresh optimizer state
            self.param = self.updates.hand_over(self.param, self.problem.spatial)
        if self.updates.lbfgs is not None:
            total, x = self.updates.lbfgs_step(self.param, self.objective, t, row, lr)
            return total.detach(), x, (), lr
        x_now = self.param.render()
        total = self.objective(x_now, t, row)
        # d(sum of the per-sample losses): ones as the output gradient, without a sum in the graph
        grads = torch.autograd.grad(total, self.param.params, grad_outputs=self.ones)
        return total.detach(), x_now.detach(), grads, lr

    def _found_nonfinite(self, i: int) -> bool:
        """The loop's host synchronisation: a non-finite loss found here ends the run as if it had stopped at that
        step (the best iterate was frozen there)."""
        if not self.best.poisoned():
            if self.rng_at_step is not None:
                self.rng_at_step.clear()
            return False
        at, bad = self.recorder.first_nonfinite(i + 1)
        if self.rng_at_step is not None and at + 1 in self.rng_at_step:
            self.tg.set_state(self.rng_at_step[at + 1])
        self.stopped = (
            f"non-finite loss at step {at} for sample(s) {bad}; kept the best finite iterate "
            "(lower the learning rate, or add clamp=(0, 1))"
        )
        warn_user(f"invert stopped early: {self.stopped}", NonFiniteWarning)
        self.nonfinite = True
        self.steps_run = at
        return True
