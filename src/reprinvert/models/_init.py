"""Private: seeded construction of modules without touching torch's global random state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block (module construction) with torch's CPU RNG seeded by ``seed``, then restore the RNG.

    ``seed=None`` draws from the global RNG as plain PyTorch would (and advances it).
    """
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {seed!r} ({type(seed).__name__})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_positive(name: str, value: object) -> int:
    """``value`` as a positive int, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int")
    return value
