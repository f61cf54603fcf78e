"""Private: the tensor a layer's output holds, and what it looks like.

A module may return a tensor, a tuple, a dict, a dataclass or a ``ModelOutput``; :func:`select_output` picks one
tensor out of it by a :data:`Selector` and explains the structure when it cannot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch

from .errors import OutputSelectionError

__all__ = ["Selector", "describe_structure", "select_output", "tensor_paths"]

Selector = Union[None, int, str, tuple[int | str, ...], Callable[[Any], torch.Tensor]]
"""Which tensor of a module's output to take.

``None``: the only tensor in the output (an error lists the structure when there are several); an ``int`` or
``str``: index, key or attribute (``select=0`` for an LSTM's output, ``select="last_hidden_state"``); a tuple:
a path of those (``select=(1, 0)``); a callable: ``output -> Tensor``.
"""



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


def tensor_paths(obj: Any, path: tuple[int | str, ...] = ()) -> list[tuple[tuple[int | str, ...], torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(path, obj)]
    found: list[tuple[tuple[int | str, ...], torch.Tensor]] = []
    if isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            found += tensor_paths(o, (*path, i))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            found += tensor_paths(v, (*path, k))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            found += tensor_paths(getattr(obj, f.name), (*path, f.name))
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
        found = tensor_paths(output)
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
