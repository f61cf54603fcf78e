"""The public API is exactly what __init__ re-exports, and importing it stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import reprinvert as ri

PUBLIC = {
    "Captured", "Description", "History", "Inversion", "InversionMetrics", "LayerCallError", "LayerInfo",
    "LayerNotFoundError", "NonFiniteWarning", "OutputSelectionError", "Recipe", "ReprinvertError",
    "ReprinvertWarning", "StepInfo", "__version__", "capture", "copy_tendency", "corruptions", "data", "describe",
    "evaluate", "invert", "list_layers", "metrics", "nearest_tokens", "recipes", "regularizers", "represent",
    "resolve_layer", "Provenance", "Sweep", "SweepRow", "Verdict", "report", "sweep", "experiments", "models", "train",
    "parametrizations", "load", "spectrum", "Spectrum", "Selector", "Study",
    "TokenInversion", "invert_tokens",
}


def test_public_names_snapshot() -> None:
    assert set(ri.__all__) == PUBLIC
    for name in ri.__all__:
        assert hasattr(ri, name), name


def test_options_are_keyword_only() -> None:
    for fn, positional in ((ri.invert, 3), (ri.represent, 3), (ri.describe, 2), (ri.capture, 2),
                           (ri.evaluate, 4), (ri.copy_tendency, 2), (ri.list_layers, 1), (ri.sweep, 2)):
        params = list(inspect.signature(fn).parameters.values())
        assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params[:positional]), fn.__name__
        assert all(p.kind == p.KEYWORD_ONLY for p in params[positional:]), fn.__name__


def test_every_public_callable_is_documented() -> None:
    for name in ri.__all__:
        obj = getattr(ri, name)
        if callable(obj) and not isinstance(obj, type(ri.Selector)):  # (a type alias has no docstring of its own)
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_import_is_light() -> None:
    """Importing reprinvert adds no optional heavy module beyond what torch itself imports."""
    code = (
        "import sys, torch; before = set(sys.modules); import reprinvert; "
        "new = set(sys.modules) - before; "
        "print(','.join(m for m in ('matplotlib', 'tqdm', 'skimage', 'scipy', 'torchvision', 'pandas') if m in new))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_shipped() -> None:
    import importlib.resources

    assert importlib.resources.files("reprinvert").joinpath("py.typed").is_file()
