"""Private: the built-in demo behind ``reprinvert demo``.

Inverts each stage of a small convolutional network (random weights from a fixed seed: the demo shows what an
*untrained* architecture keeps, not what training teaches it) for a bundled real photo, and writes a PNG grid
and a JSON of metrics.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .data import sample_image, save_grid
from .invert import invert


class DemoCNN(nn.Module):
    """Four stages of [conv3x3 -> BatchNorm -> ReLU], channels 16-32-64-64, stride 2 in stages 2-4.

    Weights are drawn from ``seed`` inside ``torch.random.fork_rng``, so the global RNG is untouched.
    """

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        widths = (3, 16, 32, 64, 64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(4):
                stage = nn.Sequential(
                    nn.Conv2d(widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                    nn.BatchNorm2d(widths[i + 1]),
                    nn.ReLU(inplace=True),
                )
                self.add_module(f"stage{i + 1}", stage)
            self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = getattr(self, f"stage{i + 1}")(x)
        return self.head(x.mean((2, 3)))


LAYERS = ("stage1", "stage2", "stage3", "stage4")


def run_demo(
    out: str | Path = "reprinvert-demo",
    *,
    steps: int = 200,
    size: int = 64,
    seed: int = 0,
    image: str = "astronaut",
    quiet: bool = False,
) -> dict[str, Any]:
    """Invert every stage of :class:`DemoCNN` for a bundled photo; write ``grid.png`` and ``metrics.json``.

    Returns:
        The dictionary written to ``metrics.json``.
    """
    say = (lambda *a: None) if quiet else print
    out = Path(out)
    x = sample_image(image, size=size)
    model = DemoCNN(seed=seed).eval()
    say(f"reprinvert demo: inverting {len(LAYERS)} layers of an untrained 4-stage CNN (seed {seed}) "
        f"for the bundled image {image!r} at {size}x{size}, {steps} steps each")
    rows: list[dict[str, Any]] = []
    images = [x]
    for layer in LAYERS:
        t0 = time.perf_counter()
        res = invert(model, layer, x, steps=steps, seed=seed, clamp=(0.0, 1.0), progress=not quiet)
        s = res.metrics.summary()
        rows.append({"layer": layer, "output_shape": list(res.target.shape), "seconds": time.perf_counter() - t0,
                     **{k: s[k] for k in ("embedding_distance", "reference_distance", "input_distance",
                                          "perturbation_distance", "normalized_feature_error", "psnr")},
                     "represents": bool(res.metrics.represents.all())})
        images.append(res.input)
        say(f"  {layer:7s} {rows[-1]['seconds']:6.1f}s  {res.metrics}")
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(images, out / "grid.png", scale=3, column_labels=["input", *LAYERS])
    result = {
        "model": "DemoCNN (untrained, random weights from the seed)",
        "image": image,
        "size": size,
        "steps": steps,
        "seed": seed,
        "recipe": res.recipe.to_dict(),
        "layers": rows,
        "versions": {"reprinvert": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    say(f"wrote {grid} and {out / 'metrics.json'}")
    return result
