"""Image files in and out (Pillow), and labelled PNG grids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS", "image_paths", "load_image", "load_images", "make_grid", "save_grid", "save_image",
    "write_grid",
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


def _label_font() -> _Font:
    """Pillow's scalable default font (a real TrueType face since Pillow 10.1, with FreeType); its old bitmap
    font otherwise, which renders dots and other small glyphs poorly."""
    try:
        return ImageFont.load_default(size=11)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


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
    font = _label_font()
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


def write_grid(
    images: Sequence[torch.Tensor] | torch.Tensor,
    path: str | Path,
    *,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: int = 4,
    padding: int = 2,
) -> Path:
    """Write :func:`make_grid` as a PNG (missing parent folders are created); the path written."""
    p = Path(path)
    img = make_grid(images, padding=padding, scale=scale, column_labels=column_labels, row_labels=row_labels)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        img.save(p)
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"cannot write image '{p}': {exc}") from None
    return p


def save_grid(
    images: Sequence[torch.Tensor] | torch.Tensor,
    path: str | Path,
    *,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: int = 4,
    padding: int = 2,
) -> Path:
    """Deprecated: :func:`reprinvert.report.save_grid` writes a grid of tensors as well as a sweep's grid.

    Writes :func:`make_grid` as a PNG, as before, and warns (``DeprecationWarning``).
    """
    import warnings

    warnings.warn(
        "reprinvert.data.save_grid is deprecated: use reprinvert.report.save_grid(images, path, ...), which writes a "
        "grid of tensors as well as a sweep's grid",
        DeprecationWarning,
        stacklevel=2,
    )
    return write_grid(images, path, column_labels=column_labels, row_labels=row_labels, scale=scale, padding=padding)
