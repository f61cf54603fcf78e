"""Private: every forward hook reprinvert registers, and nothing else.

* :class:`Hooks` taps layers (the output of the requested call of each, selected, detached or not, cloned),
  optionally replaces a *start* module's output with the searched tensor, and optionally stops the forward
  pass right after the last tapped layer;
* :class:`Cuts` serves the batched sweep: at the k-th layer it keeps the first B rows and passes the rest on;
* :func:`watch` calls a function on every output of some modules (a dry run, an execution order, a dependency).

The contracts every hook keeps: hooks are removed in ``finally`` whatever was raised (``KeyboardInterrupt``
included); only the thread that opened the hooks is recorded; the early stop is a private ``BaseException`` that a
model's own ``except Exception`` cannot swallow, after which the caller's ``always_call=True`` hooks that it
skipped are run as torch would have run them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _mm
from torch.utils.hooks import RemovableHandle

from ._feed import Feed
from ._layers import LayerSpec, layer_specs, resolve_layer, runnable
from ._outputs import Selector, select_output
from .errors import LayerCallError, OutputSelectionError

__all__ = ["Cut", "Cuts", "Hooks", "StopForward", "first_inputs", "watch"]


class StopForward(BaseException):
    """Raised from a hook to end the forward pass once every requested layer has been captured.

    A ``BaseException`` (not an ``Exception``) so that ``try: ... except Exception:`` inside a model cannot
    swallow it. Never escapes reprinvert.
    """


class Cut(Exception):
    """A batched forward cannot be cut as planned (the message says why; the sweep inverts one by one)."""


# torch.func wraps tensors inside vmap/grad; a private but long-standing check (absent: assume no transform).
_inside_transform = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", lambda t: False)


class _Handles:
    """Removable hook handles, registered on the calling thread; removed together, whatever happened."""

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []
        self.thread = threading.get_ident()

    def forward(self, module: nn.Module, hook: Callable[..., Any], **options: Any) -> int:
        handle = module.register_forward_hook(hook, **options)
        self.handles.append(handle)
        return handle.id

    def pre(self, module: nn.Module, hook: Callable[..., Any], **options: Any) -> None:
        self.handles.append(module.register_forward_pre_hook(hook, **options))

    def mine(self) -> bool:
        """Whether the current forward runs on the thread that registered the hooks."""
        return threading.get_ident() == self.thread

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()


@contextmanager
def first_inputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, Any]]:
    """The first positional input of each of ``modules`` (by name) in the forward passes run inside, on the calling
    thread; the hooks are removed on exit, whatever happened."""
    seen: dict[str, Any] = {}
    handles = _Handles()

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if handles.mine():
                seen.setdefault(name, args[0] if args else None)
        return hook

    try:
        for name, module in modules.items():
            handles.pre(module, keep(name))
        yield seen
    finally:
        handles.remove()


class _AlwaysCalled:
    """Runs a user's ``always_call=True`` forward hooks that an early stop skipped.

    torch runs such hooks (timers, depth counters) when a forward raises an ``Exception``; the early stop is a
    ``BaseException``, which torch lets through without them. Modules with such hooks (every module when a global
    one exists) are tracked while they run; after a stop, the hooks of the modules still running are called,
    innermost first, with output ``None`` as torch does, and their own errors become warnings as in torch.
    Models without such hooks pay nothing.
    """

    def __init__(self, model: nn.Module, handles: _Handles) -> None:
        self.global_hooks = [
            hook for hid, hook in _mm._global_forward_hooks.items() if hid in _mm._global_forward_hooks_always_called
        ]
        modules = list(model.modules())
        if not self.global_hooks:
            modules = [m for m in modules if getattr(m, "_forward_hooks_always_called", None)]
        self.stack: list[tuple[nn.Module, Any, Any]] = []
        for m in modules:
            handles.pre(m, self._push, with_kwargs=True, prepend=True)
            handles.forward(m, self._pop, always_call=True)

    def _push(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self.stack.append((module, args, kwargs))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        while self.stack:
            if self.stack.pop()[0] is module:
                break

    def unwind(self, stopped_in: nn.Module | None, stop_hook: int | None) -> None:
        """Call the skipped hooks; ``stopped_in`` is the module whose forward hook ``stop_hook`` (an id) raised."""
        stack, self.stack = self.stack, []
        for module, args, kwargs in reversed(stack):
            hooks = list(module._forward_hooks.items())
            if module is stopped_in and stop_hook is not None:
                # Global hooks and this module's hooks before the stopping one have run already.
                keys = [k for k, _ in hooks]
                hooks = hooks[keys.index(stop_hook) + 1:] if stop_hook in keys else []
                global_hooks: list[Callable[..., Any]] = []
            else:
                global_hooks = self.global_hooks
            for hook in global_hooks:
                self._call(hook, module, args)
            for hid, hook in hooks:
                if hid in module._forward_hooks_always_called and getattr(hook, "__self__", None) is not self:
                    if hid in module._forward_hooks_with_kwargs:
                        self._call(hook, module, args, kwargs)
                    else:
                        self._call(hook, module, args)

    @staticmethod
    def _call(hook: Callable[..., Any], module: nn.Module, *args: Any) -> None:
        try:
            hook(module, *args, None)
        except Exception as error:
            warnings.warn(
                "a forward hook with always_call=True raised an exception after reprinvert stopped the forward "
                f"pass early ({type(error).__name__}: {error}); it was silenced, as torch does after an error",
                stacklevel=3,
            )


def _check_hookable(name: str, module: nn.Module, argument: str) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"{argument}={name!r} is a TorchScript module ({type(module).__name__}), which does not run Python "
            "forward hooks, so its output cannot be captured; build that part of the model without "
            "torch.jit.script / torch.jit.trace, or pick a plain nn.Module layer"
        )


def _per_layer(option: Any, spec: LayerSpec, name: str) -> Any:
    if isinstance(option, Mapping):
        for key in (spec, name):
            if isinstance(key, (str, int)) and key in option:
                return option[key]
        return None
    return option


class _Target:
    __slots__ = ("call", "count", "elsewhere", "hook_id", "module", "name", "select", "value")

    def __init__(self, name: str, module: nn.Module, select: Selector, call: int | None) -> None:
        self.name, self.module, self.select, self.call = name, module, select, call
        self.count = 0
        self.value: torch.Tensor | None = None
        self.hook_id: int | None = None
        self.elsewhere = 0  # calls made by another thread (a model that runs part of its forward in a thread)


class _Start:
    """The module whose output the search replaces (``start=``): its output, and the tensor put in its place."""

    def __init__(self, model: nn.Module, spec: LayerSpec, grad_path: bool) -> None:
        self.name, self.module = resolve_layer(model, spec, argument="start")
        _check_hookable(self.name, self.module, "start")
        # With no replacement: feed on a floating copy of the output that requires grad, so the rest of the forward
        # pass takes the path an optimisation takes.
        self.grad_path = grad_path
        self.replacement: torch.Tensor | None = None
        self.count = 0
        self.output: torch.Tensor | None = None  # a clone of what the module produced (no replacement)
        self.live: tuple[torch.Tensor, int] | None = None  # what the model went on with, and its version then

    def hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        self.count += 1
        original = select_output(output, None, layer=self.name)
        if self.replacement is None:
            self.output = original.detach().clone()
            if self.grad_path and original.is_floating_point() and torch.is_grad_enabled():
                live = original.detach().requires_grad_(True).clone()
                self.live = (live, live._version)
                return live
            self.live = (original, original._version)
            return None
        if self.replacement.shape != original.shape:
            raise ValueError(
                f"start layer {self.name!r} produced shape {tuple(original.shape)}, but the optimized tensor has "
                f"shape {tuple(self.replacement.shape)}; the input must have the batch shape the inversion started with"
            )
        return self.replacement

    @property
    def modified(self) -> bool:
        """Whether the model changed the start layer's output in place after it was produced (last forward)."""
        return self.live is not None and self.live[0]._version != self.live[1]

    def check(self, captured: bool, targets: Sequence[_Target]) -> None:
        if self.count == 0 and captured:
            names = ", ".join(repr(t.name) for t in targets)
            raise LayerCallError(
                f"start layer {self.name!r} ran 0 times in one forward pass; a start layer must run exactly once, "
                f"before the layer it feeds, and it did not run before layer {names}: choose an earlier start or a "
                "later layer (reprinvert.describe(model, x) lists the layers in the order they run)"
            )
        if self.count != 1:
            raise LayerCallError(
                f"start layer {self.name!r} ran {self.count} times in one forward pass; a start layer must run "
                "exactly once"
            )


