"""The denoise experiment: does a no-skip UNet trained only to copy remove noise it never saw?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import corruptions
from ..data._io import write_grid as save_grid
from ..metrics import corruption_distance, denoising_gain
from ..models import UNet, count_parameters
from ..train import evaluate_loss
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
from ._common import training_fields as _training_fields

__all__ = ['DENOISE_MODES', 'DENOISE_SIZES', 'DenoiseConfig', 'DenoiseResult', 'denoise']


# ---------------------------------------------------------------------------------------------- denoise
@dataclass(frozen=True)
class DenoiseConfig:
    """Sizes of the denoise and unet-representation experiments.

    Attributes:
        image: image height and width (the seed: 64x64 LSUN churches, and 512x512).
        unet: keyword arguments of both UNets (``skip`` is set per model).
        train_count, epochs, batch_size, lr: training to copy (Adam, MSE).
        alphas: noise-mix levels (1 = clean).
        blur_sigma: standard deviation of the Gaussian blur corruption.
        test_count: held-out test images (also the batch of the batch-statistics mode).
        inversion_steps: steps of the last-layer inversions (unet-representation).
        recipe: inversion recipe name (``"badger"``: the seed's, preset ``"unet"``).
        data: ``"bundled"`` or ``"skimage"`` (as in :class:`CopyConfig`).
        compare: further recipes the last-layer inversions are also run with (names of
            :func:`reprinvert.recipes.get`, or ``"badger-cnn"``: the seed's with its blur), reported in
            ``UNetRepresentationResult.by_recipe``.
    """

    image: int
    unet: dict[str, Any]
    train_count: int
    epochs: int
    batch_size: int
    lr: float
    alphas: tuple[float, ...] = (1.0, 0.5, 0.3, 0.1)
    blur_sigma: float = 1.5
    test_count: int = 8
    inversion_steps: int = 300
    recipe: str = "default"
    data: str = "bundled"
    compare: tuple[str, ...] = ()


DENOISE_SIZES = {
    "tiny": DenoiseConfig(image=8, unet=dict(base=4, depth=2), train_count=32, epochs=1, batch_size=16, lr=1e-3,
                          test_count=2, inversion_steps=10),
    "quick": DenoiseConfig(image=32, unet=dict(base=16, depth=3), train_count=1536, epochs=4, batch_size=32,
                           lr=1e-3, inversion_steps=300),
    "medium": DenoiseConfig(image=32, unet=dict(base=16, depth=3), train_count=8192, epochs=8, batch_size=32,
                            lr=1e-3, test_count=16, inversion_steps=500, data="skimage", compare=("badger-cnn",)),
    "full": DenoiseConfig(image=64, unet=dict(base=64, depth=4), train_count=50000, epochs=50, batch_size=32,
                          lr=1e-4, test_count=32, inversion_steps=220, recipe="badger", data="skimage"),
}


#: The four ways :func:`denoise` runs the UNets: which UNet, and where BatchNorm takes its statistics.
DENOISE_MODES = ("no-skip running", "no-skip batch", "skip running", "skip batch")


@dataclass(frozen=True)
class DenoiseResult:
    """The denoise experiment. Errors are mean sums of squares over the held-out test images (lower is better).

    Attributes:
        levels: the corruption of each column: ``"alpha=1"`` .. ``"alpha=0.1"``, ``"blur s=1.5"``.
        corruption_distance: mean ||x~ - x||^2 per level (the corrupted input's error: a perfect copier's).
        errors: mean ||O(x~) - x||^2 per level for each of :data:`DENOISE_MODES` ("no-skip running": the
            no-skip UNet with BatchNorm on its running statistics, ``model.eval()``; "... batch": on the
            statistics of the test batch, as the seed's author sampled).
        gains: mean of the per-image ratios ||x~ - x||^2 / ||O(x~) - x||^2 per level and mode (0 at alpha=1).
        copy_error: mean ||O(x) - x||^2 on the clean test images per mode (how well each copies).
        oracle_mean: mean ||m(x) - x||^2 with m(x) each image's per-channel mean (an oracle that knows x's
            colour and nothing else: the same at every level).
        oracle_blur: per level, mean of the best ||a_c blur_s(x~) + b_c - x||^2 over s in {0, 0.5, 1, 1.5, 2, 3}
            (those whose kernel fits the image)
            with per-channel a_c, b_c fitted to x by least squares (a brightness/contrast-corrected blur that knows
            x): what removing the noise mix's brightness shift and smoothing buys.
        gain_no_skip, gain_skip, error_no_skip, error_skip: the running-statistics rows of ``gains`` and
            ``errors`` (kept for the earlier field names).
        train_loss_no_skip, train_loss_skip: final copy (training) loss.
        val_loss_no_skip, val_loss_skip: copy loss (MSE per element) on the held-out images, running statistics.
        parameters: parameters of each UNet (equal for "none" and "concat").
        batch: how the batch-statistics mode batches: every test image at one corruption level together.
        data: what the UNets were trained on.
        size, seconds, figures, notes: as in :class:`CopyResult`.
    """

    levels: tuple[str, ...]
    corruption_distance: tuple[float, ...]
    errors: dict[str, tuple[float, ...]]
    gains: dict[str, tuple[float, ...]]
    copy_error: dict[str, float]
    oracle_mean: float
    oracle_blur: tuple[float, ...]
    gain_no_skip: tuple[float, ...]
    gain_skip: tuple[float, ...]
    error_no_skip: tuple[float, ...]
    error_skip: tuple[float, ...]
    train_loss_no_skip: float
    train_loss_skip: float
    val_loss_no_skip: float
    val_loss_skip: float
    parameters: int
    batch: str
    data: str
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def _corrupt_levels(x: torch.Tensor, cfg: DenoiseConfig, seed: int) -> tuple[list[str], list[torch.Tensor]]:
    names, xs = [], []
    for a in cfg.alphas:
        names.append(f"alpha={a:g}")
        xs.append(corruptions.noise_mix(x, alpha=a, seed=seed + 1))
    names.append(f"blur s={cfg.blur_sigma:g}")
    xs.append(corruptions.blur(x, sigma=cfg.blur_sigma))
    return names, xs


def _train_unets(
    cfg: DenoiseConfig, seed: int, progress: bool, say: Reporter, device: Device = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    dev = resolve_device(device)
    data, described = study_images(size=cfg.image, count=cfg.train_count, seed=seed, source=cfg.data)
    data = data.to(dev)
    x = eval_images(size=cfg.image, count=cfg.test_count, seed=seed).to(dev)
    trained: dict[str, Any] = {"config": cfg, "seed": seed, "device": dev, "data": data, "described": described}
    for skip in ("none", "concat"):
        model = UNet(skip=skip, seed=seed, **cfg.unet).to(dev)
        say(f"training UNet skip={skip!r} ({count_parameters(model):,} parameters) to copy {described} on {dev}")
        path = cache_path(cache, f"unet-{skip}", _training_fields(cfg), seed, described, str(dev))
        tr = cached_train(path, say, model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                          seed=seed, progress=progress, device=dev)
        trained[skip] = (model, tr.final_loss, evaluate_loss(model, x, device=dev))
        say(f"UNet skip={skip!r}: held-out copy error (MSE per element) {trained[skip][2]:.4g}")
    return trained


def _reusable(trained: dict[str, Any] | None, cfg: DenoiseConfig, seed: int, dev: torch.device) -> bool:
    """Whether UNets trained earlier (``trained=``) match this call's size, seed and device."""
    return (
        trained is not None and trained.get("config") == cfg and trained.get("seed") == seed
        and trained.get("device", torch.device("cpu")) == dev
    )


def _run(model: nn.Module, x: torch.Tensor, statistics: str) -> torch.Tensor:
    """``model(x)`` without gradients, BatchNorm on its running statistics (``"running"``, eval mode) or on the
    batch's own (``"batch"``, train mode, on a copy, so the model's running statistics are left as they were)."""
    import copy as _copy

    with torch.no_grad():
        if statistics == "batch":
            twin = _copy.deepcopy(model).train()
            return twin(x)
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return model(x)
        finally:
            for m, flag in flags:
                m.training = flag


def _sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).flatten(1).pow(2).sum(1)


def _oracle_mean(x: torch.Tensor) -> float:
    x = x.double()
    return mean(_sq(x.mean(dim=(2, 3), keepdim=True).expand_as(x), x))


def _oracle_blur(x_tilde: torch.Tensor, x: torch.Tensor) -> float:
    """Mean over images of the best brightness/contrast-corrected blur of ``x_tilde`` (see DenoiseResult)."""
    x = x.double()
    best = None
    for sigma in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
        try:
            b = (x_tilde if sigma == 0 else corruptions.blur(x_tilde, sigma=sigma)).double()
        except ValueError:  # a kernel too wide for tiny images
            continue
        bm, xm = b.mean(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)
        var = (b - bm).pow(2).mean(dim=(2, 3), keepdim=True)
        cov = ((b - bm) * (x - xm)).mean(dim=(2, 3), keepdim=True)
        a = torch.where(var > 0, cov / var.clamp_min(1e-300), torch.zeros_like(var))
        err = _sq(a * (b - bm) + xm, x)
        best = err if best is None else torch.minimum(best, err)
    assert best is not None
    return mean(best)


def denoise(
    *, size: str | DenoiseConfig = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    trained: dict[str, Any] | None = None, device: Device = None, cache: str | Path | bool | None = None,
) -> DenoiseResult:
    """Does a no-skip UNet trained only to copy denoise? (The seed: yes; with skips it copies the noise.)

    Trains a :class:`~reprinvert.models.UNet` with ``skip="none"`` and the same-size one with ``skip="concat"``
    to copy training images (no corruption in training), then feeds held-out images corrupted by the seed's
    noise mix at each alpha and by a Gaussian blur, each UNet with BatchNorm on its running statistics
    (``model.eval()``) and on the test batch's statistics (as the seed's author sampled: his ``model.eval()``
    is commented out), and reports mean errors against the clean images beside the corrupted input's, the clean
    copy's, and two oracles' (each image's per-channel mean; a brightness/contrast-corrected blur). Writes
    ``denoise/grid.png`` and ``denoise/result.json``.

    Args:
        size: ``"tiny"``, ``"quick"``, ``"medium"``, ``"full"`` or a :class:`DenoiseConfig`.
        out: output folder; None writes nothing.
        seed: seed of weights, data, training and noise.
        progress: print progress lines.
        trained: reuse UNets trained by an earlier call at the same size, seed and device (``run_all`` does).
        device: where to train and evaluate (as in :func:`copy`; None: the CPU).
        cache: folder of trained weights (as in :func:`copy`).

    Returns:
        A :class:`DenoiseResult`.

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    cfg: DenoiseConfig = check_size(size, DENOISE_SIZES)
    dev = resolve_device(device)
    say = Reporter("denoise", progress)
    folder = out_dir(out, "denoise")
    if trained is None or not _reusable(trained, cfg, seed, dev):
        trained = _train_unets(cfg, seed, progress, say, dev, resolve_cache(cache, out))
    x = eval_images(size=cfg.image, count=cfg.test_count, seed=seed).to(dev)
    levels, xs = _corrupt_levels(x, cfg, seed)
    models = {"no-skip": trained["none"][0], "skip": trained["concat"][0]}
    errors: dict[str, list[float]] = {m: [] for m in DENOISE_MODES}
    gains: dict[str, list[float]] = {m: [] for m in DENOISE_MODES}
    shown: dict[str, list[torch.Tensor]] = {m: [] for m in DENOISE_MODES}
    copy_error = {}
    for mode in DENOISE_MODES:
        which, statistics = mode.split()
        copy_error[mode] = mean(_sq(_run(models[which], x, statistics), x))
    dist, oracle_blur = [], []
    for x_tilde in xs:
        dist.append(mean(corruption_distance(x_tilde.double(), x.double())))
        oracle_blur.append(_oracle_blur(x_tilde, x))
        for mode in DENOISE_MODES:
            which, statistics = mode.split()
            o = _run(models[which], x_tilde, statistics)
            shown[mode].append(o)
            gains[mode].append(mean(denoising_gain(o.double(), x_tilde.double(), x.double())))
            errors[mode].append(mean(_sq(o, x)))
    oracle_mean = _oracle_mean(x)
    say("copy error ||O(x)-x||^2: " + ", ".join(f"{m} {copy_error[m]:.3g}" for m in DENOISE_MODES)
        + f"; oracle per-channel mean {oracle_mean:.3g}")
    for i, name in enumerate(levels):
        say(f"{name:12s} ||x~-x||^2 {dist[i]:8.3g}  " + "  ".join(f"{m} {errors[m][i]:8.3g}" for m in DENOISE_MODES)
            + f"  oracle blur {oracle_blur[i]:8.3g}")
    figures: list[str] = []
    if folder is not None:
        k = 0  # the whole held-out photo
        cols = [torch.stack([xt[k], *(shown[m][i][k] for m in DENOISE_MODES)]) for i, xt in enumerate(xs)]
        figures.append(str(save_grid(
            cols, folder / "grid.png", column_labels=levels, row_labels=["x~", *DENOISE_MODES],
            scale=max(1, 128 // cfg.image),
        )))
    batch = (f"batch statistics: the {x.shape[0]} held-out test images of one corruption level form one batch "
             f"(the whole photo {HELD_OUT!r} and patches of it)")
    notes = [f"alpha=1 is the clean input: x~ = x, so the gain is 0 by definition; read errors there. "
             f"Test images: the held-out photo {HELD_OUT!r}. Training: {trained['described']}.", batch,
             "the gain is a mean of per-image ratios: an image with little structure can score high while its "
             "error stays large; read the errors beside the oracles"]
    if cfg.lr != 1e-4:
        notes.append(f"lr {cfg.lr} (the seed used 1e-4) so that the short run converges")
    result = DenoiseResult(
        levels=tuple(levels), corruption_distance=tuple(dist),
        errors={m: tuple(v) for m, v in errors.items()}, gains={m: tuple(v) for m, v in gains.items()},
        copy_error=copy_error, oracle_mean=oracle_mean, oracle_blur=tuple(oracle_blur),
        gain_no_skip=tuple(gains["no-skip running"]), gain_skip=tuple(gains["skip running"]),
        error_no_skip=tuple(errors["no-skip running"]), error_skip=tuple(errors["skip running"]),
        train_loss_no_skip=trained["none"][1], train_loss_skip=trained["concat"][1],
        val_loss_no_skip=trained["none"][2], val_loss_skip=trained["concat"][2],
        parameters=count_parameters(trained["none"][0]), batch=batch, data=trained["described"],
        size=size if isinstance(size, str) else "custom",
        seconds=say.elapsed(), figures=tuple(figures), notes=tuple(notes),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"config": dataclasses.asdict(cfg), "seed": seed},
                   device=dev)
    return result
