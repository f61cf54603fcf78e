"""Quickstart: invert one layer of a small CNN for a photo and save "original | what the layer keeps".

    python examples/quickstart.py            # 64x64, 300 steps (about half a minute on a laptop CPU)
    python examples/quickstart.py --smoke    # tiny sizes, a few seconds

Writes ``<out>/quickstart.png``. The CNN is untrained (random weights from a fixed seed): the figure shows what
its architecture keeps of the photo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import reprinvert as ri


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
    ).eval()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, steps = (16, 5) if args.smoke else (64, 300)

    model = build_model()
    x = ri.data.sample_image("astronaut", size=size)  # (1, 3, H, W) in [0, 1], bundled, offline
    print(ri.describe(model, x))  # every layer's name and output shape

    layers = ["1", "3", "5"]  # the ReLU after each convolution
    results = [ri.invert(model, layer, x, steps=steps, clamp=(0, 1)) for layer in layers]
    for layer, res in zip(layers, results):
        print(f"layer {layer}: {res.metrics}")  # m_g < m_r: the layer represents x

    path = ri.report.save_grid(
        [x, *(r.input for r in results)],
        Path(args.out) / "quickstart.png",
        column_labels=["original", *(f"layer {layer}" for layer in layers)],
        scale=max(1, 128 // size),
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
