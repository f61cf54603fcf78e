"""List, describe and resolve the layers of a model.

A *layer* is any submodule. reprinvert names layers by their dotted path from ``model.named_modules()``
(``"layer2.1.conv1"``), and also accepts ``"features[3]"`` for container indices, an integer index into the
top-level children, or the module object itself. Wrapper prefixes (``module.`` from ``DataParallel``,
``_orig_mod.`` from ``torch.compile``) are tolerated in both directions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

from ._state import frozen
from .errors import LayerNotFoundError

__all__ = ["Description", "LayerInfo", "LayerSpec", "describe", "list_layers", "resolve_layer"]

LayerSpec = Union[str, int, nn.Module]
"""A layer given as a dotted name, an index into the model's top-level children, or the module itself."""

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_INDEX = re.compile(r"\[(-?\d+)\]")


def list_layers(model: nn.Module, *, leaves_only: bool = False) -> list[str]:
    """Dotted names of every submodule, in registration order (the model itself is not listed).

    Args:
        model: any ``nn.Module``.
        leaves_only: list only modules without children (convolutions, activations, ...).

    Returns:
        Names accepted by every function that takes a ``layer``.

    Example:
        >>> import torch.nn as nn, reprinvert as ri
        >>> ri.list_layers(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
        ['0', '1']
    """
    _check_model(model)
    return [
        name
        for name, module in model.named_modules()
        if name and (not leaves_only or next(iter(module.children()), None) is None)
    ]


def resolve_layer(model: nn.Module, layer: LayerSpec, *, argument: str = "layer") -> tuple[str, nn.Module]:
    """Turn a layer specification into ``(dotted_name, module)``.

    Args:
        model: the model that owns the layer.
        layer: a dotted name (``"layer2.1"``, ``"features[3]"``, ``"module.layer2"``), an integer index into the
            model's top-level children (negative counts from the end), or a submodule object. The model itself
            (``""`` or ``model``) names its final output.
        argument: the name of the caller's argument, used in error messages (``"start"`` for a start layer).

    Raises:
        LayerNotFoundError: the layer is not part of the model; the message lists the closest names.
        TypeError: ``layer`` is of another type.
    """
    _check_model(model)
    if isinstance(layer, bool):
        raise TypeError(f"{argument} must be a str, int or nn.Module, got the bool {layer!r}")
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules(remove_duplicate=False):
            if module is layer:
                return name, module
        raise LayerNotFoundError(
            f"{argument}: the module {type(layer).__name__} passed as {argument} is not a submodule of the model "
            f"({type(model).__name__}); pass a module reachable from model.named_modules(), or its name "
            "from reprinvert.list_layers(model)"
        )
    if isinstance(layer, int):
        children = list(model.named_children())
        if not -len(children) <= layer < len(children):
            raise LayerNotFoundError(
                f"{argument}={layer}: index out of range for {type(model).__name__}, which has {len(children)} "
                f"top-level children (valid: {-len(children)}..{len(children) - 1}); use a dotted name from "
                "reprinvert.list_layers(model) for deeper layers"
            )
        return children[layer]
    if not isinstance(layer, str):
        raise TypeError(
            f"{argument} must be a str, int or nn.Module, got {type(layer).__name__}: {layer!r}; see "
            "reprinvert.list_layers(model) for valid names"
        )

    modules = dict(model.named_modules())
    name = _INDEX.sub(r".\1", layer.strip()).strip(".")
    for candidate in _candidates(name):
        if candidate in modules:
            return candidate, modules[candidate]
        resolved = _resolve_negative_indices(model, candidate)
        if resolved is not None:
            return resolved
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"closest: {', '.join(repr(c) for c in close)}; " if close else ""
    raise LayerNotFoundError(
        f"{argument}={layer!r} is not a layer of {type(model).__name__}; {hint}"
        "see reprinvert.list_layers(model) for every valid name"
    )


def _candidates(name: str) -> Iterator[str]:
    """The name as given, without wrapper prefixes, and with each wrapper prefix added."""
    yield name
    stripped = name
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
                changed = True
                yield stripped
    for prefix in _WRAPPER_PREFIXES:
        yield prefix + stripped
        for inner in _WRAPPER_PREFIXES:
            yield prefix + inner + stripped


def _resolve_negative_indices(model: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    """Follow a dotted path whose parts may be negative container indices (``"features.-1"``)."""
    if "-" not in name:
        return None
    module: nn.Module = model
    parts: list[str] = []
    for part in name.split("."):
        children = dict(module.named_children())
        if part in children:
            key = part
        elif re.fullmatch(r"-\d+", part) and children:
            keys = list(children)
            index = int(part)
            if not -len(keys) <= index < 0:
                return None
            key = keys[index]
        else:
            return None
        parts.append(key)
        module = children[key]
    return ".".join(parts), module


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}; wrap plain functions in an nn.Module"
        )


def runnable(model: nn.Module) -> nn.Module:
    """The module reprinvert runs and hooks: wrappers are unwrapped, TorchScript is refused.

    Compiled graphs may skip Python forward hooks silently, so a ``torch.compile``'d model is run eagerly
    through its original module (``model._orig_mod``); the results are the same, only slower. ``DataParallel``
    and ``DistributedDataParallel`` run replicas in other threads (whose forwards a capture does not record),
    so their ``.module`` is run directly, on its own device. TorchScript (scripted or traced) modules do not run
    Python hooks reliably and are refused.
    """
    _check_model(model)
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while True:
        if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, wrappers) and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"model is a TorchScript module ({type(model).__name__}); scripted and traced modules do not run "
            "Python forward hooks, so layers cannot be captured. Pass the original nn.Module instead"
        )
    return model


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


def describe(model: nn.Module, x: Any, *, model_kwargs: dict[str, Any] | None = None) -> Description:
    """Dry run: one forward pass on ``x`` reporting each module's output shape and how often it ran.

    The model runs in eval mode under ``torch.no_grad()`` and comes back exactly as it was (training flags,
    ``requires_grad``, buffers); all hooks are removed afterwards, whatever happens.

    Args:
        model: any ``nn.Module``.
        x: the input passed as ``model(x, **model_kwargs)``; a tuple is unpacked as positional arguments.
        model_kwargs: extra keyword arguments for the forward call.

    Returns:
        A :class:`Description`; ``print(ri.describe(model, x))`` shows a table.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> d = ri.describe(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.zeros(2, 4))
        >>> [(r.name, r.shape) for r in d]
        [('', (2, 3)), ('0', (2, 3)), ('1', (2, 3))]
    """
    from .capture import describe_structure, model_dtype, private_input, run_model  # capture imports layers

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
        with frozen(model, train=False, freeze_parameters=False), torch.no_grad():
            run_model(model, private_input(x, model_dtype(model)), model_kwargs)
    finally:
        for h in handles:
            h.remove()

    modules = dict(named)
    rows = []
    for name in order + [n for n, _ in named if n not in first_output]:
        out = first_output.get(name)
        shape = numel = None
        if isinstance(out, torch.Tensor):
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


def _layer_names(layers: Sequence[LayerSpec] | LayerSpec) -> list[LayerSpec]:
    if isinstance(layers, (str, int, nn.Module)):
        return [layers]
    if not isinstance(layers, (list, tuple)):
        raise TypeError(
            f"layers must be a layer (str, int or nn.Module) or a list of them, got {type(layers).__name__}: "
            f"{layers!r}; see reprinvert.list_layers(model) for valid names"
        )
    return list(layers)
