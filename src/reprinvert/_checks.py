"""Private: the checks every public function shares, with errors in the caller's vocabulary, and how reprinvert
warns (at the caller's own line)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .errors import ReprinvertWarning

__all__ = ["check_flag", "warn_user"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def check_flag(name: str, value: Any) -> None:
    """``value`` is True or False (a clear error naming ``name`` otherwise)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")


def warn_user(message: str, category: type[Warning] = ReprinvertWarning) -> None:
    """Warn at the caller's first frame outside reprinvert, so that the warning points at the user's own call."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category, stacklevel=level)
