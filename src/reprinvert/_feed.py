"""Private: how reprinvert runs the caller's model.

A :class:`Feed` is built once per public call and passed down: the module that runs (wrappers unwrapped), what
the model is fed for a pixel-space input (``normalize=``), the keyword arguments of every forward, the model's
floating dtype and whether its training flags are kept. Everything that feeds the model goes through it:

* the model never receives the caller's tensors: a private copy, converted to the model's floating dtype (a
  float32 input reaches a half-precision model as half), so a first in-place operation cannot change them;
* keyword tensors are copied for every forward (a model that writes into a mask changes neither the caller's
  tensor nor the next step's function);
* floating inputs require gradients, the path an inversion takes, so a model with a separate inference path
  (``nn.TransformerEncoder``'s fast path) is measured on the function a search minimises;
* random draws inside the forward come from the model's own stream, seeded from the call (see ``_state``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._domain import Normalize, NormalizeSpec, resolve_normalize
from ._layers import runnable
from ._state import frozen, holds_model_rng, model_rng

__all__ = ["Feed", "model_dtype", "private_input", "requiring_grad", "rows_of", "run_model"]


def check_model_kwargs(model_kwargs: Any) -> None:
    """``model_kwargs`` is None or a mapping of keyword arguments (a clear error otherwise)."""
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise TypeError(
            f"model_kwargs must be a dict of keyword arguments for the forward call, got "
            f"{type(model_kwargs).__name__}: {model_kwargs!r}; e.g. model_kwargs={{'mask': mask}}"
        )


def rows_of(kwargs: Mapping[str, Any] | None, rows: torch.Tensor, b: int) -> Mapping[str, Any] | None:
    """``kwargs`` with each tensor that has ``b`` rows (one per sample of the batch) taken at ``rows``."""
    if not kwargs:
        return kwargs
    return {k: v[rows.to(v.device)] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == b else v
            for k, v in kwargs.items()}


def run_model(model: nn.Module, x: Any, model_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Call ``model(x, **model_kwargs)``; a tuple ``x`` is unpacked into positional arguments."""
    check_model_kwargs(model_kwargs)
    kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model_kwargs.items()} \
        if model_kwargs else {}
    args = x if isinstance(x, tuple) else (x,)
    if holds_model_rng(model):  # a search already runs on the model's stream: no swap (the step loop's case)
        return model(*args, **kwargs)
    with model_rng(model):  # random draws in the forward come from the seed, not torch's global RNG
        return model(*args, **kwargs)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (None when it has none)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def private_input(x: Any, dtype: torch.dtype | None) -> Any:
    """A copy of ``x`` (a tensor or a tuple of arguments) that the model may modify in place: floating tensors in
    ``dtype`` (the model's floating dtype), other tensors cloned, anything else as it is."""
    if isinstance(x, tuple):
        return tuple(private_input(a, dtype) for a in x)
    if not isinstance(x, torch.Tensor):
        return x
    x = x.detach()
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x.clone()


def requiring_grad(x: Any) -> Any:
    """Floating tensors of ``x`` (a tensor or a tuple of arguments) as non-leaf tensors that require grad."""
    if isinstance(x, tuple):
        return tuple(requiring_grad(a) for a in x)
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().requires_grad_(True).clone()
    return x


def _checked_module(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


@dataclass(frozen=True)
class Feed:
    """How the model is run during one public call.

    Attributes:
        model: the module that runs and is hooked (:func:`~reprinvert._layers.runnable`: wrappers unwrapped).
        normalize: the model is fed ``(x - mean) / std`` of a pixel-space input (None: x as it is).
        model_kwargs: keyword arguments of every forward (copied for each one).
        dtype: the model's floating dtype (None when it has no floating parameter or buffer).
        train: keep the modules' training flags instead of switching to eval mode.
    """

    model: nn.Module
    normalize: Normalize | None = None
    model_kwargs: Mapping[str, Any] | None = None
    dtype: torch.dtype | None = None
    train: bool = False

    @classmethod
    def of(
        cls, model: nn.Module, *, normalize: NormalizeSpec = None, model_kwargs: Mapping[str, Any] | None = None,
        x: Any = None, train: bool = False, hooked: bool = True,
    ) -> Feed:
        """Check the options (naming the bad one) and bundle them; ``x`` checks ``normalize`` against the input.
        ``hooked=False``: the model only runs (no layer is hooked), so a TorchScript model is accepted as it is."""
        model = runnable(model) if hooked else _checked_module(model)
        check_model_kwargs(model_kwargs)
        norm = resolve_normalize(normalize, x if isinstance(x, torch.Tensor) else None)
        if norm is not None and x is not None and not isinstance(x, torch.Tensor):
            raise TypeError(
                f"normalize={normalize!r} needs x to be a tensor (B, C, ...), got {type(x).__name__}; pass extra "
                "arguments through model_kwargs"
            )
        return cls(model, norm, model_kwargs, model_dtype(model), train)

    def normalized(self, x: Any) -> Any:
        """What the model is fed for the pixel-space ``x`` (the same tensor without ``normalize``)."""
        return x if self.normalize is None else self.normalize.apply(x)

    def input(self, x: Any, *, grad: bool = True) -> Any:
        """The caller's ``x`` as the model receives it: normalised, a private copy in the model's dtype, floating
        tensors requiring grad (``grad=False``: not)."""
        fed = private_input(self.normalized(x), self.dtype)
        return requiring_grad(fed) if grad else fed

    def __call__(self, x: Any) -> Any:
        """One forward of the model on what it is fed (see :meth:`input`)."""
        return run_model(self.model, x, self.model_kwargs)

    @contextlib.contextmanager
    def session(self, seed: int | None = None, *, freeze_parameters: bool = True) -> Iterator[None]:
        """The model in the state the call needs (eval mode unless ``train``, parameters frozen, its random stream
        seeded from ``seed``), outside any ambient ``inference_mode``, restored exactly on exit."""
        with torch.inference_mode(False), frozen(
            self.model, train=self.train, seed=seed, freeze_parameters=freeze_parameters
        ):
            yield

