"""Invert a layer's representation by gradient descent on the input: :func:`invert`.

:func:`invert` captures rep_L(x), then searches for an input x_g with rep_L(x_g) ~ rep_L(x). Each step runs the
model only up to the layer (the forward pass stops there), takes the gradient with ``torch.autograd.grad`` with
respect to the optimised tensor only, and updates it. The caller's model and tensors come back exactly as they
were (see ``docs/concepts.md``, "Contracts").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.utils.checkpoint
from torch import nn

from . import recipes
from ._domain import Domain, NormalizeSpec, chance_input
from ._feed import Feed, requiring_grad
from ._hooks import Hooks
from ._inversion import Inversion
from ._layers import LayerSpec, resolve_layer
from ._outputs import Selector
from ._plan import Plan
from ._rng import make_generator
from ._search import Found, Problem, StepInfo, Targets, search
from ._state import check_materialised, model_rng, step_back_into_model_rng, step_out_of_model_rng
from .errors import OutputSelectionError
from .metrics import InversionMetrics
from .recipes import Init, Loss, Optimizer, Recipe
from .regularizers import Regularizer

__all__ = ["Baselines", "inversion_of", "invert", "run_inversion"]


def invert(
    model: nn.Module, layer: LayerSpec, x: torch.Tensor, *, recipe: Recipe | str = "default",
    steps: int | None = None, optimizer: Optimizer | None = None, lr: float | None = None, loss: Loss | None = None,
    init: Init | torch.Tensor | None = None, regularizers: Sequence[Regularizer] | None = None,
    clamp: tuple[float, float] | Literal["auto", False] | None = None, start: LayerSpec | None = None,
    select: Selector = None, call: int | None = None, seed: int | None = None,
    generator: torch.Generator | None = None, callback: Callable[[StepInfo], bool | None] | None = None,
    track_best: bool = True, train: bool = False, sigma: float | None = None, data_range: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None, progress: bool = False, normalize: NormalizeSpec = None,
) -> Inversion:
    """Find an input whose representation at ``layer`` matches that of ``x``, and measure how close it is.

    Args:
        model: any ``nn.Module``. It runs in eval mode (unless ``train=True``) with its parameters frozen; its
            training flags, ``requires_grad`` flags, buffers, ``.grad`` and hooks come back exactly as they were.
        layer: the layer to invert: dotted name, index or module (see :func:`reprinvert.list_layers`).
        x: the input, batch first, e.g. ``(B, C, H, W)`` images in [0, 1], ``(B, C, L)`` signals or ``(B, T)``
            token ids (with ``start=``). Never modified; a batch of B inputs is B independent inversions (except
            with ``optimizer="lbfgs"``, whose line search is shared).
        recipe: a :class:`~reprinvert.recipes.Recipe`, a name (``"default"``, ``"badger"``,
            ``"mahendran-vedaldi"``) or a recipe file (``"my.json"``, see :func:`reprinvert.recipes.load`); the
            options below override its fields.
        steps: optimisation steps (default: the recipe's; ``"default"`` uses 500).
        optimizer: ``"gd"``, ``"sgd"``, ``"adam"`` or ``"lbfgs"``.
        lr: learning rate at the first step (the recipe's schedule scales from it). Adam's learning rate is in
            units of data in [0, 1]; with ``start=`` it is multiplied by twice the start activation's
            root-mean-square value.
        loss: ``"l1"``, ``"mse"``, ``"nmse"`` or ``"cosine"``.
        init: ``"seed"`` (N(0.7, 0.05^2)), ``"grey"`` (N(0.5, 0.05^2)), ``"zeros"``, ``"uniform"``, ``"normal"``
            or a tensor. With ``start=``, ``"seed"`` and ``"grey"`` are centred on 0 at the activation's scale
            (2 x its root-mean-square value u): N(0.2 u, (0.05 u)^2) and N(0, (0.05 u)^2).
        regularizers: replace the recipe's regularizers (see :mod:`reprinvert.regularizers`).
        clamp: ``(low, high)`` bounds applied after each step, e.g. ``(0, 1)`` for images; ``"auto"`` (the
            default recipe's): (0, 1) for raw inputs in [0, 1], none otherwise; ``False``: no bounds; None: the
            recipe's.
        start: optimise the output of this module instead of ``x`` (for token models: the embedding layer).
            The start layer must run exactly once, before ``layer``.
        select: which tensor of the layer's output (see :data:`reprinvert.Selector`).
        call: which call of a module that runs more than once (0 = first).
        seed: seed of all randomness (initialisation, jitter, reference perturbation); default 0.
        generator: a ``torch.Generator`` instead of ``seed``.
        callback: called with a :class:`StepInfo` after every step; returning True stops the run.
        track_best: return, per sample, the iterate with the lowest total loss instead of the last one.
        train: keep the model's training flags instead of switching to eval mode (buffers are restored anyway,
            and parameters too: with ``train=True`` every parameter is copied first, so a forward that updates one
            leaves no trace; dropout draws from the seed).
        sigma: standard deviation of the reference perturbation x' = x + N(0, sigma^2) for m_r. None (the
            default): 1/25 of ``data_range`` for a raw input (0.04 for images in [0, 1], the seed's), and 1/25 of
            each sample's root-mean-square value for a ``start=`` activation.
        data_range: range of the data, for PSNR and the default ``sigma``.
        model_kwargs: extra keyword arguments of the forward call.
        progress: show a progress bar (needs ``tqdm``: ``pip install 'reprinvert[progress]'``).
        normalize: the model expects ``(x - mean) / std``: ``"imagenet"``, ``"inception"`` ((x - 0.5) / 0.5) or
            ``(mean, std)`` per channel. ``x``, the search, clamping, regularizers, metrics and the returned
            input all stay in pixel space; only what the model is fed is normalised.

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
    plan = Plan(
        recipes.resolve(
            recipe, steps=steps, optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers,
            clamp=clamp,
        ),
        Domain.of(x if isinstance(x, torch.Tensor) else None, normalize=normalize, data_range=data_range, sigma=sigma),
        init=init if isinstance(init, torch.Tensor) else None, start=start, select=select, call=call, seed=seed,
        generator=generator, callback=callback, track_best=track_best, train=train, progress=progress,
    )
    feed = Feed.of(model, normalize=plan.domain.normalize, model_kwargs=model_kwargs, train=train)
    plan.check_range(x)
    return run_inversion(feed, layer, x, plan, started=started)


class Baselines(NamedTuple):
    """What an inversion's metrics compare, besides x and its target: the reconstruction's representation, the
    reference perturbation x' and an unrelated input x_u with theirs."""

    rep_g: torch.Tensor
    x_ref: torch.Tensor
    rep_ref: torch.Tensor
    x_u: torch.Tensor
    rep_u: torch.Tensor


def run_inversion(feed: Feed, layer: LayerSpec, x: Any, plan: Plan, *, started: float) -> Inversion:
    """The inversion of ``layer`` for ``x`` under ``plan`` (what :func:`invert` and a one-by-one sweep run)."""
    layer_name = resolve_layer(feed.model, layer)[0]
    start = resolve_layer(feed.model, plan.start, argument="start")[0] if plan.start is not None else None
    x = _check_input(x, start)
    rcp = plan.recipe.for_input(x, raw=start is None)
    check_materialised(feed.model)
    device = next((p.device for p in feed.model.parameters()), x.device)
    if device != x.device:
        raise ValueError(
            f"x is on {x.device}, but the model's parameters are on {device}; move one of them, "
            f"e.g. x.to({str(device)!r})"
        )
    g = make_generator(plan.seed, plan.generator, x.device)
    with feed.session(g.initial_seed()):
        run = _LayerSearch(feed, plan, layer_name, start, x)
        with run.hooks, torch.enable_grad():
            # The model's random stream is held for the whole search (not swapped in and out at every forward);
            # the caller's callback runs on torch's own stream, as it would have.
            with model_rng(feed.model):
                found = search(
                    run.problem(), rcp, init=plan.init if plan.init is not None else rcp.init, generator=g,
                    callback=_outside_model_rng(feed.model, plan.callback), progress=plan.progress,
                )
            # Metrics: rep(x_g), the reference rep(x') with x' = x + N(0, sigma^2), and an unrelated input's.
            x_g, _ = found.result(plan.track_best)
            x_ref = plan.domain.reference(run.original, g, run.work_dtype, raw=start is None)
            x_u = chance_input(run.original.to(run.work_dtype))
            baselines = Baselines(run.measured(x_g), x_ref, run.measured(x_ref), x_u, run.measured(x_u))
    return inversion_of(
        found, plan=plan, recipe=rcp, layer=layer_name, start=start, original=run.original, target=run.target,
        baselines=baselines, seconds=time.perf_counter() - started,
    )


class _LayerSearch:
    """One layer's search on the caller's model: the target, the forward the search differentiates, measuring."""

    def __init__(self, feed: Feed, plan: Plan, layer: str, start: str | None, x: torch.Tensor) -> None:
        self.feed, self.layer, self.start = feed, layer, start
        # The target: one full forward (no early stop), so a reused layer is caught by the call count. An error
        # raised downstream of the layer (a head that rejects this input size, say) does not matter. It is computed
        # on the search's path (gradients on, the optimised tensor requiring them), so a model with a separate
        # inference path (nn.TransformerEncoder's fast path with a padding mask) is inverted on the function the
        # search minimises.
        self.x_in = feed.input(x, grad=False)
        with torch.enable_grad(), Hooks(
            feed.model, layer, select=plan.select, call=plan.call, start=start, grad_path=True
        ) as probe:
            fed = requiring_grad(self.x_in) if start is None else self.x_in
            version = fed._version
            self.target = probe.run(feed, fed, tolerant=True)[layer]
            # A snapshot: the result never shares storage with the caller's x.
            original = probe.start.output if probe.start is not None else x.detach().clone()
            # A model that changes what it is fed in place (a first ReLU(inplace=True)) gets a copy at each step.
            self.copy_fed = fed._version != version if probe.start is None else probe.start.modified
            del fed
        assert original is not None
        _check_batch_first(self.target, x, layer)
        self.original: torch.Tensor = original
        # Half-precision inputs are optimised in float32 (float64 stays float64); the model is fed its dtype.
        self.work_dtype = torch.float64 if original.dtype == torch.float64 else torch.float32
        self.feed_dtype = self.x_in.dtype if start is None else original.dtype
        self.hooks = Hooks(
            feed.model, layer, select=plan.select, call=plan.call, grad=True, stop=True, clone_last=False, start=start
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """rep(z), differentiable: ``z`` fed in the model's dtype (a copy where the model writes into its input)."""
        fed = z.to(self.feed_dtype)
        if self.copy_fed and fed is z:
            fed = fed.clone()
        start = self.hooks.start
        if start is None:
            out = self.hooks.run(self.feed, self.feed.normalized(fed))[self.layer]
        else:
            start.replacement = fed
            try:
                out = self.hooks.run(self.feed, self.x_in)[self.layer]
            finally:
                start.replacement = None
        if not out.requires_grad and torch.is_grad_enabled():
            raise _not_differentiable(self.layer, out, self.start)
        return out

    def measured(self, t: torch.Tensor) -> torch.Tensor:
        """rep(t) computed as the search computes it (gradients on), like the target."""
        return self.forward(t.detach().to(self.work_dtype).requires_grad_(True)).detach().clone()

    def problem(self) -> Problem:
        return Problem(
            _gradient_checked(self.forward, self.layer, self.start), self.original,
            Targets.of([self.target], self.original.shape[0], self.work_dtype), self.work_dtype,
            spatial=self.start is None, units=activation_units(self.original) if self.start is not None else None,
        )


def inversion_of(
    found: Found, *, plan: Plan, recipe: Recipe, layer: str, start: str | None, original: torch.Tensor,
    target: torch.Tensor, baselines: Baselines, seconds: float,
) -> Inversion:
    """The :class:`Inversion` of one layer's search, its metrics computed from the tensors (used by :func:`invert`
    and the batched sweep)."""
    x_g, best_step = found.result(plan.track_best)
    metrics = InversionMetrics.from_tensors(
        x=original, x_g=x_g, x_ref=baselines.x_ref, rep=target, rep_g=baselines.rep_g, rep_ref=baselines.rep_ref,
        x_chance=baselines.x_u, rep_chance=baselines.rep_u, data_range=plan.domain.data_range,
    )
    return Inversion(
        input=x_g.detach().to(dtype=original.dtype).clone(), metrics=metrics, history=found.history, layer=layer,
        start=start, target=target.detach(), representation=baselines.rep_g, best_step=best_step.cpu(),
        steps_run=found.steps_run, stopped=found.stopped, recipe=recipe, seed=plan.recorded_seed, seconds=seconds,
        original=original, parametrization=found.parametrization,
    )


def _check_input(x: Any, start: str | None) -> torch.Tensor:
    if isinstance(x, (tuple, list)) and any(isinstance(a, torch.Tensor) for a in x):
        raise TypeError(
            f"x is a {type(x).__name__} of {len(x)} arguments, but invert optimises one input tensor: pass that "
            "tensor as x and the model's other arguments as keywords, model_kwargs={'name': value}, or optimise an "
            "inner tensor with start=<layer>"
        )
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


def _check_batch_first(target: torch.Tensor, x: torch.Tensor, layer: str) -> None:
    """The layer's output has one row per sample of ``x`` (a batch of one may be shaped freely)."""
    b = x.shape[0]
    if b == 1 or (target.dim() and target.shape[0] == b):
        return
    raise ValueError(
        f"layer {layer!r} gave shape {tuple(target.shape)} for x of shape {tuple(x.shape)}: its first dimension is "
        f"not x's batch size {b}. If x is one sample without its batch dimension, pass x.unsqueeze(0) (x[None]); if "
        "the layer's output is not batch-first, choose a batch-first output with select=, or invert one sample at "
        "a time"
    )


def activation_units(activation: torch.Tensor) -> float:
    """The scale of a ``start=`` activation relative to data in [0, 1] (root-mean-square about 0.5): 2 x its RMS.
    Word embeddings (RMS about 0.02) get 0.04: Adam's steps and the grey start are scaled to match."""
    rms = float(activation.detach().double().pow(2).mean().sqrt())
    return 2 * rms if rms > 0 else 1.0


def _outside_model_rng(
    model: nn.Module, callback: Callable[[StepInfo], bool | None] | None
) -> Callable[[StepInfo], bool | None] | None:
    """``callback`` run on torch's own random stream while the search holds the model's (None stays None)."""
    if callback is None:
        return None

    def outside(info: StepInfo) -> bool | None:
        token = step_out_of_model_rng(model)
        try:
            return callback(info)
        finally:
            step_back_into_model_rng(token)

    return outside


def _gradient_checked(
    forward: Callable[[torch.Tensor], torch.Tensor], layer: str, start: str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` whose output is checked, once, to reach back to its input through autograd: a model that breaks
    the graph on the way (dynamically quantized modules, a tensor computed outside it) is a clear error, not a
    failure inside ``torch.autograd.grad``."""
    checked = False

    def checked_forward(z: torch.Tensor) -> torch.Tensor:
        nonlocal checked
        out = forward(z)
        if not checked and torch.is_grad_enabled() and z.requires_grad:
            probe = out.real if out.is_complex() else out
            try:
                torch.autograd.grad(probe.sum(), z, retain_graph=True)
            except RuntimeError as error:
                if isinstance(error, torch.utils.checkpoint.CheckpointError):
                    raise OutputSelectionError(
                        f"start layer {start!r} runs inside a torch.utils.checkpoint region: the checkpoint "
                        "recomputes that region in the backward pass, where the start layer's output would not be "
                        "the optimised tensor; choose a start layer outside the checkpointed region, or turn "
                        "checkpointing off for the inversion (model.gradient_checkpointing_disable() on a Hugging "
                        "Face model)"
                        if start is not None else
                        f"torch.utils.checkpoint failed to recompute the model before layer {layer!r} ({error}); "
                        "turn checkpointing off for the inversion"
                    ) from None
                if "use_reentrant=True" in str(error):
                    raise OutputSelectionError(
                        f"the model runs torch.utils.checkpoint with use_reentrant=True before layer {layer!r}; "
                        "such a checkpoint cannot be differentiated with torch.autograd.grad, which the inversion "
                        "uses: build the model with checkpoint(..., use_reentrant=False), or invert a layer that "
                        "runs before the checkpoint"
                    ) from None
                if "not have been used in the graph" not in str(error) and "does not require grad" not in str(error):
                    raise
                source = f"the output of start layer {start!r}" if start is not None else "the input"
                raise OutputSelectionError(
                    f"layer {layer!r} returned a tensor whose gradient does not reach {source}: the model breaks "
                    "the autograd graph between them (dynamically quantized modules, integer operations, a tensor "
                    "computed outside the graph), so it cannot be inverted by gradient descent; invert the float "
                    "model, or choose an earlier layer (reprinvert.describe(model, x) lists them)"
                ) from None
            checked = True
        return out

    return checked_forward


def _not_differentiable(layer: str, out: torch.Tensor, start: str | None) -> OutputSelectionError:
    source = f"the output of start layer {start!r}" if start is not None else "the input"
    why = (
        f"its dtype is {out.dtype}" if not (out.is_floating_point() or out.is_complex())
        else "the model detaches it or computes it under torch.no_grad(), or runs it inside a reentrant "
        "torch.utils.checkpoint (use_reentrant=True; use_reentrant=False keeps the gradient)"
    )
    return OutputSelectionError(
        f"layer {layer!r} returned a tensor that does not depend differentiably on {source} ({why}), so it "
        "cannot be inverted by gradient descent; choose an earlier layer (reprinvert.describe(model, x) lists "
        "them) or select= a floating-point tensor of its output"
    )
