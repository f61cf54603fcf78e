"""Private: which layers a sweep inverts (:func:`choose_layers`).

By default the model's *stages*: the children of containers of repeated blocks (``h.N``, ``encoder.layer.N``,
``layers.N``, ``_blocks.N``, ``layerK.N``) with the stem before them and the final normalisation after them, thinned
evenly to :data:`MAX_AUTO_LAYERS`; or the top-level children, the leaves, every module, an explicit list, and every
k-th of any of these. Only modules that ran exactly once with a batch-first tensor output are chosen
automatically, and with ``start=`` only those whose output depends on the start layer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ._describe import LayerInfo, depends_on, describe
from ._feed import Feed
from ._layers import LayerSpec, resolve_layer

__all__ = ["MAX_AUTO_LAYERS", "LayerMode", "choose_layers"]

LayerMode = Literal["auto", "top", "leaves", "all"]
"""Automatic layer choices of :func:`reprinvert.sweep`: the model's stages (repeated blocks with the stem and the
final norm), top-level children, leaf modules, or every module."""

#: With ``layers=None`` a sweep inverts at most this many layers, evenly spaced (``every=`` chooses otherwise).
MAX_AUTO_LAYERS = 12


def _auto_layers(
    feed: Feed, x: torch.Tensor, mode: str, start: str | None, cap: int | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """The automatic choice of layers, in execution order, and the candidates skipped with the reason."""
    model = feed.model
    desc = describe(
        model, x, model_kwargs=dict(feed.model_kwargs) if feed.model_kwargs else None, normalize=feed.normalize
    )
    modules = dict(model.named_modules())
    skipped: dict[str, str] = {}

    def why_not(r: LayerInfo) -> str | None:
        if r.calls == 0:
            return "never ran for this input"
        if r.calls > 1:
            return f"ran {r.calls} times in one forward pass (a shared module: name it with call=)"
        if r.shape is None:
            return f"its output is {r.output}, not one tensor (name it with select=)"
        if r.shape[:1] != (x.shape[0],):
            return f"its output {list(r.shape)} is not batch first"
        return None

    order = [r.name for r in desc if r.name]
    ran = []
    for r in desc:
        if not r.name:
            continue
        reason = why_not(r)
        if reason is None:
            ran.append(r.name)
        else:
            skipped[r.name] = reason
    if start is not None:
        if start not in order:
            return [], []
        depends = depends_on(feed, x, start)
        for name in ran:
            if name not in depends:
                skipped[name] = f"does not depend on start={start!r}"
        ran = [n for n in ran if n in depends and n != start and not n.startswith(start + ".")]
    if mode == "all":
        return ran, []
    if mode == "leaves":
        return [n for n in ran if next(iter(modules[n].children()), None) is None], []
    top = _top_level(model)
    if mode == "auto":
        blocks = _blocks(model)
        if blocks:
            chosen, notes = _stages(blocks, top, order, ran, modules, cap)
            return chosen, [(n, notes.get(n) or skipped.get(n, "")) for n in order if n in notes or
                            (n in skipped and (n in top or n in blocks))]
    return [n for n in ran if n in top], [(n, skipped[n]) for n in order if n in top and n in skipped]


def _top_level(model: nn.Module) -> set[str]:
    """The model's top-level children; a model that is one wrapper around one container is looked through."""
    root, prefix = model, ""
    while True:
        children = list(root.named_children())
        if len(children) != 1 or next(iter(children[0][1].children()), None) is None:
            break
        prefix, root = prefix + children[0][0] + ".", children[0][1]
    return {prefix + name for name, _ in root.named_children()}


def _blocks(model: nn.Module) -> set[str]:
    """The repeated blocks: children of ``ModuleList`` / ``Sequential`` containers whose children are modules of
    one type with children of their own (``h.N``, ``encoder.layer.N``, ``layers.N``, ``_blocks.N``,
    ``layerK.N``). Containers inside a block (attention heads, say) are not looked into."""
    found: set[str] = set()
    containers: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(name.startswith(c + ".") for c in found):
            continue
        kids = list(module.named_children())
        if len(kids) < 2 or len({type(k) for _, k in kids}) != 1:
            continue
        if all(next(iter(k.children()), None) is None for _, k in kids):
            continue
        containers.append(name)
        found.update(f"{name}.{k}" if name else k for k, _ in kids)
    return found


