"""Regenerate reprinvert's bundled sample photos from scikit-image's public-domain / CC0 sample data.

Run from the repository root (needs scikit-image; the reprinvert package itself never imports it):

    python tools/make_bundled_images.py

Each photo is centre-cropped to a square and resized to 96x96 with Pillow's LANCZOS filter, then saved as an
optimised 8-bit RGB PNG in ``src/reprinvert/_data/`` next to a README that records its source and licence.
96 pixels leave room for the demo's default 64x64 (a real downsampling) while keeping the four files well
under 100 KB in all. Licences were checked against each function's docstring in ``skimage.data``; only
photos stated to be public domain or CC0 are used, and only colour ones (``camera`` is CC0 but grey).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import __version__ as skimage_version
from skimage import data

SIZE = 96
MAX_TOTAL_BYTES = 100_000
OUT = Path(__file__).resolve().parent.parent / "src" / "reprinvert" / "_data"

# name -> (what it shows and who took it, licence as stated in the skimage.data docstring)
SOURCES = {
    "astronaut": (
        "Eileen Collins, NASA astronaut; NASA Great Images database (https://flic.kr/p/r9qvLn)",
        'public domain ("No known copyright restrictions, released into the public domain")',
    ),
    "chelsea": ("Chelsea the cat; photograph by Stefan van der Walt", 'CC0 ("No copyright restrictions")'),
    "coffee": (
        "Coffee cup, courtesy of Pikolo Espresso Bar; photograph by Rachel Michetti",
        'CC0 ("No copyright restrictions")',
    ),
    "rocket": (
        "Launch of DSCOVR on Falcon 9; SpaceX Photos (https://www.flickr.com/photos/spacexphotos/16511594820)",
        "public domain (released by SpaceX)",
    ),
}


def square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size x size`` (LANCZOS)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Bundled sample photos",
        "",
        f"{SIZE}x{SIZE} 8-bit RGB PNGs, each a centre square crop of a scikit-image sample photo "
        f"(scikit-image {skimage_version}, `skimage.data.<name>()`) resized with Pillow's LANCZOS filter.",
        "Made by `tools/make_bundled_images.py`; loaded by `reprinvert.data.sample_image(name)`.",
        "Only photos that scikit-image documents as public domain or CC0 are included.",
        "",
        "| file | shows / source | licence |",
        "|---|---|---|",
    ]
    total = 0
    for name, (source, licence) in SOURCES.items():
        path = OUT / f"{name}.png"
        square(Image.fromarray(getattr(data, name)()).convert("RGB"), SIZE).save(path, optimize=True)
        total += path.stat().st_size
        lines.append(f"| `{name}.png` | {source} | {licence} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    if total > MAX_TOTAL_BYTES:
        raise SystemExit(f"bundled images take {total} bytes, more than {MAX_TOTAL_BYTES}; lower SIZE")
    print(f"wrote {len(SOURCES)} images ({total} bytes) and README.md to {OUT}")


if __name__ == "__main__":
    main()
