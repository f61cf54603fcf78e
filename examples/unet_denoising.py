"""UNet denoising without denoising training: a UNet trained only to copy, with and without skip connections.

Both UNets are trained to reproduce clean images (mean squared error against the input itself; never shown a
corrupted image). Then they get images mixed with noise, x~ = alpha * x + (1 - alpha) * eps with
eps ~ N(0.7, 0.2^2) (the seed's mix). The denoising gain ||x~ - x||^2 / ||O(x~) - x||^2 is above 1 when the output
is closer to the clean image than the input was. The seed author reports that the no-skip UNet, which must
squeeze everything through its bottleneck, denoises, while the ordinary UNet, whose skips offer a shortcut,
copies the noise too; the gains printed here say what these (much smaller) settings give.

    python examples/unet_denoising.py            # 32x32, a few minutes of training on a laptop CPU
    python examples/unet_denoising.py --smoke    # tiny sizes, a few seconds

Writes ``<out>/unet_denoising.png`` (rows: photos; columns: clean, noisy input, no-skip output, concat output).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import reprinvert as ri
from reprinvert.models import UNet
from reprinvert.train import train


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.smoke:
        size, base, depth, n_train, steps = 16, 4, 2, 16, 2
    else:
        size, base, depth, n_train, steps = 32, 16, 3, 2048, 1500
    alpha = 0.5

    data = ri.data.synthetic_images(n_train, size=size, seed=0)  # smooth random images, no downloads
    models = {}
    for skip in ("none", "concat"):
        model = UNet(base=base, depth=depth, skip=skip, seed=0)
        train(model, data, epochs=10_000, max_steps=steps, batch_size=32, lr=1e-3, seed=0, progress=not args.smoke)
        models[skip] = model.eval()

    x = ri.data.sample_images(size=size)  # the four bundled photos: never seen in training
    noisy = ri.corruptions.noise_mix(x, alpha=alpha, generator=torch.Generator().manual_seed(1))
    columns, labels = [x, noisy], ["clean x", f"noisy x~ (alpha={alpha})"]
    with torch.no_grad():
        for skip, model in models.items():
            out = model(noisy)
            gain = ri.metrics.denoising_gain(out, noisy, x)
            print(f"skip={skip!r}: denoising gain per photo {[round(float(g), 2) for g in gain]} "
                  "(> 1: closer to the clean photo than its input was)")
            columns.append(out)
            labels.append(f"skip={skip} gain {float(gain.mean()):.2f}")
    path = ri.report.save_grid(columns, Path(args.out) / "unet_denoising.png", column_labels=labels,
                             scale=max(1, 128 // size))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
