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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

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
            epoch (written atomically). If it exists, written by the same call (same sizes, data, seed, initial
            weights), training continues from its last finished epoch, bit for bit as if never interrupted on
            the CPU, and a finished one returns at once with the saved history and no new step; a file from a
            different call is refused. None (default): nothing is saved.

    Returns:
        A :class:`TrainResult` with the per-epoch history.

    Raises:
        ValueError: a bad argument (non-positive sizes, mismatched targets, a non-finite loss), or a
            ``checkpoint`` written by a different call.
    """
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
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter with requires_grad=True: nothing to train")
    dev = torch.device(device) if device is not None else params[0].device
    model.to(dev)
    g = make_generator(seed, None, "cpu")
    g_dev = g if dev.type == "cpu" else make_generator(seed + 1, None, dev)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    flags = [(m, m.training) for m in model.modules()]
    n = data.shape[0]
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    bar: Progress | None = None
    history: list[EpochStats] = []
    steps = 0
    started = time.perf_counter()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fingerprint = (
        _fingerprint(model, data, targets, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     loss=loss, corrupt=corrupt, max_steps=max_steps, seed=seed)
        if ckpt is not None else None
    )
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            # Seed only the generators fork_rng restores (torch.manual_seed would reseed every CUDA device too,
            # or queue a seed for CUDA's lazy start, and leave them changed).
            torch.default_generator.manual_seed(seed)
            if dev.type == "cuda":
                with torch.cuda.device(dev):
                    torch.cuda.manual_seed(seed)
            first = 1
            if ckpt is not None and ckpt.is_file():
                saved = _load_checkpoint(ckpt, fingerprint, model, opt, g, g_dev, dev)
                history = [EpochStats(**h) for h in saved["history"]]
                steps = int(saved["steps"])
                first = int(saved["epoch"]) + 1
                if saved["finished"]:
                    first = epochs + 1
            # a tqdm bar on a terminal; plain lines (a tenth of the steps each, with an estimate) anywhere else;
            # after a resumed checkpoint, over the steps left
            left = total - steps if first <= epochs else 0
            name = f"train {type(model).__name__}" + (f" (resumed at step {steps})" if steps and left else "")
            bar = Progress(left, name, "steps", enabled=progress, lines_every=max(1, left // 10), leave=False)
            for epoch in range(first, epochs + 1):
                t0 = time.perf_counter()
                model.train()
                order = torch.randperm(n, generator=g)
                losses: list[float] = []
                for k in range(per_epoch):
                    idx = order[k * batch_size : (k + 1) * batch_size]
                    clean = data[idx].to(dev)
                    inp = corrupt(clean, g_dev).detach() if corrupt is not None else clean
                    target = targets[idx].to(dev) if targets is not None else clean
                    batch_loss = _loss(loss, model(inp), target)
                    batch_value = float(batch_loss.detach())  # the step's one host synchronisation
                    if not math.isfinite(batch_value):
                        raise ValueError(
                            f"the training loss became {batch_value} at epoch {epoch}, step {steps}; "
                            f"lower lr (now {lr})"
                        )
                    opt.zero_grad(set_to_none=True)
                    batch_loss.backward()
                    opt.step()
                    losses.append(batch_value)
                    steps += 1
                    bar.update(1, postfix={"loss": f"{losses[-1]:.4g}"})
                    if max_steps is not None and steps >= max_steps:
                        break
                val_loss = None
                if val is not None:
                    val_loss = evaluate_loss(
                        model, val, targets=val_targets, loss=loss, batch_size=batch_size, device=dev
                    )
                stats = EpochStats(
                    epoch=epoch, loss=sum(losses) / len(losses), val_loss=val_loss, seconds=time.perf_counter() - t0
                )
                history.append(stats)
                done = epoch == epochs or (max_steps is not None and steps >= max_steps)
                if ckpt is not None:
                    _save_checkpoint(ckpt, fingerprint, model, opt, g, g_dev, dev, history, steps, epoch, done)
                if callback is not None:
                    callback(stats)
                if done:
                    break
    finally:
        opt.zero_grad(set_to_none=True)
        for m, flag in flags:
            m.training = flag
        if bar is not None:
            bar.close()
    return TrainResult(history=tuple(history), steps=steps, seconds=time.perf_counter() - started, seed=seed)


_CHECKPOINT_SCHEMA = 2


def _fingerprint(model: nn.Module, data: torch.Tensor, targets: torch.Tensor | None, **call: object) -> dict:
    """What identifies a training call for its checkpoint: the arguments, the data and the initial weights
    (float64 sums: cheap, and different for any real change)."""

    def digest(t: torch.Tensor | None) -> list[float] | None:
        if t is None:
            return None
        d = t.detach()
        sample = d.flatten()[:: max(1, d.numel() // 997)].double()
        # float64 sums without a float64 copy of the whole tensor
        return [float(d.sum(dtype=torch.float64)), float(torch.linalg.vector_norm(d.flatten(), dtype=torch.float64)
                                                           if d.is_floating_point() else d.double().norm()),
                float(sample.sum())]

    corrupt = call.pop("corrupt")
    return {
        "schema": _CHECKPOINT_SCHEMA,
        **call,
        "corrupt": None if corrupt is None else getattr(corrupt, "__qualname__", type(corrupt).__name__),
        "data_shape": list(data.shape),
        "data": digest(data),
        "targets": digest(targets),
        "model": type(model).__name__,
        "parameters": {k: [list(v.shape), digest(v)] for k, v in model.state_dict().items()
                       if v.is_floating_point()},
    }


def _matches(a: object, b: object) -> bool:
    """Fingerprints agree: equal structure, floats equal to 1e-9 relative (a sum's last bits depend on how many
    threads reduced it, so a resume under another thread count must still match)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_matches(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_matches(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _save_checkpoint(path: Path, fingerprint: dict | None, model: nn.Module, opt: torch.optim.Optimizer,
                     g: torch.Generator, g_dev: torch.Generator, dev: torch.device, history: list[EpochStats],
                     steps: int, epoch: int, finished: bool) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "rng": {"batch": g.get_state(), "device": g_dev.get_state() if g_dev is not g else None,
                "global": torch.default_generator.get_state(),
                "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
        "history": [dataclasses.asdict(h) for h in history],
        "steps": steps,
        "epoch": epoch,
        "finished": finished,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _load_checkpoint(path: Path, fingerprint: dict | None, model: nn.Module, opt: torch.optim.Optimizer,
                     g: torch.Generator, g_dev: torch.Generator, dev: torch.device) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}: {exc}); delete it to start "
                         "afresh") from None
    saved = state.get("fingerprint") if isinstance(state, dict) else None
    if not _matches(saved, fingerprint):
        differ = sorted(k for k in set(saved or {}) | set(fingerprint or {})
                        if not _matches((saved or {}).get(k), (fingerprint or {}).get(k)))
        raise ValueError(f"checkpoint '{path}' was written by a different training call (differs in: "
                         f"{', '.join(differ) or 'format'}); pass another checkpoint= path or delete the file")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    rng = state["rng"]
    g.set_state(rng["batch"])
    if rng["device"] is not None and g_dev is not g:
        g_dev.set_state(rng["device"])
    torch.default_generator.set_state(rng["global"])
    if rng["cuda"] is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], dev)
    return state


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
