"""Your own model and image: a layer sweep of any ``nn.Module`` on any picture, with a full report.

Replace ``build_model`` with your own network (load its weights with ``model.load_state_dict(...)``) and pass
your picture with ``--image``. The same thing from the shell, without writing Python:

    reprinvert layers mypackage.models:build --input-shape 1,3,64,64
    reprinvert sweep mypackage.models:build my_photo.jpg --size 64 --weights weights.pt --out my-report

    python examples/own_model.py --image my_photo.jpg     # 64x64, 300 steps per layer
    python examples/own_model.py --smoke                  # a bundled photo, tiny sizes

Writes ``<out>/own_model.png`` (the grid) and ``<out>/own_model/report.html`` with the tables and the plot.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch import nn

import reprinvert as ri


def build_model() -> nn.Module:
    """Your model goes here. This one: conv-ReLU, then two strided conv-ReLU, then a 1x1 bottleneck."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU()))
    model.add_module("down1", nn.Sequential(nn.Conv2d(24, 48, 3, stride=2, padding=1), nn.ReLU()))
    model.add_module("down2", nn.Sequential(nn.Conv2d(48, 96, 3, stride=2, padding=1), nn.ReLU()))
    model.add_module("bottleneck", nn.Conv2d(96, 4, 1))
    # model.load_state_dict(torch.load("weights.pt", weights_only=True))
    return model.eval()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="your picture (default: the bundled 'coffee' photo)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, steps = (16, 5) if args.smoke else (64, 300)

    model = build_model()
    if args.image:
        x = ri.data.load_image(args.image, size=size)  # centre crop + resize, (1, 3, size, size) in [0, 1]
    else:
        x = ri.data.sample_image("coffee", size=size)
    print(ri.describe(model, x))  # the layer names you can pass to layers=[...]
    result = ri.sweep(model, x, layers=["stem", "down1", "down2", "bottleneck"], steps=steps, clamp=(0, 1),
                      progress=not args.smoke)
    print(result)

    out = Path(args.out)
    paths = ri.report.write_report(result, out / "own_model", title="My model, layer by layer")
    figure = out / "own_model.png"
    shutil.copyfile(paths["grid"], figure)
    print(f"wrote {figure}; open {paths['html']} in a browser for the tables and the plot")
    return figure


if __name__ == "__main__":
    main()
