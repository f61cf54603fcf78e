"""reprinvert: how much of the input survives at a given layer of a model?

Capture any layer of any PyTorch model, invert its representation by gradient descent on the input, and
measure the result against honest baselines.

Example:
    >>> import torch, torch.nn as nn, reprinvert as ri
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))
    >>> ri.list_layers(model)
    ['0', '1', '2']
    >>> res = ri.invert(model, "1", torch.rand(1, 3, 16, 16), steps=20)
    >>> sorted(res.metrics.summary())[:4]
    ['beats_chance', 'chance_distance', 'chance_input_distance', 'embedding_distance']
"""

from __future__ import annotations

from . import corruptions, data, experiments, metrics, models, parametrizations, recipes, regularizers, report, train
from ._capture import Captured, capture, represent
from ._describe import Description, LayerInfo, describe
from ._inversion import Inversion
from ._invert import invert
from ._layers import list_layers, resolve_layer
from ._moved import install as _install_moved_modules
from ._outputs import Selector
from ._persist import load
from ._search import History, StepInfo
from ._spectrum import Spectrum, spectrum
from ._sweep import sweep
from ._sweep_result import Provenance, Sweep, SweepRow
from ._token_inversion import TokenInversion
from ._token_search import invert_tokens
from ._tokens import nearest_tokens
from ._verdict import Verdict
from ._version import __version__
from .errors import (
    LayerCallError,
    LayerNotFoundError,
    NonFiniteWarning,
    OutputSelectionError,
    ReprinvertError,
    ReprinvertWarning,
)
from .metrics import InversionMetrics, copy_tendency, evaluate
from .recipes import Recipe
from .study import Study

__all__ = [
    "Captured",
    "Description",
    "History",
    "Inversion",
    "InversionMetrics",
    "LayerCallError",
    "LayerInfo",
    "LayerNotFoundError",
    "NonFiniteWarning",
    "OutputSelectionError",
    "Provenance",
    "Recipe",
    "ReprinvertError",
    "ReprinvertWarning",
    "Selector",
    "Spectrum",
    "StepInfo",
    "Study",
    "Sweep",
    "SweepRow",
    "TokenInversion",
    "Verdict",
    "__version__",
    "capture",
    "copy_tendency",
    "corruptions",
    "data",
    "describe",
    "evaluate",
    "experiments",
    "invert",
    "invert_tokens",
    "list_layers",
    "load",
    "metrics",
    "models",
    "nearest_tokens",
    "parametrizations",
    "recipes",
    "regularizers",
    "report",
    "represent",
    "resolve_layer",
    "spectrum",
    "sweep",
    "train",
]

_install_moved_modules()
