"""Images in and out: files and folders through Pillow, bundled real photos, synthetic images, PNG grids.

Every tensor here is float32 in [0, 1], laid out ``(B, C, H, W)`` with C = 3 (RGB) or 1 (grey).

The bundled photos (:func:`sample_image`) are four public-domain / CC0 pictures from scikit-image's sample
data (astronaut, chelsea, coffee, rocket), stored at 96x96 inside the package so they work offline; sources
and licences are in ``reprinvert/_data/README.md``.

Example:
    >>> import reprinvert as ri
    >>> x = ri.data.sample_image("astronaut", size=32)
    >>> x.shape, x.dtype
    (torch.Size([1, 3, 32, 32]), torch.float32)
    >>> ri.data.synthetic_images(2, size=8, seed=1).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from ._rng import make_generator

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIMAGE_PHOTOS",
    "bundled_patches",
    "image_paths",
    "load_cifar10",
    "load_image",
    "load_images",
    "load_npy",
    "make_grid",
    "patch_dataset",
    "sample_image",
    "sample_images",
    "sample_names",
    "save_grid",
    "save_image",
    "skimage_images",
    "synthetic_images",
]

#: File name endings :func:`load_images` treats as images when it reads a folder (compared in lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Size = int | tuple[int, int] | None
_MODES = ("RGB", "L")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_RESAMPLE: Any = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 moved the filter names
_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


# ---------------------------------------------------------------------------------------------- reading
def _check_size(size: object) -> tuple[int, int] | None:
    """``None``, an int or an ``(H, W)`` pair of positive ints -> ``None`` or ``(H, W)``."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        if size >= 1:
            return size, size
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        return int(size[0]), int(size[1])
    raise ValueError(f"size={size!r}: expected None, a positive int (a square) or a (height, width) pair")


def _check_mode(mode: object) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}: expected one of {list(_MODES)} (RGB: 3 channels, L: grey, 1 channel)")
    return str(mode)


def _fit(img: Image.Image, hw: tuple[int, int] | None) -> Image.Image:
    """Centre-crop ``img`` to the aspect ratio of ``hw`` = (H, W), then resize to it with LANCZOS."""
    if hw is None:
        return img
    h, w = hw
    iw, ih = img.size
    if (iw, ih) == (w, h):
        return img
    # the largest centred box of aspect w:h inside the image
    if iw * h > ih * w:  # image is wider than the target
        cw, ch = max(1, round(ih * w / h)), ih
    else:
        cw, ch = iw, max(1, round(iw * h / w))
    left, top = (iw - cw) // 2, (ih - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), _RESAMPLE.LANCZOS)


def _to_array(img: Image.Image, mode: str) -> np.ndarray:
    """A Pillow image -> float32 ``(H, W, C)`` in [0, 1], 16-bit grey scaled by 65535 rather than clipped."""
    if img.mode in _SIXTEEN_BIT:
        arr = np.asarray(img, dtype=np.float32)[:, :, None] / 65535.0
        return np.repeat(arr, 3, axis=2) if mode == "RGB" else arr
    arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    return arr[:, :, None] if arr.ndim == 2 else arr


