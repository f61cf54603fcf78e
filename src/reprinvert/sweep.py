"""Invert many layers of one model for one batch of inputs, and tabulate how much of the input each keeps.

:func:`sweep` chooses the layers (the model's top-level stages by default, every leaf module, an explicit
list, or every k-th of any of these), runs :func:`reprinvert.invert` on each with the same recipe and seed,
and returns a frozen :class:`Sweep`: one :class:`SweepRow` of batch-mean metrics per layer, the inversions
themselves, timings and :class:`Provenance` (versions, recipe, seed, device). :mod:`reprinvert.report` turns
a sweep into a PNG grid, a metrics-vs-depth plot, CSV / JSON tables and a self-contained HTML page.

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

import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import _archive
from ._domain import Domain, Normalize, NormalizeSpec
from ._progress import Progress
from ._state import frozen
from .capture import LayerInfo, Selector, describe, model_dtype, normalized_input, private_input, run_model
from .invert import INVERSION_SCHEMA, Inversion, _check_options, invert
from .layers import LayerSpec, resolve_layer, runnable
from .recipes import Init, Loss, Optimizer, Recipe
from .recipes import get as get_recipe
from .regularizers import Regularizer
from .spectrum import spectrum as _spectrum

__all__ = [
    "MAX_AUTO_LAYERS", "METRICS", "SWEEP_SCHEMA", "LayerMode", "Provenance", "Sweep", "SweepRow", "load", "sweep",
]

LayerMode = Literal["auto", "top", "leaves", "all"]
"""Automatic layer choices of :func:`sweep`: the model's stages (repeated blocks with the stem and the final
norm), top-level children, leaf modules, or every module."""

#: The metric columns of a sweep table, in order: (field of :class:`SweepRow`, short label).
METRICS: tuple[tuple[str, str], ...] = (
    ("embedding_distance", "m_g"),
    ("reference_distance", "m_r"),
    ("input_distance", "m_i"),
    ("perturbation_distance", "||x'-x||"),
    ("chance_input_distance", "chance"),
    ("normalized_feature_error", "nfe"),
    ("psnr", "psnr dB"),
)

@dataclass(frozen=True)
class Provenance:
    """Everything needed to regenerate a sweep.

    Attributes:
        reprinvert: library version.
        torch: torch version.
        python: Python version.
        model: the model's class name.
        input_shape: shape of ``x``.
        input_dtype: dtype of ``x`` (e.g. ``"torch.float32"``).
        device: device of ``x`` and the model (e.g. ``"cpu"``).
        recipe: the recipe with every override applied, as :meth:`Recipe.to_dict` gives it.
        seed: the seed of every inversion.
        steps: optimisation steps per layer.
        options: the other options passed to :func:`reprinvert.invert` (JSON-ready ``repr`` where needed), how
            the layers were inverted (``batched``) and what ``SweepRow.seconds`` means (``layer_seconds``).
        created: UTC time the sweep finished, ISO 8601.
        skipped_layers: with an automatic layer choice, ``(name, reason)`` of each candidate left out (shared
            modules, outputs that are not one batch-first tensor, layers that do not depend on ``start=``,
            thinning).
        inputs: a name per input sample (file names from the command line), or empty.
        model_source: where the model came from (the command line's model spec, weights file and its sha256), or
            empty.
    """

    reprinvert: str
    torch: str
    python: str
    model: str
    input_shape: tuple[int, ...]
    input_dtype: str
    device: str
    recipe: dict[str, Any]
    seed: int
    steps: int
    options: dict[str, Any]
    created: str
    skipped_layers: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()
    model_source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRow:
    """One layer of a sweep: batch means of :class:`~reprinvert.metrics.InversionMetrics`.

    Attributes:
        layer: resolved dotted name.
        index: position in the sweep (0 = first layer inverted, in the model's execution order when the
            layers were chosen automatically, else in the order given).
        type: the module's class name.
        representation_shape: shape of rep(x) at this layer, batch included.
        size_ratio: elements of the representation per sample / elements of the optimised input per sample.
        embedding_distance: mean m_g = ||rep(x) - rep(x_g)||.
        reference_distance: mean m_r = ||rep(x) - rep(x')||, x' = x + N(0, sigma^2).
        input_distance: mean m_i = ||x_g - x||.
        perturbation_distance: mean ||x' - x||.
        normalized_feature_error: mean ||rep(x_g) - rep(x)||^2 / ||rep(x)||^2.
        psnr: mean PSNR of x_g against x in dB.
        chance_input_distance: mean ||x_u - x|| for an unrelated input x_u (another sample of the batch, or a
            fixed shuffle of x): the input distance of a guess that knows nothing about x.
        represents: fraction of the inputs with m_g < m_r (1.0: the layer represents every input).
        beats_chance: fraction of the inputs whose inversion lands closer to x than the unrelated input does.
        seconds: wall time of this layer's inversion; in a batched sweep (``provenance.options["batched"]``) the
            layers were optimised together, and this is the total divided by the number of layers.
        steps_run: optimisation steps actually taken.
        stopped: why the inversion ended early, or None.
        blind: with ``sweep(spectrum=...)``: the mean number of input directions the layer cannot see at the inputs
            (:func:`reprinvert.spectrum`), else None.
        condition: with ``sweep(spectrum=...)``: the median condition number of the layer's Jacobian, else None.
            Where the spectrum's iterations did not converge (a warning says so), both are lower bounds.
    """

    layer: str
    index: int
    type: str
    representation_shape: tuple[int, ...]
    size_ratio: float
    embedding_distance: float
    reference_distance: float
    input_distance: float
    perturbation_distance: float
    chance_input_distance: float
    normalized_feature_error: float
    psnr: float
    represents: float
    beats_chance: float
    seconds: float
    steps_run: int
    stopped: str | None
    blind: float | None = None
    condition: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (shapes as lists, non-finite floats as None)."""
        out = asdict(self)
        out["representation_shape"] = list(self.representation_shape)
        return {k: _finite(v) for k, v in out.items()}


@dataclass(frozen=True)
class Sweep:
    """The result of :func:`sweep`.

    Attributes:
        rows: one :class:`SweepRow` per layer, in sweep order.
        inversions: the :class:`~reprinvert.Inversion` of each layer (same order): reconstructions, per-sample
            metrics, loss histories.
        original: the input ``x`` (a detached copy).
        provenance: versions, recipe, seed, device, options.
        seconds: wall time of the whole sweep (layer choice included).
    """

    rows: tuple[SweepRow, ...]
    inversions: tuple[Inversion, ...] = field(repr=False)
    original: torch.Tensor = field(repr=False)
    provenance: Provenance = field(repr=False)
    seconds: float = 0.0

    @property
    def layers(self) -> tuple[str, ...]:
        """The layer names, in sweep order."""
        return tuple(r.layer for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SweepRow]:
        return iter(self.rows)

    def __getitem__(self, layer: str | int) -> Inversion:
        """The inversion of a layer, by name or by position."""
        if isinstance(layer, int) and not isinstance(layer, bool):
            return self.inversions[layer]
        for row, inv in zip(self.rows, self.inversions):
            if row.layer == layer:
                return inv
        raise KeyError(f"layer {layer!r} is not part of this sweep; layers: {list(self.layers)}")

    def reconstructions(self) -> list[torch.Tensor]:
        """``[original, x_g at layer 1, x_g at layer 2, ...]``: the columns of a report grid, each ``(B, ...)``."""
        originals = self.inversions[0].original if self.inversions else self.original
        return [originals, *(inv.input for inv in self.inversions)]

    def table(self, *, per_sample: bool = False) -> list[dict[str, Any]]:
        """The metrics as JSON-ready rows.

        Args:
            per_sample: one row per (layer, input) with that input's metrics, ``represents`` and
                ``beats_chance`` as bools, and the input's name (``provenance.inputs``) when there is one,
                instead of one row per layer with batch means.

        Returns:
            A list of dicts; non-finite values are None.
        """
        if not per_sample:
            return [r.as_dict() for r in self.rows]
        out = []
        names = self.provenance.inputs
        for row, inv in zip(self.rows, self.inversions):
            for i, values in enumerate(inv.metrics.per_sample()):
                named = {"input": names[i]} if i < len(names) else {}
                out.append(
                    {"layer": row.layer, "index": row.index, "sample": i, **named,
                     **{k: _finite(v) for k, v in values.items()}}
                )
        return out

    @classmethod
    def concat(cls, parts: Sequence[Sweep]) -> Sweep:
        """One sweep of the inputs of ``parts``, in order: the same layers, recipe and seed, run on chunks of a
        larger set of inputs (``reprinvert sweep --batch-size``). Per-layer rows are recomputed from the joined
        per-input metrics; times add up.

        Each part's chance baseline is another input of *its* chunk (or, for a chunk of one, a fixed shuffle),
        so the chance figures depend on the chunking; everything else is as one sweep of all the inputs gives.

        Raises:
            ValueError: no parts, or parts of different studies (layers, recipe, seed or options differ).
        """
        if not parts:
            raise ValueError("Sweep.concat needs at least one sweep")
        first = parts[0]
        for part in parts[1:]:
            for what, a, b in (
                ("layers", first.layers, part.layers), ("recipe", first.provenance.recipe, part.provenance.recipe),
                ("seed", first.provenance.seed, part.provenance.seed),
                ("model", first.provenance.model, part.provenance.model),
            ):
                if a != b:
                    raise ValueError(f"cannot join sweeps with different {what}: {a!r} and {b!r}")
        if len(parts) == 1:
            return first
        inversions = tuple(Inversion.concat([p.inversions[k] for p in parts]) for k in range(len(first.rows)))
        rows = tuple(_row(k, inv, first.rows[k].type) for k, inv in enumerate(inversions))
        original = torch.cat([p.original.to(first.original.device) for p in parts])  # (loaded parts: on the CPU)
        provenance = replace(
            first.provenance, input_shape=tuple(original.shape),
            inputs=tuple(name for p in parts for name in p.provenance.inputs),
            created=max(p.provenance.created for p in parts),
        )
        return cls(rows=rows, inversions=inversions, original=original, provenance=provenance,
                   seconds=sum(p.seconds for p in parts))

    def save(self, folder: str | Path) -> Path:
        """Write this sweep into ``folder`` (created if missing); read it back with :func:`reprinvert.load`.

        Files: ``sweep.json`` (the schema version, the provenance, the per-layer rows and the timing),
        ``original.npz`` (the input) and ``layers/NN.npz``, one :meth:`Inversion.save` file per layer in sweep
        order. An open format (JSON and NumPy's ``.npz``); every field round-trips exactly, tensors come back on
        the CPU. ``sweep.json`` is written last, so a folder without it is an incomplete save.

        Returns:
            The folder.
        """
        out = Path(folder)
        try:
            out.mkdir(parents=True, exist_ok=True)
            files = []
            for k, inv in enumerate(self.inversions):
                files.append(inv.save(out / "layers" / f"{k:02d}.npz").relative_to(out).as_posix())
            _archive.write(out / "original.npz", {"original": self.original}, {"schema": SWEEP_SCHEMA})
            document = {
                "schema": SWEEP_SCHEMA,
                "provenance": asdict(self.provenance),
                "rows": [asdict(r) for r in self.rows],
                "seconds": self.seconds,
                "inversions": files,
            }
            partial = out / "sweep.json.partial"
            partial.write_text(json.dumps(_archive.encode(document), indent=1, allow_nan=False) + "\n")
            partial.replace(out / "sweep.json")
        except OSError as exc:
            raise ValueError(f"cannot write the sweep into '{out}': {exc.strerror or exc}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-ready: provenance, per-layer rows and per-sample rows."""
        prov = asdict(self.provenance)
        prov["input_shape"] = list(self.provenance.input_shape)
        return {
            "provenance": prov,
            "seconds": self.seconds,
            "layers": self.table(),
            "per_sample": self.table(per_sample=True),
        }

    def __str__(self) -> str:
        head = ["layer", "shape", "size", *(label for _, label in METRICS), "represents", "s"]
        body = []
        for r in self.rows:
            shape = "x".join(str(v) for v in r.representation_shape[1:]) or "-"
            values = [_fmt(getattr(r, key)) for key, _ in METRICS]
            body.append([r.layer, shape, _fmt(r.size_ratio), *values, f"{r.represents:.0%}", f"{r.seconds:.1f}"])
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines = ["  ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
                 for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: With ``layers=None`` a sweep inverts at most this many layers, evenly spaced (``every=`` chooses otherwise).
MAX_AUTO_LAYERS = 12


def _auto_layers(
    model: nn.Module,
    x: torch.Tensor,
    mode: str,
    start: str | None,
    model_kwargs: Any,
    norm: Normalize | None,
    cap: int | None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The automatic choice of layers, in execution order, and the candidates skipped with the reason."""
    desc = describe(model, x, model_kwargs=dict(model_kwargs) if model_kwargs else None, normalize=norm)
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
        depends = _depends_on(model, x, start, model_kwargs, norm)
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


def _depends_on(
    model: nn.Module, x: torch.Tensor, start: str, model_kwargs: Any, norm: Normalize | None
) -> set[str]:
    """The modules whose output depends (through autograd) on the output of ``start``."""
    depends: set[str] = set()
    handles = []
    try:
        for name, module in model.named_modules():
            if name == start:

                def replace(m: nn.Module, a: Any, out: Any) -> Any:
                    return out.detach().requires_grad_(True).clone() if isinstance(out, torch.Tensor) else None

                handles.append(module.register_forward_hook(replace))
            elif name:

                def record(m: nn.Module, a: Any, out: Any, name: str = name) -> None:
                    if isinstance(out, torch.Tensor) and out.requires_grad:
                        depends.add(name)

                handles.append(module.register_forward_hook(record))
        with torch.inference_mode(False), frozen(model), torch.enable_grad():
            try:
                run_model(model, private_input(normalized_input(x, norm), model_dtype(model)), model_kwargs)
            except Exception:  # a head that rejects the input: what ran before it is recorded
                pass
    finally:
        for h in handles:
            h.remove()
    return depends


def _layer_names(
    model: nn.Module,
    x: torch.Tensor,
    layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None,
    every: int | None,
    start: LayerSpec | None,
    normalize: NormalizeSpec,
) -> list[str]:
    """The layers :func:`sweep` would invert with these arguments (for sharing them out across processes)."""
    model = runnable(model)
    norm = Domain.of(x, normalize=normalize).normalize
    start_name = resolve_layer(model, start)[0] if start is not None else None
    return _choose_layers(model, x, layers, every, start_name, None, norm)[0]


def _choose_layers(
    model: nn.Module,
    x: torch.Tensor,
    layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None,
    every: int | None,
    start: str | None,
    model_kwargs: Any,
    norm: Normalize | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """The layers to invert and, for an automatic choice, the candidates skipped with the reason."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"every={every!r}: expected a positive int (invert every k-th layer) or None")
    skipped: list[tuple[str, str]] = []
    names: list[str]
    if layers is None or (isinstance(layers, str) and layers in ("auto", "top", "leaves", "all")):
        mode = "auto" if layers is None else str(layers)
        cap = MAX_AUTO_LAYERS if every is None else None  # every= thins the whole list instead
        names, skipped = _auto_layers(model, x, mode, start, model_kwargs, norm, cap)
        if mode == "auto" and not names:
            mode = "top"
        if not names:
            raise ValueError(
                f"layers={layers!r}: no {mode!r} layer of {type(model).__name__} ran exactly once with a batch-first "
                "tensor output" + (f" after start={start!r}" if start else "")
                + "; pass the layers to invert explicitly, e.g. layers=reprinvert.list_layers(model)[:3]"
            )
    else:
        specs = [layers] if isinstance(layers, (str, int, nn.Module)) else list(layers)
        if not specs:
            raise ValueError("layers is an empty list; pass None (the model's stages), 'leaves', 'all' or names")
        names = []
        for spec in specs:
            name = resolve_layer(model, spec)[0]
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


def _row(index: int, inv: Inversion, type_name: str) -> SweepRow:
    """The table row of one layer's inversion (batch means)."""
    s = inv.metrics.summary()
    per_sample_in = inv.original[0].numel()
    return SweepRow(
        layer=inv.layer,
        index=index,
        type=type_name,
        representation_shape=tuple(inv.target.shape),
        size_ratio=(inv.target[0].numel() if inv.target.dim() else 1) / max(per_sample_in, 1),
        **{key: s[key] for key, _ in METRICS},
        represents=s["represents"],
        beats_chance=s["beats_chance"],
        seconds=inv.seconds,
        steps_run=inv.steps_run,
        stopped=inv.stopped,
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


#: The schema of a saved :class:`Sweep` (``Sweep.save``); bumped when the format changes.
SWEEP_SCHEMA = "reprinvert.sweep/1"


def load(path: str | Path, *, classes: Mapping[str, type] | None = None) -> Sweep | Inversion:
    """Read a result saved by :meth:`Sweep.save` (a folder) or :meth:`Inversion.save` (a ``.npz`` file), or the
    ``result`` folder the command line writes (its finished chunks joined, see :meth:`Sweep.concat`).

    Args:
        path: the folder of a saved sweep or study, or the file of a saved inversion.
        classes: your own regularizer or parametrisation classes by name, when the saved recipe uses them
            (reprinvert's are found by themselves).

    Returns:
        The :class:`Sweep` or :class:`~reprinvert.Inversion`, equal field by field to the one saved (tensors on
        the CPU).

    Raises:
        ValueError: no saved result at ``path``, an incomplete save, or one written by a newer reprinvert.

    Example:
        >>> import tempfile, pathlib, torch, torch.nn as nn, reprinvert as ri
        >>> res = ri.invert(nn.Linear(4, 3), "", torch.rand(2, 4), steps=5)
        >>> back = ri.load(res.save(pathlib.Path(tempfile.mkdtemp()) / "linear"))
        >>> torch.equal(back.input, res.input), back.recipe == res.recipe
        (True, True)
    """
    p = Path(path)
    if p.is_dir() and not (p / "sweep.json").is_file() and list(p.glob("part-*/sweep.json")):
        # A study the command line saved chunk by chunk (--batch-size): its finished parts, joined in order.
        parts = [load(f.parent, classes=classes) for f in sorted(p.glob("part-*/sweep.json"))]
        return Sweep.concat([part for part in parts if isinstance(part, Sweep)])
    if p.is_dir():
        if not (p / "sweep.json").is_file():
            raise ValueError(
                f"'{p}' has no sweep.json: not a saved sweep, or a save that did not finish (Sweep.save writes "
                "sweep.json last)"
            )
        document = _archive.decode(json.loads((p / "sweep.json").read_text()))
        _check_schema(document.get("schema"), SWEEP_SCHEMA, p / "sweep.json")
        prov = dict(document["provenance"])
        prov["input_shape"] = tuple(prov["input_shape"])
        prov["skipped_layers"] = tuple(tuple(pair) for pair in prov.get("skipped_layers", ()))
        prov["inputs"] = tuple(prov.get("inputs", ()))
        rows = []
        for row in document["rows"]:
            rows.append(SweepRow(**{**row, "representation_shape": tuple(row["representation_shape"])}))
        inversions = []
        for name in document["inversions"]:
            inv = load(p / name, classes=classes)
            assert isinstance(inv, Inversion)
            inversions.append(inv)
        original, _ = _archive.read(p / "original.npz")
        return Sweep(
            rows=tuple(rows), inversions=tuple(inversions), original=original["original"],
            provenance=Provenance(**prov), seconds=document["seconds"],
        )
    if not p.is_file():
        raise ValueError(f"no saved result at '{p}' (a folder written by Sweep.save, or a .npz by Inversion.save)")
    tensors, meta = _archive.read(p)
    _check_schema(meta.get("schema"), INVERSION_SCHEMA, p)
    return Inversion._from_archive(tensors, meta, classes)


def _check_schema(found: Any, expected: str, path: Path) -> None:
    kind = expected.partition("/")[0]
    if not isinstance(found, str) or found.partition("/")[0] != kind:
        raise ValueError(f"'{path}' is not a saved {kind.split('.')[-1]} (schema {found!r}, expected {expected!r})")
    if found != expected:
        raise ValueError(
            f"'{path}' was saved with schema {found!r}; this reprinvert reads {expected!r}: upgrade reprinvert "
            "to read it"
        )


def sweep(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: LayerMode | Sequence[LayerSpec] | LayerSpec | None = None,
    every: int | None = None,
    recipe: Recipe | str = "default",
    steps: int | None = None,
    seed: int = 0,
    clamp: tuple[float, float] | Literal["auto", False] | None = None,
    start: LayerSpec | None = None,
    sigma: float | None = None,
    data_range: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None,
    optimizer: Optimizer | None = None,
    lr: float | None = None,
    loss: Loss | None = None,
    init: Init | torch.Tensor | None = None,
    regularizers: Sequence[Regularizer] | None = None,
    select: Selector = None,
    call: int | None = None,
    track_best: bool = True,
    train: bool = False,
    progress: bool = True,
    batched: bool | None = None,
    normalize: NormalizeSpec = None,
    input_names: Sequence[str] | None = None,
    model_source: Mapping[str, Any] | None = None,
    spectrum: bool | int = False,
    resume: str | Path | None = None,
) -> Sweep:
    """Invert many layers of ``model`` for the inputs ``x`` and tabulate the metrics per layer.

    Each layer is inverted independently by :func:`reprinvert.invert` with the same recipe, steps and seed, so
    rows differ only by the layer. The model and ``x`` come back exactly as they were.

    Args:
        model: any ``nn.Module`` (run in eval mode; parameters, buffers, flags and hooks restored).
        x: the inputs, batch first, e.g. ``(B, C, H, W)`` images in [0, 1] or ``(B, T)`` token ids with
            ``start=``.
        layers: which layers: ``None`` or ``"auto"`` (the model's stages: the children of containers of repeated
            blocks, such as ``h.N``, ``encoder.layer.N``, ``layers.N``, ``_blocks.N``, ``layerK.N``, with the
            stem or embedding before them and the final normalisation after them, thinned evenly to
            :data:`MAX_AUTO_LAYERS`; a model without repeated blocks gets ``"top"``), ``"top"`` (the top-level
            children, looking through a single wrapper container), ``"leaves"`` (every module without children),
            ``"all"`` (every module), a list of layer specifications (names, indices, modules; see
            :func:`reprinvert.resolve_layer`) or one of them. The automatic choices keep only modules that ran
            exactly once with a batch-first tensor output, in execution order, and, with ``start=``, only those
            whose output depends on the start layer's. What was left out, and why, is in
            ``provenance.skipped_layers``.
        every: keep every k-th of the chosen layers: the k-th, 2k-th, ... (1-based); with ``layers=None`` the
            blocks are then not thinned to :data:`MAX_AUTO_LAYERS` first.
        recipe: a :class:`~reprinvert.recipes.Recipe` or its name (see :func:`reprinvert.recipes.available`).
        steps: optimisation steps per layer (default: the recipe's).
        seed: seed of every inversion (initialisation and reference perturbation).
        clamp: ``(low, high)`` bounds of the input after each step, e.g. ``(0, 1)`` for images; ``"auto"``,
            ``False`` (no bounds) or None (the recipe's), as in :func:`reprinvert.invert`.
        start: as in :func:`reprinvert.invert` (token models: the embedding layer).
        sigma: standard deviation of the reference perturbation x' = x + N(0, sigma^2); None: 1/25 of
            ``data_range`` (of the start activation's RMS with ``start=``), as in :func:`reprinvert.invert`.
        data_range: range of the data, for PSNR and the default ``sigma``.
        model_kwargs: extra keyword arguments of the forward call.
        optimizer: override the recipe's optimizer (``"gd"``, ``"sgd"``, ``"adam"``, ``"lbfgs"``).
        lr: override the recipe's learning rate.
        loss: override the recipe's loss (``"l1"``, ``"mse"``, ``"nmse"``, ``"cosine"``).
        init: override the recipe's initialisation, or a tensor of the optimised tensor's shape.
        regularizers: replace the recipe's regularizers.
        select: which tensor of each layer's output (as in :func:`reprinvert.invert`).
        call: which call of a reused module (as in :func:`reprinvert.invert`).
        track_best: return, per sample, the iterate with the lowest loss instead of the last one.
        train: keep the model's training flags instead of switching to eval mode (buffers are restored anyway).
        progress: show progress across layers (tqdm bars when installed, else a line per layer on stderr).
        batched: invert the layers in one batched optimisation (``True``: require it; ``False``: one by one;
            ``None``, the default: only where it is allowed and pays). A batch of L x B inputs in which copy k is
            taken out at the k-th layer does the compute of L separate inversions with larger, fewer kernels and
            gives the same results up to floating-point rounding; it can be faster (small inputs, a GPU) or
            slower (large inputs on a CPU, where bigger kernels gain nothing and the batch leaves the caches). It
            needs every chosen layer's output to feed all that follows (no skip connection around a chosen layer;
            checked with distinct inputs before optimising) and per-sample options only (not L-BFGS, restarts,
            ``start=``, ``select=``, ``call=`` or ``train=True``). With ``None`` a few steps are then timed both
            ways and the memory each layer's backward pass keeps is measured: the layers are batched only if the
            batched step takes at most 0.9x the separate steps, in consecutive groups that fit in half the free
            memory (each group a search of its own). Which mode ran, why not batched, and what was measured
            (``batched_probe``) are in ``provenance.options``. Being measured, the choice can differ between runs
            and machines; the results then agree up to floating-point rounding. Pass ``True`` or ``False`` for
            bit-identical reruns.
        normalize: the model expects ``(x - mean) / std`` (``"imagenet"``, ``"inception"`` or ``(mean, std)``);
            x and every result stay in pixel space (see :func:`reprinvert.invert`).
        input_names: a name per sample of ``x`` (e.g. file names), kept in the provenance and the reports.
        spectrum: also measure each layer's Jacobian spectrum at the inputs (:func:`reprinvert.spectrum`, an
            optimiser-free measure): ``True`` for k = 6 singular values, or an int k; fills ``SweepRow.blind`` and
            ``SweepRow.condition``. Costs a few dozen forward-backward passes per input and layer. Raw inputs only
            (with ``start=`` the rows keep None).
        model_source: where the model came from (e.g. ``{"spec": ..., "weights": ..., "sha256": ...}``), kept in
            the provenance.
        resume: a folder in which each layer's inversion is saved as soon as it is finished (one ``.npz`` per
            layer, :meth:`Inversion.save`), and from which the layers already there are loaded instead of
            inverted again: a sweep interrupted after some layers, called again with the same arguments, does
            only the rest. The folder's ``call.json`` records the call (the model's parameters and buffers, ``x``,
            every setting, hashed); a call that differs is refused rather than mixed in. Which layers were loaded
            is in ``provenance.options["resumed"]``. (A batched search saves its layers when it ends; loaded layers
            are on the CPU, as :func:`reprinvert.load` gives them.)

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
    options: dict[str, Any] = dict(
        optimizer=optimizer, lr=lr, loss=loss, init=init, regularizers=regularizers, select=select, call=call,
        track_best=track_best, train=train,
    )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor(x)")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x has shape {tuple(x.shape)}: an empty batch; pass at least one sample, batch first")
    if input_names is not None and len(input_names) != x.shape[0]:
        raise ValueError(
            f"input_names has {len(input_names)} names for a batch of {x.shape[0]}; give one name per sample"
        )
    base = get_recipe(recipe)
    model = runnable(model)
    domain = Domain.of(x, normalize=normalize, data_range=data_range, sigma=sigma)
    norm = domain.normalize
    start_name = resolve_layer(model, start)[0] if start is not None else None
    names, skipped = _choose_layers(model, x, layers, every, start_name, model_kwargs, norm)
    modules = dict(model.named_modules())

    if not isinstance(spectrum, (bool, int)) or (not isinstance(spectrum, bool) and spectrum < 1):
        raise ValueError(f"spectrum={spectrum!r}: expected True / False or the number of singular values k >= 1")
    if batched not in (None, True, False):
        raise TypeError(f"batched must be None, True or False, got {batched!r}")
    _check_options(train=train, track_best=track_best)
    store = None if resume is None else _Resume(
        Path(resume), model, x, dict(
            recipe=base.to_dict(), steps=steps, seed=seed, clamp=clamp, start=start_name, sigma=sigma,
            data_range=data_range, normalize=None if norm is None else norm.to_dict(), model_kwargs=model_kwargs,
            **options,
        ),
    )
    done = {} if store is None else store.load(names)
    todo = [n for n in names if n not in done]
    batched_inversions: dict[str, Inversion] | None = None
    not_batched: str | None = "batched=False"
    probe: dict[str, Any] = {}
    if batched is not False and len(todo) > 1:
        found, not_batched = _try_batched(
            model, todo, x, base, steps=steps, clamp=clamp, start=start_name, seed=seed, domain=domain,
            model_kwargs=model_kwargs, progress=progress, options=options, measure=batched is None, probe=probe,
        )
        if found is not None:
            batched_inversions = dict(zip(todo, found))
            if store is not None:
                for name, inv in batched_inversions.items():
                    store.save(name, inv)
    elif batched is not False:
        not_batched = "there is only one layer" if not done else f"only {len(todo)} layer(s) left to invert"
    if batched_inversions is None and batched and not (done and len(todo) <= 1):  # (resumed: nothing to batch)
        raise ValueError(f"batched=True, but these layers cannot be inverted as one batch: {not_batched}")
    bar = _LayerBar(names, progress and batched_inversions is None)
    rows: list[SweepRow] = []
    inversions: list[Inversion] = []
    try:
        for k, name in enumerate(names):
            bar.start(k)
            if name in done:
                inv = done[name]
            elif batched_inversions is not None:
                inv = batched_inversions[name]
            else:
                inv = invert(
                    model, name, x, recipe=base, steps=steps, seed=seed, clamp=clamp, start=start_name,
                    model_kwargs=model_kwargs, progress=bar.inner, **domain.keywords(), **options,
                )
                if store is not None:
                    store.save(name, inv)
            row = _row(k, inv, type(modules[name]).__name__)
            if spectrum:
                spec = _spectrum(
                    model, name, x, k=min(6 if spectrum is True else int(spectrum), x[0].numel() - 1),
                    select=options["select"], call=options["call"], model_kwargs=model_kwargs,
                    normalize=domain.normalize,
                ) if start_name is None else None
                if spec is not None:
                    row = replace(row, blind=float(spec.blind.double().mean()),
                                  condition=float(spec.condition.median()))
            rows.append(row)
            inversions.append(inv)
            bar.done()
    finally:
        bar.close()
    rcp = inversions[0].recipe
    provenance = Provenance(
        reprinvert=_version(),
        torch=torch.__version__,
        python=platform.python_version(),
        model=type(model).__name__,
        input_shape=tuple(x.shape),
        input_dtype=str(x.dtype),
        device=str(x.device),
        recipe=rcp.to_dict(),
        seed=seed,
        steps=rcp.steps,
        options={
            "layers": layers if layers is None or isinstance(layers, str) else repr(layers),
            "every": every,
            "clamp": None if rcp.clamp is None else list(rcp.clamp),  # the bounds that applied
            "start": start_name,
            "sigma": sigma,
            "sigma_used": _sigma_used(sigma, data_range, start_name),
            "spectrum": (6 if spectrum is True else int(spectrum)) if spectrum and start_name is None else None,
            "chance": "the previous sample of the batch" if x.shape[0] > 1 else "a fixed shuffle of x's entries",
            "data_range": data_range,
            "normalize": None if norm is None else norm.to_dict(),
            "batched": batched_inversions is not None,
            "layer_seconds": "measured per layer" if batched_inversions is None
            else "share: the batched optimisation's total / number of layers",
            "not_batched_because": None if batched_inversions is not None else not_batched,
            "batched_probe": _probe_summary(probe) if probe else None,
            "resumed": [n for n in names if n in done] if store is not None else None,
            **{
                k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                for k, v in options.items()
                if v is not None
            },
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        skipped_layers=tuple(skipped),
        inputs=tuple(str(n) for n in input_names) if input_names is not None else (),
        model_source=dict(model_source or {}),
    )
    return Sweep(
        rows=tuple(rows),
        inversions=tuple(inversions),
        original=x.detach().clone(),
        provenance=provenance,
        seconds=time.perf_counter() - started,
    )


def _try_batched(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    base: Recipe,
    *,
    steps: int | None,
    clamp: tuple[float, float] | Literal["auto", False] | None,
    start: str | None,
    seed: int,
    domain: Domain,
    model_kwargs: Mapping[str, Any] | None,
    progress: bool,
    options: Mapping[str, Any],
    measure: bool = False,
    probe: dict[str, Any] | None = None,
) -> tuple[list[Inversion] | None, str | None]:
    """The inversions of every layer from one batched optimisation, or None and the reason it was not possible.

    Anything unusual (an error, a check that fails) declines; the layers are then inverted one by one, where a
    genuine mistake (a bad argument, a layer that never runs) gets :func:`reprinvert.invert`'s error.
    """
    from . import _batched
    from .invert import _resolve_recipe

    try:
        rcp = _resolve_recipe(
            base, steps=steps, optimizer=options["optimizer"], lr=options["lr"], loss=options["loss"],
            init=options["init"], regularizers=options["regularizers"], clamp=clamp,
        ).for_input(x, raw=start is None)
        why = _batched.why_not(
            rcp, layers=names, start=start, select=options["select"], call=options["call"], train=options["train"],
        )
        if why is not None:
            return None, why
        init = options["init"] if isinstance(options["init"], torch.Tensor) else None
        if progress and not measure:
            print(f"sweep: {len(names)} layers as one batch ({', '.join(names)}) ...", file=sys.stderr, flush=True)
        return _batched.invert_layers(
            model, names, x, rcp, init=init, seed=seed, domain=domain,
            model_kwargs=model_kwargs, track_best=options["track_best"], progress=progress, measure=measure,
            probe=probe,
        ), None
    except _batched.Declined as declined:
        return None, str(declined)
    except Exception as error:  # the one-by-one path reports genuine errors
        return None, f"{type(error).__name__}: {error}"


class _Resume:
    """A sweep's resume folder: ``call.json`` (what the call was, hashed) and one ``.npz`` per finished layer."""

    def __init__(self, folder: Path, model: nn.Module, x: torch.Tensor, settings: Mapping[str, Any]) -> None:
        import hashlib

        def digest(tensors: Iterator[tuple[str, torch.Tensor]]) -> str:
            h = hashlib.sha256()
            for name, t in tensors:
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            return h.hexdigest()

        def plain(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return "tensor " + digest(iter([("", value)]))
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)

        self.folder = folder
        self.call = {
            "model": type(model).__name__,
            "model_state": digest(iter([*model.named_parameters(), *model.named_buffers()])),
            "x": digest(iter([("x", x)])),
            **{k: plain(v) for k, v in settings.items()},
        }
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"resume={str(folder)!r}: cannot create the folder ({exc.strerror or exc})") from None
        file = folder / "call.json"
        if file.is_file():
            before = json.loads(file.read_text())
            if before != self.call:
                changed = sorted(k for k in set(before) | set(self.call) if before.get(k) != self.call.get(k))
                raise ValueError(
                    f"resume={str(folder)!r} holds layers of another call (different {', '.join(changed)}); pass "
                    "another folder, or delete this one to start over"
                )
        else:
            # (several processes may share the folder, under torchrun: each writes its own partial file)
            partial = file.with_name(f"{file.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(self.call, indent=1) + "\n")
            partial.replace(file)

    def path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"
        return self.folder / f"layer-{safe}.npz"

    def load(self, names: Sequence[str]) -> dict[str, Inversion]:
        """The finished layers among ``names``."""
        out: dict[str, Inversion] = {}
        for name in names:
            if self.path(name).is_file():
                inv = load(self.path(name))
                if isinstance(inv, Inversion) and inv.layer == name:
                    out[name] = inv
        return out

    def save(self, name: str, inv: Inversion) -> None:
        inv.save(self.path(name))


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


def _sigma_used(sigma: float | None, data_range: float, start: str | None) -> float | str:
    """The reference perturbation's standard deviation as the inversions used it."""
    if sigma is not None:
        return float(sigma)
    if start is not None:
        return "1/25 of each sample's RMS at the start layer"
    return data_range / 25


def _version() -> str:
    from ._version import __version__

    return __version__

