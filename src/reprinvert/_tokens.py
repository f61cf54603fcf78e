"""Token models: map optimised embeddings back to token ids (:func:`nearest_tokens`)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["nearest_tokens"]


def nearest_tokens(
    embedding: nn.Embedding | torch.Tensor, z: torch.Tensor, *, metric: str = "l2"
) -> torch.Tensor:
    """Map optimised embeddings back to the nearest token ids.

    Args:
        embedding: the model's ``nn.Embedding`` or its weight matrix ``(V, D)``.
        z: embeddings ``(..., D)``, e.g. ``Inversion.input`` of an inversion with ``start=<embedding layer>``.
        metric: ``"l2"`` (Euclidean) or ``"cosine"``.

    Returns:
        Token ids of shape ``z.shape[:-1]`` (dtype long).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> emb = nn.Embedding(10, 4)
        >>> ids = torch.tensor([[1, 5, 7]])
        >>> ri.nearest_tokens(emb, emb(ids)).tolist()
        [[1, 5, 7]]
    """
    weight = embedding.weight if isinstance(embedding, nn.Embedding) else embedding
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError("embedding must be an nn.Embedding or a (V, D) weight tensor")
    if z.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"z has last dimension {z.shape[-1]}, but the embedding has dimension {weight.shape[1]}; pass the "
            "embedding layer whose output was optimised"
        )
    with torch.no_grad():
        w = weight.detach().to(z.device, torch.float64)
        flat = z.detach().reshape(-1, z.shape[-1]).to(torch.float64)
        if metric == "l2":
            scores = -torch.cdist(flat, w)
        elif metric == "cosine":
            scores = torch.nn.functional.normalize(flat, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
        else:
            raise ValueError(f"metric={metric!r}: expected 'l2' or 'cosine'")
        return scores.argmax(1).reshape(z.shape[:-1])
