"""Private: explicit random number generators. reprinvert never touches torch's global RNG."""

from __future__ import annotations

import torch

__all__ = ["make_generator"]


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device | str
) -> torch.Generator:
    """Return ``generator`` if given, else a new generator on ``device`` seeded with ``seed`` (0 if None).

    Raises:
        ValueError: if both are given, or the generator lives on another device type than ``device``.
    """
    device = torch.device(device)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}: {generator!r}; "
            "or pass seed=<int>"
        )
    if generator is not None:
        if seed is not None:
            raise ValueError(
                f"seed={seed!r} and generator={generator!r} were both given; pass only one of them"
            )
        if generator.device.type != device.type:
            raise ValueError(
                f"generator is on device {generator.device}, but the tensors are on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        return generator
    if (seed is not None and not isinstance(seed, int)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {seed!r} ({type(seed).__name__})")
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g
