"""Invert a layer's representation by gradient descent on the input.

:func:`invert` captures rep_L(x), then searches for an input x_g with rep_L(x_g) ~ rep_L(x). Each step runs the
model only up to the layer (the forward pass stops there), takes the gradient with ``torch.autograd.grad`` with
respect to the optimised tensor only, and updates it. The caller's model and tensors come back exactly as they
were (see ``docs/concepts.md``, "Contracts").
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.utils.checkpoint
from torch import nn

from . import _archive
from ._domain import Domain, NormalizeSpec, chance_input
from ._rng import make_generator
from ._search import History, StepInfo, Targets, search
from ._search import adam as _adam  # noqa: F401  (tests compare it with torch.optim.Adam)
from ._state import check_materialised, frozen, model_rng, step_back_into_model_rng, step_out_of_model_rng
from .capture import Hooks, Selector, model_dtype, private_input, requiring_grad
from .errors import OutputSelectionError, ReprinvertWarning
from .layers import LayerSpec, resolve_layer, runnable
from .metrics import InversionMetrics, flatten_batch
from .recipes import Init, Loss, Optimizer, Recipe
from .recipes import from_dict as recipe_from_dict
from .recipes import get as get_recipe
from .regularizers import Regularizer

__all__ = ["History", "Inversion", "StepInfo", "invert", "nearest_tokens"]


#: The schema of a saved :class:`Inversion` (``Inversion.save``); bumped when the format changes.
INVERSION_SCHEMA = "reprinvert.inversion/1"


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
        parametrization: what the search updated: ``"pixel"``, ``"pyramid"``, ``"fourier"``, or e.g.
            ``"pyramid, then pixel from step 200"`` (see :mod:`reprinvert.parametrizations`).
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
    parametrization: str = "pixel"

    @classmethod
    def concat(cls, parts: Sequence[Inversion]) -> Inversion:
        """One result for the samples of ``parts``, in order: inversions of the same layer with the same recipe
        on different inputs. Histories of different lengths (a run stopped early) are padded with NaN; times
        add up; ``steps_run`` is the longest run. Parts on different devices (a result computed on a GPU and one
        loaded from disk, which comes back on the CPU) are joined on the first part's device.

        Raises:
            ValueError: no parts, or parts of different layers, start layers or recipes.
        """
        if not parts:
            raise ValueError("Inversion.concat needs at least one inversion")
        first = parts[0]
        for part in parts[1:]:
            if (part.layer, part.start, part.recipe) != (first.layer, first.start, first.recipe):
                raise ValueError(
                    f"cannot join inversions of different layers or recipes: {first.layer!r} ({first.recipe.name}) "
                    f"and {part.layer!r} ({part.recipe.name})"
                )
        steps = max(p.history.lr.shape[0] for p in parts)

        def padded(t: torch.Tensor) -> torch.Tensor:  # (steps_i, B) -> (steps, B)
            if t.dim() < 2 or t.shape[0] == steps:
                return t
            return torch.cat([t, t.new_full((steps - t.shape[0], *t.shape[1:]), float("nan"))])

        device = first.input.device

        def cat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
            return torch.cat([t.to(device) for t in tensors], dim=dim)

        longest = max(parts, key=lambda p: p.history.lr.shape[0])
        stopped = [p.stopped for p in parts if p.stopped]
        return cls(
            input=cat([p.input for p in parts]),
            metrics=InversionMetrics(**{
                f.name: cat([getattr(p.metrics, f.name) for p in parts]) for f in dataclasses.fields(first.metrics)
            }),
            history=History(
                terms={k: cat([padded(p.history.terms[k]) for p in parts], 1) for k in first.history.terms},
                lr=longest.history.lr,
                input_distance=cat([padded(p.history.input_distance) for p in parts], 1),
            ),
            layer=first.layer, start=first.start, target=cat([p.target for p in parts]),
            representation=cat([p.representation for p in parts]), best_step=cat([p.best_step for p in parts]),
            steps_run=max(p.steps_run for p in parts), stopped="; ".join(stopped) if stopped else None,
            recipe=first.recipe, seed=first.seed, seconds=sum(p.seconds for p in parts),
            original=cat([p.original for p in parts]), parametrization=first.parametrization,
        )

    def save(self, path: str | Path) -> Path:
        """Write this result to one ``.npz`` file (the suffix is added when missing); read it with
        :func:`reprinvert.load`.

        The file is NumPy's open format: every tensor (the input, the original, the target, the representation,
        the metrics, the loss history) as an array in its dtype, and the rest (layer names, recipe, seed, steps,
        timing) as JSON with a schema version. Every field round-trips exactly; tensors come back on the CPU.

        Returns:
            The path written.
        """
        target = Path(path)
        if target.suffix != ".npz":
            target = target.with_name(target.name + ".npz")
        tensors = {
            "input": self.input, "original": self.original, "target": self.target,
            "representation": self.representation, "best_step": self.best_step,
            "history/lr": self.history.lr, "history/input_distance": self.history.input_distance,
            **{f"history/terms/{k}": v for k, v in self.history.terms.items()},
            **{f"metrics/{f.name}": getattr(self.metrics, f.name) for f in dataclasses.fields(self.metrics)},
        }
        meta = {
            "schema": INVERSION_SCHEMA, "layer": self.layer, "start": self.start, "steps_run": self.steps_run,
            "stopped": self.stopped, "recipe": self.recipe.to_dict(), "seed": self.seed, "seconds": self.seconds,
            "parametrization": self.parametrization, "history_terms": list(self.history.terms),
            "device": str(self.input.device),
        }
        try:
            return _archive.write(target, tensors, meta)
        except OSError as exc:
            raise ValueError(f"cannot write '{target}': {exc.strerror or exc}") from None

    @classmethod
    def _from_archive(
        cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], classes: Mapping[str, type] | None
    ) -> Inversion:
        """The result :meth:`save` wrote (see :func:`reprinvert.load`)."""
        return cls(
            input=tensors["input"],
            metrics=InversionMetrics(**{
                f.name: tensors[f"metrics/{f.name}"] for f in dataclasses.fields(InversionMetrics)
            }),
            history=History(
                terms={k: tensors[f"history/terms/{k}"] for k in meta["history_terms"]},
                lr=tensors["history/lr"], input_distance=tensors["history/input_distance"],
            ),
            layer=meta["layer"], start=meta["start"], target=tensors["target"],
            representation=tensors["representation"], best_step=tensors["best_step"], steps_run=meta["steps_run"],
            stopped=meta["stopped"], recipe=recipe_from_dict(meta["recipe"], classes=classes), seed=meta["seed"],
            seconds=meta["seconds"], original=tensors["original"], parametrization=meta["parametrization"],
        )

    @classmethod
    def from_tensors(
        cls,
        *,
        layer: str,
        start: str | None,
        original: torch.Tensor,
        result_x: torch.Tensor,
        x_ref: torch.Tensor,
        target: torch.Tensor,
        rep_g: torch.Tensor,
        rep_ref: torch.Tensor,
        x_chance: torch.Tensor,
        rep_chance: torch.Tensor,
        history: History,
        best_step: torch.Tensor,
        steps_run: int,
        stopped: str | None,
        recipe: Recipe,
        seed: int | None,
        seconds: float,
        data_range: float,
        parametrization: str = "pixel",
    ) -> Inversion:
        """The result of one layer's search, its metrics computed from the tensors (used by :func:`invert` and the
        batched sweep)."""
        batch = original.shape[0]
        metrics = InversionMetrics.from_tensors(
            x=flatten_batch(original, batch),
            x_g=flatten_batch(result_x, batch),
            x_ref=flatten_batch(x_ref, batch),
            rep=flatten_batch(target, batch),
            rep_g=flatten_batch(rep_g, batch),
            rep_ref=flatten_batch(rep_ref, batch),
            x_chance=flatten_batch(x_chance, batch),
            rep_chance=flatten_batch(rep_chance, batch),
            data_range=data_range,
        )
        return cls(
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
            parametrization=parametrization,
        )

    def __repr__(self) -> str:
        return (
            f"Inversion(layer={self.layer!r}, input={tuple(self.input.shape)}, steps_run={self.steps_run}, "
            f"recipe={self.recipe.name!r}, {self.metrics})"
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
    clamp: tuple[float, float] | Literal["auto", False] | None = None,
    start: LayerSpec | None = None,
    select: Selector = None,
    call: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], bool | None] | None = None,
    track_best: bool = True,
    train: bool = False,
    sigma: float | None = None,
    data_range: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    normalize: NormalizeSpec = None,
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
        select: which tensor of the layer's output (see :data:`reprinvert.capture.Selector`).
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
    rcp = _resolve_recipe(
        recipe, steps=steps, optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers, clamp=clamp
    )
    _check_options(train=train, track_best=track_best)
    model = runnable(model)
    layer_name, _ = resolve_layer(model, layer)
    start_name = resolve_layer(model, start, argument="start")[0] if start is not None else None
    x = _check_input(x, start_name)
    domain = Domain.of(x, normalize=normalize, data_range=data_range, sigma=sigma)
    rcp = rcp.for_input(x, raw=start_name is None)
    if start_name is None:
        check_clamp(rcp.clamp, x, normalized=domain.normalize is not None)
    check_materialised(model)
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
    with torch.inference_mode(False), frozen(model, train=train, seed=g.initial_seed()):
        # 1. The target: one full forward (no early stop), so a reused layer is caught by the call count. An
        # error raised downstream of the layer (a head that rejects this input size, say) does not matter.
        # The model gets a private copy of x, in its own floating dtype (a half model is fed half).
        # The target is computed on the search's path (gradients on, the optimised tensor requiring them), so a model
        # with a separate inference path (nn.TransformerEncoder's fast path with a padding mask) is inverted on the
        # function the search minimises.
        x_in = private_input(domain.feed(x), model_dtype(model))
        with torch.enable_grad(), Hooks(
            model, layer_name, select=select, call=call, replace=start_name, tolerate_downstream_errors=True,
            grad_path=True,
        ) as probe:
            fed = requiring_grad(x_in) if start_name is None else x_in
            version = fed._version
            target = probe.run(fed, model_kwargs)[layer_name]
            # A snapshot: the result never shares storage with the caller's x.
            original = probe.replaced_output if start_name is not None else x.detach().clone()
            # A model that changes what it is fed in place (a first ReLU(inplace=True)) gets a copy at each step.
            copy_fed = fed._version != version if start_name is None else probe.replaced_modified
            del fed
        assert original is not None
        # Half-precision inputs are optimised in float32 (float64 stays float64); the model is fed its dtype.
        work_dtype = torch.float64 if original.dtype == torch.float64 else torch.float32
        feed_dtype = x_in.dtype if start_name is None else original.dtype
        batch = original.shape[0]
        hooks = Hooks(
            model, layer_name, select=select, call=call, grad=True, stop=True, clone_last=False, replace=start_name
        )
        with hooks, torch.enable_grad():

            def forward(z: torch.Tensor) -> torch.Tensor:
                fed = z.to(feed_dtype)
                if copy_fed and fed is z:
                    fed = fed.clone()
                if start_name is None:
                    out = hooks.run(domain.feed(fed), model_kwargs)[layer_name]
                else:
                    hooks.replacement = fed
                    try:
                        out = hooks.run(x_in, model_kwargs)[layer_name]
                    finally:
                        hooks.replacement = None
                if not out.requires_grad and torch.is_grad_enabled():
                    raise _not_differentiable(layer_name, out, start_name)
                return out

            def measured(t: torch.Tensor) -> torch.Tensor:
                """rep(t) computed as the search computes it (gradients on), like the target."""
                return forward(t.detach().to(work_dtype).requires_grad_(True)).detach().clone()

            # The model's random stream is held for the whole search (not swapped in and out at every forward);
            # the caller's callback runs on torch's own stream, as it would have.
            with model_rng(model):
                found = search(
                    _gradient_checked(forward, layer_name, start_name), rcp, original,
                    Targets.of([target], batch, work_dtype),
                    init=init if isinstance(init, torch.Tensor) else rcp.init, dtype=work_dtype, generator=g,
                    callback=_outside_model_rng(model, callback), progress=progress, spatial=start_name is None,
                    units=activation_units(original) if start_name is not None else None,
                )
            result_x, best_step = found.result(track_best)

            # 2. Metrics: rep(x_g), the reference rep(x') with x' = x + N(0, sigma^2), and an unrelated input's.
            rep_g = measured(result_x)
            x_ref = domain.reference(original, g, work_dtype, raw=start_name is None)
            rep_ref = measured(x_ref)
            x_u = chance_input(original.to(work_dtype))
            rep_u = measured(x_u)
    return Inversion.from_tensors(
        layer=layer_name, start=start_name, original=original, result_x=result_x, x_ref=x_ref, target=target,
        rep_g=rep_g, rep_ref=rep_ref, x_chance=x_u, rep_chance=rep_u, history=found.history, best_step=best_step,
        steps_run=found.steps_run, stopped=found.stopped, parametrization=found.parametrization, recipe=rcp,
        seed=seed if generator is None else None,
        seconds=time.perf_counter() - started, data_range=domain.data_range,
    )


def activation_units(activation: torch.Tensor) -> float:
    """The scale of a ``start=`` activation relative to data in [0, 1] (root-mean-square about 0.5): 2 x its RMS.
    Word embeddings (RMS about 0.02) get 0.04: Adam's steps and the grey start are scaled to match."""
    rms = float(activation.detach().double().pow(2).mean().sqrt())
    return 2 * rms if rms > 0 else 1.0


