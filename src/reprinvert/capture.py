"""Hook-based capture of layer representations.

:func:`capture` is a context manager that records the output of one or more layers during the forward passes
run inside it; :func:`represent` is the one-call form. Both keep reprinvert's contracts:

* captured tensors are clones, so in-place operations after the module (``ReLU(inplace=True)``,
  ``out += identity``) cannot change them;
* a layer that never ran is an error, and so is one that ran more than once unless ``call=`` picks the call;
* with ``stop=True`` the forward pass ends right after the last requested layer, through a private
  ``BaseException`` subclass that a model's own ``except Exception`` cannot swallow;
* hooks are removed in ``finally``, whatever was raised (``KeyboardInterrupt`` included);
* hooks only record forwards run by the thread that opened the capture.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn
from torch.nn.modules import module as _mm
from torch.utils.hooks import RemovableHandle

from ._domain import NormalizeSpec, feed, resolve_normalize
from ._state import frozen, holds_model_rng, model_rng
from .errors import LayerCallError, LayerNotFoundError, OutputSelectionError
from .layers import LayerSpec, _layer_names, resolve_layer, runnable

__all__ = [
    "Captured", "Description", "LayerInfo", "Selector", "capture", "describe", "describe_structure", "represent",
    "select_output",
]

Selector = Union[None, int, str, tuple[int | str, ...], Callable[[Any], torch.Tensor]]
"""Which tensor of a module's output to take.