def _stages(
    blocks: set[str],
    top: set[str],
    order: list[str],
    ran: list[str],
    modules: dict[str, nn.Module],
    cap: int | None,
) -> tuple[list[str], dict[str, str]]:
    """Blocks, plus the stem (the last top-level module before the first block) and the final norm (the first
    top-level normalisation after the last block), the blocks thinned evenly to at most ``cap`` layers in all."""
    chosen_blocks = [n for n in ran if n in blocks]
    notes: dict[str, str] = {}
    if not chosen_blocks:
        return [], notes
    first, last = order.index(chosen_blocks[0]), order.index(chosen_blocks[-1])
    before = [n for n in ran if n in top and order.index(n) < first and not _contains(n, blocks)]
    after = [n for n in ran if n in top and order.index(n) > last and not _contains(n, blocks)]
    norms = [n for n in after if "norm" in type(modules[n]).__name__.lower()]
    stem = before[-1:]
    final = norms[:1]
    for n in before[:-1]:
        notes[n] = "before the stem's output (the last top-level module before the first block)"
    for n in after:
        if n not in final:
            notes[n] = "after the blocks and not their final normalisation"
    budget = len(chosen_blocks) if cap is None else cap - len(stem) - len(final)
    if len(chosen_blocks) > budget:
        keep = {round(i * (len(chosen_blocks) - 1) / (budget - 1)) for i in range(budget)} if budget > 1 else {0}
        for i, n in enumerate(chosen_blocks):
            if i not in keep:
                notes[n] = f"thinned to {cap} evenly spaced layers (every=1 inverts all)"
        chosen_blocks = [n for i, n in enumerate(chosen_blocks) if i in keep]
    return stem + chosen_blocks + final, notes


def _contains(name: str, blocks: set[str]) -> bool:
    return any(b.startswith(name + ".") for b in blocks)


def choose_layers(
    feed: Feed,
    x: torch.Tensor,
    layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None,
    every: int | None,
    start: str | None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The layers to invert and, for an automatic choice, the candidates skipped with the reason."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"every={every!r}: expected a positive int (invert every k-th layer) or None")
    skipped: list[tuple[str, str]] = []
    names: list[str]
    if layers is None or (isinstance(layers, str) and layers in ("auto", "top", "leaves", "all")):
        mode = "auto" if layers is None else str(layers)
        cap = MAX_AUTO_LAYERS if every is None else None  # every= thins the whole list instead
        names, skipped = _auto_layers(feed, x, mode, start, cap)
        if mode == "auto" and not names:
            mode = "top"
        if not names:
            raise ValueError(
                f"layers={layers!r}: no {mode!r} layer of {type(feed.model).__name__} ran exactly once with a "
                "batch-first tensor output" + (f" after start={start!r}" if start else "")
                + "; pass the layers to invert explicitly, e.g. layers=reprinvert.list_layers(model)[:3]"
            )
    else:
        specs = [layers] if isinstance(layers, (str, int, nn.Module)) else list(layers)
        if not specs:
            raise ValueError("layers is an empty list; pass None (the model's stages), 'leaves', 'all' or names")
        names = []
        for spec in specs:
            name = resolve_layer(feed.model, spec)[0]
            if name not in names:
                names.append(name)
    if every is not None:
        if every > len(names):
            raise ValueError(
                f"every={every} is larger than the number of layers chosen ({len(names)}: {names}); "
                f"use every <= {len(names)}"
            )
        dropped = [n for i, n in enumerate(names) if (i + 1) % every]
        skipped += [(n, f"every={every} keeps every {every}-th layer") for n in dropped]
        names = names[every - 1 :: every]
    return names, skipped
