"""Invert many layers of one model for one batch of inputs, and tabulate how much of the input each keeps.

:func:`sweep` chooses the layers (``_layer_choice``), inverts each as :func:`reprinvert.invert` would (one by one,
or as one batch where that is allowed and pays: ``_batched``), and returns a :class:`~reprinvert.Sweep`: one
:class:`~reprinvert.SweepRow` of batch-mean metrics per layer, the inversions themselves, timings and
:class:`~reprinvert.Provenance`. :mod:`reprinvert.report` turns a sweep into figures, tables and an HTML page.

Example:
    >>> import torch, torch.nn as nn, reprinvert as ri
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))
    >>> result = ri.sweep(model, torch.rand(2, 3, 16, 16), steps=10, progress=False)
    >>> result.layers
    ('0', '1', '2')
    >>> {"layer", "embedding_distance", "input_distance", "psnr", "beats_chance"} <= set(result.table()[0])
    True
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import _archive, _batched, recipes
from ._domain import Domain, NormalizeSpec
from ._feed import Feed
from ._inversion import Inversion
from ._invert import run_inversion
from ._layer_choice import MAX_AUTO_LAYERS, LayerMode, choose_layers
from ._layers import LayerSpec, resolve_layer
from ._outputs import Selector
from ._persist import LayerStore
from ._plan import Plan
from ._progress import Progress
from ._spectrum import spectrum as _spectrum
from ._sweep_result import Provenance, Sweep, SweepRow, row_of
from ._version import __version__
from .recipes import Init, Loss, Optimizer, Recipe
from .regularizers import Regularizer

__all__ = ["MAX_AUTO_LAYERS", "LayerMode", "SweepOptions", "run_sweep", "sweep", "sweep_fingerprint"]


def sweep(
    model: nn.Module, x: torch.Tensor, *, layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None = None,
    every: int | None = None, recipe: Recipe | str = "default", steps: int | None = None, seed: int = 0,
    clamp: tuple[float, float] | Literal["auto", False] | None = None, start: LayerSpec | None = None,
    sigma: float | None = None, data_range: float = 1.0, model_kwargs: Mapping[str, Any] | None = None,
    optimizer: Optimizer | None = None, lr: float | None = None, loss: Loss | None = None,
    init: Init | torch.Tensor | None = None, regularizers: Sequence[Regularizer] | None = None,
    select: Selector = None, call: int | None = None, track_best: bool = True, train: bool = False,
    progress: bool = True, batched: bool | None = None, normalize: NormalizeSpec = None,
    input_names: Sequence[str] | None = None, model_source: Mapping[str, Any] | None = None,
    spectrum: bool | int = False, resume: str | Path | None = None,
) -> Sweep:
    """Invert many layers of ``model`` for the inputs ``x`` and tabulate the metrics per layer.

    Each layer is inverted independently, as :func:`reprinvert.invert` would, with the same recipe, steps and
    seed, so rows differ only by the layer. The model and ``x`` come back exactly as they were. The options
    ``recipe``, ``steps``, ``clamp``, ``start``, ``sigma``, ``data_range``, ``model_kwargs``, ``optimizer``, ``lr``,
    ``loss``, ``init``, ``regularizers``, ``select``, ``call``, ``track_best``, ``train`` and ``normalize`` are
    :func:`reprinvert.invert`'s, for every layer.

    Args:
        model: any ``nn.Module`` (run in eval mode; parameters, buffers, flags and hooks restored).
        x: the inputs, batch first, e.g. ``(B, C, H, W)`` images in [0, 1] or ``(B, T)`` token ids with ``start=``.
        layers: ``None`` or ``"auto"``: the model's stages (the children of containers of repeated blocks, such as
            ``h.N``, ``encoder.layer.N``, ``layers.N``, ``_blocks.N``, ``layerK.N``, with the stem before them and
            the final normalisation after them, thinned evenly to :data:`MAX_AUTO_LAYERS`; a model without
            repeated blocks gets ``"top"``); ``"top"`` (the top-level children, looking through a single wrapper
            container), ``"leaves"`` (modules without children), ``"all"``, or layer names, indices or modules
            (see :func:`reprinvert.resolve_layer`). Automatic choices keep the modules that ran exactly once with
            a batch-first tensor output (with ``start=``: whose output depends on it), in execution order; what
            was left out, and why, is in ``provenance.skipped_layers``.
        every: keep every k-th of the chosen layers (1-based); with ``layers=None`` the blocks are then not
            thinned first.
        seed: the seed of every inversion.
        progress: show progress across layers (tqdm bars when installed, else a line per layer on stderr).
        batched: invert the layers as one batch of L x B inputs in which copy k is taken out at the k-th layer
            (``True``: require it; ``False``: one by one; ``None``: where it is allowed and a few steps timed both
            ways show that it pays, in groups that fit in half the free memory). The results agree with one by
            one up to floating-point rounding (pass ``True`` or ``False`` for bit-identical reruns). It needs each
            chosen layer's output to feed all that follows (checked with distinct inputs) and per-sample options
            (not L-BFGS, restarts, ``start=``, ``select=``, ``call=`` or ``train=True``). What ran, why, and what
            was measured are in ``provenance.options`` (see docs/performance.md).
        input_names: a name per sample of ``x`` (e.g. file names), kept in the provenance and the reports.
        model_source: where the model came from (e.g. ``{"spec": ..., "weights": ..., "sha256": ...}``), kept in
            the provenance.
        spectrum: also measure each layer's Jacobian spectrum at the inputs (:func:`reprinvert.spectrum`):
            ``True`` for k = 6 singular values, or an int k; fills ``SweepRow.blind`` and ``SweepRow.condition``
            (raw inputs only; with ``start=`` they stay None).
        resume: a folder that keeps each layer's inversion as soon as it is finished (``layers/<layer>.npz``) and,
            at the end, the whole sweep (:meth:`Sweep.save`'s format, so :func:`reprinvert.load` reads it). Called
            again with the same arguments, the sweep loads the layers already there and inverts only the rest.
            ``fingerprint.json`` records the call (the model's parameters and buffers, ``x`` and every setting,
            hashed); a folder holding layers of another call is refused. ``provenance.options["resumed"]`` lists
            the layers loaded.

    Returns:
        A :class:`Sweep`: ``.rows`` (the table), ``.inversions``, ``.provenance``, ``.seconds``; ``str()`` is a
        readable table and :mod:`reprinvert.report` writes figures and files.

    Raises:
        LayerNotFoundError: a listed layer is not part of the model.
        TypeError, ValueError: a bad argument (an empty layer list, ``every`` out of range, ...; ``batched=True``
            when the layers cannot be inverted as one batch, with the reason).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
        >>> result = ri.sweep(model, torch.rand(3, 6), layers=["0", "2"], steps=5, progress=False)
        >>> [row.layer for row in result.rows], result.provenance.seed
        (['0', '2'], 0)
    """
    started = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    plan = Plan(
        recipes.resolve(
            recipe, steps=steps, optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers,
            clamp=clamp,
        ),
        Domain.of(x if isinstance(x, torch.Tensor) else None, normalize=normalize, data_range=data_range, sigma=sigma),
        init=init if isinstance(init, torch.Tensor) else None, start=start, select=select, call=call, seed=seed,
        track_best=track_best, train=train, progress=progress,
    )
    options = SweepOptions(
        layers=layers, every=every, batched=batched, spectrum=spectrum, input_names=input_names,
        model_source=model_source, resume=resume,
        called={k: v for k, v in dict(optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers,
                                      select=select, call=call, track_best=track_best, train=train).items()
                if v is not None},
    )
    feed = Feed.of(model, normalize=plan.domain.normalize, model_kwargs=model_kwargs, train=train)
    return run_sweep(feed, x, plan, options, started=started)


@dataclass(frozen=True)
class SweepOptions:
    """The options of :func:`sweep` that are not an inversion's (see its docstring); ``called`` holds the inversion
    options the call gave (for the provenance); ``save``: a ``resume`` folder gets the finished sweep too."""

    layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None = None
    every: int | None = None
    batched: bool | None = None
    spectrum: bool | int = False
    input_names: Sequence[str] | None = None
    model_source: Mapping[str, Any] | None = None
    resume: str | Path | None = None
    called: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    save: bool = True

    def __post_init__(self) -> None:
        spectrum = self.spectrum
        if not isinstance(spectrum, (bool, int)) or (not isinstance(spectrum, bool) and spectrum < 1):
            raise ValueError(f"spectrum={spectrum!r}: expected True / False or the number of singular values k >= 1")
        if self.batched not in (None, True, False):
            raise TypeError(f"batched must be None, True or False, got {self.batched!r}")


def sweep_fingerprint(feed: Feed, x: torch.Tensor, plan: Plan) -> dict[str, Any]:
    """What decides each layer's inversion in a sweep (not which layers): the resume folder's fingerprint."""
    recipe = {f"recipe.{k}": v for k, v in plan.recipe.to_dict().items()}  # what differs is named field by field
    return _archive.fingerprint(
        model=feed.model, x=x, **recipe, init=plan.init, seed=plan.seed, start=plan.start,
        sigma=plan.domain.sigma, data_range=plan.domain.data_range,
        normalize=None if feed.normalize is None else feed.normalize.to_dict(), model_kwargs=feed.model_kwargs,
        select=plan.select, call=plan.call, track_best=plan.track_best, train=plan.train,
    )


def run_sweep(feed: Feed, x: Any, plan: Plan, options: SweepOptions, *, started: float) -> Sweep:
    """The sweep of ``x`` under ``plan`` (what :func:`sweep` and a study's chunks run)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor(x)")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x has shape {tuple(x.shape)}: an empty batch; pass at least one sample, batch first")
    names_in = options.input_names
    if names_in is not None and len(names_in) != x.shape[0]:
        raise ValueError(f"input_names has {len(names_in)} names for a batch of {x.shape[0]}; give one name per sample")
    start = resolve_layer(feed.model, plan.start)[0] if plan.start is not None else None
    plan = replace(plan, start=start)  # a name from here on
    plan.check_range(x)
    names, skipped = choose_layers(feed, x, options.layers, options.every, start)
    store = None if options.resume is None else LayerStore(Path(options.resume), sweep_fingerprint(feed, x, plan))
    done = {} if store is None else store.load(names)
    todo = [n for n in names if n not in done]
    batched, not_batched, probe = _batched_layers(feed, x, plan, options, todo, resumed=bool(done))
    if store is not None and batched is not None:
        for found in batched.values():
            store.save(found)
    bar = _LayerBar(names, plan.progress and batched is None)
    one_by_one = replace(plan, progress=bar.inner)
    modules = dict(feed.model.named_modules())
    rows: list[SweepRow] = []
    inversions: list[Inversion] = []
    try:
        for k, name in enumerate(names):
            bar.start(k)
            inv = done[name] if name in done else batched[name] if batched is not None else None
            if inv is None:
                inv = run_inversion(feed, name, x, one_by_one, started=time.perf_counter())
                if store is not None:
                    store.save(inv)
            row = _with_spectrum(row_of(k, inv, type(modules[name]).__name__), feed, x, plan, options)
            rows.append(row.judged(inv))
            inversions.append(inv)
            bar.done()
    finally:
        bar.close()
    ran = _Ran(names, skipped, [n for n in names if n in done] if store is not None else None, batched is not None,
               not_batched, probe)
    prov = _provenance(feed, x, plan, options, inversions[0].recipe, ran)
    result = Sweep(rows=tuple(rows), inversions=tuple(inversions), original=x.detach().clone(), provenance=prov,
                   seconds=time.perf_counter() - started)
    if options.resume is not None and options.save:
        result.save(options.resume)
    return result


def _batched_layers(
    feed: Feed, x: torch.Tensor, plan: Plan, options: SweepOptions, todo: list[str], *, resumed: bool
) -> tuple[dict[str, Inversion] | None, str | None, dict[str, Any]]:
    """The inversions of the layers ``todo`` from one batched optimisation where the options allow it (and, with
    ``batched=None``, where it pays), or None; why not; what was measured."""
    probe: dict[str, Any] = {}
    if options.batched is False:
        return None, "batched=False", probe
    why: str | None
    if len(todo) <= 1:
        why = "there is only one layer" if not resumed else f"only {len(todo)} layer(s) left to invert"
        if options.batched and not resumed:
            raise ValueError(f"batched=True, but these layers cannot be inverted as one batch: {why}")
        return None, why, probe
    found, why = _try_batched(feed, x, plan, todo, measure=options.batched is None, probe=probe)
    if found is None and options.batched:
        raise ValueError(f"batched=True, but these layers cannot be inverted as one batch: {why}")
    return found, why, probe


def _try_batched(
    feed: Feed, x: torch.Tensor, plan: Plan, names: Sequence[str], *, measure: bool, probe: dict[str, Any]
) -> tuple[dict[str, Inversion] | None, str | None]:
    """The inversions of every layer from one batched optimisation, or None and the reason it was not possible.

    Anything unusual (an error, a check that fails) declines; the layers are then inverted one by one, where a
    genuine mistake (a bad argument, a layer that never runs) gets the one-by-one inversion's error.
    """
    try:
        rcp = plan.recipe.for_input(x, raw=plan.start is None)
        why = _batched.why_not(
            rcp, layers=names, start=_name(plan.start), select=plan.select, call=plan.call, train=plan.train
        )
        if why is not None:
            return None, why
        if plan.progress and not measure:
            print(f"sweep: {len(names)} layers as one batch ({', '.join(names)}) ...", file=sys.stderr, flush=True)
        found = _batched.invert_layers(feed, names, x, plan, rcp, measure=measure, probe=probe)
        return dict(zip(names, found)), None
    except _batched.Declined as declined:
        return None, str(declined)
    except Exception as error:  # the one-by-one path reports genuine errors
        return None, f"{type(error).__name__}: {error}"


def _with_spectrum(row: SweepRow, feed: Feed, x: torch.Tensor, plan: Plan, options: SweepOptions) -> SweepRow:
    """``row`` with the layer's blind directions and condition number, when the sweep measures the spectrum."""
    if not options.spectrum or plan.start is not None:
        return row
    k = 6 if options.spectrum is True else int(options.spectrum)
    spec = _spectrum(
        feed.model, row.layer, x, k=min(k, x[0].numel() - 1), select=plan.select, call=plan.call,
        model_kwargs=feed.model_kwargs, normalize=feed.normalize,
    )
    # A count stands where the iterations converged, or where all k values computed are blind (certainly: an
    # unconverged smallest value is an upper bound); elsewhere the row says so (NaN, "not converged").
    stands = spec.converged | (spec.blind == spec.bottom.shape[1])
    # Every direction the layer cannot see: its own and those of known invariances (a LayerNorm's) set apart.
    seen_blind = spec.blind + (spec.invariant if spec.invariant.numel() else 0)
    blind = float(seen_blind.double().mean()) if bool(stands.all()) else math.nan
    return replace(row, blind=blind, condition=float(spec.condition.median()))


@dataclass(frozen=True)
class _Ran:
    """How a sweep ran, for its provenance."""

    names: list[str]
    skipped: list[tuple[str, str]]
    resumed: list[str] | None
    batched: bool
    not_batched: str | None
    probe: dict[str, Any]


def _provenance(
    feed: Feed, x: torch.Tensor, plan: Plan, options: SweepOptions, rcp: Recipe, ran: _Ran
) -> Provenance:
    layers, sigma, data_range, norm = options.layers, plan.domain.sigma, plan.domain.data_range, feed.normalize
    return Provenance(
        reprinvert=__version__, torch=torch.__version__, python=platform.python_version(),
        model=type(feed.model).__name__, input_shape=tuple(x.shape), input_dtype=str(x.dtype), device=str(x.device),
        recipe=rcp.to_dict(), seed=int(plan.seed or 0), steps=rcp.steps,
        options={
            "layers": layers if layers is None or isinstance(layers, str) else repr(layers),
            "every": options.every,
            "clamp": None if rcp.clamp is None else list(rcp.clamp),  # the bounds that applied
            "start": plan.start,
            "sigma": sigma,
            "sigma_used": _sigma_used(sigma, data_range, _name(plan.start)),
            "spectrum": (6 if options.spectrum is True else int(options.spectrum))
            if options.spectrum and plan.start is None else None,
            "chance": "the previous sample of the batch" if x.shape[0] > 1 else "a fixed shuffle of x's entries",
            "data_range": data_range,
            "normalize": None if norm is None else norm.to_dict(),
            "batched": ran.batched,
            "layer_seconds": "share: the batched optimisation's total / number of layers" if ran.batched
            else "measured per layer",
            "not_batched_because": None if ran.batched else ran.not_batched,
            "batched_probe": _probe_summary(ran.probe) if ran.probe else None,
            "resumed": ran.resumed,
            **{k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
               for k, v in options.called.items()},
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        skipped_layers=tuple(ran.skipped),
        inputs=tuple(str(n) for n in options.input_names) if options.input_names is not None else (),
        model_source=dict(options.model_source or {}),
    )


class _LayerBar:
    """The progress across layers: a tqdm bar on a terminal, else a line per layer started and finished (with the
    elapsed time and an estimate of the time left) on stderr."""

    def __init__(self, names: Sequence[str], enabled: bool) -> None:
        self.names = names
        self.progress = Progress(len(names), "sweep", "layers", enabled=enabled)
        self.current = 0

    @property
    def inner(self) -> bool:
        """Whether each layer's inversion shows its own (nested) bar: only under a bar."""
        return self.progress.bars

    def start(self, k: int) -> None:
        self.current = k
        self.progress.note(self.names[k])

    def done(self) -> None:
        self.progress.update(1, what=self.names[self.current])

    def close(self) -> None:
        self.progress.close()


def _probe_summary(probe: Mapping[str, Any]) -> dict[str, Any]:
    """The automatic mode's measurements, JSON-ready: milliseconds per step, MiB kept, the groups batched."""
    out: dict[str, Any] = {
        "groups": probe.get("groups"),
        "alone_ms": [round(1e3 * t, 4) for t in probe.get("alone_seconds", [])],
        "batched_ms": [round(1e3 * t, 4) for t in probe.get("batched_seconds", [])],
        "kept_mib": [round(b / 2**20, 3) for b in probe.get("kept_bytes", [])],
        "budget_mib": None if probe.get("budget_bytes") is None else round(probe["budget_bytes"] / 2**20, 1),
    }
    if "batched_over_separate" in probe:
        out["batched_over_separate"] = [round(r, 4) for r in probe["batched_over_separate"]]
    return out


def _name(start: Any) -> str | None:
    """A start layer that :func:`run_sweep` resolved to its name."""
    assert start is None or isinstance(start, str), start
    return start


def _sigma_used(sigma: float | None, data_range: float, start: str | None) -> float | str:
    """The reference perturbation's standard deviation as the inversions used it."""
    if sigma is not None:
        return float(sigma)
    if start is not None:
        return "1/25 of each sample's RMS at the start layer"
    return data_range / 25
