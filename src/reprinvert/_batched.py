"""Private: invert several layers of one model in one optimisation, as :func:`reprinvert.sweep` does by default.

The L inversions of a sweep are run as one batch of L x B inputs: copy k of the batch is matched at the k-th layer
(in execution order) and taken out of the batch there, by a forward hook that returns the remaining rows, so every
copy runs only up to its own layer (the compute of L separate inversions, in one forward and one backward per
step, with larger and fewer kernels). Every per-sample part of an inversion (loss, Adam, regularizers, best-iterate
tracking) is the same as in :func:`reprinvert.invert`, and so are the random draws: one initial draw of the input's
shape repeated for every layer, one jitter draw per step, one reference perturbation, exactly as each separate call
would make them from the same seed.

This is valid only when each layer's output feeds everything after it (no skip connection around a chosen layer)
and samples do not interact. Before optimising, a check runs distinct inputs through the batched forward and
compares each layer's output with a separate forward pass; any difference, any error, a non-tensor or
non-batch-first output, and every option a batch cannot share (L-BFGS's line search, restarts, ``start=``,
``select=``, ``call=``, training-mode models) make :func:`invert_layers` decline, and the sweep inverts the layers one
by one instead.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._domain import Domain, Normalize, chance_input, feed
from ._search import History, Targets, initial, search
from ._state import frozen, model_rng
from .capture import Hooks, _AlwaysCalled, _StopForward, model_dtype, private_input, run_model
from .invert import Inversion
from .recipes import Recipe

__all__ = ["Declined", "invert_layers", "why_not"]


class Declined(Exception):
    """The layers cannot be inverted as one batch; the message says why (the sweep falls back to one by one)."""


class _Cuts:
    """Forward hooks: at the k-th layer (execution order) keep the first B rows, pass the rest on, stop at the last."""

    def __init__(self, model: nn.Module, modules: Sequence[nn.Module], names: Sequence[str], batch: int) -> None:
        self.model, self.modules, self.names, self.batch = model, list(modules), list(names), batch
        self.hook_ids: list[int] = []
        self.always: _AlwaysCalled | None = None
        self.captured: list[torch.Tensor | None] = [None] * len(self.modules)
        self.counts = [0] * len(self.modules)
        self.handles: list[Any] = []
        self.thread = threading.get_ident()

    def __enter__(self) -> _Cuts:
        self.hook_ids = []
        try:
            for k, module in enumerate(self.modules):
                handle = module.register_forward_hook(self._hook(k))
                self.hook_ids.append(handle.id)
                self.handles.append(handle)
            self.always = _AlwaysCalled(self.model)
        except BaseException:
            self.remove()
            raise
        self.thread = threading.get_ident()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()
        if self.always is not None:
            self.always.remove()
            self.always = None

    def _hook(self, k: int) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> Any:
            if threading.get_ident() != self.thread:
                return None
            name = self.names[k]
            self.counts[k] += 1
            if self.counts[k] > 1:
                raise Declined(f"layer {name!r} runs more than once per forward pass")
            if not isinstance(out, torch.Tensor):
                raise Declined(f"layer {name!r} does not return a single tensor")
            expected = (len(self.modules) - k) * self.batch
            if out.dim() == 0 or out.shape[0] != expected:
                raise Declined(
                    f"layer {name!r} produced a batch of {tuple(out.shape)[:1]} where {expected} was expected "
                    "(not batch first, or it mixes in tensors from before an earlier layer)"
                )
            self.captured[k] = out[: self.batch]
            if k == len(self.modules) - 1:
                raise _StopForward
            # A separate tensor: in-place operations downstream must not touch the captured rows' storage.
            return out[self.batch :].clone()

        return hook

    def run(self, model: nn.Module, x: torch.Tensor, model_kwargs: Mapping[str, Any] | None) -> list[torch.Tensor]:
        self.captured = [None] * len(self.modules)
        self.counts = [0] * len(self.modules)
        try:
            run_model(model, x, model_kwargs)
        except _StopForward:
            if self.always is not None:  # the caller's always_call hooks that the stop skipped
                self.always.unwind(self.modules[-1], self.hook_ids[-1])
        missing = [n for n, c in zip(self.names, self.captured) if c is None]
        if missing:
            raise Declined(f"layers {missing} did not run in the batched forward pass")
        return [c for c in self.captured if c is not None]


def why_not(
    rcp: Recipe,
    *,
    layers: Sequence[str],
    start: str | None,
    select: Any,
    call: int | None,
    train: bool,
) -> str | None:
    """Why these options rule out one batched optimisation, or None if they do not."""
    if len(layers) < 2:
        return "there is only one layer"
    if rcp.optimizer == "lbfgs":
        return "L-BFGS shares one line search across the batch"
    if rcp.restarts != 1:
        return "restarts keep one history per run, not per layer"
    if start is not None:
        return "start= replaces a module's output"
    if select is not None or call is not None:
        return "select= / call= pick part of a layer's output"
    if train:
        return "train=True: training-mode layers (BatchNorm) mix the samples of a batch"
    return None


def _execution_order(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    model_kwargs: Mapping[str, Any] | None,
    norm: Normalize | None,
) -> tuple[list[str], list[torch.Tensor], bool]:
    """The layers in the order they run, their outputs for ``x``, and whether the model changes its input in place."""
    order: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad(), Hooks(model, list(names), tolerate_downstream_errors=True) as hooks:
        thread = threading.get_ident()
        handles = []
        try:
            for name in names:
                module = hooks.by_spec[name].module

                def record(m: nn.Module, a: Any, o: Any, name: str = name) -> None:
                    if threading.get_ident() == thread and name not in order:
                        order.append(name)

                handles.append(module.register_forward_hook(record))
            fed = private_input(feed(x, norm), model_dtype(model))
            version = fed._version
            outputs = hooks.run(fed, model_kwargs)
        finally:
            for h in handles:
                h.remove()
    return order, [outputs[n] for n in order], fed._version != version


def invert_layers(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    rcp: Recipe,
    *,
    init: torch.Tensor | None,
    seed: int,
    domain: Domain,
    model_kwargs: Mapping[str, Any] | None,
    track_best: bool,
    progress: bool,
    measure: bool = False,
    probe: dict[str, Any] | None = None,
) -> list[Inversion]:
    """Invert every layer in ``names`` in one batched optimisation; results in the order of ``names``.

    With ``measure`` (the sweep's automatic mode) batching must also pay: a few steps are timed both ways and the
    memory the backward pass keeps is measured per layer (:func:`_measure`); the layers are batched in groups that
    fit in half the free memory, and only where the batched step is faster than the separate ones. What was
    measured goes into ``probe`` (the sweep's provenance).

    Raises:
        Declined: the model or the layers do not allow it, or (``measure``) it would not be faster or would not
            fit (the caller inverts them one by one).
    """
    started = time.perf_counter()
    if not x.is_floating_point():
        raise Declined("the input is not floating point")
    if next((p.device for p in model.parameters()), x.device) != x.device:
        raise Declined("the input and the model are on different devices")
    g = torch.Generator(device=x.device)
    g.manual_seed(seed)
    with torch.inference_mode(False), frozen(model, train=False, seed=seed):
        order, targets, copy_fed = _execution_order(model, names, x, model_kwargs, domain.normalize)
        if len(order) != len(names):
            raise Declined("not every layer ran")
        for name, t in zip(order, targets):
            if t.dim() == 0 or t.shape[0] != x.shape[0]:
                raise Declined(f"layer {name!r} is not batch first")
        modules = [dict(model.named_modules())[n] for n in order]
        batch, L = x.shape[0], len(order)
        feed_dtype = private_input(x, model_dtype(model)).dtype
        work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cuts = _Cuts(model, modules, order, batch)
        forward = _forward(model, cuts, domain, feed_dtype, copy_fed, model_kwargs)
        _check(forward, cuts, x, order, model, model_kwargs, feed_dtype, work_dtype, domain.normalize)
        original = x.detach().clone()  # a snapshot, not the caller's storage
        groups = [list(range(L))]
        if measure:
            probe = probe if probe is not None else {}
            measured = _measure(model, modules, order, original, feed_dtype, work_dtype, domain, model_kwargs,
                                copy_fed)
            groups = _decide(measured, probe)
            if progress:
                ratios = ", ".join(f"{r:.2f}x" for r in probe["batched_over_separate"])
                how = "one batch" if len(groups) == 1 else f"{len(groups)} batches (memory)"
                print(f"sweep: {L} layers as {how} ({', '.join(order)}; a batched step measured at {ratios} the "
                      "separate steps' time) ...", file=sys.stderr, flush=True)
        by_name: dict[str, Inversion] = {}
        for group in groups:
            # Each group is its own batched search, from the seed: what a sweep of only these layers would do.
            g.manual_seed(seed)
            by_name.update(_invert_group(
                model, [modules[k] for k in group], [order[k] for k in group], [targets[k] for k in group], original,
                rcp, init=init, g=g, seed=seed, domain=domain, model_kwargs=model_kwargs, track_best=track_best,
                progress=progress, feed_dtype=feed_dtype, work_dtype=work_dtype, copy_fed=copy_fed,
            ))
    seconds = (time.perf_counter() - started) / L
    return [dataclasses.replace(by_name[n], seconds=seconds) for n in names]


def _forward(
    model: nn.Module,
    cuts: _Cuts,
    domain: Domain,
    feed_dtype: torch.dtype,
    copy_fed: bool,
    model_kwargs: Mapping[str, Any] | None,
) -> Any:
    """The batched forward pass of the searched tensor ``z``: fed in the model's dtype (a copy when the model changes
    its input in place), normalised, and cut at every layer of ``cuts``; returns the layers' outputs."""

    def forward(z: torch.Tensor) -> list[torch.Tensor]:
        fed = z.to(feed_dtype)
        if copy_fed and fed is z:
            fed = fed.clone()
        return cuts.run(model, domain.feed(fed), model_kwargs)

    return forward


def _stacked(t: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` copies of ``t`` along the batch dimension: one per layer of a batched search."""
    return t.repeat(copies, *([1] * (t.dim() - 1)))


def _invert_group(
    model: nn.Module,
    modules: Sequence[nn.Module],
    order: Sequence[str],
    targets: Sequence[torch.Tensor],
    original: torch.Tensor,
    rcp: Recipe,
    *,
    init: torch.Tensor | None,
    g: torch.Generator,
    seed: int,
    domain: Domain,
    model_kwargs: Mapping[str, Any] | None,
    track_best: bool,
    progress: bool,
    feed_dtype: torch.dtype,
    work_dtype: torch.dtype,
    copy_fed: bool,
) -> dict[str, Inversion]:
    """One batched search over the layers ``order`` (in execution order); their inversions by name."""
    batch, L = original.shape[0], len(order)
    cuts = _Cuts(model, modules, order, batch)
    forward = _forward(model, cuts, domain, feed_dtype, copy_fed, model_kwargs)

    with cuts:
        # One starting draw of the input's shape, repeated for every layer: what each separate call would draw.
        start = initial(init if init is not None else rcp.init, original, work_dtype, g)
        with torch.enable_grad(), model_rng(model):  # the model's random stream held for the whole search
            run = search(
                forward, rcp, _stacked(original, L), Targets.of(list(targets), batch, work_dtype),
                init=_stacked(start, L),
                dtype=work_dtype, generator=g, progress=progress,
            )
        if run.nonfinite:
            raise Declined("a loss became non-finite (the layers are inverted one by one to stop each alone)")
        result_x, best_step = run.result(track_best)
        with torch.no_grad():
            reps_g = [r.detach().clone() for r in forward(result_x)]
            x_ref = domain.reference(original, g, work_dtype, raw=True)
            reps_ref = [r.detach().clone() for r in forward(_stacked(x_ref, L))]
            x_u = chance_input(original.to(work_dtype))
            reps_u = [r.detach().clone() for r in forward(_stacked(x_u, L))]
    out: dict[str, Inversion] = {}
    for k, name in enumerate(order):
        rows = slice(k * batch, (k + 1) * batch)
        out[name] = Inversion.from_tensors(
            layer=name, start=None, original=original, result_x=result_x[rows], x_ref=x_ref, target=targets[k],
            rep_g=reps_g[k], rep_ref=reps_ref[k], x_chance=x_u, rep_chance=reps_u[k],
            history=History(
                terms={t: v[:, rows].clone() for t, v in run.history.terms.items()}, lr=run.history.lr,
                input_distance=run.history.input_distance[:, rows].clone(),
            ),
            best_step=best_step[rows], steps_run=run.steps_run, stopped=run.stopped, recipe=rcp, seed=seed,
            parametrization=run.parametrization, seconds=0.0, data_range=domain.data_range,
        )
    return out


# The automatic mode batches a group of layers only if its step is at most this fraction of the separate steps'
# total (a margin for the timing noise of a shared machine), and only if the memory its backward pass keeps fits in
# this fraction of the memory free when the sweep starts.
_FASTER = 0.9
_MEMORY_SHARE = 0.5
_PROBE_REPEATS = 2


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the allocator's view; CPU: Linux's MemAvailable), or None."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(
    model: nn.Module,
    modules: Sequence[nn.Module],
    order: Sequence[str],
    original: torch.Tensor,
    feed_dtype: torch.dtype,
    work_dtype: torch.dtype,
    domain: Domain,
    model_kwargs: Mapping[str, Any] | None,
    copy_fed: bool,
) -> dict[str, Any]:
    """What batching would cost here: the bytes each layer's backward pass keeps, the groups of consecutive layers
    that fit in the memory budget (a batched step keeps the sum over its layers: copy k runs only up to layer k),
    and the seconds of one forward and backward step of each layer alone and of each group batched.

    Steps are timed as the best of a few repeats after a warm-up, alternating the two ways, so that a busy
    machine slows both.
    """
    batch = original.shape[0]
    device = original.device
    z0 = original.to(work_dtype)

    def step(cuts: _Cuts, z: torch.Tensor) -> None:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad(), cuts:
            outs = _forward(model, cuts, domain, feed_dtype, copy_fed, model_kwargs)(z)  # as the search runs it
            total = torch.stack([o.float().abs().sum() for o in outs]).sum()
            torch.autograd.grad(total, z)
        _sync(device)

    singles = [_Cuts(model, [m], [n], batch) for m, n in zip(modules, order)]
    kept: list[int] = []
    for cuts in singles:
        saved = [0]

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step(cuts, z0)  # also the warm-up of the separate steps
        kept.append(saved[0])
    free = _free_memory(device)
    budget = None if free is None else int(_MEMORY_SHARE * free)
    groups = _groups(kept, budget)
    batched = [
        (_Cuts(model, [modules[k] for k in grp], [order[k] for k in grp], batch), _stacked(z0, len(grp)))
        for grp in groups if len(grp) > 1
    ]
    for cuts, stacked in batched:
        step(cuts, stacked)  # warm-up
    alone = [float("inf")] * len(order)
    together = [float("inf")] * len(batched)
    for _ in range(_PROBE_REPEATS):
        for k, cuts in enumerate(singles):
            t0 = time.perf_counter()
            step(cuts, z0)
            alone[k] = min(alone[k], time.perf_counter() - t0)
        for k, (cuts, stacked) in enumerate(batched):
            t0 = time.perf_counter()
            step(cuts, stacked)
            together[k] = min(together[k], time.perf_counter() - t0)
    return {"groups": groups, "kept_bytes": kept, "budget_bytes": budget, "alone_seconds": alone,
            "batched_seconds": together}


def _groups(kept: Sequence[int], budget: int | None) -> list[list[int]]:
    """Consecutive layers (indices) in groups whose kept bytes add up to at most ``budget`` (None: one group)."""
    groups: list[list[int]] = [[]]
    for k, b in enumerate(kept):
        if groups[-1] and budget is not None and sum(kept[i] for i in groups[-1]) + b > budget:
            groups.append([])
        groups[-1].append(k)
    return groups


def _decide(measured: dict[str, Any], probe: dict[str, Any]) -> list[list[int]]:
    """The groups of layer indices to batch, from :func:`_measure`'s figures (copied into ``probe``).

    Raises:
        Declined: some layer would be alone in its group (no two fit in memory together), or some group's
            batched step is not at most ``_FASTER`` times its layers' separate steps.
    """
    probe.update(measured)
    groups, kept, budget = measured["groups"], measured["kept_bytes"], measured["budget_bytes"]
    if any(len(grp) < 2 for grp in groups):
        raise Declined(
            f"the layers' backward passes keep {sum(kept) / 2**20:.0f} MiB together, more than half the free "
            f"memory ({2 * budget / 2**20:.0f} MiB), and some layer fits with no neighbour"
        )
    alone, together = measured["alone_seconds"], measured["batched_seconds"]
    ratios = [t / sum(alone[k] for k in grp) for grp, t in zip(groups, together)]
    probe["batched_over_separate"] = ratios
    if max(ratios) > _FASTER:
        worst = max(range(len(ratios)), key=ratios.__getitem__)
        sep = sum(alone[k] for k in groups[worst])
        raise Declined(
            f"measured: a batched step takes {together[worst] * 1e3:.3g} ms, the separate steps "
            f"{sep * 1e3:.3g} ms together ({ratios[worst]:.2f}x; batching needs <= {_FASTER}x)"
        )
    return groups


def _check(
    forward: Any,
    cuts: _Cuts,
    x: torch.Tensor,
    order: Sequence[str],
    model: nn.Module,
    model_kwargs: Mapping[str, Any] | None,
    feed_dtype: torch.dtype,
    work_dtype: torch.dtype,
    normalize: Normalize | None,
) -> None:
    """Distinct inputs through the batched forward must give each layer's separately computed output."""
    g = torch.Generator(device=x.device)
    g.manual_seed(20261123)
    copies = [
        x.to(work_dtype) + 0.05 * k * torch.randn(x.shape, generator=g, device=x.device, dtype=work_dtype)
        for k in range(len(order))
    ]
    with torch.no_grad():
        alone = []
        for name, copy_k in zip(order, copies):
            with Hooks(model, name, stop=True) as hooks:
                alone.append(hooks.run(private_input(feed(copy_k.to(feed_dtype), normalize), None), model_kwargs)[name])
        try:
            with cuts:
                batched = forward(torch.cat(copies))
        except Declined:
            raise
        except Exception as error:
            raise Declined(
                f"the batched forward pass failed, probably a skip connection around a layer or a batch-sized "
                f"keyword argument ({type(error).__name__}: {error})"
            ) from None
        for name, want, got in zip(order, alone, batched):
            scale = float(want.abs().max()) if want.numel() else 0.0
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
                raise Declined(
                    f"layer {name!r} gives other values in a batch of all the layers' inputs than alone (a skip "
                    "connection around an earlier layer, or samples that interact)"
                )
