"""Private: per sample, the best iterate of a run so far, frozen at the first non-finite loss.

One rule, for every device: a sample's iterate is kept at a step whose total loss is lower than its best so far;
once any loss has been non-finite (NaN or +-Inf), nothing is taken any more, so the best iterate stays the best
finite one. Where the rule's numbers live is the one difference between devices:

* on the CPU, reading a value waits for nothing: the losses are read once per step and compared as Python numbers
  (the float32 or float64 values, exactly), and the iterate is copied only where it improved;
* on an accelerator nothing is read: the best losses are a tensor, and a *guard* (0 while every loss has been
  finite, NaN for ever after the first that is not; the sum of a step's losses times 0 is NaN exactly when one of
  them is non-finite, summed in float64 so that finite losses cannot overflow, float32 on MPS) is added to them, so
  no comparison succeeds after a non-finite loss. Two small operations per step, no host synchronisation.

Both give the same result, bit for bit (``tests/test_invert.py`` runs both on the CPU).
"""

from __future__ import annotations

import math

import torch

__all__ = ["Best", "host_bookkeeping"]


def host_bookkeeping(device: torch.device) -> bool:
    """Whether the rule's numbers live on the host: on the CPU, where reading a loss waits for nothing."""
    return device.type == "cpu"


class Best:
    """The best iterate ``x`` per sample, its loss and the step it comes from."""

    def __init__(self, x: torch.Tensor, dtype: torch.dtype) -> None:
        self.x = x
        self.batch, self.dtype, self.device = x.shape[0], dtype, x.device
        self.mask_shape = (-1,) + (1,) * (x.dim() - 1)
        self.host = host_bookkeeping(self.device)
        if self.host:
            self.host_loss = [math.inf] * self.batch
            self.host_step = [0] * self.batch
            self.host_poisoned = False
            self.masks: dict[tuple[bool, ...], torch.Tensor] = {}
        else:
            self.loss = torch.full((self.batch,), float("inf"), dtype=dtype, device=self.device)
            self.step = torch.zeros(self.batch, dtype=torch.long, device=self.device)
            self.guard_dtype = torch.float32 if self.device.type == "mps" else torch.float64
            self.guard = torch.zeros((), dtype=self.guard_dtype, device=self.device)

    def offer(self, total: torch.Tensor, x: torch.Tensor, step: int) -> None:
        """Keep ``x`` (detached) and ``step`` for the samples whose ``total`` (detached, ``(B,)``) improved."""
        if not self.host:
            torch.add(self.guard, total.sum(dtype=self.guard_dtype), alpha=0, out=self.guard)
            improved = torch.lt(total, self.loss + self.guard)
            torch.where(improved, total, self.loss, out=self.loss)
            self.step.masked_fill_(improved, step)
            self.x = torch.where(improved.view(self.mask_shape), x, self.x)
            return
        if self.host_poisoned:
            return
        values = total.tolist()
        if not all(map(math.isfinite, values)):
            self.host_poisoned = True
            return
        gained = [v < b for v, b in zip(values, self.host_loss)]
        for k in (k for k, better in enumerate(gained) if better):
            self.host_loss[k] = values[k]
            self.host_step[k] = step
        if all(gained):
            self.x = self.x.copy_(x)
        elif any(gained):
            self.x = torch.where(self._mask(tuple(gained)), x, self.x, out=self.x)

    def _mask(self, gained: tuple[bool, ...]) -> torch.Tensor:
        picked = self.masks.get(gained)
        if picked is None:
            picked = torch.tensor(gained, device=self.device).view(self.mask_shape)
            if len(self.masks) < 64:  # the patterns of a small batch recur: each made once
                self.masks[gained] = picked
        return picked

    def poisoned(self) -> bool:
        """Whether a loss has been non-finite (on an accelerator: a host synchronisation)."""
        return self.host_poisoned if self.host else bool(self.guard.isnan())

    def losses(self) -> torch.Tensor:
        """The best loss per sample, ``(B,)``."""
        return torch.tensor(self.host_loss, dtype=self.dtype, device=self.device) if self.host else self.loss

    def steps(self) -> torch.Tensor:
        """The step of the best iterate per sample, ``(B,)`` long."""
        return torch.tensor(self.host_step, dtype=torch.long, device=self.device) if self.host else self.step
