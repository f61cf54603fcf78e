"""Private: the search itself. One entry point, :func:`search`, used by :func:`reprinvert.invert` and the batched sweep.

Given a differentiable ``forward`` (input -> the layer's representation, or a list of them for a batched sweep) and
the targets, it runs a :class:`~reprinvert.recipes.Recipe`: the starting point, the parametrisation of the input,
the optimizer and its schedule, regularizers, clamping, restarts, and the bookkeeping every run needs (per-sample
best iterate, a deferred check for non-finite losses, history, progress, callbacks). Nothing here knows about
models, hooks or metrics.
"""

from __future__ import annotations

import math
import warnings
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._progress import Progress
from ._tensors import flatten_batch
from .errors import NonFiniteWarning
from .parametrizations import Parametrized, Pixel
from .parametrizations import get as get_parametrization
from .recipes import Init, Loss, Recipe
from .regularizers import Regularizer

__all__ = ["Found", "History", "StepInfo", "Targets", "search"]


@dataclass(frozen=True)
class History:
    """Per-step losses of an inversion, each term separately.

    Attributes:
        terms: ``{"data": ..., "<regularizer name>": ..., "total": ...}``, each a CPU tensor of shape
            ``(steps, B)`` (the value per sample at each step, before that step's update; the data term includes
            ``loss_scale``). With restarts, the run that produced the returned input is kept.
        lr: the learning rate of each step, shape ``(steps,)``.
        input_distance: m_i of each step's iterate, ``||x_i - x||`` per sample, shape ``(steps, B)`` (before that
            step's update, like the losses; in the start layer's units with ``start=``): the convergence of the
            search in input space. Empty when not recorded.
    """

    terms: dict[str, torch.Tensor]
    lr: torch.Tensor
    input_distance: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))

    def __getitem__(self, term: str) -> torch.Tensor:
        if term not in self.terms:
            raise KeyError(f"{term!r} is not a recorded term; terms: {list(self.terms)}")
        return self.terms[term]

    @property
    def total(self) -> torch.Tensor:
        """The summed loss per step and sample, ``(steps, B)``."""
        return self.terms["total"]

    def as_dict(self) -> dict[str, list[list[float]]]:
        """JSON-ready: ``{term: [[per-sample values] per step]}``."""
        out = {k: v.tolist() for k, v in self.terms.items()}
        out["lr"] = [[v] for v in self.lr.tolist()]
        if self.input_distance.numel():
            out["input_distance"] = self.input_distance.tolist()
        return out


@dataclass(frozen=True)
class StepInfo:
    """What a ``callback`` receives after each step.

    Attributes:
        step: 0-based index of the step just taken.
        steps: total steps planned.
        loss: per-sample total loss at this step ``(B,)`` (detached).
        input: the iterate after the update (a detached copy: storing it keeps this step's values).
        lr: learning rate of the step.
    """

    step: int
    steps: int
    loss: torch.Tensor
    input: torch.Tensor
    lr: float


@dataclass(frozen=True)
class Targets:
    """What the data term compares with: per chunk of the batch (one chunk per layer in a batched sweep).

    Attributes:
        flat: the target representations, each ``(B_k, n_k)`` in the search's dtype.
        squared: their squared norms ``(B_k,)`` (kept away from 0), for ``"nmse"`` and ``"cosine"``.
    """

    flat: tuple[torch.Tensor, ...]
    squared: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, targets: Sequence[torch.Tensor], batch: int, dtype: torch.dtype) -> Targets:
        flat = tuple(flatten_batch(t, batch).to(dtype) for t in targets)
        return cls(flat=flat, squared=tuple(t.pow(2).sum(1).clamp_min(torch.finfo(dtype).tiny) for t in flat))


@dataclass
class Found:
    """The outcome of :func:`search` (per sample: the best restart)."""

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


