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

from .._version import __version__
from ..data import bundled_patches, sample_image

__all__ = [
    "HELD_OUT",
    "SIZES",
    "TRAIN_PHOTOS",
    "Reporter",
    "check_size",
    "eval_images",
    "jsonable",
    "plot_curves",
    "resolve_device",
    "train_images",
    "write_json",
]

Size = Literal["tiny", "quick", "full"]
#: What an experiment's ``device=`` accepts (None: the CPU).
Device = str | torch.device | None
SIZES = ("tiny", "quick", "full")
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
