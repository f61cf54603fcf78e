"""The result of one layer's inversion: :class:`Inversion`, what it holds, how parts join and how it is saved."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import _archive
from ._search import History
from ._verdict import Verdict, judge
from .metrics import InversionMetrics
from .recipes import Recipe
from .recipes import from_dict as recipe_from_dict

__all__ = ["INVERSION_SCHEMA", "Inversion"]


#: The schema of a saved :class:`Inversion` (``Inversion.save``); bumped when the format changes.
INVERSION_SCHEMA = "reprinvert.inversion/1"


@dataclass(frozen=True)
class Inversion:
    """The result of :func:`invert`.

    Attributes:
        input: the reconstructed input, same shape, dtype and device as ``x`` (for ``start=`` inversions: the
            optimised tensor at the start layer, in its shape and dtype).
        metrics: per-sample :class:`~reprinvert.metrics.InversionMetrics` (``.summary()`` for means).
        history: per-step losses, each term separately.
        layer: resolved name of the inverted layer.
        start: resolved name of the start layer, or None when the raw input was optimised.
        target: rep(x), detached.
        representation: rep(input), detached.
        best_step: per sample, the step whose iterate was returned (``steps`` = the final iterate).
        steps_run: steps actually taken (fewer when a callback stopped early or a NaN appeared).
        stopped: why the run ended early, or None.
        recipe: the recipe used, with the overrides applied.
        seed: the seed, if randomness came from one.
        seconds: wall time of the optimisation.
        original: the tensor that was optimised towards: ``x`` or, with ``start=``, the start layer's output.
        parametrization: what the search updated: ``"pixel"``, ``"pyramid"``, ``"fourier"``, or e.g.
            ``"pyramid, then pixel from step 200"`` (see :mod:`reprinvert.parametrizations`).
    """

    input: torch.Tensor
    metrics: InversionMetrics
    history: History
    layer: str
    start: str | None
    target: torch.Tensor
    representation: torch.Tensor
    best_step: torch.Tensor
    steps_run: int
    stopped: str | None
    recipe: Recipe
    seed: int | None
    seconds: float
    original: torch.Tensor = field(repr=False)
    parametrization: str = "pixel"

    @property
    def verdict(self) -> tuple[Verdict, ...]:
        """Per sample, what this inversion shows about the layer: a :class:`~reprinvert.Verdict`, ``"kept"`` (the
        search reproduced the representation and landed on x), ``"lost"`` (it reproduced the representation far from
        x: the reconstruction is a witness) or ``"undecided"`` (it did not reproduce the representation: no
        conclusion), with its evidence and notes (at chance level; farther from x than the search's start).

        Example:
            >>> import torch, torch.nn as nn, reprinvert as ri
            >>> torch.manual_seed(0); layer = nn.Linear(8, 32)  # injective: x is recoverable
            <torch._C.Generator object at ...>
            >>> ri.invert(layer, "", torch.rand(2, 8), steps=300, lr=0.05).verdict[0].label
            'kept'
        """
        m = self.metrics
        start = self.history.input_distance[0] if self.history.input_distance.shape[0] else None
        return judge(m.embedding_distance, m.reference_distance, m.input_distance, m.perturbation_distance,
                     m.chance_input_distance, start)

    @classmethod
    def concat(cls, parts: Sequence[Inversion]) -> Inversion:
        """One result for the samples of ``parts``, in order: inversions of the same layer with the same recipe
        on different inputs. Histories of different lengths (a run stopped early) are padded with NaN; times
        add up; ``steps_run`` is the longest run. Parts on different devices (a result computed on a GPU and one
        loaded from disk, which comes back on the CPU) are joined on the first part's device.

        Raises:
            ValueError: no parts, or parts of different layers, start layers or recipes.
        """
        if not parts:
            raise ValueError("Inversion.concat needs at least one inversion")
        first = parts[0]
        for part in parts[1:]:
            if (part.layer, part.start, part.recipe) != (first.layer, first.start, first.recipe):
                raise ValueError(
                    f"cannot join inversions of different layers or recipes: {first.layer!r} ({first.recipe.name}) "
                    f"and {part.layer!r} ({part.recipe.name})"
                )
        steps = max(p.history.lr.shape[0] for p in parts)

        def padded(t: torch.Tensor) -> torch.Tensor:  # (steps_i, B) -> (steps, B)
            if t.dim() < 2 or t.shape[0] == steps:
                return t
            return torch.cat([t, t.new_full((steps - t.shape[0], *t.shape[1:]), float("nan"))])

        device = first.input.device

        def cat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
            return torch.cat([t.to(device) for t in tensors], dim=dim)

        longest = max(parts, key=lambda p: p.history.lr.shape[0])
        stopped = [p.stopped for p in parts if p.stopped]
        return cls(
            input=cat([p.input for p in parts]),
            metrics=InversionMetrics(**{
                f.name: cat([getattr(p.metrics, f.name) for p in parts]) for f in dataclasses.fields(first.metrics)
            }),
            history=History(
                terms={k: cat([padded(p.history.terms[k]) for p in parts], 1) for k in first.history.terms},
                lr=longest.history.lr,
                input_distance=cat([padded(p.history.input_distance) for p in parts], 1),
            ),
            layer=first.layer, start=first.start, target=cat([p.target for p in parts]),
            representation=cat([p.representation for p in parts]), best_step=cat([p.best_step for p in parts]),
            steps_run=max(p.steps_run for p in parts), stopped="; ".join(stopped) if stopped else None,
            recipe=first.recipe, seed=first.seed, seconds=sum(p.seconds for p in parts),
            original=cat([p.original for p in parts]), parametrization=first.parametrization,
        )

    def save(self, path: str | Path) -> Path:
        """Write this result to one ``.npz`` file (the suffix is added when missing); read it with
        :func:`reprinvert.load`.

        The file is NumPy's open format: every tensor (the input, the original, the target, the representation,
        the metrics, the loss history) as an array in its dtype, and the rest (layer names, recipe, seed, steps,
        timing) as JSON with a schema version. Every field round-trips exactly; tensors come back on the CPU.

        Returns:
            The path written.
        """
        target = Path(path)
        if target.suffix != ".npz":
            target = target.with_name(target.name + ".npz")
        tensors = {
            "input": self.input, "original": self.original, "target": self.target,
            "representation": self.representation, "best_step": self.best_step,
            "history/lr": self.history.lr, "history/input_distance": self.history.input_distance,
            **{f"history/terms/{k}": v for k, v in self.history.terms.items()},
            **{f"metrics/{f.name}": getattr(self.metrics, f.name) for f in dataclasses.fields(self.metrics)},
        }
        meta = {
            "schema": INVERSION_SCHEMA, "layer": self.layer, "start": self.start, "steps_run": self.steps_run,
            "stopped": self.stopped, "recipe": self.recipe.to_dict(), "seed": self.seed, "seconds": self.seconds,
            "parametrization": self.parametrization, "history_terms": list(self.history.terms),
            "device": str(self.input.device),
        }
        try:
            return _archive.write(target, tensors, meta)
        except OSError as exc:
            raise ValueError(f"cannot write '{target}': {exc.strerror or exc}") from None

    @classmethod
    def _from_archive(
        cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], classes: Mapping[str, type] | None
    ) -> Inversion:
        """The result :meth:`save` wrote (see :func:`reprinvert.load`)."""
        return cls(
            input=tensors["input"],
            metrics=InversionMetrics(**{
                f.name: tensors[f"metrics/{f.name}"] for f in dataclasses.fields(InversionMetrics)
            }),
            history=History(
                terms={k: tensors[f"history/terms/{k}"] for k in meta["history_terms"]},
                lr=tensors["history/lr"], input_distance=tensors["history/input_distance"],
            ),
            layer=meta["layer"], start=meta["start"], target=tensors["target"],
            representation=tensors["representation"], best_step=tensors["best_step"], steps_run=meta["steps_run"],
            stopped=meta["stopped"], recipe=recipe_from_dict(meta["recipe"], classes=classes), seed=meta["seed"],
            seconds=meta["seconds"], original=tensors["original"], parametrization=meta["parametrization"],
        )

    def __repr__(self) -> str:
        return (
            f"Inversion(layer={self.layer!r}, input={tuple(self.input.shape)}, steps_run={self.steps_run}, "
            f"recipe={self.recipe.name!r}, {self.metrics})"
        )