class Hooks:
    """Taps on layers for :func:`reprinvert.capture`, :func:`reprinvert.represent` and the inversion loop.

    One forward hook per requested layer records the output of its requested call (``select``-ed; detached unless
    ``grad``; cloned, except the last one when the forward stops there and ``clone_last`` is False); with
    ``start`` a hook replaces that module's output by :attr:`replacement`; with ``stop`` the forward ends right after
    the last tapped layer. :meth:`run` performs one forward and checks the call counts. A context manager: hooks are
    removed on exit, whatever happened.
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[LayerSpec] | LayerSpec, *,
        select: Selector | Mapping[Any, Selector] = None, call: int | Mapping[Any, int] | None = None,
        grad: bool = False, stop: bool = False, clone_last: bool = True, start: LayerSpec | None = None,
        grad_path: bool = False,
    ) -> None:
        model = runnable(model)
        specs = layer_specs(layers)
        if not specs:
            raise ValueError("layers is empty; pass at least one layer name (see reprinvert.list_layers(model))")
        self.model = model
        self.targets: list[_Target] = []
        self.by_spec: dict[Any, _Target] = {}
        for spec in specs:
            name, module = resolve_layer(model, spec)
            _check_hookable(name, module, "layer")
            c = _per_layer(call, spec, name)
            if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 0):
                raise ValueError(f"call={c!r} for layer {name!r}: expected a non-negative int (0 = first call)")
            if any(t.name == name for t in self.targets):
                raise ValueError(f"layer {name!r} is requested twice in layers={specs!r}")
            target = _Target(name, module, _per_layer(select, spec, name), c)
            self.targets.append(target)
            self.by_spec[name] = target
            if isinstance(spec, (str, int)):
                self.by_spec[spec] = target
        self.grad, self.stop, self.clone_last = grad, stop, clone_last
        self.start = _Start(model, start, grad_path) if start is not None else None
        self._remaining = 0
        self._handles = _Handles()
        self._always: _AlwaysCalled | None = None
        self._stopped_at: tuple[nn.Module, int | None] | None = None

    def __enter__(self) -> Hooks:
        try:
            self._handles = _Handles()
            for target in self.targets:
                target.hook_id = self._handles.forward(target.module, self._make_hook(target))
            if self.start is not None:
                start = self.start
                self._handles.forward(start.module, lambda m, a, o: start.hook(m, a, o) if self._mine() else None)
            if self.stop:
                self._always = _AlwaysCalled(self.model, self._handles)
        except BaseException:
            self._handles.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._handles.remove()
        self._always = None

    def _mine(self) -> bool:
        return self._handles.mine()

    def stopped(self) -> None:
        """After the early stop: run the caller's ``always_call`` forward hooks that it skipped."""
        if self._always is not None:
            stopped_in, hook_id = self._stopped_at or (None, None)
            self._always.unwind(stopped_in, hook_id)

    def _make_hook(self, target: _Target) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._mine():
                target.elsewhere += 1
                return
            index = target.count
            target.count += 1
            if index != (target.call or 0):
                return
            value = select_output(output, target.select, layer=target.name)
            if _inside_transform(value):
                raise OutputSelectionError(
                    f"layer {target.name!r} runs inside torch.vmap or another torch.func transform: its hook sees "
                    "one sample's tensor wrapped by the transform, not the batch, and cannot capture it; invert a "
                    "layer outside the transformed function, or call the layer directly on the batch"
                )
            self._remaining -= 1
            last = self.stop and self._remaining == 0
            if not self.grad:
                value = value.detach()
            # After the last layer the forward stops, so nothing can modify the output in place: no copy needed.
            target.value = value if (last and not self.clone_last) else value.clone()
            if last:
                self._stopped_at = (module, target.hook_id)
                raise StopForward

        return hook

    def reset(self) -> None:
        for t in self.targets:
            t.count, t.elsewhere, t.value = 0, 0, None
        if self.start is not None:
            self.start.count = 0
        self._remaining = len(self.targets)
        self._handles.thread = threading.get_ident()

    def run(self, feed: Feed, x: Any, *, tolerant: bool = False) -> dict[str, torch.Tensor]:
        """One forward pass of ``feed`` on ``x``; ``{name: captured tensor}`` after checking call counts.

        ``tolerant``: an error raised after every layer was captured (a classifier head that rejects another image
        size, say) does not matter: the captures are complete.
        """
        self.reset()
        try:
            feed(x)
        except StopForward:
            self.stopped()
        except Exception:
            complete = self._remaining == 0 and (self.start is None or self.start.count == 1)
            if not (tolerant and complete):
                raise
        return self.check()

    def check(self) -> dict[str, torch.Tensor]:
        """Validate the call counts of the last forward pass; return the captured tensors."""
        for t in self.targets:
            if t.value is None:
                _never_captured(t)
            if t.call is None and t.count > 1:
                raise LayerCallError(
                    f"layer {t.name!r} ({type(t.module).__name__}) ran {t.count} times in one forward pass "
                    f"(a shared or reused module); pass call=0..{t.count - 1} to choose which call to capture"
                )
        if self.start is not None:
            self.start.check(all(t.value is not None for t in self.targets), self.targets)
        return {t.name: t.value for t in self.targets if t.value is not None}


