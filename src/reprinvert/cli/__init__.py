"""The ``reprinvert`` command line.

    reprinvert --version
    reprinvert demo [--out DIR] [--steps N] [--size PX] [--seed S] [--image NAME] [--quiet]
    reprinvert layers MODEL_SPEC [--weights FILE] [--input-shape B,C,H,W] [--tokens]
    reprinvert invert MODEL_SPEC IMAGES... --layer L [--weights FILE] [--size PX] [COMMON]
    reprinvert sweep MODEL_SPEC IMAGES... [--layers auto|top|leaves|all|A,B,...] [--every K] [--spectrum K]
        [--one-by-one] [COMMON]
    reprinvert experiment NAME|all [--size quick|medium|full] [--out DIR] [--cache DIR] [--seed S] [--device DEV]

COMMON = [--out DIR] [--steps N] [--recipe NAME|FILE.json] [--seed S] [--device DEV] [--quiet]; every command also
takes ``--threads N``. MODEL_SPEC is ``module:factory`` (a dotted module or a ``.py`` file, and a callable in it).

Every command has ``--help``. A user mistake (a bad argument, a bad path, an unknown name) prints one line
``reprinvert: error: <message>`` to stderr and gives exit status 2, never a traceback.

Adding a command: in ``_commands``, write ``add_<name>(subparsers)``, which builds its parser from the option
groups of ``_options`` and sets ``run=`` to a function ``(argparse.Namespace) -> int``, and append it to
``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._version import __version__
from ..errors import ReprinvertError
from ._commands import COMMANDS
from ._options import add_threads

__all__ = ["build_parser", "main"]


class _UsageError(Exception):
    """An argument argparse rejected; carries the one-line message."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become :class:`_UsageError` (one line, no usage dump, no SystemExit)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``reprinvert`` and all its commands."""
    parser = _Parser(
        prog="reprinvert",
        description="How much of the input survives at layer L? Capture, invert and measure any PyTorch layer.",
    )
    parser.add_argument("--version", action="version", version=f"reprinvert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        add_threads(command)
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
        reprinvert 0.2.0.dev0
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
    import torch

    threads = torch.get_num_threads()
    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        return run(args)
    except (ReprinvertError, ValueError, TypeError, OSError) as exc:  # reprinvert's messages name the fix
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("reprinvert: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # main() may run inside a Python session
