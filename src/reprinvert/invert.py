"""Invert a layer's representation by gradient descent on the input.

:func:`invert` captures rep_L(x), then searches for an input x_g with rep_L(x_g) ~ rep_L(x). Each step runs the
model only up to the layer (the forward pass stops there), takes the gradient with ``torch.autograd.grad`` with
respect to the optimised tensor only, and updates it. The caller's model and tensors come back exactly as they
were (see ``docs/concepts.md``, "Contracts").
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._rng import make_generator
from ._state import frozen
from .capture import Hooks, Selector, model_dtype, private_input
from .errors import NonFiniteWarning, OutputSelectionError
from .layers import LayerSpec, resolve_layer, runnable
from .metrics import DEFAULT_SIGMA, InversionMetrics, flatten_batch
from .recipes import Init, Loss, Optimizer, Recipe
from .recipes import get as get_recipe
from .regularizers import Regularizer

__all__ = ["History", "Inversion", "StepInfo", "invert", "nearest_tokens"]


@dataclass(frozen=True)
class History:
    """Per-step losses of an inversion, each term separately.

    Attributes:
        terms: ``{"data": ..., "<regularizer name>": ..., "total": ...}``, each a CPU tensor of shape
            ``(steps, B)`` (the value per sample at each step, before that step's update; the data term includes
            ``loss_scale``). With restarts, the run that produced the returned input is kept.
        lr: the learning rate of each step, shape ``(steps,)``.
    """

    terms: dict[str, torch.Tensor]
    lr: torch.Tensor

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
        return out


@dataclass(frozen=True)
class StepInfo:
    """What a ``callback`` receives after each step.

    Attributes:
        step: 0-based index of the step just taken.
        steps: total steps planned.
        loss: per-sample total loss at this step ``(B,)`` (detached).
        input: the current iterate after the update (detached; do not modify).
        lr: learning rate of the step.
    """

    step: int
    steps: int
    loss: torch.Tensor
    input: torch.Tensor
    lr: float


@dataclass(frozen=True)
class Inversion:
    """The result of :func:`invert`.

    Attributes:
        input: the reconstructed input, same shape, dtype and device as ``x`` (for ``start=`` inversions: the
            optimised tensor at the start layer, in its shape and dtype).
        metrics: per-sample :class:`~reprinvert.metrics.InversionMetrics` (``.summary()`` for means).
        history: per-step losses, each term separately.
        layer: resolved name of the inverted layer.
        start: resolved name of the start layer, or None when the raw input was optimised.
        target: rep(x), detached.
        representation: rep(input), detached.
        best_step: per sample, the step whose iterate was returned (``steps`` = the final iterate).
        steps_run: steps actually taken (fewer when a callback stopped early or a NaN appeared).
        stopped: why the run ended early, or None.
        recipe: the recipe used, with the overrides applied.
        seed: the seed, if randomness came from one.
        seconds: wall time of the optimisation.
        original: the tensor that was optimised towards: ``x`` or, with ``start=``, the start layer's output.
    """

    input: torch.Tensor
    metrics: InversionMetrics
    history: History
    layer: str
    start: str | None
    target: torch.Tensor
    representation: torch.Tensor
    best_step: torch.Tensor
    steps_run: int
    stopped: str | None
    recipe: Recipe
    seed: int | None
    seconds: float
    original: torch.Tensor = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"Inversion(layer={self.layer!r}, input={tuple(self.input.shape)}, steps_run={self.steps_run}, "
            f"recipe={self.recipe.name!r}, {self.metrics})"
        )


def _data_loss(kind: Loss, rep: torch.Tensor, target: torch.Tensor, target_sq: torch.Tensor) -> torch.Tensor:
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


def _initial(
    init: Init | torch.Tensor, like: torch.Tensor, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
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
    if init == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    if init == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    if init == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    raise ValueError(f"init={init!r}: expected 'seed', 'zeros', 'uniform', 'normal' or a tensor of the input's shape")


def _check_input(x: Any, start: str | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor(x)")
    if x.layout != torch.strided:
        raise TypeError(f"x has layout {x.layout}; reprinvert needs a dense tensor: pass x.to_dense()")
    if x.is_meta:
        raise ValueError(
            "x is on the meta device, which holds shapes but no values; pass a tensor with data, e.g. on 'cpu'"
        )
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"x has shape {tuple(x.shape)}: an empty batch; pass at least one sample, batch first, e.g. (1, C, H, W)"
        )
    if start is None and not (x.is_floating_point() or x.is_complex()):
        hint = "x.float() / 255 for uint8 images" if x.dtype == torch.uint8 else "x.float()"
        raise TypeError(
            f"x has dtype {x.dtype}, which cannot be optimised by gradient descent; for token ids or other "
            "discrete inputs pass start=<name of the embedding layer> to invert in its output space, or convert "
            f"images with {hint}"
        )
    if x.is_complex():
        raise TypeError(f"x has dtype {x.dtype}; complex inputs are not supported")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(
            "x contains NaN or Inf values; the reference representation would be meaningless. Clean the input "
            "first (e.g. torch.nan_to_num(x))"
        )
    return x


def invert(
    model: nn.Module,
    layer: LayerSpec,
    x: torch.Tensor,
    *,
    recipe: Recipe | str = "default",
    steps: int | None = None,
    optimizer: Optimizer | None = None,
    lr: float | None = None,
    loss: Loss | None = None,
    init: Init | torch.Tensor | None = None,
    regularizers: Sequence[Regularizer] | None = None,
    clamp: tuple[float, float] | None = None,
    start: LayerSpec | None = None,
    select: Selector = None,
    call: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], bool | None] | None = None,
    track_best: bool = True,
    train: bool = False,
    sigma: float = DEFAULT_SIGMA,
    data_range: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Inversion:
    """Find an input whose representation at ``layer`` matches that of ``x``, and measure how close it is.

    Args:
        model: any ``nn.Module``. It runs in eval mode (unless ``train=True``) with its parameters frozen; its
            training flags, ``requires_grad`` flags, buffers, ``.grad`` and hooks come back exactly as they were.
        layer: the layer to invert: dotted name, index or module (see :func:`reprinvert.list_layers`).
        x: the input, batch first, e.g. ``(B, C, H, W)`` images in [0, 1], ``(B, C, L)`` signals or ``(B, T)``
            token ids (with ``start=``). Never modified; a batch of B inputs is B independent inversions (except
            with ``optimizer="lbfgs"``, whose line search is shared).
        recipe: a :class:`~reprinvert.recipes.Recipe` or a name (``"default"``, ``"badger"``,
            ``"mahendran-vedaldi"``); the options below override its fields.
        steps: optimisation steps (default: the recipe's; ``"default"`` uses 300).
        optimizer: ``"gd"``, ``"sgd"``, ``"adam"`` or ``"lbfgs"``.
        lr: learning rate at the first step (the recipe's schedule scales from it).
        loss: ``"l1"``, ``"mse"``, ``"nmse"`` or ``"cosine"``.
        init: ``"seed"`` (N(0.7, 0.05^2)), ``"zeros"``, ``"uniform"``, ``"normal"`` or a tensor.
        regularizers: replace the recipe's regularizers (see :mod:`reprinvert.regularizers`).
        clamp: ``(low, high)`` bounds applied after each step, e.g. ``(0, 1)`` for images.
        start: optimise the output of this module instead of ``x`` (for token models: the embedding layer).
            The start layer must run exactly once, before ``layer``.
        select: which tensor of the layer's output (see :data:`reprinvert.capture.Selector`).
        call: which call of a module that runs more than once (0 = first).
        seed: seed of all randomness (initialisation, jitter, reference perturbation); default 0.
        generator: a ``torch.Generator`` instead of ``seed``.
        callback: called with a :class:`StepInfo` after every step; returning True stops the run.
        track_best: return, per sample, the iterate with the lowest total loss instead of the last one.
        train: keep the model's training flags instead of switching to eval mode (buffers are restored anyway).
        sigma: standard deviation of the reference perturbation x' = x + N(0, sigma^2) for m_r.
        data_range: range of the data, for PSNR.
        model_kwargs: extra keyword arguments of the forward call.
        progress: show a progress bar (needs ``tqdm``: ``pip install 'reprinvert[progress]'``).

    Returns:
        An :class:`Inversion`: ``.input``, ``.metrics``, ``.history`` and more.

    Raises:
        LayerNotFoundError: unknown layer (the message lists the closest names).
        LayerCallError: the layer never ran, or ran more than once without ``call``.
        OutputSelectionError: the layer returns several tensors and ``select`` is not given.
        TypeError, ValueError: a bad argument (the message names it and the fix).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
        >>> res = ri.invert(model, "0", torch.rand(1, 3, 16, 16), steps=50)
        >>> res.input.shape
        torch.Size([1, 3, 16, 16])
    """
    started = time.perf_counter()
    rcp = _resolve_recipe(
        recipe, steps=steps, optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers, clamp=clamp
    )
    _check_options(train=train, track_best=track_best, sigma=sigma, data_range=data_range)
    model = runnable(model)
    layer_name, _ = resolve_layer(model, layer)
    start_name = resolve_layer(model, start, argument="start")[0] if start is not None else None
    x = _check_input(x, start_name)
    device = next((p.device for p in model.parameters()), x.device)
    if device != x.device:
        raise ValueError(
            f"x is on {x.device}, but the model's parameters are on {device}; move one of them, "
            f"e.g. x.to({str(device)!r})"
        )
    g = make_generator(seed, generator, x.device)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (StepInfo -> bool | None), got {type(callback).__name__}")

    # Inside an ambient torch.inference_mode() nothing could be differentiated: leave it for the inversion.
    with torch.inference_mode(False), frozen(model, train=train):
        # 1. The target: one full forward (no early stop), so a reused layer is caught by the call count. An
        # error raised downstream of the layer (a head that rejects this input size, say) does not matter.
        # The model gets a private copy of x, in its own floating dtype (a half model is fed half).
        x_in = private_input(x, model_dtype(model))
        with torch.no_grad(), Hooks(
            model, layer_name, select=select, call=call, replace=start_name, tolerate_downstream_errors=True
        ) as probe:
            version = x_in._version
            target = probe.run(x_in, model_kwargs)[layer_name]
            original = probe.replaced_output if start_name is not None else x.detach()
            # A model that changes what it is fed in place (a first ReLU(inplace=True)) gets a copy at each step.
            copy_fed = x_in._version != version if start_name is None else probe.replaced_modified
        assert original is not None
        # Half-precision inputs are optimised in float32 (float64 stays float64); the model is fed its dtype.
        work_dtype = torch.float64 if original.dtype == torch.float64 else torch.float32
        feed_dtype = x_in.dtype if start_name is None else original.dtype
        batch = original.shape[0]
        target_flat = flatten_batch(target.to(work_dtype), batch)
        target_sq = target_flat.pow(2).sum(1).clamp_min(torch.finfo(work_dtype).tiny)

        hooks = Hooks(
            model, layer_name, select=select, call=call, grad=True, stop=True, clone_last=False, replace=start_name
        )
        with hooks, torch.enable_grad():

            def forward(z: torch.Tensor) -> torch.Tensor:
                fed = z.to(feed_dtype)
                if copy_fed and fed is z:
                    fed = fed.clone()
                if start_name is None:
                    out = hooks.run(fed, model_kwargs)[layer_name]
                else:
                    hooks.replacement = fed
                    try:
                        out = hooks.run(x_in, model_kwargs)[layer_name]
                    finally:
                        hooks.replacement = None
                if not out.requires_grad and torch.is_grad_enabled():
                    raise _not_differentiable(layer_name, out, start_name)
                return out

            best = None
            for restart in range(rcp.restarts):
                run = _optimise(
                    forward, rcp, original, init if isinstance(init, torch.Tensor) else rcp.init, work_dtype,
                    target_flat, target_sq, batch, g, callback, progress, restart,
                )
                best = run if best is None else _merge(best, run)
            assert best is not None
            # After a NaN the final iterate is not usable: the best finite one is returned whatever track_best.
            keep_best = track_best or best.nonfinite
            result_x = best.best_x if keep_best else best.final_x
            best_step = best.best_step if keep_best else torch.full((batch,), best.steps_run)

            # 2. Metrics: rep(x_g) and the reference rep(x') with x' = x + N(0, sigma^2).
            with torch.no_grad():
                rep_g = forward(result_x).detach().clone()
                x_ref = _reference(original, sigma, g, work_dtype)
                rep_ref = forward(x_ref).detach().clone()
    return _result(
        layer=layer_name, start=start_name, original=original, result_x=result_x, x_ref=x_ref, target=target,
        rep_g=rep_g, rep_ref=rep_ref, history=best.history, best_step=best_step, steps_run=best.steps_run,
        stopped=best.stopped, recipe=rcp, seed=seed if generator is None else None,
        seconds=time.perf_counter() - started, data_range=data_range,
    )


def _reference(original: torch.Tensor, sigma: float, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The reference input x' = x + N(0, sigma^2) of the metric m_r."""
    return original.to(dtype) + sigma * torch.randn(original.shape, generator=g, device=original.device, dtype=dtype)


def _result(
    *,
    layer: str,
    start: str | None,
    original: torch.Tensor,
    result_x: torch.Tensor,
    x_ref: torch.Tensor,
    target: torch.Tensor,
    rep_g: torch.Tensor,
    rep_ref: torch.Tensor,
    history: History,
    best_step: torch.Tensor,
    steps_run: int,
    stopped: str | None,
    recipe: Recipe,
    seed: int | None,
    seconds: float,
    data_range: float,
) -> Inversion:
    """The :class:`Inversion` of one layer, its metrics computed from the tensors."""
    batch = original.shape[0]
    metrics = InversionMetrics.from_tensors(
        x=flatten_batch(original, batch),
        x_g=flatten_batch(result_x, batch),
        x_ref=flatten_batch(x_ref, batch),
        rep=flatten_batch(target, batch),
        rep_g=flatten_batch(rep_g, batch),
        rep_ref=flatten_batch(rep_ref, batch),
        data_range=data_range,
    )
    return Inversion(
        input=result_x.detach().to(dtype=original.dtype).clone(),
        metrics=metrics,
        history=history,
        layer=layer,
        start=start,
        target=target.detach(),
        representation=rep_g,
        best_step=best_step.cpu(),
        steps_run=steps_run,
        stopped=stopped,
        recipe=recipe,
        seed=seed,
        seconds=seconds,
        original=original,
    )


def _resolve_recipe(
    recipe: Recipe | str,
    *,
    steps: int | None,
    optimizer: Optimizer | None,
    lr: float | None,
    loss: Loss | None,
    init: Init | torch.Tensor | None,
    regularizers: Sequence[Regularizer] | None,
    clamp: tuple[float, float] | None,
) -> Recipe:
    """The recipe with :func:`invert`'s overrides applied (a stepped schedule keeps its fractions of the run)."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in dict(steps=steps, optimizer=optimizer, lr=lr, loss=loss, clamp=clamp).items()
        if v is not None
    }
    if isinstance(init, str):
        overrides["init"] = init
    elif init is not None and not isinstance(init, torch.Tensor):
        raise TypeError(
            f"init must be 'seed', 'zeros', 'uniform', 'normal' or a tensor of the input's shape, got "
            f"{type(init).__name__}: {init!r}"
        )
    if regularizers is not None:
        overrides["regularizers"] = tuple(regularizers)
    if "steps" in overrides and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps={steps!r}: expected a positive int (the number of optimisation steps)")
    base = get_recipe(recipe)
    if "steps" in overrides and base.drops and steps != base.steps:
        # Keep a stepped schedule at the same fractions of the run.
        overrides["drops"] = tuple(round(d * overrides["steps"] / base.steps) for d in base.drops)
    return base.replace(**overrides) if overrides else base


def _check_options(*, train: Any, track_best: Any, sigma: Any, data_range: Any) -> None:
    for flag_name, flag in (("train", train), ("track_best", track_best)):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name} must be True or False, got {type(flag).__name__}: {flag!r}")
    if not _is_number(sigma) or not sigma >= 0:
        raise ValueError(f"sigma={sigma!r}: expected a non-negative standard deviation (default 1/25)")
    if not _is_number(data_range) or not data_range > 0:
        raise ValueError(f"data_range={data_range!r}: expected a positive number (1.0 for images in [0, 1])")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _not_differentiable(layer: str, out: torch.Tensor, start: str | None) -> OutputSelectionError:
    source = f"the output of start layer {start!r}" if start is not None else "the input"
    why = (
        f"its dtype is {out.dtype}" if not (out.is_floating_point() or out.is_complex())
        else "the model detaches it or computes it under torch.no_grad()"
    )
    return OutputSelectionError(
        f"layer {layer!r} returned a tensor that does not depend differentiably on {source} ({why}), so it "
        "cannot be inverted by gradient descent; choose an earlier layer (reprinvert.describe(model, x) lists "
        "them) or select= a floating-point tensor of its output"
    )


def _finite(total: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor: every value is finite (v - v == 0 is False for NaN and +-Inf; cheaper than isfinite)."""
    return ((total - total) == 0).all()


# Steps between the loop's checks for a non-finite loss (each check synchronises with the device).
_CHECK_EVERY = 32


@dataclass
class _Run:
    best_x: torch.Tensor
    best_loss: torch.Tensor
    best_step: torch.Tensor
    final_x: torch.Tensor
    history: History
    steps_run: int
    stopped: str | None
    nonfinite: bool  # a NaN/Inf ended the run: its final iterate is unusable


def _merge(a: _Run, b: _Run) -> _Run:
    """Per sample, keep the restart with the lower best loss."""
    take_b = b.best_loss < a.best_loss
    shape = (-1,) + (1,) * (a.best_x.dim() - 1)
    mask = take_b.view(shape)
    history = b.history if bool(take_b.float().mean() > 0.5) else a.history
    return _Run(
        best_x=torch.where(mask, b.best_x, a.best_x),
        best_loss=torch.where(take_b, b.best_loss, a.best_loss),
        best_step=torch.where(take_b, b.best_step, a.best_step),
        final_x=torch.where(mask, b.final_x, a.final_x),
        history=history,
        steps_run=max(a.steps_run, b.steps_run),
        stopped=a.stopped or b.stopped,
        nonfinite=a.nonfinite or b.nonfinite,
    )


def _optimise(
    forward: Callable[[torch.Tensor], Any],
    rcp: Recipe,
    original: torch.Tensor,
    init: Init | torch.Tensor,
    dtype: torch.dtype,
    target_flat: torch.Tensor | list[torch.Tensor],
    target_sq: torch.Tensor | list[torch.Tensor],
    batch: int,
    g: torch.Generator,
    callback: Callable[[StepInfo], bool | None] | None,
    progress: bool,
    restart: int,
) -> _Run:
    """One optimisation run from one starting point."""
    steps = rcp.steps
    regs = rcp.regularizers
    if len({r.name for r in regs}) != len(regs):
        raise ValueError(f"regularizers have repeated names {[r.name for r in regs]}; give each kind at most once")
    penalties = [r for r in regs if type(r).penalty is not Regularizer.penalty]
    names = ["data"] + [r.name for r in penalties] + ["total"]
    transforms = [r for r in regs if type(r).transform is not Regularizer.transform]
    posts = [r for r in regs if type(r).after_step is not Regularizer.after_step]
    device = original.device
    history = torch.full((steps, len(names), batch), float("nan"), dtype=dtype, device=device)
    lr_list = [rcp.learning_rate(i) for i in range(steps)]
    lrs = torch.tensor(lr_list, dtype=torch.float64)

    z = _initial(init, original, dtype, g).requires_grad_(True)
    best_x = z.detach().clone()
    best_loss = torch.full((batch,), float("inf"), dtype=dtype, device=device)
    best_step = torch.zeros(batch, dtype=torch.long, device=device)
    all_finite = torch.ones((), dtype=torch.bool, device=device)  # no non-finite loss seen yet
    mask_shape = (-1,) + (1,) * (z.dim() - 1)
    state: dict[str, torch.Tensor] = {}  # momentum of "sgd", moments of "adam"
    lbfgs = (
        torch.optim.LBFGS([z], lr=rcp.lr, max_iter=1, history_size=20, line_search_fn="strong_wolfe")
        if rcp.optimizer == "lbfgs"
        else None
    )
    bar = _progress_bar(steps, progress, restart)
    # A callback may stop the run at any step, so with one the loop checks every step (StepInfo never shows a
    # step after a non-finite loss); otherwise every _CHECK_EVERY steps.
    check_every = 1 if callback is not None else _CHECK_EVERY
    # Random transforms (jitter) draw from ``g`` every step. After a late-found non-finite loss the generator is
    # put back where a per-step check would have left it, so later draws (restarts, the reference perturbation)
    # do not depend on the check interval: its state at the start of each step since the last check.
    rng_at_step: dict[int, torch.Tensor] | None = {} if transforms and check_every > 1 else None
    stopped: str | None = None
    nonfinite = False
    steps_run = 0

    def objective(t: float, record: int | None) -> torch.Tensor:
        """Per-sample total loss at z; records each term at history[record] when asked."""
        zin = z
        for r in transforms:
            zin = r.transform(zin, t, g)
        out = forward(zin)
        if isinstance(out, list):  # several layers at once (a batched sweep): one target per chunk of the batch
            assert isinstance(target_flat, list) and isinstance(target_sq, list)
            data = torch.cat([
                _data_loss(rcp.loss, flatten_batch(o, t.shape[0]).to(dtype), t, sq)
                for o, t, sq in zip(out, target_flat, target_sq)
            ])
        else:
            assert isinstance(target_flat, torch.Tensor) and isinstance(target_sq, torch.Tensor)
            data = _data_loss(rcp.loss, flatten_batch(out, batch).to(dtype), target_flat, target_sq)
        if rcp.loss_scale != 1.0:
            data = data * rcp.loss_scale
        total = data
        terms = [data]
        for r in penalties:
            p = r.penalty(z, t)
            if p is not None:
                total = total + p
                terms.append(p)
        if record is not None:  # (detached values: nothing here is recorded by autograd)
            row = history[record]
            for k, p in enumerate(terms):
                row[k] = p.detach()
            row[-1] = total.detach()
        return total

    def keep_if_better(total: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        """Per sample, remember ``x`` and ``step`` where ``total`` is lower than the best so far.

        Nothing is taken once any loss has been non-finite (``all_finite`` is False): NaN compares False, and
        the flag also stops +-Inf and every later step. No host synchronisation. ``total`` and ``x`` are detached.
        """
        improved = (total < best_loss) & all_finite
        best_loss.copy_(torch.where(improved, total, best_loss))
        best_step.masked_fill_(improved, step)
        return torch.where(improved.view(mask_shape), x, best_x)

    def first_nonfinite(upto: int) -> tuple[int, list[int]]:
        """The first recorded step < ``upto`` with a non-finite total loss, and its non-finite samples."""
        bad = ~torch.isfinite(history[:upto, -1])
        first = int(bad.any(1).nonzero()[0, 0])
        return first, bad[first].nonzero().flatten().tolist()

    try:
        for i in range(steps):
            t = i / steps
            lr_i = lr_list[i]
            if rng_at_step is not None:
                rng_at_step[i] = g.get_state()
            if lbfgs is not None:
                lbfgs.param_groups[0]["lr"] = lr_i
                evaluated: list[torch.Tensor] = []

                def closure(t: float = t, i: int = i, evaluated: list[torch.Tensor] = evaluated) -> torch.Tensor:
                    total = objective(t, i if not evaluated else None)  # history records the first evaluation
                    evaluated.append(total.detach())
                    if "lbfgs_scale" not in state:
                        # torch's L-BFGS skips curvature pairs with y.s <= 1e-10 (an absolute threshold), so a
                        # loss whose gradients are tiny never gets a step size; it optimises loss / initial loss.
                        state["lbfgs_scale"] = 1.0 / total.detach().sum().clamp_min(torch.finfo(total.dtype).tiny)
                    scaled = total.sum() * state["lbfgs_scale"]
                    (grad,) = torch.autograd.grad(scaled, z)
                    z.grad = grad
                    return scaled

                current_x = z.detach().clone()
                lbfgs.step(closure)
                total = evaluated[0]
            else:
                total = objective(t, i)
                (grad,) = torch.autograd.grad(total.sum(), z)
                current_x = z.detach()
            total = total.detach()
            all_finite &= _finite(total)
            best_x = keep_if_better(total, current_x, i)
            # The loop's host synchronisation, every ``check_every`` steps. A non-finite loss found here ends the run
            # as if it had stopped at that step: the best iterate was frozen there by ``all_finite``.
            if (i + 1) % check_every == 0 or i == steps - 1:
                if not bool(all_finite):
                    at, bad = first_nonfinite(i + 1)
                    if rng_at_step is not None and at + 1 in rng_at_step:
                        g.set_state(rng_at_step[at + 1])
                    stopped = (
                        f"non-finite loss at step {at} for sample(s) {bad}; kept the best finite iterate "
                        "(lower the learning rate, or add clamp=(0, 1))"
                    )
                    warnings.warn(f"invert stopped early: {stopped}", NonFiniteWarning, stacklevel=3)
                    nonfinite = True
                    steps_run = at
                    break
                if rng_at_step is not None:
                    rng_at_step.clear()
            with torch.no_grad():
                if lbfgs is None:
                    _update(rcp, z, grad, lr_i, i, state)
                for r in posts:
                    new = r.after_step(z, t)
                    if new is not None:
                        z.copy_(new)
                if rcp.clamp is not None:
                    z.clamp_(rcp.clamp[0], rcp.clamp[1])
            steps_run = i + 1
            if bar is not None:
                bar.update(1)
                if (i + 1) % _CHECK_EVERY == 0 or i == steps - 1:  # reading the loss synchronises: not every step
                    bar.set_postfix(loss=f"{float(total.mean()):.4g}", refresh=False)
            if callback is not None and callback(
                StepInfo(step=i, steps=steps, loss=total, input=z.detach(), lr=lr_i)
            ):
                stopped = f"callback asked to stop after step {i}"
                break
        if not nonfinite:
            # The iterate after the last update has not been scored yet.
            with torch.no_grad():
                total = objective(1.0, None)
                all_finite &= _finite(total)
            best_x = keep_if_better(total, z.detach(), steps_run)
    finally:
        if bar is not None:
            bar.close()
    hist = history[:steps_run].permute(1, 0, 2).detach().cpu()
    return _Run(
        best_x=best_x,
        best_loss=best_loss,
        best_step=best_step,
        final_x=z.detach().clone(),
        history=History(terms={n: hist[k] for k, n in enumerate(names)}, lr=lrs[:steps_run].float()),
        steps_run=steps_run,
        stopped=stopped,
        nonfinite=nonfinite,
    )


def _update(
    rcp: Recipe,
    z: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    step: int,
    state: dict[str, torch.Tensor],
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
        _adam(z, grad, lr, step + 1, state)


_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def _adam(z: torch.Tensor, grad: torch.Tensor, lr: float, t: int, state: dict[str, torch.Tensor]) -> None:
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
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(_ADAM_EPS)
    z.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


def _progress_bar(steps: int, progress: bool, restart: int) -> Any:
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm: pip install 'reprinvert[progress]'; continuing without a progress bar",
            stacklevel=4,
        )
        return None
    return tqdm(total=steps, desc="invert" if restart == 0 else f"invert (restart {restart})", leave=False)


def nearest_tokens(
    embedding: nn.Embedding | torch.Tensor, z: torch.Tensor, *, metric: str = "l2"
) -> torch.Tensor:
    """Map optimised embeddings back to the nearest token ids.

    Args:
        embedding: the model's ``nn.Embedding`` or its weight matrix ``(V, D)``.
        z: embeddings ``(..., D)``, e.g. ``Inversion.input`` of an inversion with ``start=<embedding layer>``.
        metric: ``"l2"`` (Euclidean) or ``"cosine"``.

    Returns:
        Token ids of shape ``z.shape[:-1]`` (dtype long).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> emb = nn.Embedding(10, 4)
        >>> ids = torch.tensor([[1, 5, 7]])
        >>> ri.nearest_tokens(emb, emb(ids)).tolist()
        [[1, 5, 7]]
    """
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError("embedding must be an nn.Embedding or a (V, D) weight tensor")
    if z.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"z has last dimension {z.shape[-1]}, but the embedding has dimension {weight.shape[1]}; pass the "
            "embedding layer whose output was optimised"
        )
    with torch.no_grad():
        w = weight.detach().to(z.device, torch.float64)
        flat = z.detach().reshape(-1, z.shape[-1]).to(torch.float64)
        if metric == "l2":
            scores = -torch.cdist(flat, w)
        elif metric == "cosine":
            scores = torch.nn.functional.normalize(flat, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
        else:
            raise ValueError(f"metric={metric!r}: expected 'l2' or 'cosine'")
        return scores.argmax(1).reshape(z.shape[:-1])

