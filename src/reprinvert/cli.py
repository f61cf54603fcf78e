"""The ``reprinvert`` command line.

    reprinvert --version
    reprinvert demo [--out DIR] [--steps N] [--size PX] [--seed S] [--image NAME] [--quiet]

Every command has ``--help``. A user mistake (a bad argument, a bad path, an unknown name) prints one line
``reprinvert: error: <message>`` to stderr and gives exit status 2, never a traceback.

Adding a command: write ``_add_<name>(subparsers)``, which builds its parser and sets ``run=`` to a function
``(argparse.Namespace) -> int``, and append it to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import ReprinvertError

__all__ = ["main"]

_Subparsers = Any  # argparse._SubParsersAction (private type)


class _UsageError(Exception):
    """An argument argparse rejected; carries the one-line message."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become :class:`_UsageError` (one line, no usage dump, no SystemExit)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------------------------- demo
def _add_demo(sub: _Subparsers) -> None:
    from .data import sample_names

    parser = sub.add_parser(
        "demo",
        help="invert each stage of a small built-in (untrained) CNN for a bundled photo",
        description="Invert the output of each stage of DemoCNN, a small built-in CNN with random (untrained) "
        "weights drawn from --seed, for a bundled public-domain photo. Writes grid.png (the photo, then each "
        "stage's inversion) and metrics.json (m_g, m_r, m_i, ||x'-x||, normalized feature error, PSNR, "
        "represents; recipe, seed and versions) into --out, and prints a table.",
    )
    parser.add_argument("--out", default="reprinvert-demo", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=200,
        metavar="N",
        help="optimisation steps per layer (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=_positive_int, default=64, metavar="PX", help="image height and width (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the weights and the inversions (default: %(default)s)"
    )
    parser.add_argument(
        "--image",
        default="astronaut",
        metavar="NAME",
        help=f"bundled photo: {', '.join(sample_names())} (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(args.out, steps=args.steps, size=args.size, seed=args.seed, image=args.image, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------------------------- main
_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (_add_demo,)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``reprinvert`` and all its commands."""
    parser = _Parser(
        prog="reprinvert",
        description="How much of the input survives at layer L? Capture, invert and measure any PyTorch layer.",
    )
    parser.add_argument("--version", action="version", version=f"reprinvert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in _COMMANDS:
        add(sub)
    return parser


def _fail(message: str) -> int:
    print(f"reprinvert: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success (``--help`` and ``--version`` included), 2 for a user mistake (after
        printing one line ``reprinvert: error: ...`` to stderr), 130 when interrupted.

    Example:
        >>> from reprinvert.cli import main
        >>> main(["--version"])
        reprinvert 0.1.0
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return run(args)
    except (ReprinvertError, ValueError, OSError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("reprinvert: interrupted", file=sys.stderr)
        return 130