``None``: the only tensor in the output (an error lists the structure when there are several); an ``int`` or
``str``: index, key or attribute (``select=0`` for an LSTM's output, ``select="last_hidden_state"``); a tuple:
a path of those (``select=(1, 0)``); a callable: ``output -> Tensor``.
"""


class _StopForward(BaseException):
    """Raised from a hook to end the forward pass once every requested layer has been captured.

    A ``BaseException`` (not an ``Exception``) so that ``try: ... except Exception:`` inside a model cannot
    swallow it. Never escapes reprinvert.
    """


# torch.func wraps tensors inside vmap/grad; a private but long-standing check (absent: assume no transform).
_inside_transform = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", lambda t: False)


class _AlwaysCalled:
    """Runs a user's ``always_call=True`` forward hooks that an early stop skipped.

    torch runs such hooks (timers, depth counters) when a forward raises an ``Exception``; the early stop is a
    ``BaseException``, which torch lets through without them. Modules with such hooks (every module when a global
    one exists) are tracked while they run; after a stop, the hooks of the modules still running are called,
    innermost first, with output ``None`` as torch does, and their own errors become warnings as in torch.
    Models without such hooks pay nothing.
    """

    def __init__(self, model: nn.Module) -> None:
        self.global_hooks = [
            hook for hid, hook in _mm._global_forward_hooks.items() if hid in _mm._global_forward_hooks_always_called
        ]
        modules = list(model.modules())
        if not self.global_hooks:
            modules = [m for m in modules if getattr(m, "_forward_hooks_always_called", None)]
        self.stack: list[tuple[nn.Module, Any, Any]] = []
        self.handles: list[RemovableHandle] = []
        try:
            for m in modules:
                self.handles.append(m.register_forward_pre_hook(self._push, with_kwargs=True, prepend=True))
                self.handles.append(m.register_forward_hook(self._pop, always_call=True))
        except BaseException:
            self.remove()
            raise

    def _push(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self.stack.append((module, args, kwargs))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        while self.stack:
            if self.stack.pop()[0] is module:
                break

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

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


def describe_structure(obj: Any, _depth: int = 0) -> str:
    """A short description of a (nested) module output, e.g. ``"tuple(Tensor[2, 5, 16], None)"``."""
    if isinstance(obj, torch.Tensor):
        if obj.is_nested:  # nested tensors have no single shape
            return f"NestedTensor[{obj.size(0)} x {obj.dim() - 1}-d]"
        return f"Tensor[{', '.join(str(s) for s in obj.shape)}]"
    if obj is None:
        return "None"
    if _depth > 4:
        return "..."
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(describe_structure(o, _depth + 1) for o in obj)
        return f"{type(obj).__name__}({inner})"
    if isinstance(obj, Mapping):
        inner = ", ".join(f"{k!r}: {describe_structure(v, _depth + 1)}" for k, v in obj.items())
        return f"{type(obj).__name__}({inner})"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        inner = ", ".join(
            f"{f.name}={describe_structure(getattr(obj, f.name), _depth + 1)}" for f in dataclasses.fields(obj)
        )
        return f"{type(obj).__name__}({inner})"
    return type(obj).__name__


def _tensor_paths(obj: Any, path: tuple[int | str, ...] = ()) -> list[tuple[tuple[int | str, ...], torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(path, obj)]
    found: list[tuple[tuple[int | str, ...], torch.Tensor]] = []
    if isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            found += _tensor_paths(o, (*path, i))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            found += _tensor_paths(v, (*path, k))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            found += _tensor_paths(getattr(obj, f.name), (*path, f.name))
    return found


def _path_repr(path: tuple[int | str, ...]) -> str:
    return repr(path[0]) if len(path) == 1 else repr(path)


def select_output(output: Any, select: Selector = None, *, layer: str = "?") -> torch.Tensor:
    """Pick one tensor out of a module's output.

    Args:
        output: what the module returned.
        select: see :data:`Selector`.
        layer: the layer's name, used in error messages.

    Raises:
        OutputSelectionError: no selector and not exactly one tensor, or the selector does not lead to a tensor.
    """
    if select is None:
        if isinstance(output, torch.Tensor):  # the usual case, at every step of a search
            return output
        found = _tensor_paths(output)
        if len(found) == 1:
            return found[0][1]
        structure = describe_structure(output)
        if not found:
            raise OutputSelectionError(
                f"layer {layer!r} returned {structure}, which contains no tensor; choose another layer"
            )
        options = ", ".join(f"select={_path_repr(p)}" for p, _ in found[:6])
        raise OutputSelectionError(
            f"layer {layer!r} returned {structure} with {len(found)} tensors; say which one to use, "
            f"e.g. {options}, or select=<callable output -> Tensor>"
        )
    if callable(select):
        value = select(output)
    else:
        value = output
        for key in select if isinstance(select, tuple) else (select,):
            try:
                if isinstance(value, Mapping) or (isinstance(value, (tuple, list)) and not isinstance(key, str)):
                    value = value[key]  # type: ignore[index]
                elif isinstance(key, str):
                    # attributes: NamedTuple fields (PackedSequence.data), torch.return_types, dataclasses, objects
                    value = getattr(value, key)
                else:
                    raise TypeError
            except (KeyError, IndexError, AttributeError, TypeError):
                raise OutputSelectionError(
                    f"select={select!r} does not lead to a tensor in the output of layer {layer!r}, which is "
                    f"{describe_structure(output)}"
                ) from None
    if not isinstance(value, torch.Tensor):
        raise OutputSelectionError(
            f"select={select!r} gave {describe_structure(value)} for layer {layer!r}, not a tensor; the output is "
            f"{describe_structure(output)}"
        )
    return value


def run_model(model: nn.Module, x: Any, model_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Call ``model(x, **model_kwargs)``; a tuple ``x`` is unpacked into positional arguments."""
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise TypeError(
            f"model_kwargs must be a dict of keyword arguments for the forward call, got "
            f"{type(model_kwargs).__name__}: {model_kwargs!r}; e.g. model_kwargs={{'mask': mask}}"
        )
    # Fresh copies of the keyword tensors for every forward: a model that writes into a mask in place changes
    # neither the caller's tensor nor the next step's function.
    kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model_kwargs.items()} \
        if model_kwargs else {}
    if holds_model_rng(model):  # a search already runs on the model's stream: no swap (the step loop's case)
        return model(*x, **kwargs) if isinstance(x, tuple) else model(x, **kwargs)
    with model_rng(model):  # random draws in the forward come from the seed, not torch's global RNG
        if isinstance(x, tuple):
            return model(*x, **kwargs)
        return model(x, **kwargs)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (None when it has none)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def private_input(x: Any, dtype: torch.dtype | None) -> Any:
    """A copy of ``x`` (a tensor or a tuple of arguments) that the model may modify in place.

    Floating tensors are converted to ``dtype`` (the model's floating dtype), so a float32 input reaches a
    half-precision model as half; other tensors are cloned; anything else is passed as it is. The caller's
    tensors are never handed to the model: a first in-place operation (``ReLU(inplace=True)``) would change them.
    """
    if isinstance(x, tuple):
        return tuple(private_input(a, dtype) for a in x)
    if not isinstance(x, torch.Tensor):
        return x
    x = x.detach()
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x.clone()


