"""Private: put a model into the state an inversion needs, and restore it exactly afterwards.

The caller's model comes back as it was: every module's ``training`` flag (restored one by one, never by a
blanket ``train()``), every parameter's ``requires_grad`` and every buffer's values; the global RNG state too.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["frozen"]

# One re-entrant lock per module: two threads working on the same module (the same model, or two models that share
# a backbone) would otherwise each snapshot the state the other had temporarily set, and restore it. A call locks
# every module of its model, always in the same order (by id), so two calls never wait on each other in a cycle.
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def frozen(model: nn.Module, *, train: bool = False, freeze_parameters: bool = True) -> Iterator[nn.Module]:
    """Context manager: ``model`` in eval mode (unless ``train``) with parameters frozen, restored on exit.

    Args:
        model: the caller's model.
        train: keep (do not change) the modules' training flags instead of switching to eval mode.
        freeze_parameters: set ``requires_grad=False`` on every parameter for the duration; gradients then
            flow only to the input, which is both faster and guarantees no parameter's ``.grad`` changes.

    Buffers (BatchNorm statistics and the like) are snapshotted and written back on exit if anything changed
    or rebound them, so even a train-mode forward leaves no trace.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lazy = [name for name, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        raise TypeError(
            f"the model has uninitialised (lazy) parameters ({', '.join(lazy[:3])}): a forward pass would create "
            "them, and reprinvert leaves your model as it was; run model(x) once yourself to initialise them"
        )
    inference = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_inference()]
    if inference:
        raise TypeError(
            f"the model holds inference tensors ({', '.join(inference[:3])}{', ...' if len(inference) > 3 else ''}): "
            "it was built or loaded under torch.inference_mode(), and autograd cannot run through such tensors; "
            "pass a copy, copy.deepcopy(model), whose tensors are normal ones, or build the model outside "
            "inference_mode"
        )
    with contextlib.ExitStack() as locks:
        for _, module in sorted({id(m): m for m in model.modules()}.items()):
            locks.enter_context(_lock_for(module))
        yield from _frozen(model, train=train, freeze_parameters=freeze_parameters)


def _frozen(model: nn.Module, *, train: bool, freeze_parameters: bool) -> Iterator[nn.Module]:
    flags = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    # Each buffer by owner and name, so a forward that rebinds one (``self.count = self.count + 1``) is undone too.
    buffers = [
        (m, name, b, b.detach().clone()) for m in model.modules() for name, b in m._buffers.items() if b is not None
    ]
    # What each module registered before: a forward that registers a buffer or parameter has it removed again.
    registered = [
        (m, set(m._buffers), set(m._parameters)) for m in model.modules() if not isinstance(m, torch.jit.ScriptModule)
    ]
    # A model may draw from the global RNG (dropout with train=True, a VAE's sampling): give it back as it was.
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        if not train:
            for m, _ in flags:
                m.training = False
        if freeze_parameters:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for m, flag in flags:
            m.training = flag
        for p, req in zip(params, requires):
            if p.requires_grad != req:
                p.requires_grad_(req)
        for m, buffer_names, parameter_names in registered:
            for name in set(m._buffers) - buffer_names:
                del m._buffers[name]
            for name in set(m._parameters) - parameter_names:
                del m._parameters[name]
        with torch.no_grad():
            for m, name, b, saved in buffers:
                if m._buffers.get(name) is not b:
                    m._buffers[name] = b
                if b.shape != saved.shape or b.dtype != saved.dtype or b.is_inference():
                    b.data = saved
                elif not torch.equal(b, saved):
                    b.copy_(saved)  # in place: the buffer stays the same (non-inference) tensor
