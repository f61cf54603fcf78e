"""Named optimisation recipes for :func:`reprinvert.invert`.

A :class:`Recipe` is a frozen record of every choice an inversion makes: steps, optimizer, learning-rate
schedule, loss, initialisation, regularizers, bounds. Any field can be overridden per call
(``invert(..., steps=100)``) or with :meth:`Recipe.replace`.

* :func:`default` — the recipe that reached the lowest input distance in the least time in
  ``benchmarks/recipes.py`` (see ``docs/benchmarks.md`` for the table it printed).
* :func:`badger` — the seed author's method, exactly: un-normalised L1 loss scaled by ``c``, plain gradient
  descent with a linear learning-rate schedule, a Gaussian blur with a linear sigma schedule after each step.
* :func:`mahendran_vedaldi` — Mahendran & Vedaldi (2015): normalised squared error, TV (beta = 2) and
  alpha-norm (alpha = 6) regularizers, momentum 0.9 with a stepped schedule and momentum reset at each drop,
  several random restarts.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .parametrizations import Parametrization, Pyramid
from .parametrizations import get as get_parametrization
from .regularizers import AlphaNorm, GaussianBlur, Regularizer, TotalVariation

__all__ = [
    "Init",
    "Loss",
    "Optimizer",
    "Recipe",
    "available",
    "badger",
    "default",
    "from_dict",
    "get",
    "load",
    "mahendran_vedaldi",
    "resolve",
]

Optimizer = Literal["gd", "sgd", "adam", "lbfgs"]
Loss = Literal["l1", "mse", "nmse", "cosine"]
Init = Literal["seed", "grey", "zeros", "uniform", "normal"]

_OPTIMIZERS = ("gd", "sgd", "adam", "lbfgs")
_LOSSES = ("l1", "mse", "nmse", "cosine")
_INITS = ("seed", "grey", "zeros", "uniform", "normal")


@dataclass(frozen=True)
class Recipe:
    """Every choice of an inversion. All fields keyword-only.

    Attributes:
        name: label stored with results.
        steps: optimisation steps (each one forward and one backward up to the layer).
        optimizer: ``"gd"`` plain gradient descent x <- x - lr_i * grad (the seed's); ``"sgd"`` momentum
            v <- momentum * v - lr_i * grad, x <- x + v (Mahendran & Vedaldi's); ``"adam"``; ``"lbfgs"``
            (strong-Wolfe line search, one iteration per step; couples the samples of a batch).
        lr: learning rate at step 0.
        lr_end: if set, the rate moves linearly from ``lr`` to ``lr_end``: lr_i = lr + (lr_end - lr) * i / steps.
        drops: steps at which the rate is multiplied by ``drop_factor`` (and momentum reset to 0).
        drop_factor: factor of each drop.
        momentum: for ``"sgd"``.
        loss: data term between rep(x_g) and the target rep(x), per sample: ``"l1"`` sum |d| (un-normalised,
            the seed's); ``"mse"`` mean d^2; ``"nmse"`` ||d||^2 / ||rep(x)||^2 (Mahendran & Vedaldi);
            ``"cosine"`` 1 - cos.
        loss_scale: multiplies the data term (the seed's ``c``).
        init: ``"seed"`` N(0.7, 0.05^2) (the seed's), ``"grey"`` N(0.5, 0.05^2) (the middle of [0, 1]: what a
            layer does not constrain stays nearest to any image), ``"zeros"``, ``"uniform"`` U(0, 1), ``"normal"``
            N(0, 1).
        parametrization: what the optimizer updates: ``"pixel"`` (the input itself), ``"pyramid"`` or
            ``"fourier"``, or a :mod:`reprinvert.parametrizations` object with settings (e.g.
            ``Pyramid(levels=3)``). Inputs without spatial layout are always searched in pixels.
        regularizers: :class:`~reprinvert.regularizers.Regularizer` objects (penalties, transforms, blur).
        clamp: ``(low, high)`` bounds applied after every step, None, or ``"auto"``: (0, 1) when the searched
            tensor is a raw input whose values all lie in [0, 1] (images, in pixel space when ``normalize=`` is
            given), no bounds otherwise (signals, embeddings, ``start=`` activations). The resolved value is
            what :attr:`Inversion.recipe` records.
        restarts: independent runs from different starting points; each sample keeps its best.
        weight_decay: Adam only: decoupled weight decay toward the start (AdamW's, Loshchilov & Hutter 2019):
            before each update every searched parameter moves back toward its starting value by
            ``lr_p * weight_decay`` of the way, ``lr_p`` being that parameter's own learning rate (a pyramid's slow
            detail level decays slowly). Independent of the loss's scale, like Adam's steps. It keeps the search
            from wandering along directions the layer does not see (on layers that discard most of the input, the
            input distance then stops climbing back late in the run), but it also pulls directions the layer sees
            only weakly toward the start: an invertible layer with condition number 28 comes back to 9.1e-2
            relative with 0.1 instead of 3.5e-3 (``benchmarks/weight_decay.py``). 0 (the default): none. The other
            optimizers' learning rates are not in input units; they ignore it.
    """

    name: str = "custom"
    steps: int = 200
    optimizer: Optimizer = "adam"
    lr: float = 0.05
    lr_end: float | None = None
    drops: tuple[int, ...] = ()
    drop_factor: float = 0.1
    momentum: float = 0.9
    loss: Loss = "mse"
    loss_scale: float = 1.0
    init: Init = "seed"
    regularizers: tuple[Regularizer, ...] = field(default=())
    clamp: tuple[float, float] | Literal["auto"] | None = None
    restarts: int = 1
    parametrization: Parametrization | str = "pixel"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"Recipe {name}={getattr(self, name)!r}: expected {expected}")

        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise bad("steps", "a positive int")
        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", f"one of {_OPTIMIZERS}")
        if self.loss not in _LOSSES:
            raise bad("loss", f"one of {_LOSSES}")
        if self.init not in _INITS:
            raise bad("init", f"one of {_INITS} (or pass a tensor as invert(init=...))")
        if not self.lr > 0:
            raise bad("lr", "a positive learning rate")
        if self.lr_end is not None and not self.lr_end >= 0:
            raise bad("lr_end", "a non-negative learning rate or None")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "a value in [0, 1)")
        if not self.loss_scale > 0:
            raise bad("loss_scale", "a positive number")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise bad("restarts", "a positive int")
        if isinstance(self.weight_decay, bool) or not (
            isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf
        ):
            raise bad("weight_decay", "a finite number >= 0 (0: none)")
        if self.optimizer == "adam" and self.weight_decay * max(self.lr, self.lr_end or 0.0) >= 1:
            raise bad("weight_decay", f"weight_decay * lr < 1 (a step would move past the start; lr={self.lr})")
        if self.clamp is not None and self.clamp != "auto" and not (
            isinstance(self.clamp, (tuple, list)) and len(self.clamp) == 2 and self.clamp[0] < self.clamp[1]
        ):
            raise bad("clamp", "None or a pair (low, high) with low < high, or 'auto'")
        if isinstance(self.clamp, list):
            object.__setattr__(self, "clamp", (float(self.clamp[0]), float(self.clamp[1])))
        if any(not isinstance(r, Regularizer) for r in self.regularizers):
            raise bad("regularizers", "a tuple of reprinvert.regularizers.Regularizer objects")
        try:
            object.__setattr__(self, "parametrization", get_parametrization(self.parametrization))
        except ValueError as error:
            raise ValueError(f"Recipe {error}") from None
        object.__setattr__(self, "regularizers", tuple(self.regularizers))
        object.__setattr__(self, "drops", tuple(int(d) for d in self.drops))

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown Recipe field(s) {sorted(unknown)}; fields: {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def for_input(self, x: Any, *, raw: bool) -> Recipe:
        """This recipe with ``clamp="auto"`` resolved for the searched tensor ``x``: (0, 1) when ``raw`` (x is the
        model's input, not a ``start=`` activation) and every value of x lies in [0, 1], else None."""
        if self.clamp != "auto":
            return self
        inside = raw and x.is_floating_point() and bool((x.detach().min() >= 0) & (x.detach().max() <= 1))
        return self.replace(clamp=(0.0, 1.0) if inside else None)

    def learning_rate(self, step: int) -> float:
        """The learning rate used at ``step`` (0-based)."""
        lr = self.lr
        if self.lr_end is not None:
            lr = self.lr + (self.lr_end - self.lr) * step / self.steps
        for d in self.drops:
            if step >= d:
                lr *= self.drop_factor
        return lr

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (regularizers as their repr)."""
        out = dataclasses.asdict(self)
        out["regularizers"] = [repr(r) for r in self.regularizers]
        out["parametrization"] = repr(self.parametrization)
        out["drops"] = list(self.drops)
        out["clamp"] = self.clamp if self.clamp is None or isinstance(self.clamp, str) else list(self.clamp)
        return out


def _rebuild(text: str, namespace: Mapping[str, type], what: str) -> Any:
    """An object from its repr ``Name(key=literal, ...)``, for a class in ``namespace`` (nothing is evaluated)."""
    try:
        node = ast.parse(text, mode="eval").body
        if not (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))):
            raise ValueError("not a call")
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr  # Outer.Name: by its own name
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"cannot rebuild the {what} {text!r} of a saved recipe ({error})") from None
    cls = namespace.get(name)
    if cls is None:
        raise ValueError(
            f"the saved recipe uses the {what} {text!r}, whose class {name!r} is not one of reprinvert's; pass it "
            f"when loading: reprinvert.load(path, classes={{{name!r}: {name}}})"
        )
    return cls(*args, **kwargs)


def from_dict(data: Mapping[str, Any], *, classes: Mapping[str, type] | None = None) -> Recipe:
    """The :class:`Recipe` that :meth:`Recipe.to_dict` described (what saved results store).

    Regularizers and the parametrisation are rebuilt from their reprs, ``Name(key=value, ...)``, with the classes
    of :mod:`reprinvert.regularizers` and :mod:`reprinvert.parametrizations`, plus ``classes`` for your own.

    Raises:
        ValueError: a field or a class that cannot be rebuilt (the message names it and the way out).
    """
    namespace: dict[str, type] = {
        c.__name__: c for c in (*_regularizer_classes(), *_parametrization_classes())
    }
    namespace.update(classes or {})
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"the saved recipe has fields {sorted(unknown)} that Recipe does not know")
    values = dict(data)
    values["regularizers"] = tuple(_rebuild(r, namespace, "regularizer") for r in data.get("regularizers", ()))
    if isinstance(data.get("parametrization"), str) and "(" in data["parametrization"]:
        values["parametrization"] = _rebuild(data["parametrization"], namespace, "parametrization")
    if isinstance(values.get("clamp"), list):
        values["clamp"] = tuple(values["clamp"])
    values["drops"] = tuple(values.get("drops", ()))
    return Recipe(**values)


def _regularizer_classes() -> list[type]:
    from . import regularizers

    return [c for c in vars(regularizers).values() if isinstance(c, type) and issubclass(c, Regularizer)]


def _parametrization_classes() -> list[type]:
    from . import parametrizations

    return [c for c in vars(parametrizations).values() if isinstance(c, type) and issubclass(c, Parametrization)]


def badger(preset: Literal["cnn", "resnet50", "unet", "mlp"] = "cnn", **changes: Any) -> Recipe:
    """The seed author's inversion method (B. Badger, "depth-generality" and "autoencoders" studies).

    x_0 ~ N(0.7, 0.05^2); loss c * sum |rep(x) - rep(x_n)|; x <- x - lr_i * grad with lr_i linear from lr to
    lr_end; after each step, for image classifiers, a Gaussian blur (kernel 3) with sigma linear 2.4 -> 0.4. No
    clamping, no TV term.

    Presets (from the published code):
        ``"cnn"``: small convolutional nets, c = 0.01, 220 steps, lr 2.5 -> 1.5, blur.
        ``"resnet50"``: c = 0.15, 500 steps, lr 0.1, blur.
        ``"unet"``: c = 0.005 (512^2 UNet), 220 steps, lr 2.5 -> 1.5, no blur.
        ``"mlp"``: c = 0.35, 220 steps, lr 2.5 -> 1.5, no blur.

    Any field can be changed with keyword arguments, e.g. ``badger("cnn", steps=1000)``.
    """
    blur = (GaussianBlur(sigma_start=2.4, sigma_end=0.4, kernel_size=3),)
    presets: dict[str, dict[str, Any]] = {
        "cnn": dict(loss_scale=0.01, steps=220, lr=2.5, lr_end=1.5, regularizers=blur),
        "resnet50": dict(loss_scale=0.15, steps=500, lr=0.1, lr_end=0.1, regularizers=blur),
        "unet": dict(loss_scale=0.005, steps=220, lr=2.5, lr_end=1.5, regularizers=()),
        "mlp": dict(loss_scale=0.35, steps=220, lr=2.5, lr_end=1.5, regularizers=()),
    }
    if preset not in presets:
        raise ValueError(f"preset={preset!r}: expected one of {sorted(presets)}")
    base = Recipe(name=f"badger-{preset}", optimizer="gd", loss="l1", init="seed", **presets[preset])
    return base.replace(**changes) if changes else base


def mahendran_vedaldi(*, steps: int = 2100, restarts: int = 1, **changes: Any) -> Recipe:
    """Mahendran & Vedaldi (2015), "Understanding deep image representations by inverting them".

    Objective ||rep(x) - rep(x_0)||^2 / ||rep(x_0)||^2 + R_alpha(x) + R_TV(x) with alpha = 6 and beta = 2; the
    regularizers are normalised as in the paper's appendix with the data range B and V = B / 6.5 for images in
    [0, 1] centred at 0.5 (B = 0.5). Momentum 0.9, learning rate dropped tenfold at 1/3 and 2/3 of the steps with
    momentum reset at each drop. The paper runs several random restarts (``restarts``) and keeps the best.
    """
    b = 0.5
    recipe = Recipe(
        name="mahendran-vedaldi",
        steps=steps,
        optimizer="sgd",
        momentum=0.9,
        lr=0.01,
        drops=(steps // 3, 2 * steps // 3),
        drop_factor=0.1,
        loss="nmse",
        init="seed",
        regularizers=(
            AlphaNorm(weight=1.0, alpha=6.0, center=0.5, scale=b),
            TotalVariation(weight=1.0, beta=2.0, scale=b / 6.5),
        ),
        restarts=restarts,
    )
    return recipe.replace(**changes) if changes else recipe


def default(**changes: Any) -> Recipe:
    """The measured default: a multi-scale pyramid search with Adam, L1, 500 steps.

    Chosen by ``benchmarks/inversion_quality.py`` on real trained networks (ImageNet EfficientNet-Lite0), their
    untrained twins, a Hugging Face ViT, the width-study nets and small CNNs (table and command in
    ``docs/recipes.md``):

    * the input is searched as a :class:`~reprinvert.parametrizations.Pyramid`: a full-resolution detail level
      (RGB, at 0.1 x the learning rate) plus four coarser levels (colour in a decorrelated basis). Adam moves a
      coarse level's parameter over a whole region, so the search finds the image's layout first, where per-pixel
      steps get stuck in ReLU6 networks (the first block of EfficientNet-Lite0: 18 dB on pixels, 27-32 dB here);
      the detail level, slow but free, recovers what the layer keeps exactly (identity and orthogonal layers to
      1e-3 relative and better);
    * Adam, lr 0.03 decaying linearly to 0 over 500 steps (``weight_decay=0.1`` stops the input distance from
      climbing back late on layers that discard most of the input, at a cost on ill-conditioned ones: see
      ``docs/recipes.md``);
    * L1 data term (sum |rep(x_g) - rep(x)|; Adam is not affected by its scale);
    * start ``"grey"``, N(0.5, 0.05^2): what a layer does not constrain stays mid-range;
    * ``clamp="auto"``: (0, 1) for raw inputs in [0, 1] (images), no bounds otherwise.

    Inputs without an image layout (flat vectors, signals, sequences, ``start=`` activations) are searched in
    plain pixels with the same schedule. The learning rate is in input units (inputs in [0, 1]); with ``start=``
    it is scaled to the activation.

    Any field can be changed with keyword arguments, e.g. ``default(steps=1000)`` or
    ``default(parametrization="pixel")``.
    """
    recipe = Recipe(
        name="default", steps=500, optimizer="adam", lr=0.03, lr_end=0.0, loss="l1", init="grey",
        parametrization=Pyramid(), clamp="auto",
    )
    return recipe.replace(**changes) if changes else recipe


_REGISTRY = {"default": default, "badger": badger, "mahendran-vedaldi": mahendran_vedaldi}


def available() -> list[str]:
    """Names accepted by :func:`get` and by ``invert(recipe=...)``."""
    return sorted(_REGISTRY)


def get(name: str | Path | Recipe) -> Recipe:
    """A recipe by name (``"default"``, ``"badger"``, ``"mahendran-vedaldi"``), from a recipe file (a path ending in
    ``.json``, see :func:`load`), or the :class:`Recipe` itself."""
    if isinstance(name, Recipe):
        return name
    if isinstance(name, Path) or str(name).lower().endswith(".json"):
        return load(name)
    key = str(name).replace("_", "-").lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"recipe={name!r} is unknown; available recipes: {available()}, a recipe file (FILE.json) or a Recipe"
        )
    return _REGISTRY[key]()


def load(path: str | Path, *, classes: Mapping[str, type] | None = None) -> Recipe:
    """A :class:`Recipe` from a JSON file: any of its fields, over a named base recipe.

    The file is a JSON object. ``"base"`` names the recipe it starts from (default ``"default"``); every other key
    is a :class:`Recipe` field: ``{"steps": 7, "weight_decay": 0.25, "lr": 0.02}``, or
    ``{"base": "badger", "loss_scale": 0.02}``. Regularizers and the parametrisation are written as a saved result
    records them (``"regularizers": ["Jitter(max_shift=2, until=0.75)"]``, ``"parametrization": "Fourier()"`` or
    ``"pixel"``), so the ``recipe`` a saved result holds (``Inversion.recipe.to_dict()``, the provenance's
    ``recipe``) is a recipe file too. The recipe's ``name`` is the file's stem unless the file sets it. The same
    file works from Python (``invert(..., recipe="my.json")``) and the command line (``--recipe my.json``).

    Args:
        path: the file.
        classes: your own regularizer or parametrisation classes by name, when the file uses them.

    Raises:
        ValueError: the file cannot be read, is not a JSON object, or sets an unknown field or a bad value (the
            message names the file, the field and the fields there are).

    Example:
        >>> import json, pathlib, tempfile, reprinvert as ri
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "slow.json"
        >>> _ = path.write_text(json.dumps({"steps": 7, "weight_decay": 0.25, "lr": 0.02}))
        >>> r = ri.recipes.load(path)
        >>> r.name, r.steps, r.weight_decay, r.lr, r.optimizer
        ('slow', 7, 0.25, 0.02, 'adam')
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the recipe file '{p}': {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the recipe file '{p}' holds {type(data).__name__}; expected a JSON object of Recipe fields")
    if "regularizers" in data and not isinstance(data["regularizers"], list):
        raise ValueError(
            f"the recipe file '{p}' has regularizers={data['regularizers']!r}; expected a list such as "
            '["Jitter(max_shift=2)", "TotalVariation(weight=0.01)"]'
        )
    base_name = data.pop("base", "default")
    if not isinstance(base_name, str) or base_name.replace("_", "-").lower() not in _REGISTRY:
        raise ValueError(f"the recipe file '{p}' has base={base_name!r}; expected one of {available()}")
    base = _REGISTRY[base_name.replace("_", "-").lower()]()
    fields = [f.name for f in dataclasses.fields(Recipe)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"the recipe file '{p}' sets unknown field(s) {unknown}; Recipe fields: {fields} and 'base'")
    values = {**base.to_dict(), "name": p.stem, **data}
    if "steps" in data and base.drops and "drops" not in data:
        values["drops"] = [round(d * data["steps"] / base.steps) for d in base.drops]
    try:
        return from_dict(values, classes=classes)
    except (ValueError, TypeError) as error:
        raise ValueError(f"the recipe file '{p}': {error}") from None


def resolve(recipe: Recipe | str | Path = "default", **overrides: Any) -> Recipe:
    """``recipe`` (a :class:`Recipe`, a name or a recipe file, see :func:`get`) with overrides applied as the options
    of :func:`reprinvert.invert` apply them.

    Any :class:`Recipe` field can be overridden. A value of None keeps the recipe's field; ``clamp=False`` removes
    the bounds; a tensor ``init`` is the call's own start (the recipe keeps its ``init``); a stepped schedule keeps
    its drops at the same fractions of the run when ``steps`` changes.

    Raises:
        TypeError: an unknown field, or an ``init`` that is neither a name nor a tensor.
        ValueError: a bad value (the message names the field and what it expects).

    Example:
        >>> import reprinvert as ri
        >>> r = ri.recipes.resolve("mahendran-vedaldi", steps=300, lr=None)
        >>> r.steps, r.drops, r.lr
        (300, (100, 200), 0.01)
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("clamp") is False:  # no bounds, whatever the recipe says
        changes["clamp"] = None
    init = changes.get("init")
    if init is not None and not isinstance(init, str):
        if isinstance(init, torch.Tensor):  # a tensor: the call's own start
            del changes["init"]
        else:
            raise TypeError(
                f"init must be 'seed', 'grey', 'zeros', 'uniform', 'normal' or a tensor of the input's shape, got "
                f"{type(init).__name__}: {init!r}"
            )
    if "regularizers" in changes:
        changes["regularizers"] = tuple(changes["regularizers"])
    steps = changes.get("steps")
    if "steps" in changes and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps={steps!r}: expected a positive int (the number of optimisation steps)")
    base = get(recipe)
    if "steps" in changes and base.drops and steps != base.steps and "drops" not in changes:
        changes["drops"] = tuple(round(d * changes["steps"] / base.steps) for d in base.drops)
    return base.replace(**changes) if changes else base
