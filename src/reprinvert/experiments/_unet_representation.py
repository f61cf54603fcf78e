"""The unet-representation experiment: does training make the no-skip UNet's last layer represent x more cleanly?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._invert import invert
from ..data._io import write_grid as save_grid
from ..models import UNet
from ._common import (
    HELD_OUT,
    Device,
    Reporter,
    check_size,
    eval_images,
    out_dir,
    resolve_cache,
    resolve_device,
    write_json,
)
from ._denoise import DENOISE_SIZES, DenoiseConfig, _reusable, _train_unets

__all__ = ['UNetRepresentationConfig', 'UNetRepresentationResult', 'unet_representation']


# ---------------------------------------------------------------------------------------------- unet-representation
UNetRepresentationConfig = DenoiseConfig


@dataclass(frozen=True)
class UNetRepresentationResult:
    """The last layer (``outc``) of the no-skip UNet inverted, trained against untrained, for one input.

    Attributes:
        input_distance: ``{"trained": m_i, "untrained": m_i, "untrained, calibrated": m_i}``, m_i = ||x_g - x||
            ("untrained, calibrated": the initial weights with BatchNorm statistics measured on the training
            images).
        embedding_distance: m_g per model.
        reference_distance: m_r per model (x' = x + N(0, (1/25)^2)).
        ratio: m_g / m_r per model (< 1: the layer represents x).
        psnr: of x_g against x, dB, per model.
        perturbation_distance: ||x' - x||, the input-space yardstick for m_i.
        steps, recipe: of the inversions.
        by_recipe: the same measures for every recipe run (``recipe`` first, then ``DenoiseConfig.compare``):
            ``{recipe: {"input_distance": {model: ...}, "psnr": ..., ...}}``.
        size, seconds, figures, notes: as in :class:`CopyResult`.
    """

    input_distance: dict[str, float]
    embedding_distance: dict[str, float]
    reference_distance: dict[str, float]
    ratio: dict[str, float]
    psnr: dict[str, float]
    perturbation_distance: float
    steps: int
    recipe: str
    by_recipe: dict[str, dict[str, dict[str, float]]]
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def _calibrated(model: nn.Module, data: torch.Tensor, batch: int = 64, count: int = 1024) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are measured on ``data`` (the first ``count``
    images, cumulative averages over batches of ``batch``), weights unchanged: an untrained baseline that, unlike
    the one at initialisation (running mean 0, variance 1), does not squash its input to near-constant."""
    import copy as _copy

    twin = _copy.deepcopy(model)
    norms = [m for m in twin.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    twin.train()
    with torch.no_grad():
        for k in range(0, min(count, data.shape[0]), batch):
            twin(data[k : k + batch])
    return twin.eval()


def unet_representation(
    *, size: str | DenoiseConfig = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    trained: dict[str, Any] | None = None, device: Device = None, cache: str | Path | bool | None = None,
) -> UNetRepresentationResult:
    """Does training make the no-skip UNet's last layer represent the input more cleanly? (The seed: yes.)

    Inverts the output layer ``outc`` of the trained no-skip UNet (trained to copy as in :func:`denoise`) and
    of the same UNet at its initial weights, both with its BatchNorm at initialisation and with BatchNorm running
    statistics measured on the training images (an untrained baseline whose output depends on its input; at
    initialisation it barely does), for the same held-out image, from the same start, kept in [0, 1].
    Writes ``unet-representation/grid.png`` and ``result.json``.

    Args:
        size: ``"tiny"``, ``"quick"``, ``"medium"``, ``"full"`` or a :class:`DenoiseConfig`.
        out: output folder; None writes nothing.
        seed: seed of weights, data, training and the inversions.
        progress: print progress lines.
        trained: reuse the UNets trained by :func:`denoise` at the same size, seed and device.
        device: where to train and invert (as in :func:`copy`; None: the CPU).
        cache: folder of trained weights (as in :func:`copy`).

    Returns:
        A :class:`UNetRepresentationResult`.

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    from ..recipes import badger
    from ..recipes import get as get_recipe

    cfg: DenoiseConfig = check_size(size, DENOISE_SIZES)
    dev = resolve_device(device)
    say = Reporter("unet-representation", progress)
    folder = out_dir(out, "unet-representation")
    if trained is None or not _reusable(trained, cfg, seed, dev):
        trained = _train_unets(cfg, seed, progress, say, dev, resolve_cache(cache, out))
    x = eval_images(size=cfg.image, count=1, seed=seed).to(dev)
    def recipe_of(name: str) -> Any:
        if name == "badger":
            return badger("unet")
        if name.startswith("badger-"):
            return badger(name.split("-", 1)[1])  # type: ignore[arg-type]
        return get_recipe(name)

    recipe = recipe_of(cfg.recipe)
    untrained = UNet(skip="none", seed=seed, **cfg.unet).to(dev)
    models = {"trained": trained["none"][0], "untrained": untrained,
              "untrained, calibrated": _calibrated(untrained, trained["data"])}
    by_recipe: dict[str, dict[str, dict[str, float]]] = {}
    rows: dict[str, list[torch.Tensor]] = {}
    pert = 0.0
    for rec in (recipe, *(recipe_of(n) for n in cfg.compare)):
        fields: dict[str, dict[str, float]] = {k: {} for k in ("m_i", "m_g", "m_r", "ratio", "psnr")}
        row = [x[0]]
        for name, model in models.items():
            # Clamped to [0, 1] whatever the recipe: the grid shows exactly the tensor the metrics measure.
            res = invert(model, "outc", x, recipe=rec, steps=cfg.inversion_steps, seed=seed, clamp=(0.0, 1.0))
            s = res.metrics.summary()
            fields["m_i"][name] = s["input_distance"]
            fields["m_g"][name] = s["embedding_distance"]
            fields["m_r"][name] = s["reference_distance"]
            fields["ratio"][name] = (s["embedding_distance"] / s["reference_distance"] if s["reference_distance"]
                                     else float("inf"))
            fields["psnr"][name] = s["psnr"]
            pert = s["perturbation_distance"]
            row.append(res.input[0])
            say(f"{rec.name:14s} {name:21s} {res.metrics}")
        by_recipe[rec.name] = fields
        rows[rec.name] = row
    fields = by_recipe[recipe.name]
    inputs = [torch.stack([rows[r][k] for r in rows]) for k in range(len(models) + 1)]
    figures: list[str] = []
    if folder is not None:
        figures.append(str(save_grid(
            inputs, folder / "grid.png", column_labels=["x", *(f"{k} outc" for k in models)],
            row_labels=list(rows) if len(rows) > 1 else None, scale=max(1, 128 // cfg.image),
        )))
    result = UNetRepresentationResult(
        input_distance=fields["m_i"], embedding_distance=fields["m_g"], reference_distance=fields["m_r"],
        ratio=fields["ratio"], psnr=fields["psnr"], perturbation_distance=pert, steps=cfg.inversion_steps,
        recipe=recipe.name,
        by_recipe={r: {"input_distance": f["m_i"], "embedding_distance": f["m_g"], "reference_distance": f["m_r"],
                       "ratio": f["ratio"], "psnr": f["psnr"]} for r, f in by_recipe.items()},
        size=size if isinstance(size, str) else "custom", seconds=say.elapsed(), figures=tuple(figures),
        notes=(f"input: the held-out photo {HELD_OUT!r} at {cfg.image}x{cfg.image}; both inversions start from "
               "the same seeded noise",
               "every inversion is kept in [0, 1] after each step (clamp=(0, 1), whatever the recipe), so m_i, "
               "PSNR and the grid all describe the same returned tensor"),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"config": dataclasses.asdict(cfg), "seed": seed},
                   device=dev)
    return result
