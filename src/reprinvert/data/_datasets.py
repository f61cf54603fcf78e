"""Training sets: patches cut from photos, CIFAR-10 and ``.npy`` arrays from local files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._rng import make_generator
from ._examples import sample_image, sample_names

__all__ = ["bundled_patches", "load_cifar10", "load_npy", "patch_dataset"]


# ---------------------------------------------------------------------------------------------- datasets
def _to_unit_float(arr: np.ndarray, what: str) -> torch.Tensor:
    """uint8 -> /255; 16-bit ints -> /65535; floats kept (must lie in [0, 1]); returns float32."""
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 255.0)
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / 65535.0)
    if np.issubdtype(arr.dtype, np.floating):
        t = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable copy, even of a memory map
        if t.numel() and (not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1):
            raise ValueError(
                f"{what}: float values must be finite and lie in [0, 1], got range "
                f"[{float(t.min()):.4g}, {float(t.max()):.4g}]; rescale them first (e.g. (a - a.min()) / a.ptp())"
            )
        return t
    raise ValueError(f"{what}: unsupported dtype {arr.dtype}; expected uint8, uint16 or a float type in [0, 1]")


def load_npy(
    path: str | Path, *, layout: str = "auto", limit: int | None = None, mmap: bool = True
) -> torch.Tensor:
    """Read an image array saved with ``numpy.save`` (e.g. the seed's 64x64 LSUN church array).

    Args:
        path: a ``.npy`` file holding ``(N, H, W, C)``, ``(N, C, H, W)``, ``(N, H, W)`` or one image
            ``(H, W, C)`` / ``(C, H, W)``; uint8 (divided by 255), uint16 (by 65535) or float in [0, 1].
        layout: ``"auto"`` (channels last when the last axis has 1, 3 or 4 entries, else channels first),
            ``"nhwc"`` or ``"nchw"``. A fourth (alpha) channel is dropped.
        limit: read only the first ``limit`` images.
        mmap: memory-map the file, so ``limit`` reads only what it needs.

    Returns:
        Tensor ``(N, C, H, W)``, float32 in [0, 1].

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unsupported shape, dtype or ``layout``.

    Example:
        >>> import tempfile, pathlib, numpy as np, reprinvert as ri
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
        >>> np.save(p, np.zeros((5, 8, 8, 3), dtype=np.uint8))
        >>> ri.data.load_npy(p).shape
        torch.Size([5, 3, 8, 8])
    """
    if layout not in ("auto", "nhwc", "nchw"):
        raise ValueError(f"layout={layout!r}: expected 'auto', 'nhwc' or 'nchw'")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no .npy file at '{p}' (resolved to '{p.resolve()}')")
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"cannot read '{p}' as a .npy array: {exc}") from None
    if arr.ndim == 3 and layout == "auto" and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
        arr = arr[:, None]  # (N, H, W) grey
    elif arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"'{p}' holds an array of shape {arr.shape}; expected (N, H, W, C) or (N, C, H, W) images")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit={limit!r}: expected a positive int or None")
        arr = arr[:limit]
    nhwc = layout == "nhwc" or (layout == "auto" and arr.shape[-1] in (1, 3, 4))
    t = _to_unit_float(np.ascontiguousarray(arr), f"'{p}'")
    if nhwc:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] not in (1, 3):
        raise ValueError(f"'{p}': images with {t.shape[1]} channels (shape {arr.shape}); expected 1, 3 or 4")
    return t.contiguous()


def load_cifar10(
    root: str | Path, *, split: str = "train", limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 from its python batch files (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).

    Nothing is downloaded: ``root`` is the folder ``cifar-10-batches-py`` the user already has (or its parent).

    Args:
        root: the folder holding the batch files, or its parent.
        split: ``"train"`` (the five data batches) or ``"test"``.
        limit: keep only the first ``limit`` images.

    Returns:
        ``(images, labels)``: float32 ``(N, 3, 32, 32)`` in [0, 1] and int64 ``(N,)``.

    Raises:
        FileNotFoundError: the batch files are not there.
        ValueError: a bad ``split`` or ``limit``, or a file that is not a CIFAR-10 batch.
    """
    import pickle

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}: expected a positive int or None")
    base = Path(root)
    if not (base / "test_batch").exists() and (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    count = 0
    for name in names:
        f = base / name
        if not f.is_file():
            raise FileNotFoundError(
                f"no CIFAR-10 batch file '{f}'; pass the folder 'cifar-10-batches-py' of the python version "
                "(reprinvert downloads nothing)"
            )
        with open(f, "rb") as fh:
            try:
                batch = pickle.load(fh, encoding="bytes")
            except Exception as exc:
                raise ValueError(f"cannot read '{f}' as a CIFAR-10 python batch: {exc}") from None
        data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
        labs = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
        if data is None or labs is None:
            raise ValueError(f"'{f}' is not a CIFAR-10 python batch (no 'data' and 'labels' entries)")
        arr = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        images.append(arr)
        labels.append(np.asarray(labs, dtype=np.int64))
        count += arr.shape[0]
        if limit is not None and count >= limit:
            break
    x = torch.from_numpy(np.concatenate(images).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate(labels))
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x.contiguous(), y


def patch_dataset(
    images: torch.Tensor,
    *,
    size: int = 32,
    count: int = 1024,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cut many training images out of a few large ones: random square crops, optionally rescaled and flipped.

    For each patch: an image is chosen uniformly, then a scale from ``scales`` (the image is resized by it with
    bilinear antialiasing first, so scale 0.5 gives coarser, more zoomed-out patches), then a uniformly random
    ``size x size`` position, then a horizontal flip with probability 1/2 (if ``flip``).

    Args:
        images: ``(N, C, H, W)`` in [0, 1], each at least ``size`` pixels high and wide at every scale.
        size: patch height and width.
        count: number of patches.
        scales: resize factors of the source images to cut from.
        flip: random horizontal flips.
        seed, generator: the randomness (global RNG untouched).

    Returns:
        Tensor ``(count, C, size, size)``, float32.

    Example:
        >>> import reprinvert as ri
        >>> ri.data.patch_dataset(ri.data.sample_images(size=None), size=16, count=10).shape
        torch.Size([10, 3, 16, 16])
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    for arg, value in (("size", size), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}={value!r}: expected a positive int")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales={scales!r}: expected positive resize factors, e.g. (1.0, 0.75, 0.5)")
    g = make_generator(seed, generator, "cpu")
    src = images.detach().cpu().float()
    pyramid = []
    for s in scales:
        h, w = round(src.shape[2] * s), round(src.shape[3] * s)
        if h < size or w < size:
            raise ValueError(
                f"scale {s} turns the {src.shape[2]}x{src.shape[3]} images into {h}x{w}, smaller than size={size}"
            )
        scaled = src if (h, w) == tuple(src.shape[2:]) else torch.nn.functional.interpolate(
            src, size=(h, w), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)
        pyramid.append(scaled)
    which = torch.randint(0, src.shape[0], (count,), generator=g)
    level = torch.randint(0, len(scales), (count,), generator=g)
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    flips = torch.rand(count, generator=g) < 0.5
    out = torch.empty(count, src.shape[1], size, size)
    for k in range(count):
        img = pyramid[int(level[k])][int(which[k])]
        top = int(u[k, 0] * (img.shape[1] - size + 1))
        left = int(u[k, 1] * (img.shape[2] - size + 1))
        patch = img[:, top : top + size, left : left + size]
        out[k] = patch.flip(-1) if flip and bool(flips[k]) else patch
    return out


def bundled_patches(
    *,
    size: int = 32,
    count: int = 1024,
    names: Sequence[str] | None = None,
    scales: Sequence[float] = (1.0, 0.75, 0.5),
    flip: bool = True,
    seed: int | None = 0,
) -> torch.Tensor:
    """:func:`patch_dataset` cut from the bundled 96x96 photos (offline real training images).

    Args:
        size: patch height and width (at most 48 with the default scales).
        count: number of patches.
        names: which bundled photos (default all of :func:`sample_names`); hold one out for testing.
        scales, flip, seed: as in :func:`patch_dataset`.

    Returns:
        Tensor ``(count, 3, size, size)``, float32 in [0, 1].

    Example:
        >>> import reprinvert as ri
        >>> ri.data.bundled_patches(size=16, count=4, names=["coffee"]).shape
        torch.Size([4, 3, 16, 16])
    """
    chosen = list(names) if names is not None else sample_names()
    photos = torch.cat([sample_image(n, size=None) for n in chosen])
    return patch_dataset(photos, size=size, count=count, scales=scales, flip=flip, seed=seed)
