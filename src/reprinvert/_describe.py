"""A dry run of a model: every module's output, how often it ran, and what depends on a start layer.

:func:`describe` runs the model once on the caller's input, on the path an inversion takes, and reports each
module; :func:`depends_on` tells which modules' outputs depend (through autograd) on a start layer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._domain import NormalizeSpec
from ._feed import Feed
from ._hooks import watch
from ._outputs import describe_structure
from .errors import LayerNotFoundError

__all__ = ["Description", "LayerInfo", "depends_on", "describe"]


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
    feed = Feed.of(model, normalize=normalize, model_kwargs=model_kwargs, x=x)
    named = list(feed.model.named_modules())
    calls: dict[str, int] = {name: 0 for name, _ in named}
    first_output: dict[str, Any] = {}
    order: list[str] = []

    def record(name: str, output: Any) -> None:
        calls[name] += 1
        if name not in first_output:
            first_output[name] = output
            order.append(name)

    # Gradients on, with a floating input that requires them: the path an inversion takes (a model with a
    # separate inference path, such as nn.TransformerEncoder's fast path, is described as it is inverted).
    with watch(dict(named), record, all_threads=True), feed.session(), torch.enable_grad():
        feed(feed.input(x))
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
                name=name, type=type(modules[name]).__name__,
                output=describe_structure(out) if name in first_output else "(never ran)",
                shape=shape, numel=numel, calls=calls[name],
                parameters=sum(p.numel() for p in modules[name].parameters()),
            )
        )
    shape_of = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
    return Description(model=type(feed.model).__name__, input_shape=shape_of, rows=tuple(rows))


def depends_on(feed: Feed, x: torch.Tensor, start: str) -> set[str]:
    """The modules whose output depends (through autograd) on the output of ``start``, for the input ``x``."""
    depends: set[str] = set()

    def on_output(name: str, out: Any) -> Any:
        if name == start:
            return out.detach().requires_grad_(True).clone() if isinstance(out, torch.Tensor) else None
        if isinstance(out, torch.Tensor) and out.requires_grad:
            depends.add(name)
        return None

    modules = {name: m for name, m in feed.model.named_modules() if name}
    with watch(modules, on_output, all_threads=True), feed.session(), torch.enable_grad():
        try:
            feed(feed.input(x, grad=False))
        except Exception:  # a head that rejects the input: what ran before it is recorded
            pass
    return depends