def check_clamp(clamp: tuple[float, float] | str | None, x: torch.Tensor, *, normalized: bool) -> None:
    """Warn when ``x`` itself lies outside the clamp range: the search could never reach it."""
    if clamp is None or isinstance(clamp, str) or not x.is_floating_point():
        return
    lo, hi = float(x.detach().min()), float(x.detach().max())
    slack = 1e-6 * max(1.0, clamp[1] - clamp[0])
    if lo < clamp[0] - slack or hi > clamp[1] + slack:
        hint = (
            "normalize= expects x in pixel space (e.g. [0, 1]); pass the unnormalised images"
            if normalized
            else "if x is already normalised for the model, pass it in pixel space with normalize=(mean, std) (or "
            "'imagenet'), or drop the clamp"
        )
        warnings.warn(
            f"x has values in [{lo:.4g}, {hi:.4g}], outside clamp={tuple(clamp)}: the search is kept in a range "
            f"that x leaves, so it cannot land on x; {hint}",
            ReprinvertWarning,
            stacklevel=3,
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
    clamp: tuple[float, float] | Literal["auto", False] | None,
) -> Recipe:
    """The recipe with :func:`invert`'s overrides applied (a stepped schedule keeps its fractions of the run)."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in dict(steps=steps, optimizer=optimizer, lr=lr, loss=loss, clamp=clamp).items()
        if v is not None
    }
    if clamp is False:  # no bounds, whatever the recipe says
        overrides["clamp"] = None
    if isinstance(init, str):
        overrides["init"] = init
    elif init is not None and not isinstance(init, torch.Tensor):
        raise TypeError(
            f"init must be 'seed', 'grey', 'zeros', 'uniform', 'normal' or a tensor of the input's shape, got "
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


def _check_options(*, train: Any, track_best: Any) -> None:
    for flag_name, flag in (("train", train), ("track_best", track_best)):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name} must be True or False, got {type(flag).__name__}: {flag!r}")


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

