"""Regenerate reprinvert's bundled sample images from scikit-image's public-domain / CC0 photos.

Run: python tools/make_bundled_images.py   (needs scikit-image; the package itself does not)

Each photo is centre-cropped to a square and resized to 128x128 with Pillow's LANCZOS filter; reprinvert
resizes further on load.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import data

SIZE = 128
OUT = Path(__file__).resolve().parent.parent / "src" / "reprinvert" / "_data"
SOURCES = {
    "astronaut": "Eileen Collins, NASA Great Images database; public domain (skimage.data.astronaut)",
    "chelsea": "Chelsea the cat, Stefan van der Walt; CC0 (skimage.data.chelsea)",
    "coffee": "Coffee cup, Rachel Michetti / Pikolo Espresso Bar; CC0 (skimage.data.coffee)",
    "rocket": "DSCOVR launch on Falcon 9, SpaceX; public domain (skimage.data.rocket)",
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Bundled sample images", "", f"{SIZE}x{SIZE} RGB PNGs made by `tools/make_bundled_images.py`.", ""]
    for name, source in SOURCES.items():
        img = Image.fromarray(getattr(data, name)())
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(OUT / f"{name}.png", optimize=True)
        lines.append(f"- `{name}.png`: {source}")
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