def search(
    forward: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]],
    rcp: Recipe,
    original: torch.Tensor,
    targets: Targets,
    *,
    init: Init | torch.Tensor,
    dtype: torch.dtype,
    generator: torch.Generator,
    callback: Callable[[StepInfo], bool | None] | None = None,
    progress: bool = False,
    spatial: bool = True,
    units: float | None = None,
) -> Found:
    """Run ``rcp`` (all its restarts) and return, per sample, the best iterate.

    Args:
        forward: input -> representation (or a list, one per chunk of ``targets``), differentiable.
        rcp: the recipe.
        original: a tensor of the searched input's shape, device and layout (the caller's x, or the start layer's
            output); its values are never read except to shape the start.
        targets: the data term's targets.
        init: the recipe's ``init`` or a tensor.
        dtype: the dtype of the search (float32, or float64 for float64 inputs).
        generator: all randomness (starting points, random transforms).
        callback: called after every step; returning True stops.
        progress: a tqdm bar per run.
        spatial: the input is a raw input with a spatial layout (False for ``start=`` activations): decides
            whether an image parametrisation applies.
        units: for an activation (``start=``), its scale relative to data in [0, 1] (2 x its root-mean-square
            value): Adam's learning rate is multiplied by it, and the ``"seed"`` and ``"grey"`` starts are
            centred on 0 at that scale. None for raw inputs.
    """
    best: Found | None = None
    for restart in range(rcp.restarts):
        run = _run(
            forward, rcp, original, targets, init, dtype, generator, callback, progress, restart, spatial, units
        )
        best = run if best is None else _merge(best, run)
    assert best is not None
    return best


def data_loss(kind: Loss, rep: torch.Tensor, target: torch.Tensor, target_sq: torch.Tensor) -> torch.Tensor:
    """Per-sample data term, shape ``(B,)``; ``rep`` and ``target`` are ``(B, n)`` float tensors."""
    diff = rep - target
    if kind == "l1":
        return diff.abs().sum(1)
    if kind == "mse":
        return diff.pow(2).mean(1)
    if kind == "nmse":
        return diff.pow(2).sum(1) / target_sq
    # cosine: 1 - cos, with the norms kept away from 0
    num = (rep * target).sum(1)
    den = torch.sqrt(rep.pow(2).sum(1).clamp_min(1e-24) * target_sq)
    return 1 - num / den


def initial(
    init: Init | torch.Tensor,
    like: torch.Tensor,
    dtype: torch.dtype,
    generator: torch.Generator,
    *,
    units: float | None = None,
) -> torch.Tensor:
    """The starting point of a search, shaped like ``like`` (in its layout for channels-last images).

    With ``units`` (an activation's scale, see :func:`search`) the ``"seed"`` and ``"grey"`` starts, which are
    meant for data in [0, 1], are moved to a zero-centred activation: N((c - 0.5) * units, (0.05 * units)^2).
    """
    if units is not None and isinstance(init, str) and init in ("seed", "grey"):
        centre = (0.7 if init == "seed" else 0.5) - 0.5
        noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=dtype)
        return centre * units + 0.05 * units * noise
    z = _initial_values(init, like, dtype, generator)
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        # A channels-last input (for a channels-last model) is optimised in that layout: no conversion per step.
        z = z.contiguous(memory_format=torch.channels_last)
    return z