def _never_captured(t: _Target) -> None:
    if t.count == 0 and t.elsewhere:
        raise LayerCallError(
            f"layer {t.name!r} ({type(t.module).__name__}) ran only in another thread than the one that called "
            "reprinvert (the model runs part of its forward in a thread of its own); reprinvert records only the "
            "calling thread's forward passes, so that concurrent use of the model cannot mix in; invert a layer "
            "that runs in the calling thread"
        )
    if t.count == 0:
        raise LayerCallError(
            f"layer {t.name!r} ({type(t.module).__name__}) never ran during the forward pass; check that the model "
            "uses it for this input (reprinvert.describe(model, x) shows which layers run), and if the model is "
            "torch.compile'd, pass the original module (model._orig_mod): compiled graphs may skip hooks"
        )
    raise LayerCallError(
        f"layer {t.name!r} ran {t.count} time(s), but call={t.call} was requested (calls count from 0)"
    )


class Cuts:
    """The batched sweep's forward: at the k-th of L layers (execution order), of a batch of (L - k) x B rows, keep
    the first B rows and pass the rest on; stop after the last. Raises :class:`Cut` where that is not possible."""

    def __init__(self, model: nn.Module, modules: Sequence[nn.Module], names: Sequence[str], batch: int) -> None:
        self.model, self.modules, self.names, self.batch = model, list(modules), list(names), batch
        self.hook_ids: list[int] = []
        self.always: _AlwaysCalled | None = None
        self.captured: list[torch.Tensor | None] = [None] * len(self.modules)
        self.counts = [0] * len(self.modules)
        self.handles = _Handles()

    def __enter__(self) -> Cuts:
        try:
            self.handles = _Handles()
            self.hook_ids = [self.handles.forward(m, self._hook(k)) for k, m in enumerate(self.modules)]
            self.always = _AlwaysCalled(self.model, self.handles)
        except BaseException:
            self.handles.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.handles.remove()
        self.always = None

    def _hook(self, k: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, args: Any, out: Any) -> Any:
            if not self.handles.mine():
                return None
            name = self.names[k]
            self.counts[k] += 1
            if self.counts[k] > 1:
                raise Cut(f"layer {name!r} runs more than once per forward pass")
            if not isinstance(out, torch.Tensor):
                raise Cut(f"layer {name!r} does not return a single tensor")
            expected = (len(self.modules) - k) * self.batch
            if out.dim() == 0 or out.shape[0] != expected:
                raise Cut(
                    f"layer {name!r} produced a batch of {tuple(out.shape)[:1]} where {expected} was expected "
                    "(not batch first, or it mixes in tensors from before an earlier layer)"
                )
            self.captured[k] = out[: self.batch]
            if k == len(self.modules) - 1:
                raise StopForward
            # A separate tensor: in-place operations downstream must not touch the captured rows' storage.
            return out[self.batch :].clone()

        return hook

    def run(self, feed: Feed, x: torch.Tensor) -> list[torch.Tensor]:
        """One batched forward; each layer's B rows, in execution order."""
        self.captured = [None] * len(self.modules)
        self.counts = [0] * len(self.modules)
        try:
            feed(x)
        except StopForward:
            if self.always is not None:  # the caller's always_call hooks that the stop skipped
                self.always.unwind(self.modules[-1], self.hook_ids[-1])
        missing = [n for n, c in zip(self.names, self.captured) if c is None]
        if missing:
            raise Cut(f"layers {missing} did not run in the batched forward pass")
        return [c for c in self.captured if c is not None]


@contextmanager
def watch(
    modules: Mapping[str, nn.Module], on_output: Callable[[str, Any], Any], *, all_threads: bool = False
) -> Iterator[None]:
    """Call ``on_output(name, output)`` after every forward of each of ``modules`` (the calling thread's only,
    unless ``all_threads``); what it returns, if not None, replaces the output. Hooks removed on exit."""
    handles = _Handles()

    def make(name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            return on_output(name, output) if all_threads or handles.mine() else None

        return hook

    try:
        for name, module in modules.items():
            handles.forward(module, make(name))
        yield
    finally:
        handles.remove()
