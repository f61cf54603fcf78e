"""Layer sweep of a CNN: invert every stage for two photos; write a grid, a metrics-vs-depth plot and a report.

    python examples/layer_sweep.py            # 64x64, 300 steps per layer (a few minutes on a laptop CPU)
    python examples/layer_sweep.py --smoke    # tiny sizes, a few seconds

Writes ``<out>/layer_sweep.png`` (the grid) and ``<out>/layer_sweep/`` (plot.png with matplotlib, metrics.csv,
metrics.json, report.html).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch import nn

import reprinvert as ri


class StageCNN(nn.Module):
    """Four stages of conv3x3 -> BatchNorm -> ReLU (16, 32, 64, 128 channels; stride 2 from stage 2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        widths = (3, 16, 32, 64, 128)
        for i in range(4):
            block = nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(),
            )
            self.add_module(f"stage{i + 1}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = getattr(self, f"stage{i + 1}")(x)
        return x


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, steps = (16, 5) if args.smoke else (64, 300)

    model = StageCNN().eval()
    x = torch.cat([ri.data.sample_image(name, size=size) for name in ("astronaut", "chelsea")])
    result = ri.sweep(model, x, steps=steps, clamp=(0, 1), progress=not args.smoke)  # layers: the 4 stages
    print(result)

    out = Path(args.out)
    paths = ri.report.write_report(result, out / "layer_sweep", title="Layer sweep of an untrained 4-stage CNN")
    figure = out / "layer_sweep.png"
    shutil.copyfile(paths["grid"], figure)
    if "plot" in paths:
        shutil.copyfile(paths["plot"], out / "layer_sweep_plot.png")
    print(f"wrote {figure} and {', '.join(p.name for p in paths.values())} in {out / 'layer_sweep'}")
    return figure


if __name__ == "__main__":
    main()
