"""Private: the built-in demo behind ``reprinvert demo``.

Inverts the output of each stage of a small convolutional network for a bundled real photo and writes a PNG
grid and a JSON file of metrics. The network is **untrained**: its weights are random (drawn from a fixed
seed), so the demo shows what the architecture alone keeps of the input (its strides and widths), not what
training would teach it to keep.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data import sample_image, save_grid
from .report import write_report
from .sweep import METRICS, sweep

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


_COLUMNS = METRICS  # (key in metrics.json, table header)


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'layer':7s} {'shape':>12s} {'size/input':>10s} " + " ".join(f"{h:>9s}" for _, h in _COLUMNS)
    lines = [head + f" {'represents':>10s} {'seconds':>7s}"]
    for row in rows:
        shape = "x".join(str(v) for v in row["representation_shape"][1:])
        values = " ".join(f"{row[k]:9.4g}" for k, _ in _COLUMNS)
        lines.append(
            f"{row['layer']:7s} {shape:>12s} {row['size_ratio']:10.3g} {values} "
            f"{'yes' if row['represents'] else 'no':>10s} {row['seconds']:7.1f}"
        )
    return "\n".join(lines)


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

    * ``grid.png``: the original, then each stage's inversion, labelled (3x nearest-neighbour upscaling);
    * ``metrics.json``: per layer m_g, m_r, m_i, ||x'-x||, the normalized feature error, PSNR and whether the
      layer represents the image (m_g < m_r), plus the recipe, steps, seed, image and versions;
    * ``report.html``: the self-contained report ``reprinvert sweep`` writes (grid, plot, tables, provenance),
      with its ``metrics.csv``, ``samples.csv`` and, when matplotlib is installed, ``plot.png``.

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
    rows: list[dict[str, Any]] = []
    columns = [x]
    for row, res in zip(swept.rows, swept.inversions):
        summary = res.metrics.summary()
        rows.append(
            {
                "layer": row.layer,
                "representation_shape": list(res.target.shape),
                "size_ratio": res.target.numel() / x.numel(),
                **{key: summary[key] for key, _ in _COLUMNS},
                "represents": bool(res.metrics.represents.all()),
                "beats_chance": bool(res.metrics.beats_chance.all()),
                "seconds": res.seconds,
            }
        )
        columns.append(res.input)
    recipe = swept.inversions[0].recipe.to_dict()
    # The sweep's report first (report.html, metrics.csv, plot.png, ...); the demo's own grid (3x, labelled by
    # shape) and metrics.json are written over the report's files of the same name.
    report = write_report(swept, out, title=f"reprinvert demo: what the stages of an untrained CNN keep of {image!r}")
    labels = ["original", *(f"{r['layer']} ({'x'.join(map(str, r['representation_shape'][1:]))})" for r in rows)]
    grid = save_grid(columns, out / "grid.png", column_labels=labels, scale=3)
    result: dict[str, Any] = {
        "model": "DemoCNN (untrained: random weights from the seed)",
        "note": UNTRAINED_NOTE,
        "image": image,
        "size": size,
        "steps": steps,
        "seed": seed,
        "layers": rows,
        "recipe": recipe,
        "seconds": time.perf_counter() - started,
        "versions": {"reprinvert": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    _check_finite(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    say("")
    say(_table(rows))
    say(
        "m_g: ||rep(x) - rep(x_g)||, m_r: ||rep(x) - rep(x')|| for x' = x + N(0, (1/25)^2), m_i: ||x_g - x||; "
        "a layer represents x when m_g < m_r."
    )
    say("the model is untrained (random weights): this shows what the architecture keeps, not what training keeps")
    say(f"wrote {grid.name}, metrics.json and {report['html'].name} to {out.resolve()}")
    return result


def _check_finite(result: dict[str, Any]) -> None:
    """Replace non-finite floats (JSON has no NaN) by None, so metrics.json stays valid JSON."""
    for row in result["layers"]:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
