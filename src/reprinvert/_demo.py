"""Private: the built-in demo behind ``reprinvert demo``.

Inverts the output of each stage of a small convolutional network for a bundled real photo and writes a PNG
grid and a JSON file of metrics. The network is **untrained**: its weights are random (drawn from a fixed
seed), so the demo shows what the architecture alone keeps of the input (its strides and widths), not what
training would teach it to keep.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._sweep import sweep
from .data import sample_image
from .report import write_report

__all__ = ["LAYERS", "DemoCNN", "run_demo"]

LAYERS = ("stage1", "stage2", "stage3", "stage4")
UNTRAINED_NOTE = (
    "DemoCNN is untrained: its weights are random (Kaiming-normal convolutions drawn from the seed; BatchNorm "
    "at its initial statistics, effectively the identity in eval mode). The inversions show what the architecture "
    "keeps of the input, not what a trained network would keep."
)


class DemoCNN(nn.Module):
    """A small untrained CNN: four stages, then global average pooling and a linear head.

    ``stage{i}`` = Conv3x3 (no bias) -> BatchNorm -> ReLU with 16, 32, 64, 64 channels; the convolutions of
    stages 2-4 have stride 2, so an input ``(B, 3, H, W)`` gives ``(B, 16, H, W)``, ``(B, 32, H/2, W/2)``,
    ``(B, 64, H/4, W/4)``, ``(B, 64, H/8, W/8)`` and logits ``(B, 10)``.

    Weights are drawn from a private ``torch.Generator`` seeded with ``seed`` (modules are built with
    ``torch.nn.utils.skip_init``), so building the model never touches torch's global RNG.
    """

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = (3, 16, 32, 64, 64)
        for i in range(4):
            conv = nn.utils.skip_init(
                nn.Conv2d, widths[i], widths[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False
            )
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=g)
            self.add_module(f"stage{i + 1}", nn.Sequential(conv, nn.BatchNorm2d(widths[i + 1]), nn.ReLU()))
        self.head = nn.utils.skip_init(nn.Linear, widths[-1], 10)
        nn.init.normal_(self.head.weight, std=widths[-1] ** -0.5, generator=g)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> logits ``(B, 10)``."""
        for name in LAYERS:
            x = getattr(self, name)(x)
        return self.head(x.mean(dim=(2, 3)))




def run_demo(
    out: str | Path = "reprinvert-demo",
    *,
    steps: int = 500,
    size: int = 64,
    seed: int = 0,
    image: str = "astronaut",
    progress: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Invert every stage of an untrained :class:`DemoCNN` for a bundled photo; write a grid and metrics.

    Each stage's output is inverted as ``reprinvert.invert(model, layer, x, steps=steps, seed=seed,
    clamp=(0, 1))`` would (the default recipe), through ``reprinvert.sweep``. Writes into ``out``:

    * what ``reprinvert sweep`` writes: ``grid.png`` (the original, then each stage's inversion), ``report.html``
      (self-contained: grid, plots, tables, provenance), ``metrics.csv``, ``samples.csv`` and, when matplotlib
      is installed, ``plot.png`` and ``convergence.png``;
    * ``metrics.json``: the sweep's JSON (provenance, per-layer and per-sample rows) plus a ``"demo"`` block
      (model, image, size, steps, seed, total seconds).

    Args:
        out: output folder (created if missing).
        steps: optimisation steps per layer.
        size: the photo is centre-cropped and resized to ``size x size``.
        seed: seed of the model's weights and of every inversion.
        image: a bundled photo (see :func:`reprinvert.data.sample_names`).
        progress: show the sweep's progress (a line per layer; tqdm bars when tqdm is installed).
        quiet: print nothing at all (overrides ``progress``).

    Returns:
        The dictionary written to ``metrics.json``.

    Raises:
        ValueError: a non-positive ``steps`` or ``size``, or an unknown ``image``.
    """
    for arg, value in (("steps", steps), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg}={value!r}: expected a positive int")

    def say(*args: Any, **kwargs: Any) -> None:
        if not quiet:
            print(*args, **kwargs)

    progress = progress and not quiet
    out = Path(out)
    x = sample_image(image, size=size)
    try:  # fail before the long work, not after it
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{out}': {exc.strerror or exc}") from None
    model = DemoCNN(seed=seed).eval()
    started = time.perf_counter()
    say(
        f"reprinvert demo: inverting {len(LAYERS)} layers of DemoCNN, an UNTRAINED 4-stage CNN (random weights, "
        f"seed {seed}), for the bundled photo {image!r} at {size}x{size}, {steps} steps per layer"
    )
    # A sweep of the four stages, one by one (each stage exactly as ri.invert(model, stage, x, ...) would run it),
    # so the demo writes the same self-contained report.html as `reprinvert sweep`.
    swept = sweep(
        model, x, layers=list(LAYERS), steps=steps, seed=seed, clamp=(0.0, 1.0), batched=False, progress=progress,
        input_names=[image], model_source={"spec": "reprinvert demo", "model_args": {"seed": seed}, "trained": False},
    )
    # The sweep's report: grid.png, plot.png, convergence.png, metrics.csv/json, report.html. The demo's
    # metrics.json is the sweep's (one schema), with a "demo" block that says what ran.
    report = write_report(swept, out, title=f"reprinvert demo: what the stages of an untrained CNN keep of {image!r}")
    result: dict[str, Any] = {
        **swept.to_dict(),
        "demo": {
            "model": "DemoCNN (untrained: random weights from the seed)", "note": UNTRAINED_NOTE, "image": image,
            "size": size, "steps": steps, "seed": seed, "seconds": time.perf_counter() - started,
        },
    }
    text = json.dumps(result, indent=1, allow_nan=False)
    report["json"].write_text(text + "\n")
    result = json.loads(text)  # what the file holds (tuples as lists)
    say("")
    say(str(swept))
    say(
        "m_g: ||rep(x) - rep(x_g)||, m_r: ||rep(x) - rep(x')|| for x' = x + N(0, (1/25)^2), m_i: ||x_g - x||; "
        "a layer represents x when m_g < m_r."
    )
    say("the model is untrained (random weights): this shows what the architecture keeps, not what training keeps")
    say(f"wrote {', '.join(p.name for p in report.values())} to {out.resolve()}")
    return result


