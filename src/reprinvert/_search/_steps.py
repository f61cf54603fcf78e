"""Private: how a search moves: the learning-rate plan, the optimisers' updates and what follows each step.

The updates are written out (Adam as ``torch.optim.Adam`` computes it, momentum SGD, plain gradient descent) rather
than built from torch optimisers, whose first construction in a process imports ``torch._dynamo`` (seconds).
L-BFGS, with its line search, is torch's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from ..parametrizations import Parametrization, Parametrized, Pixel
from ..recipes import Recipe
from ..regularizers import Regularizer

__all__ = ["Schedule", "Updates", "adam"]


class Schedule:
    """The learning rate of each step, and the step at which a parametrisation hands over to plain pixels.

    With a hand-over (``Parametrization.until`` < 1) each phase runs the recipe's whole schedule over its own steps,
    the pixel phase at ``polish_lr`` times the rate. Adam's rate is in the searched tensor's units (``units`` for a
    ``start=`` activation).
    """

    def __init__(self, rcp: Recipe, spec: Parametrization, kind: str, units: float | None) -> None:
        self.rcp, self.spec, self.steps = rcp, spec, rcp.steps
        # The step at which a parametrisation hands over to plain pixels (never for "pixel" itself).
        self.switch = round(spec.until * self.steps) if kind != "pixel" and spec.until < 1 else -1
        self.lr_scale = units if units is not None and rcp.optimizer == "adam" else 1.0
        self.label = kind if self.switch < 0 else f"{kind}, then pixel from step {self.switch}"

    def lr(self, i: int) -> float:
        """The learning rate of step ``i``."""
        steps, switch, rcp = self.steps, self.switch, self.rcp
        if 0 < switch < steps:
            if i < switch:
                return self.lr_scale * rcp.learning_rate(i * steps // switch)
            return self.lr_scale * self.spec.polish_lr * rcp.learning_rate((i - switch) * steps // (steps - switch))
        return self.lr_scale * rcp.learning_rate(i)


class Updates:
    """The optimiser's state for one run, and the update that follows each step's gradient: decoupled weight decay
    toward the start (AdamW's), the optimiser's step, the after-step regularizers (blur) and the clamp."""

    def __init__(self, rcp: Recipe, param: Parametrized, schedule: Schedule) -> None:
        self.rcp, self.schedule = rcp, schedule
        # resolved by Recipe.for_input: a pair or None, never 'auto'
        self.bounds = cast("tuple[float, float] | None", rcp.clamp)
        self.posts = [r for r in rcp.regularizers if type(r).after_step is not Regularizer.after_step]
        decays = bool(rcp.weight_decay) and rcp.optimizer == "adam"
        # Weight decay pulls each parameter back toward where it started (the pixel phase: the start input).
        self.start_x = param.render().detach().clone() if decays and schedule.switch >= 0 else None
        self.anchors = [p.detach().clone() for p in param.params] if decays else []
        self.states: list[dict[str, torch.Tensor]] = [{} for _ in param.params]  # momentum, or Adam's moments
        self.adam_steps = rcp.optimizer == "adam"  # the common case, called directly
        self.lbfgs = (
            torch.optim.LBFGS(param.params, lr=rcp.lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe")
            if rcp.optimizer == "lbfgs" else None
        )
        self.lbfgs_scale: torch.Tensor | None = None

    def hand_over(self, param: Parametrized, spatial: bool) -> Parametrized:
        """Plain pixels from the current input on, with a fresh optimiser state (never with L-BFGS)."""
        pixels = Pixel()._build(param.render().detach().clone(), spatial=spatial)
        self.states = [{}]
        if self.start_x is not None:
            self.anchors = [self.start_x]
        return pixels

    def lbfgs_step(
        self, param: Parametrized, objective: Callable[[torch.Tensor, float, Any], torch.Tensor], t: float,
        row: torch.Tensor, lr: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One L-BFGS step (its line search evaluates the loss several times; the history gets the first); the
        total loss and the iterate it was scored at."""
        assert self.lbfgs is not None
        self.lbfgs.param_groups[0]["lr"] = lr
        evaluated: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            total = objective(param.render(), t, row if not evaluated else None)
            evaluated.append(total.detach())
            if self.lbfgs_scale is None:
                # torch's L-BFGS skips curvature pairs with y.s <= 1e-10 (an absolute threshold), so a loss whose
                # gradients are tiny never gets a step size; it optimises loss / initial loss.
                self.lbfgs_scale = 1.0 / total.detach().sum().clamp_min(torch.finfo(total.dtype).tiny)
            scaled = total.sum() * self.lbfgs_scale
            for p, gp in zip(param.params, torch.autograd.grad(scaled, param.params)):
                p.grad = gp
            return scaled

        current_x = param.render().detach().clone()
        self.lbfgs.step(closure)
        return evaluated[0], current_x

    def apply(self, param: Parametrized, grads: Sequence[torch.Tensor], lr: float, i: int, t: float) -> None:
        """Update ``param`` in place with this step's gradients (none after an L-BFGS step), then the after-step
        regularizers and the clamp, written back into the parameters."""
        rcp = self.rcp
        with torch.no_grad():
            for k, (p, gp, scale, state) in enumerate(zip(param.params, grads, param.lr_scales, self.states)):
                if self.anchors:  # AdamW: p <- p - lr_p * weight_decay * (p - p_start), then the optimizer's step
                    p.sub_(p - self.anchors[k], alpha=lr / self.schedule.lr_scale * scale * rcp.weight_decay)
                if self.adam_steps:
                    adam(p, gp, lr * scale, i + 1, state)
                else:
                    _update(rcp, p, gp, lr * scale, i, state)
            if self.posts or self.bounds is not None:
                now = param.render()
                new = now
                for r in self.posts:
                    out = r.after_step(new, t)
                    if out is not None:
                        new = out
                if self.bounds is not None:
                    new = new.clamp(self.bounds[0], self.bounds[1])
                param.assign(new, now)


def _update(
    rcp: Recipe, z: torch.Tensor, grad: torch.Tensor, lr: float, step: int, state: dict[str, torch.Tensor]
) -> None:
    """One in-place update of ``z`` (under no_grad) by plain gradient descent or momentum SGD."""
    if rcp.optimizer == "gd":
        z.sub_(grad, alpha=lr)
    elif rcp.optimizer == "sgd":
        if "velocity" not in state or step in rcp.drops:
            state["velocity"] = torch.zeros_like(z)
        v = state["velocity"].mul_(rcp.momentum).sub_(grad, alpha=lr)
        z.add_(v)
    else:
        adam(z, grad, lr, step + 1, state)


_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def adam(z: torch.Tensor, grad: torch.Tensor, lr: float, t: int, state: dict[str, torch.Tensor]) -> None:
    """Adam's update of ``z`` at step ``t`` (1-based), written out as ``torch.optim.Adam`` computes it on the CPU
    (its single-tensor path, default betas and eps): the same numbers, without constructing a torch optimizer,
    whose first construction in a process imports ``torch._dynamo`` (seconds)."""
    beta1, beta2 = _ADAM_BETAS
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(z, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(z, memory_format=torch.preserve_format)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**t
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(_ADAM_EPS)
    z.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
