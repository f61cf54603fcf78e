"""Private: small tensor helpers shared by the search and the metrics."""

from __future__ import annotations

import torch

__all__ = ["flatten_batch"]


def flatten_batch(t: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """View ``t`` as ``(B, -1)``. A tensor whose first dimension is not the batch is one sample when B == 1.

    A complex tensor is viewed as its real and imaginary parts (``torch.view_as_real``), so no distance, loss or
    metric drops the imaginary part.
    """
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    if t.dim() == 0:
        t = t.reshape(1)
    if batch is not None and t.shape[0] != batch:
        if batch == 1:
            return t.reshape(1, -1)
        raise ValueError(
            f"a tensor of shape {tuple(t.shape)} does not have the batch size {batch} as its first dimension; "
            "per-sample metrics need batch-first tensors (choose a batch-first output with select=, or invert "
            "one sample at a time)"
        )
    return t.reshape(t.shape[0], -1)
