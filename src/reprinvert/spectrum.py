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

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._domain import NormalizeSpec, resolve_normalize
from ._state import frozen
from .capture import Hooks, Selector, model_dtype
from .errors import ReprinvertWarning
from .layers import LayerSpec, resolve_layer, runnable

__all__ = ["Spectrum", "spectrum"]


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
        blind_at_least: ``(B,)`` True where all ``k`` smallest are below the tolerance: there may be more blind
            directions than ``k`` (ask for a larger ``k``).
        condition: ``(B,)`` largest / smallest singular value (inf when the smallest is 0).
        tolerance: the relative threshold used for ``blind``.
        input_size: directions of one input sample (its number of elements).
        output_size: elements of the layer's output per sample.
    """

    layer: str
    top: torch.Tensor
    bottom: torch.Tensor
    blind: torch.Tensor
    blind_at_least: torch.Tensor
    condition: torch.Tensor
    tolerance: float
    input_size: int
    output_size: int


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
        select, call, model_kwargs, normalize: as in :func:`reprinvert.invert`.
        precision: ``"float64"`` (default): compute with a float64 copy of the model (``copy.deepcopy``; twice
            the memory of a float32 model); ``"model"``: with the model itself, in its dtype (less memory, and a
            tolerance of float32's numerical zero for a float32 model).

    Returns:
        A :class:`Spectrum`.

    Raises:
        TypeError, ValueError: a bad argument (the message names it and the fix).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[0] == 0:
        raise TypeError(
            f"x must be a floating tensor with a batch dimension, got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else f'{x.dtype} {tuple(x.shape)}'}"
        )
    n = x[0].numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < max(n, 2):
        raise ValueError(f"k={k!r}: expected an int from 1 to {max(n - 1, 1)} (below the input's size, {n})")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ValueError(f"tolerance={tolerance!r}: expected a number in (0, 1), e.g. 1e-6")
    from scipy.sparse.linalg import LinearOperator  # type: ignore[import-untyped]

    if precision not in ("float64", "model"):
        raise ValueError(f"precision={precision!r}: expected 'float64' or 'model'")
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
    norm = resolve_normalize(normalize, x)
    tops, bottoms, sizes = [], [], []
    with frozen(model), torch.enable_grad(), Hooks(model, name, select=select, call=call, grad=True, stop=True) as h:
        dtype = model_dtype(h.model)
        for b in range(x.shape[0]):
            z = x[b : b + 1].detach().to(torch.float64).clone().requires_grad_(True)
            # A copy on z's graph (a first in-place operation cannot touch z), in the model's dtype.
            fed = (z if norm is None else norm.apply(z)).clone()
            if dtype is not None and dtype != torch.float64:
                fed = fed.to(dtype)
            out = h.run(fed, model_kwargs)[name]
            out = out.reshape(-1).to(torch.float64)
            sizes.append(out.numel())
            u = torch.zeros_like(out, requires_grad=True)
            jt_u = torch.autograd.grad(out, z, u, create_graph=True)[0]  # J^T u, linear in u

            def jtj(v: np.ndarray, z: torch.Tensor = z, out: torch.Tensor = out, u: torch.Tensor = u,
                    jt_u: torch.Tensor = jt_u) -> np.ndarray:
                vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(z.shape))
                jv = torch.autograd.grad(jt_u, u, vt, retain_graph=True)[0]  # J v
                jtjv = torch.autograd.grad(out, z, jv, retain_graph=True)[0]  # J^T J v
                return jtjv.reshape(-1).numpy()

            op = LinearOperator((n, n), matvec=jtj, dtype=np.float64)
            largest, converged = _largest(op, k, dtype)
            if not converged:
                _warn_unconverged()
            # The smallest eigenvalues of J^T J as the largest of (s I - J^T J), s just above the largest: the
            # tolerance is then relative to s, which a (near) zero eigenvalue can meet.
            shift = 1.01 * float(largest.max()) if float(largest.max()) > 0 else 1.0

            def flip(v: np.ndarray, f: Any = jtj, s: float = shift) -> np.ndarray:
                return s * v.reshape(-1) - f(v)

            flipped, converged = _largest(LinearOperator((n, n), matvec=flip, dtype=np.float64), k, dtype)
            smallest = shift - flipped
            # A large cluster of zeros (many blind directions) converges slowly but is 0 to within the tolerance
            # long before: only values above it need the iterations to have converged.
            if not converged and np.sqrt(np.clip(smallest, 0, None)).max() > 1e-6 * np.sqrt(largest.max()):
                _warn_unconverged()
            tops.append(np.sort(np.sqrt(np.clip(largest, 0, None)))[::-1].copy())
            bottoms.append(np.sort(np.sqrt(np.clip(smallest, 0, None))).copy())
    top = torch.tensor(np.stack(tops))
    bottom = torch.tensor(np.stack(bottoms))
    # Eigenvalues of J^T J near 0 come back as about +-eps * lambda_max (eps of the model's dtype): their square
    # roots, about sqrt(eps) * sigma_max, are the numerical zero. A tolerance below 10 sqrt(eps) cannot be resolved.
    eps = float(torch.finfo(dtype if dtype is not None and dtype.is_floating_point else torch.float64).eps)
    floor = max(float(tolerance), 10 * float(np.sqrt(eps)))
    below = bottom < floor * top[:, :1]
    blind = below.sum(1)
    condition = top[:, 0] / bottom[:, 0]
    return Spectrum(
        layer=name, top=top, bottom=bottom, blind=blind, blind_at_least=below.all(1), condition=condition,
        tolerance=floor, input_size=n, output_size=sizes[0],
    )


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values, _ = lobpcg(op, start, largest=True, tol=max(1e4 * eps, 1e-8) * max(scale, 1e-300), maxiter=1000)
    converged = not any("not reaching the requested tolerance" in str(w.message) for w in caught)
    return np.sort(np.asarray(values))[::-1][:k], converged


def _warn_unconverged() -> None:
    warnings.warn(
        "spectrum: the block iterations stopped before reaching their tolerance; the values are approximate (use "
        "precision='float64' for a float32 model, or a smaller k)",
        ReprinvertWarning,
        stacklevel=3,
    )
