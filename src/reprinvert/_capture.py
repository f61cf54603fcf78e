"""Capture of layer representations: :func:`capture` (a context manager) and :func:`represent` (one call).

Both keep reprinvert's contracts:

* captured tensors are clones, so in-place operations after the module (``ReLU(inplace=True)``,
  ``out += identity``) cannot change them;
* a layer that never ran is an error, and so is one that ran more than once unless ``call=`` picks the call;
* with ``stop=True`` the forward pass ends right after the last requested layer, through a private
  ``BaseException`` subclass that a model's own ``except Exception`` cannot swallow;
* hooks are removed in ``finally``, whatever was raised (``KeyboardInterrupt`` included);
* hooks only record forwards run by the thread that opened the capture.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._domain import NormalizeSpec
from ._feed import Feed
from ._hooks import Hooks, StopForward, _Target
from ._layers import LayerSpec
from ._outputs import Selector, describe_structure
from .errors import LayerCallError

__all__ = ["Captured", "capture", "represent"]


class Captured(Mapping[str, torch.Tensor]):
    """What :func:`capture` yields: a read-only mapping from layer name to captured tensor.

    Look-ups accept the dotted name, the specification passed to :func:`capture`, or the module object.
    Values exist once the forward pass inside the ``with`` block has run.
    """

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks

    def _target(self, key: Any) -> _Target:
        if isinstance(key, nn.Module):
            for t in self._hooks.targets:
                if t.module is key:
                    return t
        elif key in self._hooks.by_spec:
            return self._hooks.by_spec[key]
        raise KeyError(
            f"{key!r} was not captured; captured layers: {[t.name for t in self._hooks.targets]}"
        )

    def __getitem__(self, key: Any) -> torch.Tensor:
        t = self._target(key)
        if t.value is None:
            raise LayerCallError(
                f"layer {t.name!r} has not run yet; call the model inside the `with reprinvert.capture(...)` block"
            )
        return t.value

    def __iter__(self) -> Iterator[str]:
        return iter([t.name for t in self._hooks.targets])

    def __len__(self) -> int:
        return len(self._hooks.targets)

    def calls(self) -> dict[str, int]:
        """How many times each layer ran since the ``with`` block started."""
        return {t.name: t.count for t in self._hooks.targets}

    def __repr__(self) -> str:
        items = ", ".join(
            f"{t.name!r}: {describe_structure(t.value) if t.value is not None else 'not captured'}"
            for t in self._hooks.targets
        )
        return f"Captured({{{items}}})"


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[LayerSpec] | LayerSpec,
    *,
    select: Selector | Mapping[Any, Selector] = None,
    call: int | Mapping[Any, int] | None = None,
    grad: bool = False,
    stop: bool = False,
) -> Iterator[Captured]:
    """Record the outputs of ``layers`` during the forward pass run inside the ``with`` block.

    Args:
        model: any ``nn.Module``. Its mode and parameters are not changed (call ``model.eval()`` yourself if
            you want eval-mode representations; :func:`represent` does that for you).
        layers: one layer or a list (names, indices or modules; see :func:`reprinvert.list_layers`).
        select: which tensor of a layer's output to keep (see :data:`Selector`); one for all layers or a dict
            keyed by layer.
        call: which call to keep when a layer runs more than once (0 = first); one for all or a dict.
        grad: keep the autograd graph (``grad=True``) so the captured tensors can be differentiated; by default
            they are detached.
        stop: end the forward pass right after the last requested layer ran (statements after the model call
            inside the block are then skipped); saves the compute of everything downstream.

    Yields:
        A :class:`Captured` mapping, filled by the forward pass.

    Raises:
        LayerCallError: on leaving the block, if a layer never ran, or ran more than once and ``call`` is None
            (with ``stop=True`` only calls before the stop are seen).

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
        >>> with ri.capture(model, ["0", "2"]) as reps:
        ...     _ = model(torch.randn(3, 4))
        >>> reps["0"].shape, reps["2"].shape
        (torch.Size([3, 8]), torch.Size([3, 2]))
    """
    hooks = Hooks(model, layers, select=select, call=call, grad=grad, stop=stop)
    with hooks:
        hooks.reset()
        captured = Captured(hooks)
        try:
            yield captured
        except StopForward:
            hooks.stopped()
        hooks.check()


def represent(
    model: nn.Module,
    layer: LayerSpec,
    x: Any,
    *,
    select: Selector = None,
    call: int | None = None,
    stop: bool | None = None,
    train: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    normalize: NormalizeSpec = None,
) -> torch.Tensor:
    """The detached representation of ``x`` at ``layer`` (a clone; the model is left exactly as it was).

    The model runs in eval mode (``train=True`` keeps its flags; buffers are restored either way) on the path an
    inversion takes (gradients enabled, nothing differentiated). It receives a copy of ``x`` (so an in-place first
    operation cannot change the caller's tensor), converted to the model's floating dtype.

    Args:
        model: any ``nn.Module``.
        layer: name, index or module (see :func:`reprinvert.list_layers`).
        x: the input, passed as ``model(x, **model_kwargs)``; a tuple is unpacked.
        select: which tensor of the layer's output (see :data:`Selector`).
        call: which call of a module that runs several times (0 = first).
        stop: stop the forward pass right after the layer. None (the default): stop only when ``call`` is given;
            without it the whole model runs (an error after the layer does not matter), so a module that runs
            more than once is reported instead of silently taken at its first call, as in
            :func:`reprinvert.invert`. ``stop=True`` saves the rest of the forward, but a later reuse is then
            never seen.
        train: keep the modules' training flags instead of switching to eval mode.
        model_kwargs: extra keyword arguments for the forward call.
        normalize: feed the model ``(x - mean) / std``: ``"imagenet"``, ``"inception"`` or ``(mean, std)`` per
            channel (x stays in pixel space).

    Returns:
        The representation, e.g. shape ``(B, C, H, W)`` for a convolution.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> ri.represent(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), "0", torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    feed = Feed.of(model, normalize=normalize, model_kwargs=model_kwargs, x=x, train=train)
    if stop is None:
        stop = call is not None
    # Gradients on, the input requiring them (nothing is differentiated): the path an inversion takes, so a model
    # with a separate inference path gives the representation an inversion matches.
    with feed.session(), torch.enable_grad(), Hooks(feed.model, layer, select=select, call=call, stop=stop) as hooks:
        return hooks.run(feed, feed.input(x), tolerant=not stop)[hooks.targets[0].name]
