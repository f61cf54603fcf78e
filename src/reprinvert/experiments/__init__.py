"""The seed's experiments as functions that return numbers and write figures.

Each experiment takes ``size="tiny" | "quick" | "medium" | "full"`` (tiny: the test suite; quick: minutes on 2
CPU cores; medium: about 35 minutes on 2 CPU cores, models trained until they copy well on scikit-image's photos
and faces, the real EfficientNet-Lite0, the width study to 5000 steps; full: the seed's settings, hours and a
GPU), ``out=`` (figures and ``result.json`` go into ``out/<name>/``), ``seed=``, ``progress=``, ``device=``
(``"cpu"`` when None, the default; ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` to train, invert and measure
on a GPU; checked before any work, recorded in ``result.json``) and ``cache=`` (a folder of trained weights,
by default ``out/cache``: a second run does not retrain, an interrupted training resumes), and returns a
frozen dataclass of numbers.

========================  ==========================================================================
name                      question
========================  ==========================================================================
``copy``                  does an overcomplete autoencoder trained to copy learn the identity?
``denoise``               does a no-skip UNet trained only to copy remove noise it never saw?
``unet-representation``   does training make the no-skip UNet's last layer represent x more cleanly?
``depth``                 how does representation accuracy change with depth, trained vs untrained?
``width``                 do fully connected layers narrower than the input lose it?
``corruption-distance``   is a perfect copier's denoising loss exactly the corruption distance?
========================  ==========================================================================

Example:
    >>> from reprinvert import experiments
    >>> r = experiments.corruption_distance_check(size="tiny", progress=False)
    >>> r.max_abs_difference
    0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import Device, Reporter, resolve_cache, resolve_device
from ._copy import COPY_SIZES, CopyConfig, CopyResult, ModelCopy, copy
from ._corruption import CorruptionDistanceResult, corruption_distance_check
from ._denoise import DENOISE_MODES, DENOISE_SIZES, DenoiseConfig, DenoiseResult, _train_unets, denoise
from ._depth import DEPTH_SIZES, EFFNET_LAYERS, DepthConfig, DepthResult, EffNetDepth, depth
from ._unet_representation import UNetRepresentationResult, unet_representation
from ._width import WIDTH_SIZES, WidthConfig, WidthNet, WidthResult, width

__all__ = [
    "COPY_SIZES",
    "DENOISE_MODES",
    "DENOISE_SIZES",
    "DEPTH_SIZES",
    "EFFNET_LAYERS",
    "EXPERIMENTS",
    "WIDTH_SIZES",
    "CopyConfig",
    "CopyResult",
    "CorruptionDistanceResult",
    "DenoiseConfig",
    "DenoiseResult",
    "DepthConfig",
    "DepthResult",
    "EffNetDepth",
    "ModelCopy",
    "UNetRepresentationResult",
    "WidthConfig",
    "WidthNet",
    "WidthResult",
    "copy",
    "corruption_distance_check",
    "denoise",
    "depth",
    "run",
    "run_all",
    "unet_representation",
    "width",
]

#: Every experiment by its command-line name.
EXPERIMENTS: dict[str, Callable[..., Any]] = {
    "copy": copy,
    "denoise": denoise,
    "unet-representation": unet_representation,
    "depth": depth,
    "width": width,
    "corruption-distance": corruption_distance_check,
}


def run(name: str, *, size: str = "quick", out: str | Path | None = None, seed: int = 0,
        progress: bool = True, device: Device = None, cache: str | Path | bool | None = None) -> Any:
    """Run one experiment by name (see :data:`EXPERIMENTS`) on ``device`` (None: the CPU); returns its result.

    ``cache``: the folder of trained weights (None: ``out/cache`` when ``out`` is given; False: none).

    Raises:
        ValueError: an unknown name, size or device, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    key = name.replace("_", "-").lower()
    if key not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is unknown; available: {', '.join(EXPERIMENTS)} (or 'all')")
    _check_size_name(size)
    dev = resolve_device(device)
    if key in _CACHED:
        return EXPERIMENTS[key](size=size, out=out, seed=seed, progress=progress, device=dev, cache=cache)
    return EXPERIMENTS[key](size=size, out=out, seed=seed, progress=progress, device=dev)


def run_all(*, size: str = "quick", out: str | Path | None = None, seed: int = 0,
            progress: bool = True, device: Device = None, cache: str | Path | bool | None = None) -> dict[str, Any]:
    """Run every experiment in order on ``device`` (None: the CPU); ``unet-representation`` reuses the UNets
    trained for ``denoise``; trained weights go to ``cache`` (as in :func:`run`).

    Returns:
        ``{name: result}`` plus ``"seconds"``: ``{name: wall time}`` of each, and ``"total_seconds"``.

    Raises:
        ValueError: an unknown size or device, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    _check_size_name(size)
    dev = resolve_device(device)
    folder = resolve_cache(cache, out)
    say = Reporter("all", progress)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    trained: dict[str, Any] | None = None
    for name, fn in EXPERIMENTS.items():
        t0 = time.perf_counter()
        if name in ("denoise", "unet-representation"):
            if trained is None:
                cfg = DENOISE_SIZES[size]
                trained = _train_unets(cfg, seed, progress, Reporter(name, progress), dev, folder)
            results[name] = fn(size=size, out=out, seed=seed, progress=progress, trained=trained, device=dev,
                               cache=False if folder is None else folder)
        elif name in _CACHED:
            results[name] = fn(size=size, out=out, seed=seed, progress=progress, device=dev,
                               cache=False if folder is None else folder)
        else:
            results[name] = fn(size=size, out=out, seed=seed, progress=progress, device=dev)
        seconds[name] = time.perf_counter() - t0
        say(f"{name} done in {seconds[name]:.1f} s")
    results["seconds"] = seconds
    results["total_seconds"] = say.elapsed()
    return results


#: The experiments that train a model (and so take ``cache=``).
_CACHED = ("copy", "denoise", "unet-representation", "depth")


def _check_size_name(size: object) -> None:
    if isinstance(size, str) and size not in ("tiny", "quick", "medium", "full"):
        raise ValueError(f"size={size!r}: expected one of 'tiny', 'quick', 'medium', 'full'")
