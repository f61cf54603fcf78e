"""Exception and warning types raised by reprinvert.

Every error names the argument, the value received and what was expected, and where it helps, what to do
next. All of them derive from :class:`ReprinvertError`, so ``except reprinvert.ReprinvertError`` catches any
mistake the library reports; most also derive from the built-in type a Python user would expect
(``ValueError``, ``LookupError``, ``TypeError``), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "LayerCallError",
    "LayerNotFoundError",
    "NonFiniteWarning",
    "OutputSelectionError",
    "ReprinvertError",
    "ReprinvertWarning",
]


class ReprinvertError(Exception):
    """Base class of every error reprinvert raises on purpose."""


class LayerNotFoundError(ReprinvertError, LookupError):
    """A layer name, index or module does not resolve to a submodule of the model."""

    def __str__(self) -> str:  # LookupError/KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class LayerCallError(ReprinvertError, RuntimeError):
    """A captured layer ran zero times, or more than once without the caller choosing which call."""


class OutputSelectionError(ReprinvertError, TypeError):
    """A module's output is not a single tensor and no selector says which tensor to take."""


class ReprinvertWarning(UserWarning):
    """Base class of the warnings reprinvert emits."""


class NonFiniteWarning(ReprinvertWarning):
    """An inversion met a NaN or Inf loss and stopped early, keeping the best finite iterate."""

