"""Images in and out: files and folders through Pillow, bundled real photos, synthetic images, PNG grids.

Every tensor is float32 in [0, 1], laid out ``(B, C, H, W)``.

The bundled photos (``sample_image``) are public-domain / CC0 pictures from scikit-image's sample data, stored
at 128x128 inside the package (sources in ``reprinvert/_data/README.md``), so they work offline.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from ._rng import make_generator

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_image",
    "load_images",
    "make_grid",
    "sample_image",
    "sample_images",
    "sample_names",
    "save_grid",
    "save_image",
    "synthetic_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
Size = int | tuple[int, int] | None


def _fit(img: Image.Image, size: Size) -> Image.Image:
    if size is None:
        return img
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size={size}: expected a positive int or an (H, W) pair")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return img.resize((size, size), Image.Resampling.LANCZOS)
    h, w = size
    if h < 1 or w < 1:
        raise ValueError(f"size={size}: expected positive height and width")
    return img.resize((w, h), Image.Resampling.LANCZOS)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def load_image(path: str | Path, *, size: Size = None, mode: str = "RGB") -> torch.Tensor:
    """Read one image file.

    Args:
        path: an image file Pillow can read (PNG, JPEG, ...).
        size: ``None`` keeps the size; an int centre-crops to a square and resizes to ``size x size``; a pair
            ``(H, W)`` resizes to that shape.
        mode: Pillow mode, ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).

    Returns:
        Tensor ``(1, C, H, W)``, float32 in [0, 1].

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no image file at {str(p)!r}" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        with Image.open(p) as img:
            img = img.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {str(p)!r}: {exc}") from None
    return _to_tensor(_fit(img, size))


def load_images(paths: str | Path | Sequence[str | Path], *, size: Size = 64, mode: str = "RGB") -> torch.Tensor:
    """Read several images (a folder, or a list of files and folders) into one batch of a common size.

    Args:
        paths: a folder (every file with an image extension, sorted by name), a file, or a list of them.
        size: common size (see :func:`load_image`); must not be None for images of different sizes.
        mode: ``"RGB"`` or ``"L"``.

    Returns:
        Tensor ``(B, C, H, W)``.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {str(p)!r}")
            files += found
        else:
            files.append(p)
    if not files:
        raise ValueError("paths is empty; pass an image file or a folder of images")
    images = [load_image(f, size=size, mode=mode) for f in files]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)}; pass size= to resize them to one size")
    return torch.cat(images)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write ``(C, H, W)`` or ``(1, C, H, W)`` values in [0, 1] (clamped) as an 8-bit PNG/JPEG; returns the path."""
    t = image.detach().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got a batch of shape {tuple(t.shape)}; use save_grid")
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(t).save(p)
    return p


def _to_pil(t: torch.Tensor) -> Image.Image:
    arr = (t.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode="L" if arr.shape[2] == 1 else "RGB")


def sample_names() -> list[str]:
    """Names of the bundled photos."""
    folder = importlib.resources.files("reprinvert") / "_data"
    return sorted(f.name[:-4] for f in folder.iterdir() if f.name.endswith(".png"))


def sample_image(name: str = "astronaut", *, size: Size = 64) -> torch.Tensor:
    """A bundled real photo as ``(1, 3, H, W)`` in [0, 1] (see :func:`sample_names`)."""
    names = sample_names()
    if name not in names:
        raise ValueError(f"image={name!r} is not a bundled image; available: {names}")
    with importlib.resources.as_file(importlib.resources.files("reprinvert") / "_data" / f"{name}.png") as p:
        return load_image(p, size=size)


def sample_images(*, size: Size = 64) -> torch.Tensor:
    """All bundled photos as one batch ``(B, 3, H, W)``."""
    return torch.cat([sample_image(n, size=size) for n in sample_names()])


def synthetic_images(
    n: int,
    *,
    size: int = 32,
    channels: int = 3,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Smooth random images (sums of random low-frequency sinusoids), ``(n, C, size, size)`` in [0, 1].

    Deterministic for a seed; torch's global RNG is not used.
    """
    if n < 1 or size < 1 or channels < 1:
        raise ValueError(f"n={n}, size={size}, channels={channels}: expected positive ints")
    g = make_generator(seed, generator, "cpu")
    coords = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    waves = 6
    freq = torch.rand(n, channels, waves, 2, generator=g) * 4 + 0.5
    phase = torch.rand(n, channels, waves, generator=g) * 2 * math.pi
    amp = torch.rand(n, channels, waves, generator=g)
    arg = (freq[..., 0, None, None] * xx + freq[..., 1, None, None] * yy) * 2 * math.pi + phase[..., None, None]
    img = (amp[..., None, None] * torch.sin(arg)).sum(2)
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    return ((img - lo) / (hi - lo).clamp_min(1e-8)).float()


def make_grid(
    rows: Sequence[torch.Tensor] | torch.Tensor,
    *,
    padding: int = 2,
    scale: int = 1,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    background: int = 255,
) -> Image.Image:
    """Lay images out in a grid: one row per input, one column per image of that row.

    Args:
        rows: a ``(R, K, C, H, W)`` tensor, or a list of K tensors each ``(R, C, H, W)`` (column by column:
            e.g. ``[x, inversion_layer1, inversion_layer2]``).
        padding: pixels between cells.
        scale: nearest-neighbour upscaling of each cell.
        column_labels: a title above each column.
        row_labels: a label left of each row.
        background: grey level of the padding.

    Returns:
        A ``PIL.Image``.
    """
    if isinstance(rows, torch.Tensor):
        if rows.dim() != 5:
            raise ValueError(f"rows must be (R, K, C, H, W), got shape {tuple(rows.shape)}")
        grid = rows
    else:
        cols = [c.detach().cpu().float() for c in rows]
        if not cols:
            raise ValueError("rows is empty")
        if any(c.shape != cols[0].shape for c in cols):
            raise ValueError(f"every column must have one shape, got {[tuple(c.shape) for c in cols]}")
        grid = torch.stack(cols, dim=1)
    grid = grid.detach().cpu().float()
    r, k, c, h, w = grid.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c}")
    if column_labels is not None and len(column_labels) != k:
        raise ValueError(f"column_labels has {len(column_labels)} labels for {k} columns")
    if row_labels is not None and len(row_labels) != r:
        raise ValueError(f"row_labels has {len(row_labels)} labels for {r} rows")
    ch, cw = h * scale, w * scale
    top = 14 if column_labels else 0
    left = 8 + 7 * max(len(s) for s in row_labels) if row_labels else 0
    canvas = Image.new("RGB", (left + k * cw + (k + 1) * padding, top + r * ch + (r + 1) * padding),
                       (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for i in range(r):
        y = top + padding + i * (ch + padding)
        if row_labels:
            draw.text((2, y + ch // 2 - 5), str(row_labels[i]), fill=(0, 0, 0))
        for j in range(k):
            cell = _to_pil(grid[i, j]).convert("RGB").resize((cw, ch), Image.Resampling.NEAREST)
            canvas.paste(cell, (left + padding + j * (cw + padding), y))
    if column_labels:
        for j, label in enumerate(column_labels):
            draw.text((left + padding + j * (cw + padding) + 1, 1), str(label)[: max(1, cw // 6)], fill=(0, 0, 0))
    return canvas


def save_grid(
    rows: Sequence[torch.Tensor] | torch.Tensor,
    path: str | Path,
    *,
    scale: int = 2,
    padding: int = 2,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write :func:`make_grid` as a PNG; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, padding=padding, scale=scale, column_labels=column_labels, row_labels=row_labels).save(p)
    return p
