"""What a layer keeps, measured without an optimiser: the singular values of its Jacobian at an input.

Near x, a layer acts like its Jacobian J = d rep / dx. Input directions with a (near) zero singular value change
nothing the layer outputs: the layer cannot see them, and no inversion can recover them from rep(x) alone. Large
singular values amplify; the ratio of the largest to the smallest (the condition number) says how ill-posed
inverting the layer is near x.

:func:`spectrum` computes the largest and smallest singular values with block iterations (scipy's LOBPCG,
which counts repeated singular values, such as a layer's many zeros) on the operator ``v -> J^T J v``, built
from a Jacobian-vector and a vector-Jacobian product through autograd. The dense Jacobian is never formed, so the
cost is some dozens of forward-backward passes per sample, whatever the layer's size.

Example:
    >>> import torch, torch.nn as nn, reprinvert as ri
    >>> layer = nn.Linear(6, 4).double()  # 6 inputs, 4 outputs: at least 2 directions the layer cannot see
    >>> s = ri.spectrum(layer, "", torch.rand(1, 6, dtype=torch.float64), k=3)
    >>> int(s.blind[0])
    2
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import warn_user
from ._domain import NormalizeSpec
from ._feed import Feed, model_dtype, rows_of
from ._hooks import Hooks, first_inputs
from ._layers import LayerSpec, resolve_layer, runnable
from ._outputs import Selector

__all__ = ["Spectrum", "spectrum"]

_MAXITER = 1000  # block iterations per end (each: k + 2 forward-backward passes)


@dataclass(frozen=True)
class Spectrum:
    """Singular values of a layer's Jacobian at each input (per sample, CPU float64 tensors).

    Attributes:
        layer: the layer's resolved name.
        top: ``(B, k)`` the largest singular values, descending.
        bottom: ``(B, k)`` the smallest singular values, ascending (over the input's directions: zero for every
            direction the layer cannot see, so a layer with fewer outputs than inputs has at least the difference).
        blind: ``(B,)`` the number of input directions with a singular value below ``tolerance`` x the largest,
            counted among the ``k`` smallest (see ``blind_at_least``).
        blind_at_least: ``(B,)`` True where all ``k`` smallest are below the tolerance (there may be more blind
            directions than ``k``: ask for a larger ``k``), or where the iterations did not converge.
        condition: ``(B,)`` largest / smallest singular value (inf when the smallest is 0).
        converged: ``(B,)`` whether the iterations reached their tolerance at both ends. Where they did not (an
            ill-conditioned layer converges slowly at its small end), ``top`` are lower bounds and ``bottom`` upper
            bounds of the true values (Rayleigh-Ritz), so ``blind`` and ``condition`` are lower bounds. Smallest
            values that all lie below the tolerance count as converged: those directions are blind either way.
        tolerance: the relative threshold used for ``blind``.
        input_size: directions of one input sample (its number of elements; with ``start=``, of the start layer's
            output).
        output_size: elements of the layer's output per sample.
        invariant: ``(B,)`` directions of known invariances, verified at each sample (the layer's output does not
            change along them) and set apart before the smallest values were computed: ``bottom`` and ``blind``
            are over the remaining directions, the layer's own. Zero unless ``invariances=True`` found some.
        invariances: what was set apart, in words (one line per kind).
    """

    layer: str
    top: torch.Tensor
    bottom: torch.Tensor
    blind: torch.Tensor
    blind_at_least: torch.Tensor
    condition: torch.Tensor
    converged: torch.Tensor
    tolerance: float
    input_size: int
    output_size: int
    invariant: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    invariances: tuple[str, ...] = ()

    @property
    def summary(self) -> tuple[str, ...]:
        """Per sample, what the values support, in words: the count of blind directions where it stands
        (converged), a lower bound where values below the tolerance are certain though the iterations stopped
        early, else "not converged"."""
        out = []
        for b in range(self.bottom.shape[0]):
            apart = int(self.invariant[b]) if self.invariant.numel() else 0
            extra = f" besides {apart} of known invariances" if apart else ""
            if not bool(self.converged[b]) and int(self.blind[b]) > 0:
                out.append(f"at least {int(self.blind[b])} blind directions{extra} (not converged: the smallest "
                           "values are upper bounds, there may be more)")
            elif not bool(self.converged[b]):
                out.append(f"not converged: no count of blind directions{extra} (the smallest values are upper "
                           "bounds); ask for a smaller k or use a smaller input")
            elif bool(self.blind_at_least[b]):
                out.append(f"at least {int(self.blind[b])} blind directions{extra} (all {self.bottom.shape[1]} "
                           "computed are blind: ask for a larger k)")
            else:
                out.append(f"{int(self.blind[b])} blind directions{extra}, condition {float(self.condition[b]):.3g}")
        return tuple(out)


def spectrum(
    model: nn.Module,
    layer: LayerSpec,
    x: torch.Tensor,
    *,
    k: int = 6,
    tolerance: float = 1e-6,
    select: Selector = None,
    call: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    normalize: NormalizeSpec = None,
    precision: Literal["float64", "model"] = "float64",
    start: LayerSpec | None = None,
    invariances: bool = True,
) -> Spectrum:
    """The largest and smallest singular values of ``layer``'s Jacobian at each sample of ``x``.

    The model runs in eval mode (the caller's model and tensors are left as they were); the Jacobian is with
    respect to ``x`` in pixel space when ``normalize=`` is given. By default a float64 copy of the model is used:
    the iterations need the operator to be exact to well below the smallest singular values they resolve,
    which float32 arithmetic is not.

    Args:
        model: any ``nn.Module``.
        layer: name, index or module (see :func:`reprinvert.list_layers`).
        x: ``(B, ...)`` floating inputs.
        k: how many of the largest and of the smallest singular values to compute (at most the input's size).
        tolerance: a singular value below ``tolerance`` x the largest counts as a direction the layer cannot see
            (raised to 10 sqrt(eps) of the model's dtype, the numerical zero of J^T J: 1.5e-7 for float64 models,
            3.5e-3 for float32 ones; the value used is ``Spectrum.tolerance``).
        select, call, model_kwargs, normalize: as in :func:`reprinvert.invert` (each sample is measured alone:
            tensors in ``model_kwargs`` with one row per sample, an ``attention_mask`` say, are taken row by row).
        precision: ``"float64"`` (default): compute with a float64 copy of the model (``copy.deepcopy``; twice
            the memory of a float32 model); ``"model"``: with the model itself, in its dtype (less memory, and a
            tolerance of float32's numerical zero for a float32 model).
        start: differentiate with respect to this module's output instead of ``x``, as in
            :func:`reprinvert.invert` (token models: the embedding layer; ``x`` is then the token ids).
        invariances: set known invariances apart (:attr:`Spectrum.invariant`): a LayerNorm whose input has the
            input's shape ignores, at each position, a shift along the all-ones direction and a scaling of its
            input (two directions a position; BERT's embedding LayerNorm). Each candidate direction is kept only
            where the layer's Jacobian-vector product shows the output does not change along it.

    Returns:
        A :class:`Spectrum`.

    Raises:
        TypeError, ValueError: a bad argument (the message names it and the fix).
    """
    _checked(x, k, tolerance, precision, start)
    model, name = _prepared(model, layer, precision)
    feed = Feed.of(model, normalize=normalize, model_kwargs=model_kwargs, x=x if start is None else None)
    samples = []
    # J v comes from differentiating a vector-Jacobian product: every operation needs a second derivative. Fused
    # attention kernels (flash / memory-efficient scaled_dot_product_attention) have none, so attention runs on
    # its plain math kernel here (the same function, composed of differentiable operations).
    with feed.session(), torch.enable_grad(), _math_attention(), \
            Hooks(feed.model, name, select=select, call=call, grad=True, stop=True, start=start) as h:
        for b in range(x.shape[0]):
            rows = torch.tensor([b])
            fed = replace(feed, model_kwargs=rows_of(feed.model_kwargs, rows, x.shape[0]))
            samples.append(_sample(fed, h, name, x[b : b + 1], k, invariances))
    return _summary(name, samples, feed.dtype, tolerance, samples[0].input_size)


class _Sample(NamedTuple):
    """One sample's singular values (largest first; smallest first), whether each iteration converged, and the
    directions of known invariances set apart."""

    top: np.ndarray
    bottom: np.ndarray
    output_size: int
    top_done: bool
    bottom_done: bool
    input_size: int
    invariant: int
    invariances: tuple[str, ...]


def _checked(x: Any, k: Any, tolerance: Any, precision: Any, start: LayerSpec | None) -> None:
    """``spectrum``'s arguments are valid (``k`` against the input's size once it is known, with ``start=``)."""
    if not isinstance(x, torch.Tensor) or (start is None and not x.is_floating_point()) or x.dim() < 1 or \
            x.shape[0] == 0:
        what = type(x).__name__ if not isinstance(x, torch.Tensor) else f"{x.dtype} {tuple(x.shape)}"
        need = "a floating tensor" if start is None else "a tensor (token ids, say)"
        raise TypeError(f"x must be {need} with a batch dimension, got {what}"
                        + ("; for token ids pass start=<the embedding layer>" if start is None and
                           isinstance(x, torch.Tensor) and x.dim() else ""))
    if start is None:
        _check_k(k, x[0].numel())
    elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: expected a positive int")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ValueError(f"tolerance={tolerance!r}: expected a number in (0, 1), e.g. 1e-6")
    if precision not in ("float64", "model"):
        raise ValueError(f"precision={precision!r}: expected 'float64' or 'model'")


def _check_k(k: Any, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k!r}: expected an int from 1 to {n} (at most the input's size, {n})")


def _prepared(model: nn.Module, layer: LayerSpec, precision: str) -> tuple[nn.Module, str]:
    """The model to differentiate (a float64 copy unless ``precision="model"``) and the layer's name."""
    model = runnable(model)
    name, _ = resolve_layer(model, layer)
    if precision == "float64" and model_dtype(model) not in (None, torch.float64):
        try:
            model = copy.deepcopy(model).double()
        except Exception as error:  # a model that cannot be copied
            raise ValueError(
                f"cannot make a float64 copy of the model ({type(error).__name__}: {error}); pass "
                "precision='model' to use the model as it is"
            ) from None
    return model, name


def _sample(feed: Feed, h: Hooks, name: str, x: torch.Tensor, k: int, invariances: bool) -> _Sample:
    """The ``k`` largest and smallest singular values of the layer's Jacobian at the one sample ``x``."""
    from scipy.sparse.linalg import LinearOperator  # type: ignore[import-untyped]

    dtype = feed.dtype
    z, out, norm_inputs = _graph(feed, h, name, x)
    n = z[0].numel()
    _check_k(k, n)
    out = out.reshape(-1).to(torch.float64)
    u = torch.zeros_like(out, requires_grad=True)
    jt_u = torch.autograd.grad(out, z, u, create_graph=True)[0]  # J^T u, linear in u

    def jv(v: torch.Tensor) -> torch.Tensor:
        try:
            return torch.autograd.grad(jt_u, u, v.reshape(z.shape), retain_graph=True)[0]  # J v
        except (RuntimeError, NotImplementedError) as error:
            raise ValueError(
                f"layer {name!r}: the Jacobian-vector product needs second derivatives of every operation "
                f"up to the layer, and one of them has none ({str(error).splitlines()[0]}); "
                "spectrum cannot measure this layer"
            ) from None

    def jtj(v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
        jtjv = torch.autograd.grad(out, z, jv(vt), retain_graph=True)[0]  # J^T J v
        return jtjv.reshape(-1).numpy()

    largest, top_done = _largest(LinearOperator((n, n), matvec=jtj, dtype=np.float64), k, dtype)
    top = float(np.sqrt(max(float(largest.max()), 0.0)))
    q, said = _invariant(z, norm_inputs, jv, top, dtype) if invariances else (np.zeros((n, 0)), ())
    if k > n - q.shape[1]:
        raise ValueError(f"k={k!r}: expected at most {n - q.shape[1]} (the input's {n} directions, less the "
                         f"{q.shape[1]} of known invariances set apart)")
    # The smallest eigenvalues of J^T J as the largest of (s I - J^T J), s just above the largest: the
    # tolerance is then relative to s, which a (near) zero eigenvalue can meet. Known invariances are projected
    # out first (P = I - Q Q^T): they give 0 here, never among the largest.
    shift = 1.01 * float(largest.max()) if float(largest.max()) > 0 else 1.0

    def flip(v: np.ndarray) -> np.ndarray:
        v = v.reshape(-1)
        v = v - q @ (q.T @ v)
        w = shift * v - jtj(v)
        return w - q @ (q.T @ w)

    flipped, bottom_done = _largest(LinearOperator((n, n), matvec=flip, dtype=np.float64), k, dtype)
    smallest = shift - flipped
    return _Sample(
        top=np.sort(np.sqrt(np.clip(largest, 0, None)))[::-1].copy(),
        bottom=np.sort(np.sqrt(np.clip(smallest, 0, None))).copy(),
        output_size=out.numel(), top_done=top_done, bottom_done=bottom_done, input_size=n, invariant=q.shape[1],
        invariances=said,
    )


def _graph(feed: Feed, h: Hooks, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The variable ``z`` (float64, requiring grad: ``x``, or the start layer's output at ``x``), the layer's output
    on its graph, and the inputs of the model's LayerNorms on that graph (by name)."""
    dtype = feed.dtype
    if h.start is None:
        z = x.detach().to(torch.float64).clone().requires_grad_(True)
        # A copy on z's graph (a first in-place operation cannot touch z), in the model's dtype.
        fed = feed.normalized(z).clone()
        if dtype is not None and dtype != torch.float64:
            fed = fed.to(dtype)
    else:
        h.start.replacement = None
        with torch.no_grad():
            h.run(feed, feed.input(x, grad=False))
        assert h.start.output is not None
        z = h.start.output.detach().to(torch.float64).clone().requires_grad_(True)
        h.start.replacement = z if dtype in (None, torch.float64) else z.to(dtype)
        fed = feed.input(x, grad=False)
    norms = {n: m for n, m in feed.model.named_modules() if isinstance(m, nn.LayerNorm)
             or type(m).__name__.endswith("LayerNorm")}
    try:
        with first_inputs(norms) as seen:
            out = h.run(feed, fed)[name]
    finally:
        if h.start is not None:
            h.start.replacement = None
    return z, out, {n: v for n, v in seen.items() if isinstance(v, torch.Tensor) and v.shape == z.shape}


def _invariant(
    z: torch.Tensor, norm_inputs: dict[str, Any], jv: Any, top: float, dtype: torch.dtype | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """An orthonormal basis ``(n, m)`` of the known invariances verified at ``z`` (a LayerNorm whose input has z's
    shape: per position, the all-ones direction and the centred input), and what they are in words."""
    eps = float(torch.finfo(dtype if dtype is not None and dtype.is_floating_point else torch.float64).eps)
    floor = 10 * float(np.sqrt(eps)) * max(top, 1e-300)
    basis: list[torch.Tensor] = []  # orthonormal, in the order found
    said = []
    for norm, a in norm_inputs.items():
        a = a.detach().to(torch.float64).reshape(-1, a.shape[-1])
        positions, width = a.shape
        if 2 * positions > 4096:  # too many to verify one by one
            continue
        found = 0
        for p in range(positions):
            for direction in (torch.ones(width, dtype=torch.float64), a[p] - a[p].mean()):
                v = torch.zeros(positions, width, dtype=torch.float64)
                v[p] = direction
                v = v.reshape(-1)
                if float(v.norm()) == 0 or float(jv(v).norm()) > floor * float(v.norm()):
                    continue
                # Only what is new: a later LayerNorm's shift is often the first one's, seen again.
                w = v / v.norm()
                for e in basis:
                    w = w - (e @ w) * e
                if float(w.norm()) > 1e-6:
                    basis.append(w / w.norm())
                    found += 1
        if found:
            said.append(f"{norm!r}: {found} directions over {positions} positions (at each, a shift along all-ones "
                        "and a scaling of the LayerNorm's input) that the layer's output does not change along")
    if not basis:
        return np.zeros((z.numel(), 0)), ()
    return torch.stack(basis, 1).numpy(), tuple(said)


def _summary(name: str, samples: list[_Sample], dtype: torch.dtype | None, tolerance: float, n: int) -> Spectrum:
    """The samples' values as a :class:`Spectrum`: blind directions, convergence, and a warning where it failed."""
    top = torch.tensor(np.stack([s.top for s in samples]))
    bottom = torch.tensor(np.stack([s.bottom for s in samples]))
    # Eigenvalues of J^T J near 0 come back as about +-eps * lambda_max (eps of the model's dtype): their square
    # roots, about sqrt(eps) * sigma_max, are the numerical zero. A tolerance below 10 sqrt(eps) cannot be resolved.
    eps = float(torch.finfo(dtype if dtype is not None and dtype.is_floating_point else torch.float64).eps)
    floor = max(float(tolerance), 10 * float(np.sqrt(eps)))
    below = bottom < floor * top[:, :1]
    tops_done = torch.tensor([s.top_done for s in samples])
    bottoms_done = torch.tensor([s.bottom_done for s in samples])
    # A cluster of zeros (many blind directions) converges slowly, but its bounds are below the tolerance long
    # before: those directions are blind either way.
    converged = tops_done & (bottoms_done | below.all(1))
    # Unconverged values are Rayleigh-Ritz bounds: the smallest from above, so a value already below the tolerance
    # is certainly blind, and the count is a lower bound (as is the condition number).
    blind_at_least = below.all(1) | (~converged & ~below.all(1))
    if not bool(converged.all()):
        warn_user(
            f"spectrum of layer {name!r}: the iterations stopped before their tolerance for sample(s) "
            f"{(~converged).nonzero().flatten().tolist()} (Spectrum.converged): there, `top` are lower bounds and "
            "`bottom` upper bounds of the true singular values, and `blind` and `condition` lower bounds; an "
            "ill-conditioned layer converges slowly at its small end; ask for a smaller k, or use a smaller input",
        )
    return Spectrum(
        layer=name, top=top, bottom=bottom, blind=below.sum(1), blind_at_least=blind_at_least,
        condition=top[:, 0] / bottom[:, 0], converged=converged, tolerance=floor, input_size=n,
        output_size=samples[0].output_size, invariant=torch.tensor([s.invariant for s in samples]),
        invariances=tuple(dict.fromkeys(line for s in samples for line in s.invariances)),
    )


def _math_attention() -> Any:
    """A context running ``scaled_dot_product_attention`` on its math kernel (twice differentiable)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: its default CPU kernel is the math one
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _largest(op: Any, k: int, dtype: torch.dtype | None) -> tuple[np.ndarray, bool]:
    """The ``k`` largest eigenvalues of the symmetric positive semi-definite operator ``op``.

    Block iterations (scipy's LOBPCG, block of k + 2 from a fixed random start) rather than Lanczos from one
    vector: a one-vector Krylov space holds one direction per distinct eigenvalue, so it cannot count repeated
    ones, and a layer's blind directions are exactly a repeated eigenvalue, 0.
    """
    from scipy.sparse.linalg import lobpcg

    n = op.shape[0]
    block = min(k + 2, n)
    start = np.random.default_rng(0).standard_normal((n, block))
    eps = float(torch.finfo(dtype if dtype is not None and dtype.is_floating_point else torch.float64).eps)
    scale = float(np.linalg.norm(op.matvec(start[:, 0]))) / float(np.linalg.norm(start[:, 0]))
    tol = max(1e4 * eps, 1e-8) * max(scale, 1e-300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is judged below, on the k values returned
        values, vectors = lobpcg(op, start, largest=True, tol=tol, maxiter=_MAXITER)
    order = np.argsort(np.asarray(values))[::-1][:k]
    # Converged when each returned eigenpair's residual ||A x - lambda x|| meets the tolerance (the extra block
    # vectors only help the iterations along).
    x = vectors[:, order]
    residuals = np.linalg.norm(op.matmat(x) - x * values[order], axis=0)
    return np.asarray(values)[order], bool((residuals <= tol).all())
