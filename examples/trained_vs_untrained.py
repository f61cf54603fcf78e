"""Trained vs untrained: the same CNN before and after a short training run, inverted layer by layer.

The classifier learns the orientation of synthetic stripe images (4 classes, generated on the fly: no
downloads). Both copies start from the same random weights; the figure shows, for each photo, what each stage of
the untrained and of the trained network keeps.

    python examples/trained_vs_untrained.py            # 32x32, 300 training steps, 300 inversion steps
    python examples/trained_vs_untrained.py --smoke    # tiny sizes, a few seconds

Writes ``<out>/trained_vs_untrained.png``.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch
from torch import nn

import reprinvert as ri


def stripes(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` coloured stripe images ``(n, 3, size, size)`` in [0, 1] and their orientation class in 0..3."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    theta = labels.float() * math.pi / 4
    freq = 1.5 + 2.5 * torch.rand(n, generator=generator)
    phase = 2 * math.pi * torch.rand(n, generator=generator)
    coords = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx * torch.cos(theta)[:, None, None] + yy * torch.sin(theta)[:, None, None]
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])
    colour = torch.rand(n, 3, 1, 1, generator=generator)
    noise = 0.1 * torch.randn(n, 3, size, size, generator=generator)
    return (wave[:, None] * colour + (1 - colour) * 0.3 + noise).clamp(0, 1), labels


class Classifier(nn.Module):
    """Three conv stages (16, 32, 64 channels, stride 2 after the first), global average pooling, linear(64 -> 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))).mean(dim=(2, 3)))


def train(model: nn.Module, steps: int, size: int, seed: int = 0) -> float:
    """Adam, cross-entropy, fresh batches of 64 each step; returns the accuracy on 512 new images."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        x, y = stripes(64, size, g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = stripes(512, size, g)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, train_steps, steps = (8, 3, 3) if args.smoke else (32, 300, 300)

    torch.manual_seed(0)
    untrained = Classifier().eval()
    trained = copy.deepcopy(untrained)
    accuracy = train(trained, train_steps, size)
    print(f"accuracy of the trained classifier on new stripe images: {accuracy:.1%} (chance: 25%)")

    x = torch.cat([ri.data.sample_image(name, size=size) for name in ("astronaut", "coffee")])
    layers = ["stage1", "stage2", "stage3"]
    runs = {}
    for name, model in (("untrained", untrained), ("trained", trained)):
        runs[name] = ri.sweep(model, x, layers=layers, steps=steps, clamp=(0, 1), progress=not args.smoke)
        print(f"{name}:\n{runs[name]}")

    # rows: photo 0 untrained, photo 0 trained, photo 1 untrained, ...; columns: original, stage1..3
    rows, labels = [], []
    for i in range(x.shape[0]):
        for name, result in runs.items():
            rows.append(torch.stack([x[i], *(inv.input[i] for inv in result.inversions)]))
            labels.append(f"{name} #{i}")
    path = ri.report.save_grid(
        torch.stack(rows),
        Path(args.out) / "trained_vs_untrained.png",
        column_labels=["original", *layers],
        row_labels=labels,
        scale=max(1, 96 // size),
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
