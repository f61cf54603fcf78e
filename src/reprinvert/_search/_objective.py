"""Private: what a search minimises: the problem (forward, targets, dtype), the start, and the per-sample loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._tensors import flatten_batch
from ..recipes import Init, Loss, Recipe
from ..regularizers import Regularizer

__all__ = ["Objective", "Problem", "Targets", "data_loss", "initial"]


@dataclass(frozen=True)
class Targets:
    """What the data term compares with: per chunk of the batch (one chunk per layer in a batched sweep).

    Attributes:
        flat: the target representations, each ``(B_k, n_k)`` in the search's dtype.
        squared: their squared norms ``(B_k,)`` (kept away from 0), for ``"nmse"`` and ``"cosine"``.
    """

    flat: tuple[torch.Tensor, ...]
    squared: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, targets: Sequence[torch.Tensor], batch: int, dtype: torch.dtype) -> Targets:
        flat = tuple(flatten_batch(t, batch).to(dtype) for t in targets)
        return cls(flat=flat, squared=tuple(t.pow(2).sum(1).clamp_min(torch.finfo(dtype).tiny) for t in flat))


@dataclass(frozen=True)
class Problem:
    """What a search inverts.

    Attributes:
        forward: input -> representation (or a list, one per chunk of ``targets``), differentiable.
        original: a tensor of the searched input's shape, device and layout (the caller's x, or the start layer's
            output); its values are read only for the history's input distance and to shape the start.
        targets: the data term's targets.
        dtype: the dtype of the search (float32, or float64 for float64 inputs).
        spatial: the input is a raw input with a spatial layout (False for ``start=`` activations): decides
            whether an image parametrisation applies.
        units: for an activation (``start=``), its scale relative to data in [0, 1] (2 x its root-mean-square
            value): Adam's learning rate is multiplied by it, and the ``"seed"`` and ``"grey"`` starts are
            centred on 0 at that scale. None for raw inputs.
    """

    forward: Callable[[torch.Tensor], Any]
    original: torch.Tensor
    targets: Targets
    dtype: torch.dtype
    spatial: bool = True
    units: float | None = None


class Objective:
    """The per-sample total loss of a recipe: the random transforms applied to the iterate, the data term against
    the targets (scaled), then the penalties; each term, the total and the iterate's input distance recorded in
    the history row it is given."""

    def __init__(self, problem: Problem, rcp: Recipe, transform_generator: torch.Generator) -> None:
        regs = rcp.regularizers
        if len({r.name for r in regs}) != len(regs):
            raise ValueError(f"regularizers have repeated names {[r.name for r in regs]}; give each kind at most once")
        self.penalties = [r for r in regs if type(r).penalty is not Regularizer.penalty]
        self.transforms = [r for r in regs if type(r).transform is not Regularizer.transform]
        self.names = ["data"] + [r.name for r in self.penalties] + ["total"]
        self.problem, self.rcp, self.tg = problem, rcp, transform_generator
        self.batch = problem.original.shape[0]
        self.original_flat = flatten_batch(problem.original, self.batch).to(problem.dtype)

    def __call__(self, x: torch.Tensor, t: float, record: torch.Tensor | None) -> torch.Tensor:
        """Per-sample total loss at the input ``x``; records each term in the history row ``record`` if given."""
        xin = x
        for r in self.transforms:
            xin = r.transform(xin, t, self.tg)
        total = data = self._data(self.problem.forward(xin))
        terms = [data]
        for r in self.penalties:
            p = r.penalty(x, t)
            if p is not None:
                total = total + p
                terms.append(p)
        if record is not None:  # one write per step: every term, the total and the iterate's input distance
            # x is the search's own (B, ...) tensor in ``dtype``: a plain reshape flattens it
            distance = torch.linalg.vector_norm(x.detach().reshape(self.batch, -1) - self.original_flat, dim=1)
            torch.stack([*(p.detach() for p in terms), total.detach(), distance], out=record)
        return total

    def _data(self, out: Any) -> torch.Tensor:
        targets, dtype, kind = self.problem.targets, self.problem.dtype, self.rcp.loss
        if isinstance(out, list):  # a batched sweep: one representation per chunk
            data = torch.cat([
                data_loss(kind, flatten_batch(o, tf.shape[0]).to(dtype), tf, sq)
                for o, tf, sq in zip(out, targets.flat, targets.squared)
            ])
        else:
            tf = targets.flat[0]
            n = tf.shape[0]
            if out.dtype == dtype and out.dim() > 1 and out.shape[0] == n:  # the usual case: a plain view
                rep = out.reshape(n, -1)
            else:
                rep = flatten_batch(out, n).to(dtype)
            data = data_loss(kind, rep, tf, targets.squared[0])
        return data * self.rcp.loss_scale if self.rcp.loss_scale != 1.0 else data


def data_loss(kind: Loss, rep: torch.Tensor, target: torch.Tensor, target_sq: torch.Tensor) -> torch.Tensor:
    """Per-sample data term, shape ``(B,)``; ``rep`` and ``target`` are ``(B, n)`` float tensors."""
    diff = rep - target
    if kind == "l1":
        return diff.abs().sum(1)
    if kind == "mse":
        return diff.pow(2).mean(1)
    if kind == "nmse":
        return diff.pow(2).sum(1) / target_sq
    # cosine: 1 - cos, with the norms kept away from 0
    num = (rep * target).sum(1)
    den = torch.sqrt(rep.pow(2).sum(1).clamp_min(1e-24) * target_sq)
    return 1 - num / den


def initial(
    init: Init | torch.Tensor,
    like: torch.Tensor,
    dtype: torch.dtype,
    generator: torch.Generator,
    *,
    units: float | None = None,
) -> torch.Tensor:
    """The starting point of a search, shaped like ``like`` (in its layout for channels-last images).

    With ``units`` (an activation's scale, see :func:`search`) the ``"seed"`` and ``"grey"`` starts, which are
    meant for data in [0, 1], are moved to a zero-centred activation: N((c - 0.5) * units, (0.05 * units)^2).
    """
    if units is not None and isinstance(init, str) and init in ("seed", "grey"):
        centre = (0.7 if init == "seed" else 0.5) - 0.5
        noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=dtype)
        return centre * units + 0.05 * units * noise
    z = _initial_values(init, like, dtype, generator)
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        # A channels-last input (for a channels-last model) is optimised in that layout: no conversion per step.
        z = z.contiguous(memory_format=torch.channels_last)
    return z


def _initial_values(
    init: Init | torch.Tensor, like: torch.Tensor, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    shape, device = like.shape, like.device
    if isinstance(init, torch.Tensor):
        if init.shape != shape:
            raise ValueError(
                f"init has shape {tuple(init.shape)}, but the optimised tensor has shape {tuple(shape)}; "
                "pass a tensor of that shape"
            )
        return init.detach().to(device=device, dtype=dtype).clone()
    if init == "seed":
        return 0.7 + 0.05 * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if init == "grey":
        return 0.5 + 0.05 * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if init == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    if init == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    if init == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    raise ValueError(
        f"init={init!r}: expected 'seed', 'grey', 'zeros', 'uniform', 'normal' or a tensor of the input's shape"
    )
