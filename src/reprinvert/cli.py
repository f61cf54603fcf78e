"""The ``reprinvert`` command line.

    reprinvert demo [--out DIR] [--steps N] [--size PX] [--seed S] [--image NAME] [--quiet]

A user mistake (a bad path, a bad value) prints one line ``reprinvert: error: ...`` and exits with status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import ReprinvertError

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(args.out, steps=args.steps, size=args.size, seed=args.seed, image=args.image, quiet=args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="reprinvert",
        description="How much of the input survives at a given layer? Capture, invert and measure any layer.",
    )
    parser.add_argument("--version", action="version", version=f"reprinvert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="invert several layers of a small built-in CNN for a bundled photo; write a PNG grid and a JSON",
        description="Invert each stage of a small built-in CNN (random weights from --seed) for a bundled real "
        "photo, and write grid.png (input, then each layer's inversion) and metrics.json into --out.",
    )
    demo.add_argument("--out", default="reprinvert-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--steps", type=_positive_int, default=200, help="steps per layer (default: %(default)s)")
    demo.add_argument("--size", type=_positive_int, default=64, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of weights and inversions (default: %(default)s)")
    demo.add_argument("--image", default="astronaut", help="bundled image: astronaut, chelsea, coffee, rocket")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except (ReprinvertError, ValueError, TypeError, OSError) as exc:
        print(f"reprinvert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reprinvert: interrupted", file=sys.stderr)
        return 130
