"""Private: what a search records per step (:class:`History`) and shows a callback (:class:`StepInfo`)."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import torch

__all__ = ["History", "Recorder", "StepInfo"]


@dataclass(frozen=True)
class History:
    """Per-step losses of an inversion, each term separately.

    Attributes:
        terms: ``{"data": ..., "<regularizer name>": ..., "total": ...}``, each a CPU tensor of shape
            ``(steps, B)`` (the value per sample at each step, before that step's update; the data term includes
            ``loss_scale``). With restarts, the run that produced the returned input is kept.
        lr: the learning rate of each step, shape ``(steps,)``.
        input_distance: m_i of each step's iterate, ``||x_i - x||`` per sample, shape ``(steps, B)`` (before that
            step's update, like the losses; in the start layer's units with ``start=``): the convergence of the
            search in input space. Empty when not recorded.
    """

    terms: dict[str, torch.Tensor]
    lr: torch.Tensor
    input_distance: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))

    def __getitem__(self, term: str) -> torch.Tensor:
        if term not in self.terms:
            raise KeyError(f"{term!r} is not a recorded term; terms: {list(self.terms)}")
        return self.terms[term]

    @property
    def total(self) -> torch.Tensor:
        """The summed loss per step and sample, ``(steps, B)``."""
        return self.terms["total"]

    def as_dict(self) -> dict[str, list[list[float]]]:
        """JSON-ready: ``{term: [[per-sample values] per step]}``."""
        out = {k: v.tolist() for k, v in self.terms.items()}
        out["lr"] = [[v] for v in self.lr.tolist()]
        if self.input_distance.numel():
            out["input_distance"] = self.input_distance.tolist()
        return out


@dataclass(frozen=True)
class StepInfo:
    """What a ``callback`` receives after each step.

    Attributes:
        step: 0-based index of the step just taken.
        steps: total steps planned.
        loss: per-sample total loss at this step ``(B,)`` (detached).
        input: the iterate after the update (a detached copy: storing it keeps this step's values).
        lr: learning rate of the step.
    """

    step: int
    steps: int
    loss: torch.Tensor
    input: torch.Tensor
    lr: float


# Rows of the history allocated at a time.
_HISTORY_BLOCK = 1024


class Recorder:
    """The history of one run as it is written: per step a row of the loss terms, the total and the iterate's input
    distance, grown in blocks (a long plan that a callback stops early costs what ran), and the learning rates in a
    preallocated array of doubles (no tensor write, no allocation per step)."""

    def __init__(self, names: list[str], steps: int, batch: int, dtype: torch.dtype, device: torch.device) -> None:
        self.names, self.steps, self.batch, self.dtype, self.device = names, steps, batch, dtype, device
        self.blocks: list[torch.Tensor] = []
        self.block_rows: list[tuple[torch.Tensor, ...]] = []  # each block's rows as views, made once
        self.lrs = array("d", [math.nan]) * steps

    def row(self, step: int) -> torch.Tensor:
        """The row of step ``step``: one per loss term, then ``total``, then the iterate's input distance."""
        while step >= len(self.blocks) * _HISTORY_BLOCK:
            rows = min(_HISTORY_BLOCK, self.steps - len(self.blocks) * _HISTORY_BLOCK)
            self.blocks.append(
                torch.full((rows, len(self.names) + 1, self.batch), float("nan"), dtype=self.dtype, device=self.device)
            )
            self.block_rows.append(self.blocks[-1].unbind(0))
        return self.block_rows[step // _HISTORY_BLOCK][step % _HISTORY_BLOCK]

    def upto(self, upto: int) -> torch.Tensor:
        """The rows of the steps before ``upto``, ``(upto, terms + 1, B)``."""
        if not self.blocks:
            return torch.empty((0, len(self.names) + 1, self.batch), dtype=self.dtype, device=self.device)
        return torch.cat(self.blocks)[:upto]

    def first_nonfinite(self, upto: int) -> tuple[int, list[int]]:
        """The first recorded step < ``upto`` with a non-finite total loss, and its non-finite samples."""
        bad = ~torch.isfinite(self.upto(upto)[:, -2])
        first = int(bad.any(1).nonzero()[0, 0])
        return first, bad[first].nonzero().flatten().tolist()

    def history(self, steps_run: int) -> History:
        hist = self.upto(steps_run).permute(1, 0, 2).detach().cpu()
        return History(
            terms={n: hist[k] for k, n in enumerate(self.names)},
            lr=torch.frombuffer(self.lrs, dtype=torch.float64)[:steps_run].float(),
            input_distance=hist[-1],
        )
