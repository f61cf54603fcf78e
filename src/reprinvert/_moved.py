"""Private: the module paths of earlier releases, kept as deprecated aliases.

``reprinvert.capture``, ``reprinvert.invert``, ``reprinvert.sweep``, ``reprinvert.spectrum`` and
``reprinvert.layers`` were modules; the functions of the same names shadowed them in the package (``ri.sweep`` is
the function). Their code now lives in private modules and the public names are re-exported by ``reprinvert``
itself. ``from reprinvert.sweep import Sweep`` still works and warns (``DeprecationWarning``) with the import to use
instead. The aliases are registered in ``sys.modules`` only, so they never rebind ``reprinvert.sweep`` and the
other functions.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

__all__ = ["install"]

# Old module -> {name: new private module}.
_MOVED: dict[str, dict[str, str]] = {
    "capture": {
        "Captured": "_capture", "capture": "_capture", "represent": "_capture", "Description": "_describe",
        "LayerInfo": "_describe", "describe": "_describe", "Selector": "_outputs", "select_output": "_outputs",
        "describe_structure": "_outputs", "Hooks": "_hooks", "run_model": "_feed", "model_dtype": "_feed",
        "private_input": "_feed", "requiring_grad": "_feed",
    },
    "invert": {
        "invert": "_invert", "Inversion": "_inversion", "INVERSION_SCHEMA": "_inversion", "History": "_search",
        "StepInfo": "_search", "nearest_tokens": "_tokens",
    },
    "sweep": {
        "sweep": "_sweep", "MAX_AUTO_LAYERS": "_layer_choice", "LayerMode": "_layer_choice", "METRICS": "_sweep_result",
        "SWEEP_SCHEMA": "_sweep_result", "Provenance": "_sweep_result", "Sweep": "_sweep_result",
        "SweepRow": "_sweep_result", "load": "_persist",
    },
    "spectrum": {"spectrum": "_spectrum", "Spectrum": "_spectrum"},
    "layers": {"LayerSpec": "_layers", "list_layers": "_layers", "resolve_layer": "_layers", "runnable": "_layers"},
}


class _MovedModule(types.ModuleType):
    """A deprecated module path: each name is looked up in its new home, with a warning saying where that is."""

    def __init__(self, name: str, names: dict[str, str]) -> None:
        super().__init__(f"reprinvert.{name}")
        self._names = names
        self.__all__ = sorted(names)

    def __getattr__(self, attr: str) -> Any:
        names = self.__dict__.get("_names", {})
        if attr not in names:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        import reprinvert

        public = attr in reprinvert.__all__
        warnings.warn(
            f"{self.__name__}.{attr} moved: "
            + (f"use reprinvert.{attr}" if public else f"it is private now (reprinvert.{names[attr]}.{attr})")
            + f"; the module path {self.__name__} will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"reprinvert.{names[attr]}"), attr)

    def __dir__(self) -> list[str]:
        return sorted(self._names)


def install() -> None:
    """Register the deprecated module paths (where nothing else holds them)."""
    package = sys.modules["reprinvert"]
    for name, names in _MOVED.items():
        module = sys.modules.setdefault(f"reprinvert.{name}", _MovedModule(name, names))
        if not hasattr(package, name):  # reprinvert.layers (no function of that name shadows it)
            setattr(package, name, module)
