"""Do two versions of reprinvert compute the same numbers, bit for bit? A check for refactors.

Runs one fixed set of public-API calls (spectrum at three layers in float64 and in the model's dtype, invert with
each named recipe, a sweep of three layers, a denoising training with corruption, the depth and denoise
experiments at their tiny size) under this checkout and under another commit (checked out in a temporary git
worktree), each in its own process with one torch thread, and compares every tensor with ``torch.equal``. Timings
(``seconds``) are left out: they are the only outputs expected to differ.

Usage:
    python benchmarks/same_numbers.py 89cc7d1     # this checkout against commit 89cc7d1
    python benchmarks/same_numbers.py --run OUT.pt  # (internal) write this checkout's numbers to OUT.pt

Exit status 0 when every tensor is identical, 1 otherwise (the differing names are printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def numbers() -> dict:
    """The fixed calls' outputs, by name."""
    import torch
    from torch import nn

    import reprinvert as ri
    from reprinvert import experiments as E
    from reprinvert.models import ConvAutoencoder
    from reprinvert.train import train

    warnings.simplefilter("ignore")
    out: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2), nn.Tanh(),
                        nn.Flatten(), nn.Linear(4 * 7 * 7, 10))
    for layer in ("0", "2", "5"):
        s = ri.spectrum(cnn, layer, x[:1], k=3)
        out[f"spectrum.{layer}.top"], out[f"spectrum.{layer}.bottom"] = s.top, s.bottom
        out[f"spectrum-model-dtype.{layer}.top"] = ri.spectrum(cnn, layer, x[:1], k=3, precision="model").top
    for name in ri.recipes.available():
        out[f"invert.{name}"] = ri.invert(cnn, "2", x, recipe=name, steps=30, seed=1, progress=False).input
    for inv in ri.sweep(cnn, x, layers=["0", "2", "5"], steps=20, seed=2, progress=False).inversions:
        out[f"sweep.{inv.layer}"] = inv.input
    ae = ConvAutoencoder(channels=(4, 8))
    res = train(ae, torch.rand(16, 3, 8, 8, generator=g), epochs=3, batch_size=4, progress=False, seed=3,
                corrupt=lambda b, gen: b + 0.1 * torch.randn(b.shape, generator=gen))
    out["train.losses"] = torch.tensor([h.loss for h in res.history], dtype=torch.float64)
    out.update({f"train.{k}": v for k, v in ae.state_dict().items()})
    depth = E.depth(size="tiny", progress=False)
    out["depth.input_distance"] = torch.tensor(
        [v for k in sorted(depth.input_distance) for v in depth.input_distance[k]], dtype=torch.float64
    )
    denoise = E.denoise(size="tiny", progress=False)
    for f in dataclasses.fields(denoise):
        value = getattr(denoise, f.name)
        if isinstance(value, float) and f.name != "seconds":
            out[f"denoise.{f.name}"] = torch.tensor(value, dtype=torch.float64)
    return out


def _run(source: Path, file: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(source / "src")}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run", str(file)], env=env, check=True,
                   cwd=tempfile.gettempdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", nargs="?", help="the commit to compare this checkout with")
    parser.add_argument("--run", type=Path, metavar="OUT.pt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.run is not None:
        torch.save(numbers(), args.run)
        return 0
    if not args.commit:
        parser.error("give the commit to compare with, e.g. python benchmarks/same_numbers.py 89cc7d1")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.commit], cwd=ROOT, check=True)
        try:
            _run(old, Path(tmp) / "old.pt")
            _run(ROOT, Path(tmp) / "new.pt")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
        a, b = torch.load(Path(tmp) / "old.pt"), torch.load(Path(tmp) / "new.pt")
    missing = sorted(set(a) ^ set(b))
    differ = sorted(k for k in set(a) & set(b) if not (a[k].shape == b[k].shape and torch.equal(a[k], b[k])))
    print(f"{len(set(a) & set(b))} tensors compared with {args.commit}: {len(differ)} differ"
          + (f" ({', '.join(differ)})" if differ else "") + (f"; only on one side: {missing}" if missing else ""))
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
