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
from typing import Any, Union

import torch
from torch import nn

from .errors import LayerNotFoundError

__all__ = ["LayerSpec", "layer_specs", "list_layers", "resolve_layer", "runnable"]

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


def layer_specs(layers: Sequence[LayerSpec] | LayerSpec) -> list[LayerSpec]:
    if isinstance(layers, (str, int, nn.Module)):
        return [layers]
    if not isinstance(layers, (list, tuple)):
        raise TypeError(
            f"layers must be a layer (str, int or nn.Module) or a list of them, got {type(layers).__name__}: "
            f"{layers!r}; see reprinvert.list_layers(model) for valid names"
        )
    return list(layers)
