"""Private: what every experiment shares: sizes, output folders, JSON, curve plots, held-out data."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from .. import corruptions
from .._version import __version__
from ..data import bundled_patches, sample_image

__all__ = [
    "HELD_OUT",
    "SIZES",
    "TRAIN_PHOTOS",
    "Reporter",
    "cached_train",
    "check_size",
    "eval_images",
    "jsonable",
    "plot_curves",
    "resolve_device",
    "study_images",
    "train_images",
    "write_json",
]

Size = Literal["tiny", "quick", "medium", "full"]
#: What an experiment's ``device=`` accepts (None: the CPU).
Device = str | torch.device | None
SIZES = ("tiny", "quick", "medium", "full")
#: Bundled photos used for training; the fourth is held out for evaluation.
TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee")
HELD_OUT = "rocket"


def check_size(size: object, configs: Mapping[str, Any]) -> Any:
    """The config of ``size`` (a name of ``configs``) or ``size`` itself when it is already a config."""
    if isinstance(size, str):
        if size not in configs:
            raise ValueError(f"size={size!r}: expected one of {list(configs)} (or a config object)")
        return configs[size]
    if dataclasses.is_dataclass(size) and type(size) is type(next(iter(configs.values()))):
        return size
    raise TypeError(f"size must be one of {list(configs)} or a {type(next(iter(configs.values()))).__name__}")


def resolve_device(device: object) -> torch.device:
    """``device=`` of an experiment -> a ``torch.device`` that exists here (None -> CPU), checked before any work.

    Raises:
        TypeError: ``device`` is not a string, a ``torch.device`` or None.
        ValueError: an unknown device name, or a device this machine lacks (e.g. ``"cuda"`` without CUDA), with
            what to pass instead.
    """
    from .._modelspec import ModelSpecError, parse_device

    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device
    else:
        raise TypeError(
            f"device must be a str, a torch.device or None, got {type(device).__name__}: {device!r}; "
            "e.g. device='cpu' or device='cuda'"
        )
    try:
        dev = parse_device(text)
    except ModelSpecError as exc:
        # parse_device words its messages for the command line ("--device 'x': ..."); reword them for Python
        message = str(exc).replace(f"--device {text!r}", f"device={text!r}", 1).replace("--device cpu", "device='cpu'")
        raise ValueError(message) from None
    if dev.type == "mps":
        raise ValueError(
            f"device={text!r}: the experiments compute their metrics in float64, which MPS does not support; "
            "run them on 'cpu' (or 'cuda' on a machine with an NVIDIA GPU)"
        )
    return dev


def train_images(*, size: int, count: int, seed: int) -> torch.Tensor:
    """Patches ``(count, 3, size, size)`` cut from the bundled training photos (three scales, flips)."""
    scales = tuple(s for s in (1.0, 0.75, 0.5) if round(96 * s) >= size)
    return bundled_patches(size=size, count=count, names=TRAIN_PHOTOS, scales=scales, seed=seed)


#: scikit-image photos (the ``data`` extra) the medium size trains on besides its faces; the held-out photo
#: ``rocket`` is never among them. Grey ones are repeated to three channels.
SKIMAGE_TRAIN = (
    "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
    "brick", "camera", "coins", "grass", "gravel", "moon", "page", "text", "clock",
)


def study_images(*, size: int, count: int, seed: int, source: str) -> tuple[torch.Tensor, str]:
    """Training images ``(count, 3, size, size)`` and a description of where they come from.

    ``source="bundled"``: patches of the three bundled training photos (:func:`train_images`).
    ``source="skimage"``: 7/8 patches of the scikit-image photos :data:`SKIMAGE_TRAIN` (read at 192x192, cut at
    scales 1, 0.5 and 0.25, flipped) and 1/8 whole faces of scikit-image's ``lfw_subset`` (200 grey 25x25 faces,
    resized to ``size``); without scikit-image (``pip install "reprinvert[data]"``) the bundled photos, and the
    description says so.
    """
    if source == "bundled":
        described = f"{count} patches of the bundled {', '.join(TRAIN_PHOTOS)}"
        return train_images(size=size, count=count, seed=seed), described
    if source != "skimage":
        raise ValueError(f"source={source!r}: expected 'bundled' or 'skimage'")
    try:
        import skimage.data as skdata
    except ImportError:
        x = train_images(size=size, count=count, seed=seed)
        return x, (f"{count} patches of the bundled {', '.join(TRAIN_PHOTOS)} (scikit-image is not installed, so "
                   "not its photos and faces: pip install \"reprinvert[data]\")")
    from ..data import patch_dataset, skimage_images

    faces_n = count // 8
    photos = skimage_images(SKIMAGE_TRAIN, size=192)
    scales = tuple(s for s in (1.0, 0.5, 0.25) if round(192 * s) >= size)
    patches = patch_dataset(photos, size=size, count=count - faces_n, scales=scales, seed=seed)
    faces = torch.from_numpy(skdata.lfw_subset()).float()[:, None].repeat(1, 3, 1, 1)
    faces = torch.nn.functional.interpolate(faces, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False).clamp(0, 1)
    faces = patch_dataset(faces, size=size, count=faces_n, scales=(1.0,), seed=seed + 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 2))
    return torch.cat([patches, faces])[order].contiguous(), (
        f"{count - faces_n} patches of {len(SKIMAGE_TRAIN)} scikit-image photos ({', '.join(SKIMAGE_TRAIN)}) and "
        f"{faces_n} faces of scikit-image's lfw_subset, resized to {size}x{size}"
    )


def cache_path(cache: Path | None, kind: str, *parts: Any) -> Path | None:
    """The checkpoint file of one trained model in ``cache`` (None: no cache), named by a hash of ``parts``
    (the config, the seed, the data's description), so a changed setting trains a new model."""
    if cache is None:
        return None
    import hashlib

    key = hashlib.sha1(json.dumps(jsonable(list(parts)), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache) / f"{kind}-{key}.npz"


def resolve_cache(cache: str | Path | bool | None, out: str | Path | None) -> Path | None:
    """``cache=`` of an experiment -> the folder of trained weights: a path as given; None (default) ->
    ``out/cache`` when ``out`` is given; False -> no cache."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return None if out is None else Path(out) / "cache"
    if isinstance(cache, (str, Path)):
        return Path(cache)
    raise TypeError(f"cache must be a folder, None or False, got {type(cache).__name__}: {cache!r}")


def cached_train(path: Path | None, say: Callable[[str], None], model: torch.nn.Module, data: torch.Tensor,
                 **kwargs: Any) -> Any:
    """:func:`reprinvert.train.train` with ``checkpoint=path``: a finished checkpoint is loaded without a step
    (and said), an interrupted one resumes."""
    from ..train import train

    if path is not None and path.is_file():
        say(f"checkpoint {path} found: a finished training is loaded, an interrupted one resumes (delete the "
            "file to retrain)")
    return train(model, data, checkpoint=path, **kwargs)


def eval_images(*, size: int, count: int, seed: int) -> torch.Tensor:
    """Held-out test images: the first is the whole held-out photo resized, the rest patches cut from it."""
    whole = sample_image(HELD_OUT, size=size)
    if count == 1:
        return whole
    scales = tuple(s for s in (1.0, 0.75, 0.5) if round(96 * s) >= size)
    rest = bundled_patches(size=size, count=count - 1, names=[HELD_OUT], scales=scales, flip=False, seed=seed + 7919)
    return torch.cat([whole, rest])


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples, tensors and floats -> JSON-ready values (non-finite floats -> None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_json(
    path: Path, result: Any, *, extra: Mapping[str, Any] | None = None, device: torch.device | None = None
) -> Path:
    """Write ``result`` (a dataclass) with versions and machine info as indented JSON.

    ``device`` (where the experiment ran) is recorded as ``"device"`` next to ``extra``'s settings, and on
    CUDA the GPU's name as ``machine["gpu"]``.
    """
    machine: dict[str, Any] = {"platform": platform.platform(), "threads": torch.get_num_threads()}
    if device is not None and device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    payload = {
        "result": jsonable(result),
        "versions": {"reprinvert": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": machine,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        **(dict(extra) if extra else {}),
        **({"device": str(device)} if device is not None else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def plot_curves(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
    xticks: Sequence[str] | None = None,
) -> str | None:
    """Plot ``{label: (xs, ys)}`` to ``path`` with matplotlib (imported here, lazily).

    Returns None on success, or a note saying why no plot was written (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return f"{path.name} not written: matplotlib is not installed (pip install 'reprinvert[plot]')"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    try:
        for label, (xs, ys) in series.items():
            ax.plot(list(xs), list(ys), marker="o" if len(xs) < 30 else None, label=label)
        if logy:
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(range(len(xticks)))
            ax.set_xticklabels(list(xticks), rotation=30, ha="right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return None


class Reporter:
    """Prints progress lines unless quiet; times the experiment."""

    def __init__(self, name: str, progress: bool) -> None:
        self.name = name
        self.progress = progress
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.progress:
            print(f"[{self.name} {self.elapsed():6.1f}s] {message}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def out_dir(out: str | Path | None, name: str) -> Path | None:
    """``out/<name>`` created (or None when nothing is to be written)."""
    if out is None:
        return None
    d = Path(out) / name
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{d}': {exc.strerror or exc}") from None
    return d


def mean(t: torch.Tensor) -> float:
    return float(t.double().mean())


Callback = Callable[[str], None]


def noise(alpha: float) -> Any:
    def corrupt(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return corruptions.noise_mix(x, alpha=alpha, generator=g)

    return corrupt


def training_fields(cfg: Any) -> dict[str, Any]:
    """What decides a trained model (the cache key): not the evaluation's settings (test images, inversions)."""
    keep = ("image", "mlp", "unet", "train_count", "epochs", "batch_size", "lr", "data")
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k in keep}
