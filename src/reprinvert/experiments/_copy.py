"""The copy experiment: does an overcomplete autoencoder trained to copy learn the identity?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import corruptions
from ..data._io import write_grid as save_grid
from ..metrics import copy_tendency, denoising_gain
from ..models import MLPAutoencoder, UNet, count_parameters
from ._common import (
    HELD_OUT,
    Device,
    Reporter,
    cache_path,
    cached_train,
    check_size,
    eval_images,
    mean,
    out_dir,
    resolve_cache,
    resolve_device,
    study_images,
    write_json,
)
from ._common import noise as _noise
from ._common import training_fields as _training_fields

__all__ = ['COPY_SIZES', 'CopyConfig', 'CopyResult', 'ModelCopy', 'copy']


# ---------------------------------------------------------------------------------------------- copy
@dataclass(frozen=True)
class CopyConfig:
    """Sizes of the copy experiment.

    Attributes:
        image: height and width of the training and test images (the seed: 32, CIFAR-10-sized).
        mlp: keyword arguments of :class:`~reprinvert.models.MLPAutoencoder` (``in_features`` is set from
            ``image``); the seed's overcomplete 3072 -> 4000 x 6 -> 3072 at full size.
        unet: keyword arguments of the with-skip :class:`~reprinvert.models.UNet` contrast.
        train_count: training patches cut from the bundled photos (the held-out photo is never used).
        epochs, batch_size, lr: Adam training to copy (the seed used lr 1e-4).
        alpha: the noise mix x~ = alpha x + (1 - alpha) eps, eps ~ N(0.7, 0.2^2) (the seed: 0.3).
        test_count: held-out test images.
        probes: Hutchinson probes of the Jacobian trace.
        data: ``"bundled"`` (patches of the three bundled photos) or ``"skimage"`` (patches of 16 scikit-image
            photos and lfw_subset faces: the ``data`` extra; the bundled photos without it).
    """

    image: int
    mlp: dict[str, Any]
    unet: dict[str, Any]
    train_count: int
    epochs: int
    batch_size: int
    lr: float
    alpha: float = 0.3
    test_count: int = 8
    probes: int = 8
    data: str = "bundled"


COPY_SIZES = {
    "tiny": CopyConfig(
        image=8, mlp=dict(hidden=(256, 256), norm="batch"), unet=dict(base=4, depth=2),
        train_count=64, epochs=1, batch_size=32, lr=1e-3, test_count=2, probes=2,
    ),
    "quick": CopyConfig(
        image=16, mlp=dict(hidden=(1024,) * 4, norm="batch"), unet=dict(base=16, depth=2),
        train_count=4096, epochs=6, batch_size=64, lr=1e-3,
    ),
    "medium": CopyConfig(
        image=16, mlp=dict(hidden=(1536,) * 4, norm="batch"), unet=dict(base=16, depth=2),
        train_count=12288, epochs=6, batch_size=64, lr=1e-3, test_count=16, data="skimage",
    ),
    "full": CopyConfig(
        image=32, mlp=dict(hidden=(4000,) * 6, norm="batch"), unet=dict(base=64, depth=4),
        train_count=50000, epochs=100, batch_size=128, lr=1e-4, test_count=64, probes=32, data="skimage",
    ),
}


@dataclass(frozen=True)
class ModelCopy:
    """How one model treats the seed's noise mix, means over the held-out test images.

    Attributes:
        copy_tendency: <O(x~) - O(x), x~ - x> / ||x~ - x||^2 (1: copies the noise, 0: ignores it).
        jacobian_trace: tr(J)/n at x, Hutchinson estimate (the infinitesimal copy tendency).
        output_to_input: ||O(x~) - x~||.
        output_to_clean: ||O(x~) - x||.
        corrupted_to_clean: ||x~ - x||.
        denoising_gain: ||x~ - x||^2 / ||O(x~) - x||^2 (> 1: the output is cleaner than its input).
        copy_mse: mean squared error of O(x) against clean x (how well it learned to copy).
        parameters: parameter count.
        train_loss: final training loss (None for the identity).
    """

    copy_tendency: float
    jacobian_trace: float
    output_to_input: float
    output_to_clean: float
    corrupted_to_clean: float
    denoising_gain: float
    copy_mse: float
    parameters: int
    train_loss: float | None


@dataclass(frozen=True)
class CopyResult:
    """The copy experiment: an overcomplete MLP autoencoder trained only to copy, against contrasts.

    Attributes:
        models: ``{"identity": ..., "mlp": ..., "unet_skip": ...}``.
        alpha: the noise mix's weight of the clean image.
        size: the size name (or "custom").
        seconds: wall time.
        figures: files written.
        notes: remarks (e.g. settings that differ from the seed's).
    """

    models: dict[str, ModelCopy]
    alpha: float
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def _measure_copy(model: nn.Module, x: torch.Tensor, *, alpha: float, probes: int, seed: int,
                  train_loss: float | None) -> tuple[ModelCopy, torch.Tensor, torch.Tensor]:
    ct = copy_tendency(model, x, corrupt=_noise(alpha), probes=probes, seed=seed)
    x_tilde = corruptions.noise_mix(x, alpha=alpha, seed=seed)  # a generator on x's device, seeded with seed
    # copy_tendency draws the corruption first from a generator seeded the same way on the same device, so
    # x_tilde is the same corrupted batch
    with torch.no_grad():
        was = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            out_tilde = model(x_tilde)
            out_clean = model(x)
        finally:
            for m, flag in was:
                m.training = flag
    stats = ModelCopy(
        copy_tendency=mean(ct.finite),
        jacobian_trace=mean(ct.jacobian_trace),
        output_to_input=mean(ct.output_to_input),
        output_to_clean=mean(ct.output_to_clean),
        corrupted_to_clean=mean(torch.linalg.vector_norm((x_tilde - x).flatten(1).double(), dim=1)),
        denoising_gain=mean(denoising_gain(out_tilde.double(), x_tilde.double(), x.double())),
        copy_mse=float(F.mse_loss(out_clean.double(), x.double())),
        parameters=count_parameters(model),
        train_loss=train_loss,
    )
    return stats, x_tilde, out_tilde


def copy(
    *, size: str | CopyConfig = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    device: Device = None, cache: str | Path | bool | None = None,
) -> CopyResult:
    """Does an overcomplete autoencoder trained only to copy learn the identity? (The seed: no.)

    Trains :class:`~reprinvert.models.MLPAutoencoder` (overcomplete: every hidden width exceeds the input) and a
    with-skip :class:`~reprinvert.models.UNet` to copy patches of the bundled photos, then feeds held-out
    images (the photo ``rocket``, never trained on) mixed with the seed's noise and reports for each model and
    for the identity map: copy tendency (finite and Jacobian trace), ||O(x~) - x~|| against ||O(x~) - x||, and
    the denoising gain. Writes ``copy/grid.png`` and ``copy/result.json`` under ``out``.

    Args:
        size: ``"tiny"`` (tests), ``"quick"`` (minutes on 2 CPU cores), ``"medium"`` (longer training on
            scikit-image's photos and faces), ``"full"`` (the seed's sizes) or a :class:`CopyConfig`.
        out: output folder (``out/copy/``); None writes nothing.
        seed: seed of weights, data, training and noise.
        progress: print progress lines.
        device: where to train and measure: ``"cpu"`` (None, the default), ``"cuda"``, ``"cuda:1"``, or a
            ``torch.device``. Weights are drawn on the CPU from ``seed`` and then moved, so they are the same
            on every device; the noise is drawn on the device, so numbers on a GPU differ from the CPU's.
            Recorded in ``result.json``.
        cache: folder of trained weights (checkpoints after every epoch): a second run with the same size and
            seed loads them instead of training, an interrupted one resumes. None (default): ``out/cache``
            when ``out`` is given; False: never cache.

    Returns:
        A :class:`CopyResult`.

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    cfg: CopyConfig = check_size(size, COPY_SIZES)
    dev = resolve_device(device)
    say = Reporter("copy", progress)
    folder = out_dir(out, "copy")
    n = 3 * cfg.image * cfg.image
    folder_cache = resolve_cache(cache, out)
    data, described = study_images(size=cfg.image, count=cfg.train_count, seed=seed, source=cfg.data)
    data = data.to(dev)
    x = eval_images(size=cfg.image, count=cfg.test_count, seed=seed).to(dev)
    mlp = MLPAutoencoder(in_features=n, seed=seed, **cfg.mlp).to(dev)
    unet = UNet(skip="concat", seed=seed, **cfg.unet).to(dev)
    say(f"training MLPAutoencoder ({count_parameters(mlp):,} parameters, {n} -> {cfg.mlp['hidden']} -> {n}) "
        f"to copy {described} on {dev}")
    key = (_training_fields(cfg), seed, described, str(dev))
    tr_mlp = cached_train(cache_path(folder_cache, "copy-mlp", key), say, mlp, data, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, progress=progress, device=dev)
    say(f"training with-skip UNet ({count_parameters(unet):,} parameters) to copy")
    tr_unet = cached_train(cache_path(folder_cache, "copy-unet-skip", key), say, unet, data, epochs=cfg.epochs,
                           batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, progress=progress, device=dev)
    models: dict[str, ModelCopy] = {}
    outputs = {}
    for name, model, tr in (("identity", nn.Identity(), None), ("mlp", mlp, tr_mlp), ("unet_skip", unet, tr_unet)):
        stats, x_tilde, out_tilde = _measure_copy(
            model, x, alpha=cfg.alpha, probes=cfg.probes, seed=seed, train_loss=None if tr is None else tr.final_loss
        )
        models[name] = stats
        outputs[name] = out_tilde
        say(f"{name:9s} copy tendency {stats.copy_tendency:.3f} (tr J/n {stats.jacobian_trace:.3f}), "
            f"||O(x~)-x~|| {stats.output_to_input:.3f} vs ||O(x~)-x|| {stats.output_to_clean:.3f}, "
            f"gain {stats.denoising_gain:.3f}")
    figures: list[str] = []
    if folder is not None:
        k = min(6, x.shape[0])
        grid = save_grid(
            [x[:k], x_tilde[:k], outputs["mlp"][:k], outputs["unet_skip"][:k]],
            folder / "grid.png",
            column_labels=["x", f"x~ (a={cfg.alpha})", "MLP(x~)", "UNet-skip(x~)"],
            scale=max(1, 96 // cfg.image),
        )
        figures.append(str(grid))
    notes = [f"test images: the held-out bundled photo {HELD_OUT!r} (whole, then patches); training: {described}"]
    if cfg.lr != 1e-4:
        notes.append(f"lr {cfg.lr} (the seed used 1e-4) so that the short run converges")
    result = CopyResult(
        models=models, alpha=cfg.alpha, size=size if isinstance(size, str) else "custom",
        seconds=say.elapsed(), figures=tuple(figures), notes=tuple(notes),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"config": dataclasses.asdict(cfg), "seed": seed},
                   device=dev)
    return result
