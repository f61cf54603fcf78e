"""The corruption-distance check: is a perfect copier's denoising loss exactly the corruption distance?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import corruptions
from ..data._io import write_grid as save_grid
from ..metrics import corruption_distance, denoising_gain
from ._common import (
    Device,
    Reporter,
    eval_images,
    mean,
    out_dir,
    resolve_device,
    write_json,
)

__all__ = ['CorruptionDistanceResult', 'corruption_distance_check']


# ---------------------------------------------------------------------------------------------- corruption distance
@dataclass(frozen=True)
class CorruptionDistanceResult:
    """A perfect copier's denoising loss against the corruption distance, per corruption.

    Attributes:
        corruptions: names of the corruptions.
        copier_loss: mean sum of squares ||O(x~) - x||^2 with O the identity, float64.
        corruption_distance: mean ||x~ - x||^2 (:func:`reprinvert.metrics.corruption_distance`), float64.
        max_abs_difference: over every sample and corruption.
        copier_gain: mean denoising gain of the identity per corruption (exactly 1).
        size, seconds, figures, notes: as in :class:`CopyResult`.
    """

    corruptions: tuple[str, ...]
    copier_loss: tuple[float, ...]
    corruption_distance: tuple[float, ...]
    max_abs_difference: float
    copier_gain: tuple[float, ...]
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def corruption_distance_check(
    *, size: str = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    device: Device = None,
) -> CorruptionDistanceResult:
    """Check numerically that a perfect copier's denoising loss L = ||O(x~) - x||^2 equals ||x~ - x||^2.

    O is the identity map (an ``nn.Identity`` run as a model). For several corruptions (the seed's noise mix at
    alpha 0.5, 0.3 and 0.1, Gaussian noise, salt and pepper, masking, blur) of held-out images, in float64, the
    loss (computed with ``torch.nn.functional.mse_loss(reduction="none")`` summed per sample) and
    :func:`reprinvert.metrics.corruption_distance` are compared. Writes ``corruption-distance/grid.png`` and
    ``result.json``.

    Args:
        size: ``"tiny"`` (2 images of 8x8), ``"quick"`` (16 of 32x32), ``"medium"`` (32 of 32x32) or ``"full"``
            (64 of 64x64).
        out, seed, progress, device: as in :func:`copy` (the corruptions are drawn on ``device``).

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    sizes = {"tiny": (2, 8), "quick": (16, 32), "medium": (32, 32), "full": (64, 64)}
    if size not in sizes:
        raise ValueError(f"size={size!r}: expected one of {list(sizes)}")
    count, px = sizes[size]
    dev = resolve_device(device)
    say = Reporter("corruption-distance", progress)
    folder = out_dir(out, "corruption-distance")
    x = eval_images(size=px, count=count, seed=seed).double().to(dev)
    table = {
        "noise_mix a=0.5": corruptions.noise_mix(x, alpha=0.5, seed=seed),
        "noise_mix a=0.3": corruptions.noise_mix(x, alpha=0.3, seed=seed),
        "noise_mix a=0.1": corruptions.noise_mix(x, alpha=0.1, seed=seed),
        "gaussian s=0.1": corruptions.gaussian(x, sigma=0.1, seed=seed),
        "salt_and_pepper p=0.1": corruptions.salt_and_pepper(x, p=0.1, seed=seed),
        "mask p=0.25": corruptions.mask(x, p=0.25, seed=seed),
        "blur s=1.5": corruptions.blur(x, sigma=1.5),
    }
    copier = nn.Identity()
    losses, dists, gains = [], [], []
    worst = 0.0
    for name, x_tilde in table.items():
        with torch.no_grad():
            o = copier(x_tilde)
        loss = F.mse_loss(o, x, reduction="none").flatten(1).sum(1)
        dist = corruption_distance(x_tilde, x)
        worst = max(worst, float((loss - dist).abs().max()))
        losses.append(mean(loss))
        dists.append(mean(dist))
        gains.append(mean(denoising_gain(o, x_tilde, x)))
        say(f"{name:22s} copier loss {losses[-1]:.6f} = corruption distance {dists[-1]:.6f}")
    figures: list[str] = []
    if folder is not None:
        figures.append(str(save_grid(
            [x[:4], *(t[:4] for t in table.values())], folder / "grid.png",
            column_labels=["x", *table], scale=max(1, 96 // px),
        )))
    result = CorruptionDistanceResult(
        corruptions=tuple(table), copier_loss=tuple(losses), corruption_distance=tuple(dists),
        max_abs_difference=worst, copier_gain=tuple(gains), size=size, seconds=say.elapsed(),
        figures=tuple(figures),
        notes=("float64; the copier is nn.Identity; a model that copies perfectly cannot score below the "
               "corruption distance on a denoising task, so it is the baseline any denoiser must beat",),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"seed": seed}, device=dev)
    return result
