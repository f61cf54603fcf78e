"""Private: put a model into the state an inversion needs, and restore it exactly afterwards.

The caller's model comes back as it was: every module's ``training`` flag (restored one by one, never by a
blanket ``train()``), every parameter's ``requires_grad`` and every buffer's values.

Random numbers a model draws in its forward (dropout with ``train=True``, a VAE's sampling) come from a stream of
the model's own, seeded from the call's seed: :func:`model_rng` swaps it in for the duration of each forward pass
and torch's global stream back out afterwards. The global stream is never rewound (draws that other code made
between two forward passes stay made), and the results depend on the seed alone, not on the global RNG.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import ReprinvertWarning

__all__ = ["check_materialised", "frozen", "model_rng"]

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


def check_materialised(model: nn.Module) -> None:
    """Raise ``TypeError`` when the model holds meta-device parameters or buffers (shapes without values)."""
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise TypeError(
            f"the model holds meta-device tensors ({', '.join(meta[:3])}{', ...' if len(meta) > 3 else ''}): they "
            "have shapes but no values, so nothing can be computed with them; materialise the model first "
            "(model.to_empty(device='cpu') then load_state_dict(...), or build it outside torch.device('meta'))"
        )


@contextmanager
def frozen(
    model: nn.Module, *, train: bool = False, freeze_parameters: bool = True, seed: int | None = None
) -> Iterator[nn.Module]:
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
    check_materialised(model)
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
        stream = _ModelStream(0 if seed is None else int(seed))
        _STREAMS.setdefault(model, []).append(stream)
        try:
            yield from _frozen(model, train=train, freeze_parameters=freeze_parameters)
        finally:
            streams = _STREAMS.get(model)
            if streams:
                streams.pop()
                if not streams:
                    del _STREAMS[model]


def _frozen(model: nn.Module, *, train: bool, freeze_parameters: bool) -> Iterator[nn.Module]:
    flags = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    # Parameters a forward writes in place: nn.Embedding(max_norm=...) renormalises its rows on every lookup, and
    # in train mode a model may update a (frozen) parameter itself. Those are copied and written back; any other
    # parameter whose version counter moves is named in a warning (a copy of every parameter would double the
    # memory of large models in the common case, where nothing writes).
    writers = {
        id(m.weight) for m in model.modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None
    }
    saved_params = [(p, p.detach().clone()) for p in params if train or id(p) in writers]
    versions = [(name, p, p._version) for name, p in model.named_parameters()]
    # Each buffer by owner and name, so a forward that rebinds one (``self.count = self.count + 1``) is undone too.
    buffers = [
        (m, name, b, b.detach().clone()) for m in model.modules() for name, b in m._buffers.items() if b is not None
    ]
    # What each module registered before: a forward that registers a buffer or parameter has it removed again.
    registered = [
        (m, set(m._buffers), set(m._parameters)) for m in model.modules() if not isinstance(m, torch.jit.ScriptModule)
    ]
    try:
        if not train:
            for m, _ in flags:
                m.training = False
        if freeze_parameters:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
        for p, req in zip(params, requires):
            if p.requires_grad != req:
                p.requires_grad_(req)
        with torch.no_grad():
            for p, value in saved_params:
                if not torch.equal(p, value):
                    p.copy_(value)
        restored = {id(p) for p, _ in saved_params}
        written = [
            name for name, p, version in versions if p._version != version and id(p) not in restored
        ]
        if written:
            warnings.warn(
                f"the forward pass changed parameter(s) {', '.join(written[:3])}{', ...' if len(written) > 3 else ''} "
                "of the model in place, and reprinvert could not restore them (it keeps copies only of "
                "nn.Embedding(max_norm=...) weights, and of every parameter with train=True); pass a copy of the "
                "model, copy.deepcopy(model), if its parameters must stay as they were",
                ReprinvertWarning,
                stacklevel=4,
            )
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


class _ModelStream:
    """The random stream a model draws from during reprinvert's forward passes (CPU, and each CUDA device)."""

    def __init__(self, seed: int) -> None:
        # Mixed, so the model's draws are not the same numbers as the search's own generator seeded with ``seed``.
        self.seed = (seed * 6364136223846793005 + 1442695040888963407) % (2**63)
        self.cpu = torch.Generator().manual_seed(self.seed).get_state()
        self.cuda: list[torch.Tensor] | None = None
        self.depth = 0
        self.held: tuple[torch.Tensor, list[torch.Tensor] | None] | None = None  # the caller's states, swapped out

    def swap_in(self) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        theirs = torch.get_rng_state()
        torch.set_rng_state(self.cpu)
        theirs_cuda = None
        if torch.cuda.is_initialized():
            if self.cuda is None:
                self.cuda = [
                    torch.Generator(device=f"cuda:{i}").manual_seed(self.seed).get_state()
                    for i in range(torch.cuda.device_count())
                ]
            theirs_cuda = torch.cuda.get_rng_state_all()
            torch.cuda.set_rng_state_all(self.cuda)
        return theirs, theirs_cuda

    def swap_out(self, theirs: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
        self.cpu = torch.get_rng_state()
        torch.set_rng_state(theirs[0])
        if theirs[1] is not None:
            self.cuda = torch.cuda.get_rng_state_all()
            torch.cuda.set_rng_state_all(theirs[1])


_STREAMS: weakref.WeakKeyDictionary[nn.Module, list[_ModelStream]] = weakref.WeakKeyDictionary()


@contextmanager
def model_rng(model: nn.Module) -> Iterator[None]:
    """Run the block (one forward pass of ``model``) on the model's own random stream when it is :func:`frozen`.

    Outside :func:`frozen` (a forward the caller runs inside :func:`reprinvert.capture`) nothing changes. Costs
    four small generator-state copies per forward pass. A thread that draws from torch's global RNG at the very
    moment a forward pass starts or ends may have that one draw repeated: torch offers no atomic exchange of
    generator states.
    """
    streams = _STREAMS.get(model)
    if not streams:
        yield
        return
    stream = streams[-1]
    if stream.depth:  # the model calls itself: already on its stream
        yield
        return
    stream.held = stream.swap_in()
    stream.depth += 1
    try:
        yield
    finally:
        stream.depth -= 1
        held, stream.held = stream.held, None
        assert held is not None
        stream.swap_out(held)


def holds_model_rng(model: nn.Module) -> bool:
    """Whether the model's random stream is swapped in now (inside :func:`model_rng`): a forward needs no swap."""
    streams = _STREAMS.get(model)
    return bool(streams) and streams[-1].depth > 0  # type: ignore[index]


def step_out_of_model_rng(model: nn.Module) -> tuple[_ModelStream, int] | None:
    """Inside :func:`model_rng`'s block, put torch's own random stream back (for code that is not the model's: a
    user's callback) and return what :func:`step_back_into_model_rng` needs; None when nothing is held. The search
    holds the model's stream for its whole loop (four generator-state copies per loop instead of per step) and
    steps out of it around the caller's code. Two plain calls rather than a context manager: this runs at every
    step that has a callback."""
    streams = _STREAMS.get(model)
    if not streams:
        return None
    stream = streams[-1]
    held = stream.held
    if not stream.depth or held is None:
        return None
    depth, stream.depth = stream.depth, 0
    stream.swap_out(held)
    return stream, depth


def step_back_into_model_rng(token: tuple[_ModelStream, int] | None) -> None:
    """Undo :func:`step_out_of_model_rng` (nothing for None)."""
    if token is None:
        return
    stream, depth = token
    stream.held = stream.swap_in()
    stream.depth = depth
