"""Overcomplete autoencoder copy test: does a wide fully connected autoencoder learn the identity?

An autoencoder wider than its input (768 values in, hidden layers of 1024) is trained only to reproduce clean
images. If it had learned the identity it would copy noise too: its copy tendency (how much of an added
perturbation comes out again; 1 for the identity, 0 for a map that ignores it) would be 1 and its output on a
corrupted image x~ = 0.3 x + 0.7 eps (eps ~ N(0.7, 0.2^2), the seed's mix) would be x~ itself. The seed's finding:
it is not; the output looks cleaner than x~.

    python examples/copy_test.py            # 16x16, a few minutes of training on a laptop CPU
    python examples/copy_test.py --smoke    # tiny sizes, a few seconds

Writes ``<out>/copy_test.png`` (rows: photos; columns: clean, corrupted input, the autoencoder's output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import reprinvert as ri
from reprinvert.models import MLPAutoencoder
from reprinvert.train import train


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, hidden, n_train, steps = (8, (256,) * 2, 32, 2) if args.smoke else (16, (1024,) * 3, 4096, 3000)

    data = ri.data.synthetic_images(n_train, size=size, seed=0)
    ae = MLPAutoencoder(in_features=3 * size * size, hidden=hidden, seed=0)
    train(ae, data, epochs=10_000, max_steps=steps, batch_size=64, lr=1e-3, seed=0, progress=not args.smoke)
    ae.eval()

    x = ri.data.sample_images(size=size)
    g = torch.Generator().manual_seed(1)
    noisy = ri.corruptions.noise_mix(x, alpha=0.3, generator=g)
    with torch.no_grad():
        out = ae(noisy)
    gain = ri.metrics.denoising_gain(out, noisy, x)
    tendency = ri.copy_tendency(ae, x, corrupt=lambda t, gen: ri.corruptions.noise_mix(t, alpha=0.3, generator=gen),
                                seed=0)
    summary = tendency.summary()
    print(f"copy tendency: finite {summary['finite']:.3f}, Jacobian trace/n {summary['jacobian_trace']:.3f} "
          "(1 = identity, 0 = ignores the perturbation)")
    print(f"denoising gain {float(gain.mean()):.2f} (> 1: the output is closer to the clean photo than x~ was)")
    path = ri.report.save_grid(
        [x, noisy, out],
        Path(args.out) / "copy_test.png",
        column_labels=["clean x", "x~ = 0.3x + 0.7eps", f"output (gain {float(gain.mean()):.2f})"],
        scale=max(1, 96 // size),
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
