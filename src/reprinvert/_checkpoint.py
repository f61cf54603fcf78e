"""Private: a training checkpoint, in the one on-disk format (:mod:`reprinvert._archive`) with the one fingerprint.

A checkpoint is one ``.npz`` file: the model's state dict under ``model/<name>``, the optimiser's tensors under
``optimizer/...``, the random generators' states under ``rng/<name>``, and a JSON document with the fingerprint
of the training call, the optimiser's other settings and the history so far. Nothing is pickled, so reading a
checkpoint runs no code. A file whose fingerprint differs from the current call's is refused with
:class:`~reprinvert._archive.Mismatch`, which names what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._archive import Mismatch, differences, read, write

__all__ = ["FORMAT", "Generators", "load", "save"]

#: The format of a checkpoint's JSON document: files of another format are refused.
FORMAT = "reprinvert.train-checkpoint/1"


@dataclass(frozen=True)
class Generators:
    """The random state a training call draws from: the batch order's generator, the device's (corruption,
    which is ``batch`` itself on the CPU), torch's global generator and, on CUDA, the device's global one."""

    batch: torch.Generator
    device: torch.Generator
    where: torch.device

    def states(self) -> dict[str, torch.Tensor]:
        out = {"rng/batch": self.batch.get_state(), "rng/global": torch.default_generator.get_state()}
        if self.device is not self.batch:
            out["rng/device"] = self.device.get_state()
        if self.where.type == "cuda":
            out["rng/cuda"] = torch.cuda.get_rng_state(self.where)
        return out

    def restore(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.batch.set_state(tensors["rng/batch"])
        torch.default_generator.set_state(tensors["rng/global"])
        if "rng/device" in tensors and self.device is not self.batch:
            self.device.set_state(tensors["rng/device"])
        if "rng/cuda" in tensors and self.where.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.where)


def save(
    path: Path, fingerprint: Mapping[str, Any], model: nn.Module, opt: torch.optim.Optimizer, rngs: Generators,
    record: Mapping[str, Any],
) -> Path:
    """Write the training state to ``path`` atomically; ``record`` is the JSON-ready history and progress."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    optimizer = _flatten(opt.state_dict(), "optimizer", tensors)
    tensors.update(rngs.states())
    return write(path, tensors, {"format": FORMAT, "fingerprint": dict(fingerprint), "optimizer": optimizer,
                                 **record})


def load(
    path: Path, fingerprint: Mapping[str, Any], model: nn.Module, opt: torch.optim.Optimizer, rngs: Generators,
) -> dict[str, Any]:
    """Restore the model, the optimiser and the generators from ``path``; returns the saved record.

    Raises:
        ValueError: the file cannot be read as a checkpoint.
        Mismatch: it was written by a different training call (``differences`` names the settings).
    """
    try:
        tensors, meta = read(path)
    except ValueError as error:
        raise ValueError(f"checkpoint '{path}' cannot be read ({error}); delete it to start afresh") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint '{path}' is not a reprinvert training checkpoint (format "
                         f"{meta.get('format')!r}); pass another checkpoint= path or delete the file")
    differ = differences(meta.get("fingerprint"), fingerprint)
    if differ:
        raise Mismatch(f"checkpoint '{path}' was written by a different training call (differs in: "
                       f"{', '.join(differ)}); pass another checkpoint= path or delete the file", differ)
    model.load_state_dict({k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")})
    opt.load_state_dict(_unflatten(meta["optimizer"], tensors))
    rngs.restore(tensors)
    return meta


def _flatten(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON: each tensor moved into ``tensors`` under its path (a ``{"__tensor__": path}`` left in its
    place), a mapping with keys other than strings (an optimiser's per-parameter state) as its list of items."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value
        return {"__tensor__": name}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _flatten(v, f"{name}/{k}", tensors) for k, v in value.items()}
        return {"__items__": [[k, _flatten(v, f"{name}/{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{name}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _unflatten(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_flatten` (tuples come back as lists)."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__items__"}:
            return {k: _unflatten(v, tensors) for k, v in value["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value