def load_image(path: str | Path, *, size: Size = None, mode: str = "RGB") -> torch.Tensor:
    """Read one image file into a tensor.

    Args:
        path: a file Pillow can read (PNG, JPEG, BMP, GIF (first frame), TIFF, WebP, ...). The EXIF
            orientation of photos is applied.
        size: ``None`` keeps the file's size; an int ``s`` centre-crops to a square and resizes to ``s x s``;
            a pair ``(H, W)`` centre-crops to the aspect ratio ``W:H`` and resizes to ``H x W``. Resizing uses
            Pillow's LANCZOS filter.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).

    Returns:
        Tensor ``(1, C, H, W)``, float32 in [0, 1].

    Raises:
        FileNotFoundError: nothing exists at ``path``.
        ValueError: ``path`` is a folder or not a readable image (the message starts
            ``cannot read image '<path>'``), or ``size`` / ``mode`` are invalid.

    Example:
        >>> import tempfile, pathlib, torch, reprinvert as ri
        >>> p = ri.data.save_image(torch.rand(3, 8, 8), pathlib.Path(tempfile.mkdtemp()) / "a.png")
        >>> ri.data.load_image(p, size=4).shape
        torch.Size([1, 3, 4, 4])
    """
    hw = _check_size(size)
    mode = _check_mode(mode)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no image file at '{p}' (resolved to '{p.resolve()}')")
    if p.is_dir():
        raise ValueError(f"cannot read image '{p}': it is a folder; use load_images() to read a folder of images")
    try:
        with Image.open(p) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened) or opened
            arr = _to_array(_fit(img, hw), mode)
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image '{p}': not an image format Pillow recognises") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image '{p}': {exc}") from None
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def image_paths(paths_or_folder: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files :func:`load_images` reads, in its order (a folder's image files sorted by name).

    Raises:
        FileNotFoundError: a folder holds no image files.
        ValueError: an empty list.
    """
    items = [paths_or_folder] if isinstance(paths_or_folder, (str, Path)) else list(paths_or_folder)
    if not items:
        raise ValueError("paths_or_folder is an empty list; pass an image file, a folder or a list of them")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise FileNotFoundError(
                    f"no image files in folder '{p}' (looked for names ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            files.extend(found)
        else:
            files.append(p)
    return files


def load_images(
    paths_or_folder: str | Path | Sequence[str | Path], *, size: Size = None, mode: str = "RGB"
) -> torch.Tensor:
    """Read several images into one batch.

    Args:
        paths_or_folder: a folder (every file in it whose name ends in one of :data:`IMAGE_EXTENSIONS`, sorted
            by name; subfolders are not searched), one image file, or a list of files and folders.
        size: as in :func:`load_image`. Required when the images differ in size.
        mode: ``"RGB"`` or ``"L"``.

    Returns:
        Tensor ``(B, C, H, W)``, float32 in [0, 1], in the order of ``paths_or_folder`` (folders sorted).

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no image files.
        ValueError: an unreadable file, images of different sizes without ``size``, or an empty list.

    Example:
        >>> import tempfile, pathlib, torch, reprinvert as ri
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for i in range(3):
        ...     _ = ri.data.save_image(torch.rand(3, 8, 6), d / f"{i}.png")
        >>> ri.data.load_images(d, size=4).shape
        torch.Size([3, 3, 4, 4])
    """
    hw = _check_size(size)
    mode = _check_mode(mode)
    files = image_paths(paths_or_folder)
    images = [load_image(f, size=hw, mode=mode) for f in files]
    shapes = {tuple(t.shape[2:]) for t in images}
    if len(shapes) > 1:
        raise ValueError(
            f"the {len(images)} images have different sizes (H, W) {sorted(shapes)}; "
            "pass size= (an int or (H, W)) to bring them to one size"
        )
    return torch.cat(images)


# ---------------------------------------------------------------------------------------------- writing
def _to_pil(t: torch.Tensor) -> Image.Image:
    """``(C, H, W)`` with C in (1, 3), any float range -> 8-bit Pillow image (clamped to [0, 1]; NaN -> 0)."""
    t = torch.nan_to_num(t.detach().cpu().float(), nan=0.0).clamp(0, 1)
    arr = (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write one image as an 8-bit file (PNG, or any format Pillow infers from the name).

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` with C = 1 or 3; values are clamped to [0, 1] (NaN -> 0).
        path: where to write; missing parent folders are created.

    Returns:
        The path written.

    Raises:
        ValueError: wrong shape, or the file cannot be written (unknown extension, ...).

    Example:
        >>> import tempfile, pathlib, torch, reprinvert as ri
        >>> ri.data.save_image(torch.rand(1, 3, 4, 4), pathlib.Path(tempfile.mkdtemp()) / "x.png").name
        'x.png'
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    t = image
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(
                f"save_image writes one image, got a batch of shape {tuple(t.shape)}; "
                "index it (image[i]) or use save_grid() for many"
            )
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W) with C = 1 or 3, got shape {tuple(image.shape)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        _to_pil(t).save(p)
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"cannot write image '{p}': {exc}") from None
    return p


# ---------------------------------------------------------------------------------------------- bundled
def _data_dir() -> Any:  # importlib.resources.abc.Traversable (Python >= 3.11 name)
    return importlib.resources.files("reprinvert") / "_data"


def sample_names() -> list[str]:
    """Names of the bundled photos, sorted: ``['astronaut', 'chelsea', 'coffee', 'rocket']``."""
    return sorted(f.name[: -len(".png")] for f in _data_dir().iterdir() if f.name.endswith(".png"))


def sample_image(name: str = "astronaut", *, size: Size = 64) -> torch.Tensor:
    """A bundled public-domain / CC0 photo (stored at 96x96) as a tensor.

    Args:
        name: one of :func:`sample_names`.
        size: as in :func:`load_image`; ``None`` gives the stored 96x96. Sizes above 96 are upsampled.

    Returns:
        Tensor ``(1, 3, H, W)``, float32 in [0, 1].

    Raises:
        ValueError: unknown ``name`` (the message lists the available names).

    Example:
        >>> import reprinvert as ri
        >>> ri.data.sample_image("coffee", size=(24, 32)).shape
        torch.Size([1, 3, 24, 32])
    """
    names = sample_names()
    if name not in names:
        raise ValueError(f"image={name!r} is not a bundled image; available: {', '.join(names)}")
    with importlib.resources.as_file(_data_dir() / f"{name}.png") as p:
        return load_image(p, size=size)


def sample_images(*, size: Size = 64) -> torch.Tensor:
    """All bundled photos as one batch ``(B, 3, H, W)``, in the order of :func:`sample_names`."""
    return torch.cat([sample_image(n, size=size) for n in sample_names()])


# ---------------------------------------------------------------------------------------------- synthetic
def synthetic_images(
    n: int,
    *,
    size: int = 32,
    channels: int = 3,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Smooth random images: each channel a sum of six random plane waves of 0.5 to 4.5 cycles per image.

    Each channel of each image is rescaled to span exactly [0, 1]. Randomness comes only from ``seed`` (or
    ``generator``); torch's global RNG is not touched.

    Args:
        n: number of images.
        size: height and width.
        channels: channels per image.
        seed: seed of a private generator (pass ``seed=None`` with ``generator``).
        generator: a CPU ``torch.Generator`` to draw from instead.

    Returns:
        Tensor ``(n, channels, size, size)``, float32 in [0, 1].

    Example:
        >>> import torch, reprinvert as ri
        >>> torch.equal(ri.data.synthetic_images(2, seed=1), ri.data.synthetic_images(2, seed=1))
        True
    """
    for arg, value in (("n", n), ("size", size), ("channels", channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg}={value!r}: expected a positive int")
    g = make_generator(seed, generator, "cpu")
    coords = torch.linspace(0, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    waves = 6
    freq = torch.rand(n, channels, waves, 2, generator=g, dtype=torch.float64) * 4 + 0.5
    sign = torch.where(torch.rand(n, channels, waves, 2, generator=g) < 0.5, -1.0, 1.0).double()
    phase = torch.rand(n, channels, waves, generator=g, dtype=torch.float64) * 2 * math.pi
    amp = torch.rand(n, channels, waves, generator=g, dtype=torch.float64)
    fx, fy = (freq * sign).unbind(-1)
    angle = (fx[..., None, None] * xx + fy[..., None, None] * yy) * 2 * math.pi + phase[..., None, None]
    img = (amp[..., None, None] * torch.sin(angle)).sum(2)
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    return ((img - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1).float()


# ---------------------------------------------------------------------------------------------- grids
def _as_columns(images: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A (R, K, C, H, W) tensor or a list of K columns (R or 1, C, H, W) / (C, H, W) -> (R, K, 3|1, H, W)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 5:
            raise ValueError(
                f"images as one tensor must be (R, K, C, H, W) (rows, columns, ...), got shape {tuple(images.shape)}"
                "; pass a list of (B, C, H, W) columns instead"
            )
        grid = images.detach().cpu().float()
    else:
        cols = list(images)
        if not cols:
            raise ValueError("images is empty; pass a list of (B, C, H, W) tensors, one per column")
        cols = [c.detach().cpu().float() for c in cols]
        cols = [c.unsqueeze(0) if c.dim() == 3 else c for c in cols]
        shapes = [tuple(c.shape) for c in cols]
        if any(c.dim() != 4 for c in cols):
            raise ValueError(f"every column must be (B, C, H, W) or (C, H, W), got shapes {shapes}")
        rows = max(c.shape[0] for c in cols)
        if any(c.shape[0] not in (1, rows) for c in cols) or len({c.shape[2:] for c in cols}) > 1:
            raise ValueError(
                f"every column must hold the same number of images (or 1, repeated down the rows) of one height and "
                f"width, got shapes {shapes}"
            )
        chans = {c.shape[1] for c in cols}
        if chans - {1, 3} or (len(chans) > 1 and 1 not in chans):
            raise ValueError(f"images must have 1 or 3 channels, got shapes {shapes}")
        c_out = max(chans)
        grid = torch.stack([c.expand(rows, c_out, *c.shape[2:]) for c in cols], dim=1)
    if grid.shape[2] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(grid.shape)}")
    return grid


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font: _Font) -> str:
    """``text``, shortened with '..' until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".." if text else ""


def make_grid(
    images: Sequence[torch.Tensor] | torch.Tensor,
    *,
    padding: int = 2,
    scale: int = 1,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    background: int = 255,
) -> Image.Image:
    """Lay images out in a grid: one row per input, one column per version of it.

    The usual call is ``make_grid([x, inversion_1.input, inversion_2.input], ...)``: row i shows input i,
    then its inversion at each layer. Values are clamped to [0, 1]; grey images are shown as grey.

    Args:
        images: a list of K columns, each ``(R, C, H, W)`` (a column with one image, ``(1, C, H, W)`` or
            ``(C, H, W)``, is repeated down all R rows), or a tensor ``(R, K, C, H, W)``.
        padding: pixels between cells and around the border.
        scale: nearest-neighbour upscaling factor of each cell (pixels stay sharp).
        column_labels: K titles drawn above the columns (Pillow's default font; shortened to fit).
        row_labels: R labels drawn left of the rows.
        background: grey level 0-255 of the padding.

    Returns:
        An RGB ``PIL.Image`` of width ``left + K * (W * scale + padding) + padding`` and height
        ``top + R * (H * scale + padding) + padding``, where ``left`` / ``top`` are 0 without labels.

    Raises:
        ValueError: inconsistent shapes or label counts, or a bad ``padding`` / ``scale``.

    Example:
        >>> import torch, reprinvert as ri
        >>> ri.data.make_grid([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)], padding=1, scale=2).size
        (35, 35)
    """
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding={padding!r}: expected an int >= 0")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale={scale!r}: expected a positive int")
    grid = _as_columns(images)
    r, k, _, h, w = grid.shape
    if column_labels is not None and len(column_labels) != k:
        raise ValueError(f"column_labels has {len(column_labels)} labels for {k} columns")
    if row_labels is not None and len(row_labels) != r:
        raise ValueError(f"row_labels has {len(row_labels)} labels for {r} rows")
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    ch, cw = h * scale, w * scale
    text_h = math.ceil(probe.textbbox((0, 0), "Hgy", font=font)[3]) + 2
    top = text_h + 2 if column_labels else 0
    left = int(max(probe.textlength(str(s), font=font) for s in row_labels)) + 6 if row_labels else 0
    size = (left + k * (cw + padding) + padding, top + r * (ch + padding) + padding)
    canvas = Image.new("RGB", size, (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for i in range(r):
        y = top + padding + i * (ch + padding)
        if row_labels:
            draw.text((3, y + max(0, (ch - text_h) // 2)), str(row_labels[i]), fill=(0, 0, 0), font=font)
        for j in range(k):
            cell = _to_pil(grid[i, j]).convert("RGB")
            if scale != 1:
                cell = cell.resize((cw, ch), _RESAMPLE.NEAREST)
            canvas.paste(cell, (left + padding + j * (cw + padding), y))
    for j, label in enumerate(column_labels or ()):
        text = _fit_text(draw, str(label), cw + padding, font)
        x = left + padding + j * (cw + padding) + max(0, (cw - int(draw.textlength(text, font=font))) // 2)
        draw.text((x, 1), text, fill=(0, 0, 0), font=font)
    return canvas


def save_grid(
    images: Sequence[torch.Tensor] | torch.Tensor,
    path: str | Path,
    *,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: int = 4,
    padding: int = 2,
) -> Path:
    """Write :func:`make_grid` as a PNG (rows: inputs; columns: e.g. the original, then each inversion).

    Args:
        images: as in :func:`make_grid`.
        path: the file to write; missing parent folders are created.
        column_labels: titles above the columns.
        row_labels: labels left of the rows.
        scale: nearest-neighbour upscaling of each cell.
        padding: pixels between cells.

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib, torch, reprinvert as ri
        >>> x = ri.data.sample_image(size=16)
        >>> p = ri.data.save_grid([x, 1 - x], pathlib.Path(tempfile.mkdtemp()) / "g.png", column_labels=["x", "1-x"])
        >>> p.suffix
        '.png'
    """
    p = Path(path)
    img = make_grid(images, padding=padding, scale=scale, column_labels=column_labels, row_labels=row_labels)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        img.save(p)
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"cannot write image '{p}': {exc}") from None
    return p


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


#: scikit-image's public-domain / CC0 colour photos that :func:`skimage_images` reads by default.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def skimage_images(names: Sequence[str] | None = None, *, size: Size = 96) -> torch.Tensor:
    """Photos bundled with scikit-image (an optional dependency; nothing is downloaded).

    Args:
        names: functions of ``skimage.data`` returning an image (default :data:`SKIMAGE_PHOTOS`); grey images
            are repeated to 3 channels.
        size: as in :func:`load_image` (required to stack photos of different sizes; default 96).

    Returns:
        Tensor ``(B, 3, H, W)``, float32 in [0, 1].

    Raises:
        ImportError: scikit-image is not installed (``pip install scikit-image``).
        ValueError: an unknown name.
    """
    try:
        import skimage.data as skdata
    except ImportError:
        raise ImportError("skimage_images needs scikit-image: pip install scikit-image") from None
    out = []
    for name in names or SKIMAGE_PHOTOS:
        fn = getattr(skdata, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"{name!r} is not an image of skimage.data; defaults: {', '.join(SKIMAGE_PHOTOS)}")
        arr = np.asarray(fn())
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        img = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8)).convert("RGB")
        out.append(torch.from_numpy(_to_array(_fit(img, _check_size(size)), "RGB")).permute(2, 0, 1))
    return torch.stack(out).contiguous()


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