class _Target:
    __slots__ = ("call", "count", "elsewhere", "hook_id", "module", "name", "select", "value")

    def __init__(self, name: str, module: nn.Module, select: Selector, call: int | None) -> None:
        self.name = name
        self.module = module
        self.select = select
        self.call = call
        self.count = 0
        self.value: torch.Tensor | None = None
        self.hook_id: int | None = None
        self.elsewhere = 0  # calls made by another thread (a model that runs part of its forward in a thread)


def _per_layer(option: Any, spec: LayerSpec, name: str) -> Any:
    if isinstance(option, Mapping):
        for key in (spec, name):
            if isinstance(key, (str, int)) and key in option:
                return option[key]
        return None
    return option


class Hooks:
    """Private machinery shared by :func:`capture`, :func:`represent` and the inversion loop.

    Registers one forward hook per requested layer (and optionally one that replaces a module's output with a
    given tensor, for inversions that start inside the model). ``run`` performs one forward pass and checks
    the call counts. Use as a context manager: hooks are removed on exit, whatever happened.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[LayerSpec] | LayerSpec,
        *,
        select: Selector | Mapping[Any, Selector] = None,
        call: int | Mapping[Any, int] | None = None,
        grad: bool = False,
        stop: bool = False,
        clone_last: bool = True,
        replace: LayerSpec | None = None,
        tolerate_downstream_errors: bool = False,
        grad_path: bool = False,
    ) -> None:
        model = runnable(model)
        specs = _layer_names(layers)
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
            target = _Target(name, module, _per_layer(select, spec, name), c)
            if any(t.name == name for t in self.targets):
                raise ValueError(f"layer {name!r} is requested twice in layers={specs!r}")
            self.targets.append(target)
            self.by_spec[name] = target
            if isinstance(spec, (str, int)):
                self.by_spec[spec] = target
        self.grad = grad
        self.stop = stop
        self.clone_last = clone_last
        self.tolerate_downstream_errors = tolerate_downstream_errors
        # With a replaced module and no replacement: feed on a floating copy of its output that requires grad, so the
        # rest of the forward pass takes the path an optimisation takes.
        self.grad_path = grad_path
        self.replace_name: str | None = None
        self.replace_module: nn.Module | None = None
        if replace is not None:
            self.replace_name, self.replace_module = resolve_layer(model, replace, argument="start")
            _check_hookable(self.replace_name, self.replace_module, "start")
        self.replacement: torch.Tensor | None = None
        self.replace_count = 0
        self.replaced_output: torch.Tensor | None = None
        self._replaced_live: tuple[torch.Tensor, int] | None = None
        self._remaining = 0
        self._thread: int | None = None
        self._handles: list[RemovableHandle] = []
        self._always: _AlwaysCalled | None = None
        self._stopped_at: tuple[nn.Module, int | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> Hooks:
        try:
            for target in self.targets:
                handle = target.module.register_forward_hook(self._make_hook(target))
                target.hook_id = handle.id
                self._handles.append(handle)
            if self.replace_module is not None:
                self._handles.append(self.replace_module.register_forward_hook(self._replace_hook))
            if self.stop:
                self._always = _AlwaysCalled(self.model)
        except BaseException:
            self.remove()
            raise
        self._thread = threading.get_ident()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        if self._always is not None:
            self._always.remove()
            self._always = None

    def stopped(self) -> None:
        """After the early stop: run the caller's ``always_call`` forward hooks that it skipped."""
        if self._always is not None:
            stopped_in, hook_id = self._stopped_at or (None, None)
            self._always.unwind(stopped_in, hook_id)

    # -- hooks -----------------------------------------------------------------------------------------------
    def _make_hook(self, target: _Target) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if threading.get_ident() != self._thread:
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
                raise _StopForward

        return hook

    def _replace_hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if threading.get_ident() != self._thread:
            return None
        self.replace_count += 1
        original = select_output(output, None, layer=self.replace_name or "?")
        if self.replacement is None:
            self.replaced_output = original.detach().clone()
            if self.grad_path and original.is_floating_point() and torch.is_grad_enabled():
                live = original.detach().requires_grad_(True).clone()
                self._replaced_live = (live, live._version)
                return live
            self._replaced_live = (original, original._version)
            return None
        if self.replacement.shape != original.shape:
            raise ValueError(
                f"start layer {self.replace_name!r} produced shape {tuple(original.shape)}, but the optimized "
                f"tensor has shape {tuple(self.replacement.shape)}; the input must have the batch shape the "
                "inversion started with"
            )
        return self.replacement

    @property
    def replaced_modified(self) -> bool:
        """Whether the model changed the start layer's output in place after it was produced (last forward)."""
        return self._replaced_live is not None and self._replaced_live[0]._version != self._replaced_live[1]

    # -- one forward -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        for t in self.targets:
            t.count = 0
            t.elsewhere = 0
            t.value = None
        self.replace_count = 0
        self._remaining = len(self.targets)
        self._thread = threading.get_ident()

    def run(self, x: Any, model_kwargs: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Run one forward pass and return ``{name: captured tensor}`` after checking call counts."""
        self.reset()
        try:
            run_model(self.model, x, model_kwargs)
        except _StopForward:
            self.stopped()
        except Exception:
            # With ``tolerate_downstream_errors``, a failure after every layer was captured does not matter (a
            # classifier head that rejects another image size, say): the captures are complete.
            complete = self._remaining == 0 and (self.replace_module is None or self.replace_count == 1)
            if not (self.tolerate_downstream_errors and complete):
                raise
        return self.check()

    def check(self) -> dict[str, torch.Tensor]:
        """Validate call counts of the last forward pass; return the captured tensors."""
        for t in self.targets:
            if t.value is None:
                if t.count == 0 and t.elsewhere:
                    raise LayerCallError(
                        f"layer {t.name!r} ({type(t.module).__name__}) ran only in another thread than the one that "
                        "called reprinvert (the model runs part of its forward in a thread of its own); reprinvert "
                        "records only the calling thread's forward passes, so that concurrent use of the model "
                        "cannot mix in; invert a layer that runs in the calling thread"
                    )
                if t.count == 0:
                    raise LayerCallError(
                        f"layer {t.name!r} ({type(t.module).__name__}) never ran during the forward pass; "
                        "check that the model uses it for this input (reprinvert.describe(model, x) shows which "
                        "layers run), and if the model is torch.compile'd, pass the original module "
                        "(model._orig_mod): compiled graphs may skip hooks"
                    )
                raise LayerCallError(
                    f"layer {t.name!r} ran {t.count} time(s), but call={t.call} was requested (calls count from 0)"
                )
            if t.call is None and t.count > 1:
                raise LayerCallError(
                    f"layer {t.name!r} ({type(t.module).__name__}) ran {t.count} times in one forward pass "
                    f"(a shared or reused module); pass call=0..{t.count - 1} to choose which call to capture"
                )
        captured = all(t.value is not None for t in self.targets)
        if self.replace_module is not None and self.replace_count == 0 and captured:
            names = ", ".join(repr(t.name) for t in self.targets)
            raise LayerCallError(
                f"start layer {self.replace_name!r} ran 0 times in one forward pass; a start layer must run exactly "
                f"once, before the layer it feeds, and it did not run before layer {names}: choose an earlier start "
                "or a later layer (reprinvert.describe(model, x) lists the layers in the order they run)"
            )
        if self.replace_module is not None and self.replace_count != 1:
            raise LayerCallError(
                f"start layer {self.replace_name!r} ran {self.replace_count} times in one forward pass; "
                "a start layer must run exactly once"
            )
        return {t.name: t.value for t in self.targets if t.value is not None}


def _check_hookable(name: str, module: nn.Module, argument: str) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"{argument}={name!r} is a TorchScript module ({type(module).__name__}), which does not run Python "
            "forward hooks, so its output cannot be captured; build that part of the model without "
            "torch.jit.script / torch.jit.trace, or pick a plain nn.Module layer"
        )


class Captured(Mapping[str, torch.Tensor]):
    """What :func:`capture` yields: a read-only mapping from layer name to captured tensor.

    Look-ups accept the dotted name, the specification passed to :func:`capture`, or the module object.
    Values exist once the forward pass inside the ``with`` block has run.
    """

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks

    def _target(self, key: Any) -> _Target:
        if isinstance(key, nn.Module):
            for t in self._hooks.targets:
                if t.module is key:
                    return t
        elif key in self._hooks.by_spec:
            return self._hooks.by_spec[key]
        raise KeyError(
            f"{key!r} was not captured; captured layers: {[t.name for t in self._hooks.targets]}"
        )

    def __getitem__(self, key: Any) -> torch.Tensor:
        t = self._target(key)
        if t.value is None:
            raise LayerCallError(
                f"layer {t.name!r} has not run yet; call the model inside the `with reprinvert.capture(...)` block"
            )
        return t.value

    def __iter__(self) -> Iterator[str]:
        return iter([t.name for t in self._hooks.targets])

    def __len__(self) -> int:
        return len(self._hooks.targets)

    def calls(self) -> dict[str, int]:
        """How many times each layer ran since the ``with`` block started."""
        return {t.name: t.count for t in self._hooks.targets}

    def __repr__(self) -> str:
        items = ", ".join(
            f"{t.name!r}: {describe_structure(t.value) if t.value is not None else 'not captured'}"
            for t in self._hooks.targets
        )
        return f"Captured({{{items}}})"


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[LayerSpec] | LayerSpec,
    *,
    select: Selector | Mapping[Any, Selector] = None,
    call: int | Mapping[Any, int] | None = None,
    grad: bool = False,
    stop: bool = False,
) -> Iterator[Captured]:
    """Record the outputs of ``layers`` during the forward pass run inside the ``with`` block.

    Args:
        model: any ``nn.Module``. Its mode and parameters are not changed (call ``model.eval()`` yourself if
            you want eval-mode representations; :func:`represent` does that for you).
        layers: one layer or a list (names, indices or modules; see :func:`reprinvert.list_layers`).
        select: which tensor of a layer's output to keep (see :data:`Selector`); one for all layers or a dict
            keyed by layer.
        call: which call to keep when a layer runs more than once (0 = first); one for all or a dict.
        grad: keep the autograd graph (``grad=True``) so the captured tensors can be differentiated; by default
            they are detached.
        stop: end the forward pass right after the last requested layer ran (statements after the model call
            inside the block are then skipped); saves the compute of everything downstream.

    Yields:
        A :class:`Captured` mapping, filled by the forward pass.

    Raises:
        LayerCallError: on leaving the block, if a layer never ran, or ran more than once and ``call`` is None
            (with ``stop=True`` only calls before the stop are seen).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
        >>> with ri.capture(model, ["0", "2"]) as reps:
        ...     _ = model(torch.randn(3, 4))
        >>> reps["0"].shape, reps["2"].shape
        (torch.Size([3, 8]), torch.Size([3, 2]))
    """
    hooks = Hooks(model, layers, select=select, call=call, grad=grad, stop=stop)
    with hooks:
        hooks.reset()
        captured = Captured(hooks)
        try:
            yield captured
        except _StopForward:
            hooks.stopped()
        hooks.check()


def represent(
    model: nn.Module,
    layer: LayerSpec,
    x: Any,
    *,
    select: Selector = None,
    call: int | None = None,
    stop: bool | None = None,
    train: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    normalize: NormalizeSpec = None,
) -> torch.Tensor:
    """The detached representation of ``x`` at ``layer`` (a clone; the model is left exactly as it was).

    The model runs in eval mode (``train=True`` keeps its flags; buffers are restored either way) on the path an
    inversion takes (gradients enabled, nothing differentiated). It receives a copy of ``x`` (so an in-place first
    operation cannot change the caller's tensor), converted to the model's floating dtype.

    Args:
        model: any ``nn.Module``.
        layer: name, index or module (see :func:`reprinvert.list_layers`).
        x: the input, passed as ``model(x, **model_kwargs)``; a tuple is unpacked.
        select: which tensor of the layer's output (see :data:`Selector`).
        call: which call of a module that runs several times (0 = first).
        stop: stop the forward pass right after the layer. None (the default): stop only when ``call`` is given;
            without it the whole model runs (an error after the layer does not matter), so a module that runs
            more than once is reported instead of silently taken at its first call, as in
            :func:`reprinvert.invert`. ``stop=True`` saves the rest of the forward, but a later reuse is then
            never seen.
        train: keep the modules' training flags instead of switching to eval mode.
        model_kwargs: extra keyword arguments for the forward call.
        normalize: feed the model ``(x - mean) / std``: ``"imagenet"``, ``"inception"`` or ``(mean, std)`` per
            channel (x stays in pixel space).

    Returns:
        The representation, e.g. shape ``(B, C, H, W)`` for a convolution.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> ri.represent(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), "0", torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    x = normalized_input(x, normalize)
    # Gradients on, the input requiring them (nothing is differentiated): the path an inversion takes, so a model
    # with a separate inference path gives the representation an inversion matches.
    with frozen(model, train=train), torch.enable_grad():
        if stop is None:
            stop = call is not None
        hooks = Hooks(model, layer, select=select, call=call, stop=stop, tolerate_downstream_errors=not stop)
        with hooks:
            fed = requiring_grad(private_input(x, model_dtype(hooks.model)))
            return hooks.run(fed, model_kwargs)[hooks.targets[0].name]


def requiring_grad(x: Any) -> Any:
    """Floating tensors of ``x`` (a tensor or a tuple of arguments) as non-leaf tensors that require grad."""
    if isinstance(x, tuple):
        return tuple(requiring_grad(a) for a in x)
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().requires_grad_(True).clone()
    return x


def normalized_input(x: Any, normalize: NormalizeSpec) -> Any:
    """``x`` as the model is fed it under ``normalize`` (checked; ``x`` itself when there is none)."""
    if normalize is None:
        return x
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"normalize={normalize!r} needs x to be a tensor (B, C, ...), got {type(x).__name__}; pass extra "
            "arguments through model_kwargs"
        )
    return feed(x, resolve_normalize(normalize, x))


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`describe`.

    Attributes:
        name: dotted name (``""`` is the model itself).
        type: the module's class name.
        output: the output structure, e.g. ``"Tensor[2, 64, 8, 8]"`` or ``"tuple(Tensor[...], None)"``.
        shape: the output shape when the output is a single tensor, else ``None``.
        numel: elements in that tensor per sample (all but the first dimension), else ``None``.
        calls: how many times the module ran during the forward pass (0: never reached).
        parameters: parameters owned directly or by children.
    """

    name: str
    type: str
    output: str
    shape: tuple[int, ...] | None
    numel: int | None
    calls: int
    parameters: int


@dataclass(frozen=True)
class Description:
    """The result of :func:`describe`: one :class:`LayerInfo` per module, in forward (first-call) order.

    Modules that never ran come last with ``calls == 0``. ``str(description)`` is a readable table.
    """

    model: str
    input_shape: tuple[int, ...]
    rows: tuple[LayerInfo, ...]

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerInfo:
        for row in self.rows:
            if row.name == name:
                return row
        raise LayerNotFoundError(f"{name!r} is not in this description; names: {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        header = ("layer", "type", "output", "numel/sample", "calls", "params")
        table = [header] + [
            (r.name or "(model)", r.type, r.output, "-" if r.numel is None else str(r.numel), str(r.calls),
             str(r.parameters))
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [f"{self.model} on input {list(self.input_shape)}"]
        for i, row in enumerate(table):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def describe(
    model: nn.Module, x: Any, *, model_kwargs: dict[str, Any] | None = None, normalize: NormalizeSpec = None
) -> Description:
    """Dry run: one forward pass on ``x`` reporting each module's output shape and how often it ran.

    The model runs in eval mode, with gradients enabled and a floating input that requires them (the path an
    inversion takes; nothing is differentiated), and comes back exactly as it was (training flags,
    ``requires_grad``, buffers); all hooks are removed afterwards, whatever happens.

    Args:
        model: any ``nn.Module``.
        x: the input passed as ``model(x, **model_kwargs)``; a tuple is unpacked as positional arguments.
        model_kwargs: extra keyword arguments for the forward call.
        normalize: feed the model ``(x - mean) / std`` (see :func:`represent`).

    Returns:
        A :class:`Description`; ``print(ri.describe(model, x))`` shows a table.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> d = ri.describe(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.zeros(2, 4))
        >>> [(r.name, r.shape) for r in d]
        [('0', (2, 3)), ('1', (2, 3)), ('', (2, 3))]
    """
    model = runnable(model)
    named = list(model.named_modules())
    calls: dict[str, int] = {name: 0 for name, _ in named}
    first_output: dict[str, Any] = {}
    order: list[str] = []
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] += 1
            if name not in first_output:
                first_output[name] = output
                order.append(name)

        return hook

    try:
        for name, module in named:
            handles.append(module.register_forward_hook(make_hook(name)))
        # Gradients on, with a floating input that requires them: the path an inversion takes (a model with a
        # separate inference path, such as nn.TransformerEncoder's fast path, is described as it is inverted).
        with frozen(model, train=False), torch.enable_grad():
            fed = private_input(normalized_input(x, normalize), model_dtype(model))
            run_model(model, requiring_grad(fed), model_kwargs)
    finally:
        for h in handles:
            h.remove()

    modules = dict(named)
    rows = []
    for name in order + [n for n, _ in named if n not in first_output]:
        out = first_output.get(name)
        shape = numel = None
        if isinstance(out, torch.Tensor) and not out.is_nested:
            shape = tuple(out.shape)
            numel = int(out[0].numel()) if out.dim() > 0 else 1
        rows.append(
            LayerInfo(
                name=name,
                type=type(modules[name]).__name__,
                output=describe_structure(out) if name in first_output else "(never ran)",
                shape=shape,
                numel=numel,
                calls=calls[name],
                parameters=sum(p.numel() for p in modules[name].parameters()),
            )
        )
    shape_of = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
    return Description(model=type(model).__name__, input_shape=shape_of, rows=tuple(rows))
