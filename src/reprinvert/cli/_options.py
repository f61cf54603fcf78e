"""Private: the command line's option groups and the types of their values.

Each group is added by one function, so that every command spells a shared option the same way: the model
(``MODEL_SPEC --weights --model-arg``), the inputs (``IMAGES --tokens --start --size --grey --normalize
--batch-size --fresh --no-clamp``), a run (``--out --steps --recipe --seed --device --quiet``) and ``--threads``,
which every command has.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_input_options", "add_model_options", "add_run_options", "add_threads", "normalize_arg", "positive_int",
    "recipe_arg", "shape_arg",
]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def recipe_arg(text: str) -> Any:
    """A named recipe, or a recipe file (``FILE.json``: any :class:`~reprinvert.Recipe` field over a base recipe)."""
    from ..recipes import available, load

    key = text.replace("_", "-").lower()
    if key in available():
        return key
    if text.lower().endswith(".json") or Path(text).is_file():
        try:
            return load(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    raise argparse.ArgumentTypeError(
        f"unknown recipe {text!r}; available: {', '.join(available())}, or a recipe file FILE.json"
    )


def normalize_arg(text: str) -> Any:
    from .._domain import NORMALIZATIONS, resolve_normalize

    key = text.strip().lower()
    if key in NORMALIZATIONS:
        return resolve_normalize(key)
    means, sep, stds = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return resolve_normalize(
            (tuple(float(v) for v in means.split(",")), tuple(float(v) for v in stds.split(",")))
        )
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(NORMALIZATIONS)} or MEAN_R,MEAN_G,MEAN_B/STD_R,STD_G,STD_B "
            f"(e.g. 0.485,0.456,0.406/0.229,0.224,0.225), got {text!r}"
        ) from None


def shape_arg(text: str) -> tuple[int, ...]:
    parts = [v.strip() for v in text.replace("x", ",").split(",")]
    shape = tuple(int(v) for v in parts) if all(v.isdigit() for v in parts) else ()
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, e.g. 1,3,32,32; got {text!r}"
        )
    return shape


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch's intra-op CPU threads (default: torch's, one per core). On a shared or small machine 1 is often "
        "much faster; run more processes instead (torchrun). See docs/performance.md",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", metavar="DEV", help="where to run: cpu, cuda, cuda:1, mps (default: %(default)s)"
    )


def add_run_options(parser: argparse.ArgumentParser, *, out: str) -> None:
    """The options every command that runs inversions shares: --out --steps --recipe --seed --device --quiet."""
    from ..recipes import available

    parser.add_argument("--out", default=out, metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="optimisation steps per layer (default: the recipe's; 500 for 'default')",
    )
    parser.add_argument(
        "--recipe",
        type=recipe_arg,
        default="default",
        metavar="NAME|FILE.json",
        help=f"{', '.join(available())}, or a JSON file of Recipe fields over a base recipe, e.g. "
        "{\"steps\": 700, \"weight_decay\": 0.1}: the optimisation recipe (docs/recipes.md, 'Recipe files'; default: "
        "%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every inversion (default: 0)")
    add_device(parser)
    parser.add_argument("--quiet", action="store_true", help="print nothing (no table, no progress)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL_SPEC",
        help="the model as module:factory, e.g. mypackage.models:build or path/to/model.py:Net (the factory is "
        "called with the --model-arg values and must return a torch.nn.Module; modules in the current folder are "
        "importable), or hf:PATH for a Hugging Face model from a local config.json (random weights) or a local "
        "model folder (needs transformers)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        default=None,
        help="a state dict to load: a torch.save file (read with torch.load(weights_only=True)) or a "
        ".safetensors file (needs the safetensors package)",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword argument of the factory, repeatable; VALUE is a Python literal (10, 0.5, true, 'text', "
        "(1, 2)), e.g. --model-arg pretrained=true --model-arg num_classes=10",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="*", metavar="IMAGES", help="image files and/or folders of images (PNG, JPEG, ...)"
    )
    parser.add_argument(
        "--tokens",
        default=None,
        metavar="IDS|FILE",
        help="token ids instead of images: comma-separated ids ('15496,995'), or a text file with one sequence of "
        "comma- or space-separated ids per line (all of one length); use with --start",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="LAYER",
        help="optimise the output of this layer instead of the input (for token models: the embedding layer, e.g. "
        "wte or embeddings.word_embeddings)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="invert the inputs N at a time (default: all at once); each finished chunk is saved in OUT/result "
        "at once, and rerunning the same command skips the chunks already done (Ctrl-C keeps them and reports "
        "them); only N images are in memory at a time",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the results an earlier run left in OUT/result and start over (by default a rerun of the same "
        "command continues it, and a different one is refused)",
    )
    parser.add_argument(
        "--normalize",
        type=normalize_arg,
        default=None,
        metavar="NAME|MEANS/STDS",
        help="the model expects normalised input: imagenet, inception, or per-channel MEAN_R,MEAN_G,MEAN_B/"
        "STD_R,STD_G,STD_B; images stay in [0, 1] (search, clamp, figures), only what the model is fed is "
        "normalised",
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        default=None,
        metavar="PX",
        help="centre-crop and resize every image to PX x PX (default: keep the files' size, which must agree)",
    )
    parser.add_argument("--grey", action="store_true", help="read images as one grey channel instead of RGB")
    parser.add_argument(
        "--no-clamp", action="store_true", help="do not keep the reconstruction in [0, 1] after each step"
    )
