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
import time
from collections.abc import Sequence
from typing import Any

import torch

from ._domain import chance_input
from ._feed import Feed, private_input
from ._hooks import Cut, Cuts, Hooks, watch
from ._inversion import Inversion
from ._invert import Baselines, inversion_of
from ._plan import Plan
from ._search import Found, History, Problem, Targets, initial, search
from ._state import model_rng
from .recipes import Recipe

__all__ = ["Declined", "invert_layers", "why_not"]

#: The layers cannot be inverted as one batch; the message says why (the sweep falls back to one by one).
Declined = Cut


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


def invert_layers(
    feed: Feed, names: Sequence[str], x: torch.Tensor, plan: Plan, rcp: Recipe, *, measure: bool = False,
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
    if next((p.device for p in feed.model.parameters()), x.device) != x.device:
        raise Declined("the input and the model are on different devices")
    assert plan.seed is not None
    g = torch.Generator(device=x.device)
    g.manual_seed(plan.seed)
    with feed.session(plan.seed):
        batch = _Batch(feed, names, x)
        groups = [list(range(len(batch.order)))]
        if measure:
            probe = probe if probe is not None else {}
            groups = _decide(_measure(batch), probe)
            if plan.progress:
                ratios = ", ".join(f"{r:.2f}x" for r in probe["batched_over_separate"])
                how = "one batch" if len(groups) == 1 else f"{len(groups)} batches (memory)"
                print(f"sweep: {len(batch.order)} layers as {how} ({', '.join(batch.order)}; a batched step measured "
                      f"at {ratios} the separate steps' time) ...", file=sys.stderr, flush=True)
        by_name: dict[str, Inversion] = {}
        for group in groups:
            # Each group is its own batched search, from the seed: what a sweep of only these layers would do.
            g.manual_seed(plan.seed)
            by_name.update(_invert_group(batch.group(group), plan, rcp, g))
    seconds = (time.perf_counter() - started) / len(batch.order)
    return [dataclasses.replace(by_name[n], seconds=seconds) for n in names]


class _Batch:
    """The layers of a batched search, in execution order, with their targets and how the model is fed."""

    def __init__(self, feed: Feed, names: Sequence[str], x: torch.Tensor, *, _order: Any = None) -> None:
        self.feed, self.x = feed, x
        if _order is not None:  # a group of another batch's layers (see group())
            self.order, self.targets, self.copy_fed = _order
        else:
            self.order, self.targets, self.copy_fed = _execution_order(feed, names, x)
            if len(self.order) != len(names):
                raise Declined("not every layer ran")
            for name, t in zip(self.order, self.targets):
                if t.dim() == 0 or t.shape[0] != x.shape[0]:
                    raise Declined(f"layer {name!r} is not batch first")
        named = dict(feed.model.named_modules())
        self.modules = [named[n] for n in self.order]
        self.size = x.shape[0]
        self.feed_dtype = private_input(x, feed.dtype).dtype
        self.work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.original = x.detach().clone()  # a snapshot, not the caller's storage
        if _order is None:
            _check(self)

    def group(self, indices: Sequence[int]) -> _Batch:
        """The batch of the layers at ``indices`` (consecutive, in execution order)."""
        chosen = ([self.order[k] for k in indices], [self.targets[k] for k in indices], self.copy_fed)
        return _Batch(self.feed, chosen[0], self.x, _order=chosen)

    def cuts(self, indices: Sequence[int] | None = None) -> Cuts:
        ks = range(len(self.order)) if indices is None else indices
        return Cuts(self.feed.model, [self.modules[k] for k in ks], [self.order[k] for k in ks], self.size)

    def forward(self, cuts: Cuts) -> Any:
        """The batched forward pass of the searched tensor ``z``: fed in the model's dtype (a copy when the model
        changes its input in place), normalised, and cut at every layer of ``cuts``; returns the layers' outputs."""

        def forward(z: torch.Tensor) -> list[torch.Tensor]:
            fed = z.to(self.feed_dtype)
            if self.copy_fed and fed is z:
                fed = fed.clone()
            return cuts.run(self.feed, self.feed.normalized(fed))

        return forward


def _execution_order(feed: Feed, names: Sequence[str], x: torch.Tensor) -> tuple[list[str], list[torch.Tensor], bool]:
    """The layers in the order they run, their outputs for ``x``, and whether the model changes its input in place."""
    order: list[str] = []

    def record(name: str, output: Any) -> None:
        if name not in order:
            order.append(name)

    with (
        torch.no_grad(),
        Hooks(feed.model, list(names)) as hooks,
        watch({name: hooks.by_spec[name].module for name in names}, record),
    ):
        fed = feed.input(x, grad=False)
        version = fed._version
        outputs = hooks.run(feed, fed, tolerant=True)
    return order, [outputs[n] for n in order], fed._version != version


def _stacked(t: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` copies of ``t`` along the batch dimension: one per layer of a batched search."""
    return t.repeat(copies, *([1] * (t.dim() - 1)))


def _invert_group(batch: _Batch, plan: Plan, rcp: Recipe, g: torch.Generator) -> dict[str, Inversion]:
    """One batched search over the layers of ``batch``; their inversions by name."""
    size, L, work, original = batch.size, len(batch.order), batch.work_dtype, batch.original
    with batch.cuts() as cuts:
        forward = batch.forward(cuts)
        # One starting draw of the input's shape, repeated for every layer: what each separate call would draw.
        start = initial(plan.init if plan.init is not None else rcp.init, original, work, g)
        with torch.enable_grad(), model_rng(batch.feed.model):  # the model's random stream held for the search
            run = search(
                Problem(forward, _stacked(original, L), Targets.of(list(batch.targets), size, work), work), rcp,
                init=_stacked(start, L), generator=g, progress=plan.progress,
            )
        if run.nonfinite:
            raise Declined("a loss became non-finite (the layers are inverted one by one to stop each alone)")
        result_x, _ = run.result(plan.track_best)
        with torch.no_grad():
            reps_g = [r.detach().clone() for r in forward(result_x)]
            x_ref = plan.domain.reference(original, g, work, raw=True)
            reps_ref = [r.detach().clone() for r in forward(_stacked(x_ref, L))]
            x_u = chance_input(original.to(work))
            reps_u = [r.detach().clone() for r in forward(_stacked(x_u, L))]
    out: dict[str, Inversion] = {}
    for k, name in enumerate(batch.order):
        rows = slice(k * size, (k + 1) * size)
        out[name] = inversion_of(
            _rows(run, rows), plan=plan, recipe=rcp, layer=name, start=None, original=original,
            target=batch.targets[k], baselines=Baselines(reps_g[k], x_ref, reps_ref[k], x_u, reps_u[k]), seconds=0.0,
        )
    return out


def _rows(run: Found, rows: slice) -> Found:
    """One layer's part of a batched search's outcome."""
    return dataclasses.replace(
        run, best_x=run.best_x[rows], best_loss=run.best_loss[rows], best_step=run.best_step[rows],
        final_x=run.final_x[rows],
        history=History(
            terms={t: v[:, rows].clone() for t, v in run.history.terms.items()}, lr=run.history.lr,
            input_distance=run.history.input_distance[:, rows].clone(),
        ),
    )


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


def _measure(batch: _Batch) -> dict[str, Any]:
    """What batching would cost here: the bytes each layer's backward pass keeps, the groups of consecutive layers
    that fit in the memory budget (a batched step keeps the sum over its layers: copy k runs only up to layer k),
    and the seconds of one forward and backward step of each layer alone and of each group batched.

    Steps are timed as the best of a few repeats after a warm-up, alternating the two ways, so that a busy
    machine slows both.
    """
    device = batch.original.device
    z0 = batch.original.to(batch.work_dtype)

    def step(cuts: Cuts, z: torch.Tensor) -> None:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad(), cuts:
            outs = batch.forward(cuts)(z)  # as the search runs it
            total = torch.stack([o.float().abs().sum() for o in outs]).sum()
            torch.autograd.grad(total, z)
        _sync(device)

    singles = [batch.cuts([k]) for k in range(len(batch.order))]
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
    batched = [(batch.cuts(grp), _stacked(z0, len(grp))) for grp in groups if len(grp) > 1]
    for cuts, stacked in batched:
        step(cuts, stacked)  # warm-up
    alone = [float("inf")] * len(batch.order)
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


def _check(batch: _Batch) -> None:
    """Distinct inputs through the batched forward must give each layer's separately computed output."""
    x = batch.x
    g = torch.Generator(device=x.device)
    g.manual_seed(20261123)
    copies = [
        x.to(batch.work_dtype) + 0.05 * k * torch.randn(x.shape, generator=g, device=x.device, dtype=batch.work_dtype)
        for k in range(len(batch.order))
    ]
    with torch.no_grad():
        alone = []
        for name, copy_k in zip(batch.order, copies):
            with Hooks(batch.feed.model, name, stop=True) as hooks:
                fed = private_input(batch.feed.normalized(copy_k.to(batch.feed_dtype)), None)
                alone.append(hooks.run(batch.feed, fed)[name])
        try:
            with batch.cuts() as cuts:
                batched = batch.forward(cuts)(torch.cat(copies))
        except Declined:
            raise
        except Exception as error:
            raise Declined(
                f"the batched forward pass failed, probably a skip connection around a layer or a batch-sized "
                f"keyword argument ({type(error).__name__}: {error})"
            ) from None
        for name, want, got in zip(batch.order, alone, batched):
            scale = float(want.abs().max()) if want.numel() else 0.0
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
                raise Declined(
                    f"layer {name!r} gives other values in a batch of all the layers' inputs than alone (a skip "
                    "connection around an earlier layer, or samples that interact)"
                )
