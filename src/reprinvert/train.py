"""One training loop for the reference models: Adam, MSE, optional corruption (denoising training).

:func:`train` fits an autoencoder to reproduce its (clean) input, from the input itself or from a corrupted
copy of it; with ``targets=`` it fits any model to given targets (the classifier of the depth study uses
``loss="cross_entropy"``). Randomness (batch order, corruption, dropout) comes only from ``seed``: torch's
global RNG is forked for the duration and comes back as it was.

Example:
    >>> import torch
    >>> from reprinvert.models import ConvAutoencoder
    >>> from reprinvert.train import train
    >>> ae = ConvAutoencoder(channels=(4, 8))
    >>> result = train(ae, torch.rand(16, 3, 8, 8), epochs=2, batch_size=8, progress=False)
    >>> len(result.history)
    2
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._archive import fingerprint
from ._checkpoint import Generators
from ._checkpoint import load as load_checkpoint
from ._checkpoint import save as save_checkpoint
from ._progress import Progress
from ._rng import make_generator

__all__ = ["EpochStats", "TrainResult", "load_weights", "save_weights", "train"]

Corrupt = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    """One epoch of :func:`train`.

    Attributes:
        epoch: 1-based epoch number.
        loss: mean training loss over the epoch's batches (before each update).
        val_loss: loss on ``val`` after the epoch (eval mode), or None.
        seconds: wall time of the epoch.
    """

    epoch: int
    loss: float
    val_loss: float | None
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        history: one :class:`EpochStats` per epoch.
        steps: optimiser steps taken.
        seconds: total wall time.
        seed: the seed of all randomness.
    """

    history: tuple[EpochStats, ...]
    steps: int
    seconds: float
    seed: int

    @property
    def final_loss(self) -> float:
        """Training loss of the last epoch."""
        return self.history[-1].loss

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "history": [vars(e) | {} for e in self.history],
            "steps": self.steps,
            "seconds": self.seconds,
            "seed": self.seed,
        }