def _initial_values(
    init: Init | torch.Tensor, like: torch.Tensor, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    shape, device = like.shape, like.device
    if isinstance(init, torch.Tensor):
        if init.shape != shape:
            raise ValueError(
                f"init has shape {tuple(init.shape)}, but the optimised tensor has shape {tuple(shape)}; "
                "pass a tensor of that shape"
            )
        return init.detach().to(device=device, dtype=dtype).clone()
    if init == "seed":
        return 0.7 + 0.05 * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if init == "grey":
        return 0.5 + 0.05 * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if init == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    if init == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    if init == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    raise ValueError(
        f"init={init!r}: expected 'seed', 'grey', 'zeros', 'uniform', 'normal' or a tensor of the input's shape"
    )


# Steps between the loop's checks for a non-finite loss (each check synchronises with the device).
CHECK_EVERY = 32

# Rows of the history allocated at a time.
_HISTORY_BLOCK = 1024


def _merge(a: Found, b: Found) -> Found:
    """Per sample, keep the restart with the lower best loss."""
    take_b = b.best_loss < a.best_loss
    shape = (-1,) + (1,) * (a.best_x.dim() - 1)
    mask = take_b.view(shape)
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


def _run(
    forward: Callable[[torch.Tensor], Any],
    rcp: Recipe,
    original: torch.Tensor,
    targets: Targets,
    init: Init | torch.Tensor,
    dtype: torch.dtype,
    g: torch.Generator,
    callback: Callable[[StepInfo], bool | None] | None,
    progress: bool,
    restart: int,
    spatial: bool,
    units: float | None,
) -> Found:
    """One optimisation run from one starting point."""
    steps = rcp.steps
    batch = original.shape[0]
    if rcp.clamp == "auto":
        raise ValueError("clamp='auto' must be resolved for the input first (Recipe.for_input)")
    bounds = rcp.clamp
    regs = rcp.regularizers
    if len({r.name for r in regs}) != len(regs):
        raise ValueError(f"regularizers have repeated names {[r.name for r in regs]}; give each kind at most once")
    penalties = [r for r in regs if type(r).penalty is not Regularizer.penalty]
    names = ["data"] + [r.name for r in penalties] + ["total"]
    transforms = [r for r in regs if type(r).transform is not Regularizer.transform]
    posts = [r for r in regs if type(r).after_step is not Regularizer.after_step]
    device = original.device
    original_flat = flatten_batch(original, batch).to(dtype)
    # The history grows in blocks as steps run, so a long plan that a callback stops early costs what ran.
    blocks: list[torch.Tensor] = []
    block_rows: list[tuple[torch.Tensor, ...]] = []  # each block's rows as views, made once (no indexing per step)
    # The learning rate of each step: a preallocated array of doubles (no tensor write, no allocation per step).
    lrs = array("d", [math.nan]) * steps

    def history_row(step: int) -> torch.Tensor:
        """The row of step ``step``: one per loss term, then ``total``, then the iterate's input distance."""
        while step >= len(blocks) * _HISTORY_BLOCK:
            rows = min(_HISTORY_BLOCK, steps - len(blocks) * _HISTORY_BLOCK)
            blocks.append(torch.full((rows, len(names) + 1, batch), float("nan"), dtype=dtype, device=device))
            block_rows.append(blocks[-1].unbind(0))
        return block_rows[step // _HISTORY_BLOCK][step % _HISTORY_BLOCK]

    def history_upto(upto: int) -> torch.Tensor:
        if not blocks:
            return torch.empty((0, len(names) + 1, batch), dtype=dtype, device=device)
        return torch.cat(blocks)[:upto]

    # L-BFGS has one step size for all parameters and a line search: it searches plain pixels.
    spec = Pixel() if rcp.optimizer == "lbfgs" else get_parametrization(rcp.parametrization)
    param: Parametrized = spec._build(initial(init, original, dtype, g, units=units), spatial=spatial)
    # The step at which a parametrisation hands over to plain pixels (never for "pixel" itself); each phase runs
    # the recipe's whole schedule over its own steps.
    switch = round(spec.until * steps) if param.kind != "pixel" and spec.until < 1 else -1
    kind = param.kind
    # Decoupled weight decay pulls each parameter back toward where it started (the pixel phase: the start input).
    decays = bool(rcp.weight_decay) and rcp.optimizer == "adam"
    start_x = param.render().detach().clone() if decays and switch >= 0 else None  # the pixel phase's anchor
    anchors = [p.detach().clone() for p in param.params] if decays else []
    lr_scale = units if units is not None and rcp.optimizer == "adam" else 1.0  # Adam's steps: the tensor's units

    def lr_at(i: int) -> float:
        """The learning rate of step ``i``: with a hand-over each phase runs the whole schedule over its steps."""
        if 0 < switch < steps:
            if i < switch:
                return lr_scale * rcp.learning_rate(i * steps // switch)
            return lr_scale * spec.polish_lr * rcp.learning_rate((i - switch) * steps // (steps - switch))
        return lr_scale * rcp.learning_rate(i)


    best_x = param.render().detach().clone()
    best_loss = torch.full((batch,), float("inf"), dtype=dtype, device=device)
    best_step = torch.zeros(batch, dtype=torch.long, device=device)
    ones = torch.ones(batch, dtype=dtype, device=device)
    # 0 while every loss so far has been finite, NaN for ever after the first that is not: the sum of a step's
    # losses times 0 is NaN exactly when one of them is NaN or +-Inf (summed in float64, so finite losses cannot
    # overflow; float32 on MPS, which has no float64), and NaN + anything stays NaN. Added to the best loss, it
    # freezes the best iterate at the first non-finite loss with two small operations per step and no host
    # synchronisation.
    guard_dtype = torch.float32 if device.type == "mps" else torch.float64
    guard = torch.zeros((), dtype=guard_dtype, device=device)
    # On the CPU reading a value waits for nothing, so the same bookkeeping runs on Python numbers: the losses read
    # once per step, compared as the tensors would be (the float32 or float64 values, exactly), the iterate copied
    # only where it improved. Fewer tensor operations per step; the same result, bit for bit.
    host = _host_bookkeeping(device)
    host_best = [math.inf] * batch
    host_step = [0] * batch
    host_poisoned = False
    host_masks: dict[tuple[bool, ...], torch.Tensor] = {}
    mask_shape = (-1,) + (1,) * (best_x.dim() - 1)
    states: list[dict[str, torch.Tensor]] = [{} for _ in param.params]  # momentum of "sgd", moments of "adam"
    lbfgs_state: dict[str, torch.Tensor] = {}
    lbfgs = (
        torch.optim.LBFGS(param.params, lr=rcp.lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe")
        if rcp.optimizer == "lbfgs"
        else None
    )
    bar = _progress_bar(steps, progress, restart)
    adam_steps = rcp.optimizer == "adam"  # the common case, called directly in the loop
    # A callback may stop the run at any step, so with one the loop checks every step (StepInfo never shows a
    # step after a non-finite loss); otherwise every CHECK_EVERY steps.
    check_every = 1 if callback is not None else CHECK_EVERY
    # Random transforms (jitter) draw from ``g`` every step. After a late-found non-finite loss the generator is
    # put back where a per-step check would have left it, so later draws (restarts, the reference perturbation)
    # do not depend on the check interval: its state at the start of each step since the last check.
    rng_at_step: dict[int, torch.Tensor] | None = {} if transforms and check_every > 1 else None
    # Random transforms (jitter) draw on the host, so reading their draws never waits for an accelerator: on a
    # CPU search from ``g`` itself, otherwise from a CPU generator seeded from ``g``'s seed and the restart.
    tg = g if g.device.type == "cpu" else torch.Generator().manual_seed(
        (g.initial_seed() * 6364136223846793005 + restart + 1) % (2**63)
    )
    stopped: str | None = None
    nonfinite = False
    steps_run = 0

    def objective(x: torch.Tensor, t: float, record: torch.Tensor | None) -> torch.Tensor:
        """Per-sample total loss at the input ``x``; records each term in the history row ``record`` if given."""
        xin = x
        for r in transforms:
            xin = r.transform(xin, t, tg)
        out = forward(xin)
        if isinstance(out, list):  # a batched sweep: one representation per chunk
            data = torch.cat([
                data_loss(rcp.loss, flatten_batch(o, tf.shape[0]).to(dtype), tf, sq)
                for o, tf, sq in zip(out, targets.flat, targets.squared)
            ])
        else:
            tf = targets.flat[0]
            n = tf.shape[0]
            if out.dtype == dtype and out.dim() > 1 and out.shape[0] == n:  # the usual case: a plain view
                rep = out.reshape(n, -1)
            else:
                rep = flatten_batch(out, n).to(dtype)
            data = data_loss(rcp.loss, rep, tf, targets.squared[0])
        if rcp.loss_scale != 1.0:
            data = data * rcp.loss_scale
        total = data
        terms = [data]
        for r in penalties:
            p = r.penalty(x, t)
            if p is not None:
                total = total + p
                terms.append(p)
        if record is not None:  # one write per step: every term, the total and the iterate's input distance
            # x is the search's own (B, ...) tensor in ``dtype``: a plain reshape flattens it
            distance = torch.linalg.vector_norm(x.detach().reshape(batch, -1) - original_flat, dim=1)
            torch.stack([*(p.detach() for p in terms), total.detach(), distance], out=record)
        return total

    def keep_if_better(total: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        """Per sample, remember ``x`` and ``step`` where ``total`` is lower than the best so far.

        Nothing is taken once any loss has been non-finite (``guard`` is NaN): NaN compares False, also for
        +-Inf and every later step. No host synchronisation. ``total`` and ``x`` are detached.
        """
        nonlocal host_poisoned
        if host:  # the same rule on Python numbers (CPU only)
            if host_poisoned:
                return best_x
            values = total.tolist()
            if not all(map(math.isfinite, values)):
                host_poisoned = True
                return best_x
            gained = [v < b for v, b in zip(values, host_best)]
            for k in (k for k, better in enumerate(gained) if better):
                host_best[k] = values[k]
                host_step[k] = step
            if all(gained):
                return best_x.copy_(x)
            if any(gained):
                key = tuple(gained)
                picked = host_masks.get(key)
                if picked is None:
                    picked = torch.tensor(gained, device=device).view(mask_shape)
                    if len(host_masks) < 64:  # the patterns of a small batch recur: each made once
                        host_masks[key] = picked
                return torch.where(picked, x, best_x, out=best_x)
            return best_x
        torch.add(guard, total.sum(dtype=guard_dtype), alpha=0, out=guard)
        improved = torch.lt(total, best_loss + guard)
        torch.where(improved, total, best_loss, out=best_loss)
        best_step.masked_fill_(improved, step)
        return torch.where(improved.view(mask_shape), x, best_x)

    def first_nonfinite(upto: int) -> tuple[int, list[int]]:
        """The first recorded step < ``upto`` with a non-finite total loss, and its non-finite samples."""
        bad = ~torch.isfinite(history_upto(upto)[:, -2])
        first = int(bad.any(1).nonzero()[0, 0])
        return first, bad[first].nonzero().flatten().tolist()

    try:
        for i in range(steps):
            t = i / steps
            lr_i = lr_at(i)
            row = history_row(i)  # makes sure the block of step i exists
            lrs[i] = lr_i
            if rng_at_step is not None:
                rng_at_step[i] = tg.get_state()
            if i == switch:  # hand over to plain pixels, with a fresh optimizer state (never with L-BFGS)
                param = Pixel()._build(param.render().detach().clone(), spatial=spatial)
                states = [{}]
                if start_x is not None:
                    anchors = [start_x]
            grads: Sequence[torch.Tensor] = ()
            if lbfgs is not None:
                lbfgs.param_groups[0]["lr"] = lr_i
                evaluated: list[torch.Tensor] = []

                def closure(
                    t: float = t, row: torch.Tensor = row, evaluated: list[torch.Tensor] = evaluated,
                    param: Parametrized = param,
                ) -> torch.Tensor:
                    total = objective(param.render(), t, row if not evaluated else None)  # history: first evaluation
                    evaluated.append(total.detach())
                    if "scale" not in lbfgs_state:
                        # torch's L-BFGS skips curvature pairs with y.s <= 1e-10 (an absolute threshold), so a
                        # loss whose gradients are tiny never gets a step size; it optimises loss / initial loss.
                        lbfgs_state["scale"] = 1.0 / total.detach().sum().clamp_min(torch.finfo(total.dtype).tiny)
                    scaled = total.sum() * lbfgs_state["scale"]
                    for p, gp in zip(param.params, torch.autograd.grad(scaled, param.params)):
                        p.grad = gp
                    return scaled

                current_x = param.render().detach().clone()
                lbfgs.step(closure)
                total = evaluated[0]
            else:
                x_now = param.render()
                total = objective(x_now, t, row)
                # d(sum of the per-sample losses): ones as the output gradient, without a sum in the graph
                grads = torch.autograd.grad(total, param.params, grad_outputs=ones)
                current_x = x_now.detach()
            total = total.detach()
            best_x = keep_if_better(total, current_x, i)
            # The loop's host synchronisation, every ``check_every`` steps. A non-finite loss found here ends the run
            # as if it had stopped at that step: the best iterate was frozen there by ``guard``.
            if (i + 1) % check_every == 0 or i == steps - 1:
                if host_poisoned if host else bool(guard.isnan()):
                    at, bad = first_nonfinite(i + 1)
                    if rng_at_step is not None and at + 1 in rng_at_step:
                        tg.set_state(rng_at_step[at + 1])
                    stopped = (
                        f"non-finite loss at step {at} for sample(s) {bad}; kept the best finite iterate "
                        "(lower the learning rate, or add clamp=(0, 1))"
                    )
                    warnings.warn(f"invert stopped early: {stopped}", NonFiniteWarning, stacklevel=4)
                    nonfinite = True
                    steps_run = at
                    break
                if rng_at_step is not None:
                    rng_at_step.clear()
            with torch.no_grad():
                for k, (p, gp, scale, state) in enumerate(zip(param.params, grads, param.lr_scales, states)):
                    if anchors:  # AdamW: p <- p - lr_p * weight_decay * (p - p_start), then the optimizer's step
                        p.sub_(p - anchors[k], alpha=lr_i / lr_scale * scale * rcp.weight_decay)
                    if adam_steps:
                        adam(p, gp, lr_i * scale, i + 1, state)
                    else:
                        _update(rcp, p, gp, lr_i * scale, i, state)
                if posts or bounds is not None:
                    now = param.render()
                    new = now
                    for r in posts:
                        out = r.after_step(new, t)
                        if out is not None:
                            new = out
                    if bounds is not None:
                        new = new.clamp(bounds[0], bounds[1])
                    param.assign(new, now)
            steps_run = i + 1
            if bar is not None:
                # Reading the loss synchronises with a GPU: a bar shows it every CHECK_EVERY steps, lines never.
                show = bar.bars and ((i + 1) % CHECK_EVERY == 0 or i == steps - 1)
                bar.update(1, postfix={"loss": f"{float(total.mean()):.4g}"} if show else None)
            if callback is not None and callback(
                StepInfo(step=i, steps=steps, loss=total, input=param.render().detach().clone(), lr=lr_i)
            ):
                stopped = f"callback asked to stop after step {i}"
                break
        final_x = param.render().detach().clone()
        if not nonfinite:
            # The iterate after the last update has not been scored yet. Scored as the steps are (gradients on), so
            # a model with a separate inference path is scored on the function the search minimises.
            with torch.enable_grad():
                total = objective(final_x.clone().requires_grad_(True), 1.0, None).detach()
            best_x = keep_if_better(total, final_x, steps_run)
    finally:
        if bar is not None:
            bar.close()
    if host:
        best_loss = torch.tensor(host_best, dtype=dtype, device=device)
        best_step = torch.tensor(host_step, dtype=torch.long, device=device)
    hist = history_upto(steps_run).permute(1, 0, 2).detach().cpu()
    return Found(
        best_x=best_x,
        best_loss=best_loss,
        best_step=best_step,
        final_x=final_x,
        history=History(
            terms={n: hist[k] for k, n in enumerate(names)},
            lr=torch.frombuffer(lrs, dtype=torch.float64)[:steps_run].float(),
            input_distance=hist[-1],
        ),
        steps_run=steps_run,
        stopped=stopped,
        nonfinite=nonfinite,
        parametrization=kind if switch < 0 else f"{kind}, then pixel from step {switch}",
    )


def _host_bookkeeping(device: torch.device) -> bool:
    """Whether the loop keeps its per-step bookkeeping (best loss, best step, the non-finite guard) in Python
    numbers: on the CPU, where reading a loss waits for nothing; never on an accelerator, where it would
    synchronise every step."""
    return device.type == "cpu"


def _update(
    rcp: Recipe, z: torch.Tensor, grad: torch.Tensor, lr: float, step: int, state: dict[str, torch.Tensor]
) -> None:
    """One in-place update of ``z`` (under no_grad)."""
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


def _progress_bar(steps: int, progress: bool, restart: int) -> Progress | None:
    """A tqdm bar on a terminal (tqdm installed); elsewhere a line per tenth of the steps, with time left."""
    if not progress:
        return None
    return Progress(
        steps, "invert" if restart == 0 else f"invert (restart {restart})", "steps", lines_every=max(1, steps // 10),
        leave=False,
    )
