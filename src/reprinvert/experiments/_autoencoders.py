"""The seed's autoencoder experiments: copy, denoise, unet-representation, corruption-distance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import corruptions
from ..data import save_grid
from .._invert import invert
from ..metrics import copy_tendency, corruption_distance, denoising_gain
from ..models import MLPAutoencoder, UNet, count_parameters
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

__all__ = [
    "CopyConfig",
    "CopyResult",
    "CorruptionDistanceResult",
    "DenoiseConfig",
    "DenoiseResult",
    "ModelCopy",
    "UNetRepresentationConfig",
    "UNetRepresentationResult",
    "copy",
    "corruption_distance_check",
    "denoise",
    "unet_representation",
]


def _noise(alpha: float) -> Any:
    def corrupt(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return corruptions.noise_mix(x, alpha=alpha, generator=g)

    return corrupt


def _training_fields(cfg: Any) -> dict[str, Any]:
    """What decides a trained model (the cache key): not the evaluation's settings (test images, inversions)."""
    keep = ("image", "mlp", "unet", "train_count", "epochs", "batch_size", "lr", "data")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k in keep}


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