def _loss(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(out, target)
    return F.cross_entropy(out, target)


def train(
    model: nn.Module,
    data: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    loss: Literal["mse", "cross_entropy"] = "mse",
    corrupt: Corrupt | None = None,
    val: torch.Tensor | None = None,
    val_targets: torch.Tensor | None = None,
    max_steps: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[EpochStats], None] | None = None,
    checkpoint: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam (the seed author's optimiser) and mean squared error.

    Each step draws a batch (a new random order each epoch), corrupts the inputs if ``corrupt`` is given,
    and fits ``model(input)`` to the target: the clean batch (an autoencoder; with ``corrupt`` a denoising
    autoencoder) or ``targets``. The model is in train mode during training; afterwards every module's
    training flag is what it was before.

    Args:
        model: the model; its parameters are updated in place.
        data: inputs ``(N, ...)``, e.g. ``(N, C, H, W)`` images in [0, 1].
        targets: what to fit instead of ``data`` (same first dimension); class indices for cross entropy.
        epochs: passes over ``data``.
        batch_size: samples per step (the last, smaller batch of an epoch is used too).
        lr: Adam's learning rate (1e-4 as in the seed).
        weight_decay: Adam's weight decay.
        loss: ``"mse"`` or ``"cross_entropy"``.
        corrupt: ``(batch, generator) -> corrupted batch`` for denoising training, e.g.
            ``lambda x, g: reprinvert.corruptions.noise_mix(x, alpha=0.3, generator=g)``.
        val: held-out inputs, scored after every epoch in eval mode (uncorrupted).
        val_targets: targets of ``val`` (default ``val`` itself).
        max_steps: stop after this many optimiser steps in total.
        device: where to train (default: where the model's parameters are). The model stays there.
        seed: seed of the batch order, the corruption and anything the model draws (dropout).
        progress: show progress: a tqdm bar on a terminal with tqdm installed, otherwise a plain line on stderr
            every tenth of the steps with the elapsed time and an estimate of the time left.
        callback: called with each epoch's :class:`EpochStats`.
        checkpoint: a file to save the model, the optimiser, the random state and the history to after every
            epoch (written atomically; a ``.npz`` in reprinvert's one result format, no pickle). If it exists,
            written by the same call (same sizes, data, seed, initial weights), training continues from its last
            finished epoch, bit for bit as if never interrupted on the CPU, and a finished one returns at once with
            the saved history and no new step; a file from a different call is refused. None (default): nothing
            is saved.

    Returns:
        A :class:`TrainResult` with the per-epoch history.

    Raises:
        ValueError: a bad argument (non-positive sizes, mismatched targets, a non-finite loss), or a
            ``checkpoint`` written by a different call.
    """
    _check(data, targets, epochs=epochs, batch_size=batch_size, max_steps=max_steps, loss=loss, lr=lr)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
    dev = torch.device(device) if device is not None else params[0].device
    model.to(dev)
    g = make_generator(seed, None, "cpu")
    rngs = Generators(batch=g, device=g if dev.type == "cpu" else make_generator(seed + 1, None, dev), where=dev)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    # The initial weights, the data and the settings: what a checkpoint must have been written by to be resumed.
    identity = fingerprint(
        model=model, data=data, targets=targets, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, loss=loss, max_steps=max_steps, seed=seed,
        corrupt=None if corrupt is None else getattr(corrupt, "__qualname__", type(corrupt).__name__),
    ) if ckpt is not None else {}
    loop = _Loop(model, opt, data, targets, corrupt, loss, batch_size, max_steps, rngs, lr=lr, epochs=epochs,
                 checkpoint=ckpt, identity=identity)
    flags = [(m, m.training) for m in model.modules()]
    started = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            _seed_global(seed, dev)
            first = loop.resume()
            # a tqdm bar on a terminal; plain lines (a tenth of the steps each, with an estimate) anywhere else;
            # after a resumed checkpoint, over the steps left
            total = loop.per_epoch * epochs if max_steps is None else min(loop.per_epoch * epochs, max_steps)
            left = total - loop.steps if first <= epochs else 0
            name = f"train {type(model).__name__}" + (f" (resumed at step {loop.steps})" if loop.steps and left else "")
            loop.bar = Progress(left, name, "steps", enabled=progress, lines_every=max(1, left // 10), leave=False)
            loop.run(first, val, val_targets, callback)
    finally:
        opt.zero_grad(set_to_none=True)
        for m, flag in flags:
            m.training = flag
        if loop.bar is not None:
            loop.bar.close()
    return TrainResult(history=tuple(loop.history), steps=loop.steps, seconds=time.perf_counter() - started, seed=seed)


def _seed_global(seed: int, dev: torch.device) -> None:
    """Seed only the generators ``fork_rng`` restores (``torch.manual_seed`` would reseed every CUDA device too, or
    queue a seed for CUDA's lazy start, and leave them changed)."""
    torch.default_generator.manual_seed(seed)
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.manual_seed(seed)


def _check(
    data: Any, targets: torch.Tensor | None, *, epochs: Any, batch_size: Any, max_steps: Any, loss: Any, lr: Any,
) -> None:
    """Refuse bad arguments of :func:`train` before any work, naming the argument and the fix."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive int")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps={max_steps!r}: expected a positive int or None")
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] == 0:
        raise ValueError(f"data must be a non-empty (N, ...) tensor, got {getattr(data, 'shape', type(data))}")
    if targets is not None and targets.shape[0] != data.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} samples but data has {data.shape[0]}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss={loss!r}: expected 'mse' or 'cross_entropy'")
    if loss == "cross_entropy" and targets is None:
        raise ValueError("loss='cross_entropy' needs targets= (class indices)")
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected a positive learning rate")


@dataclass
class _Loop:
    """The steps of :func:`train`: batches in a new random order each epoch, corrupted, fitted with Adam."""

    model: nn.Module
    opt: torch.optim.Optimizer
    data: torch.Tensor
    targets: torch.Tensor | None
    corrupt: Corrupt | None
    loss: Literal["mse", "cross_entropy"]
    batch_size: int
    max_steps: int | None
    rngs: Generators
    lr: float
    epochs: int
    checkpoint: Path | None
    identity: dict[str, Any]
    steps: int = 0
    history: list[EpochStats] = dataclasses.field(default_factory=list)
    bar: Progress | None = None

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.data.shape[0] / self.batch_size)

    def run(
        self, first: int, val: torch.Tensor | None, val_targets: torch.Tensor | None,
        callback: Callable[[EpochStats], None] | None,
    ) -> None:
        """The epochs from ``first`` on, each scored on ``val`` (eval mode), recorded and passed to ``callback``."""
        for epoch in range(first, self.epochs + 1):
            t0 = time.perf_counter()
            losses = self.epoch(epoch)
            val_loss = None
            if val is not None:
                val_loss = evaluate_loss(self.model, val, targets=val_targets, loss=self.loss,
                                         batch_size=self.batch_size, device=self.rngs.where)
            stats = EpochStats(
                epoch=epoch, loss=sum(losses) / len(losses), val_loss=val_loss, seconds=time.perf_counter() - t0
            )
            done = self.finish(stats)
            if callback is not None:
                callback(stats)
            if done:
                break

    def resume(self) -> int:
        """The first epoch to run: 1, or the one after the checkpoint's last (past the end for a finished one)."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return 1
        saved = load_checkpoint(self.checkpoint, self.identity, self.model, self.opt, self.rngs)
        self.history = [EpochStats(**h) for h in saved["history"]]
        self.steps = int(saved["steps"])
        return self.epochs + 1 if saved["finished"] else int(saved["epoch"]) + 1

    def finish(self, stats: EpochStats) -> bool:
        """Record a finished epoch (and checkpoint it); whether training is done."""
        self.history.append(stats)
        done = stats.epoch == self.epochs or (self.max_steps is not None and self.steps >= self.max_steps)
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.identity, self.model, self.opt, self.rngs, {
                "history": [dataclasses.asdict(h) for h in self.history], "steps": self.steps, "epoch": stats.epoch,
                "finished": done,
            })
        return done

    def epoch(self, epoch: int) -> list[float]:
        """One epoch's steps (fewer where ``max_steps`` is reached); each batch's loss before its update."""
        dev = self.rngs.where
        self.model.train()
        order = torch.randperm(self.data.shape[0], generator=self.rngs.batch)
        losses: list[float] = []
        for k in range(self.per_epoch):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            clean = self.data[idx].to(dev)
            inp = self.corrupt(clean, self.rngs.device).detach() if self.corrupt is not None else clean
            target = self.targets[idx].to(dev) if self.targets is not None else clean
            batch_loss = _loss(self.loss, self.model(inp), target)
            batch_value = float(batch_loss.detach())  # the step's one host synchronisation
            if not math.isfinite(batch_value):
                raise ValueError(
                    f"the training loss became {batch_value} at epoch {epoch}, step {self.steps}; "
                    f"lower lr (now {self.lr})"
                )
            self.opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            self.opt.step()
            losses.append(batch_value)
            self.steps += 1
            if self.bar is not None:
                self.bar.update(1, postfix={"loss": f"{losses[-1]:.4g}"})
            if self.max_steps is not None and self.steps >= self.max_steps:
                break
        return losses


def evaluate_loss(
    model: nn.Module,
    data: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    loss: Literal["mse", "cross_entropy"] = "mse",
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> float:
    """Mean loss of ``model`` (in eval mode, no gradients) on ``data``; training flags restored afterwards."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    flags = [(m, m.training) for m in model.modules()]
    total, count = 0.0, 0
    try:
        model.eval()
        with torch.no_grad():
            for k in range(0, data.shape[0], batch_size):
                x = data[k : k + batch_size].to(dev)
                t = targets[k : k + batch_size].to(dev) if targets is not None else x
                total += float(_loss(loss, model(x), t)) * x.shape[0]
                count += x.shape[0]
    finally:
        for m, flag in flags:
            m.training = flag
    return total / count


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model.state_dict()`` with ``torch.save`` (parent folders created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, p)
    return p


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load weights saved by :func:`save_weights` (read with ``weights_only=True``) into ``model``; returns it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no weights file at '{p}'")
    state = torch.load(p, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=strict)
    return model
