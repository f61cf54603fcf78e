"""Example images that need no download: the bundled photos, scikit-image's photos and smooth synthetic ones."""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._rng import make_generator
from ._io import Size, _check_size, _fit, _to_array, load_image

__all__ = ["SKIMAGE_PHOTOS", "sample_image", "sample_images", "sample_names", "skimage_images", "synthetic_images"]


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


