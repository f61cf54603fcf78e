"""Issue 6, cases 6-8: success and faults at every point, across every model family.

Each run uses a "decorated" model (mixed training flags, mixed requires_grad, existing .grad, user hooks of every
kind) and an input that requires grad; afterwards every hook dictionary, the model, the input (values, version
counter, requires_grad), the global RNG and the grad mode must be exactly as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert._layers import resolve_layer, runnable
from reprinvert._outputs import select_output
from reprinvert._state import frozen

from reliability_support import FAMILIES, LEDGER, Family, decorate
from untouched import State

STEPS = 3


class Boom(Exception):
    """The injected fault."""


def _input(family: Family, seed: int = 1) -> torch.Tensor:
    x = family.make_input(torch.Generator().manual_seed(seed))
    return x.requires_grad_(True) if x.is_floating_point() else x


def _invert(family: Family, model: nn.Module, x: torch.Tensor, **kw: Any) -> ri.Inversion:
    options: dict[str, Any] = dict(steps=STEPS, select=family.select, start=family.start, call=family.call)
    options.update(kw)
    return ri.invert(model, family.layer, x, **options)


def _layer_module(family: Family, model: nn.Module) -> nn.Module:
    return resolve_layer(runnable(model), family.layer)[1]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_success_leaves_everything_untouched(name: str) -> None:
    family = FAMILIES[name]
    model = decorate(family.model())
    x = _input(family)
    state = State.of(model, x)
    res = _invert(family, model, x)
    state.check(model)
    assert res.steps_run == STEPS and bool(torch.isfinite(res.input.float()).all())
    rep = ri.represent(model, family.layer, x, select=family.select, call=family.call)
    state.check(model)
    assert torch.equal(rep, res.target)
    ri.describe(model, x)
    state.check(model)


# -- fault injection ---------------------------------------------------------------------------------------------


@contextmanager
def layer_forward_raises(module: nn.Module, at_call: int, exc: BaseException) -> Iterator[None]:
    """Temporarily replace ``module.forward`` by one that raises ``exc`` on call number ``at_call`` (1-based)."""
    original = module.forward
    calls = [0]

    def forward(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == at_call:
            raise exc
        return original(*args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.forward


@contextmanager
def user_hook(module: nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _penalty_raises(at: int) -> ri.regularizers.Regularizer:
    class BadPenalty(ri.regularizers.Regularizer):
        name = "bad"
        calls = 0

        def penalty(self, x: torch.Tensor, t: float) -> torch.Tensor:
            self.calls += 1
            if self.calls == at:
                raise Boom("raised in the loss")
            return x.sum(tuple(range(1, x.dim()))) * 0

    return BadPenalty()


def _after_step_raises() -> ri.regularizers.Regularizer:
    class BadStep(ri.regularizers.Regularizer):
        name = "badstep"

        def after_step(self, x: torch.Tensor, t: float) -> torch.Tensor:
            raise Boom("raised after the optimizer step")

    return BadStep()


def _transform_raises() -> ri.regularizers.Regularizer:
    class BadTransform(ri.regularizers.Regularizer):
        name = "badtransform"
        calls = 0

        def transform(self, x: torch.Tensor, t: float, generator: torch.Generator) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise Boom("raised in a transform")
            return x

    return BadTransform()


def _fault_model_forward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    with layer_forward_raises(_layer_module(f, m), 3 + (f.call or 0), Boom("raised inside the model's forward")):
        _invert(f, m, x)


def _fault_keyboard_interrupt_in_forward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    with layer_forward_raises(_layer_module(f, m), 3 + (f.call or 0), KeyboardInterrupt()):
        _invert(f, m, x)


def _fault_metrics_forward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    per_run = 1 + (f.call or 0)  # calls of the layer module per forward pass (call=1: it runs twice)
    # probe, STEPS steps, the final scoring, rep(x_g): the next forward is the reference rep(x')
    with layer_forward_raises(_layer_module(f, m), per_run * (STEPS + 3) + 1, Boom("metrics")):
        _invert(f, m, x)


def _fault_user_hook(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    calls = [0]

    def hook(*args: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise Boom("raised inside a user's hook")

    with user_hook(_layer_module(f, m), hook):
        _invert(f, m, x)


def _fault_backward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        for t in _tensors(output):
            if t.requires_grad:
                t.register_hook(lambda g: (_ for _ in ()).throw(Boom("raised during backward")))
                return

    with user_hook(_layer_module(f, m), hook):
        _invert(f, m, x)


def _tensors(obj: Any) -> list[torch.Tensor]:
    from reprinvert._outputs import tensor_paths as _tensor_paths

    return [t for _, t in _tensor_paths(obj)]


def _fault_selector(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    calls = [0]

    def select(output: Any) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 3:
            raise Boom("raised in a selector")
        return select_output(output, f.select)

    _invert(f, m, x, select=select)


def _fault_loss(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    _invert(f, m, x, regularizers=[_penalty_raises(2)])


def _fault_after_step(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    _invert(f, m, x, regularizers=[_after_step_raises()])


def _fault_transform(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    _invert(f, m, x, regularizers=[_transform_raises()])


def _fault_optimizer_step(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    loop = importlib.import_module("reprinvert._search._steps")  # the optimisers' updates
    original = loop.adam

    def step(*args: Any, **kwargs: Any) -> None:
        raise Boom("raised in the optimizer step")

    loop.adam = step
    try:
        _invert(f, m, x, optimizer="adam")
    finally:
        loop.adam = original


def _fault_callback(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    def cb(info: ri.StepInfo) -> None:
        if info.step == 1:
            raise Boom("raised in a user callback")

    _invert(f, m, x, callback=cb)


def _fault_keyboard_interrupt_in_callback(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    def cb(info: ri.StepInfo) -> None:
        if info.step == 1:
            raise KeyboardInterrupt

    _invert(f, m, x, callback=cb)


def _fault_represent_forward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    with layer_forward_raises(_layer_module(f, m), 1, Boom("raised during represent")):
        ri.represent(m, f.layer, x, select=f.select, call=f.call)


def _fault_describe_forward(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    with layer_forward_raises(_layer_module(f, m), 1, Boom("raised during describe")):
        ri.describe(m, x)


def _fault_capture_block(f: Family, m: nn.Module, x: torch.Tensor) -> None:
    # the user's own forward restores its BatchNorm statistics (what model.eval() would do for a real user); its
    # random draws (a sampling model) are the user's own, so the user's forward keeps its own RNG state here
    with ri.capture(m, f.layer, select=f.select, call=f.call), frozen(m, train=True), torch.no_grad(), \
            torch.random.fork_rng():
        runnable(m)(x)
        raise Boom("raised inside a capture block")


FAULTS: dict[str, Callable[[Family, nn.Module, torch.Tensor], None]] = {
    "model-forward": _fault_model_forward,
    "model-forward-keyboard-interrupt": _fault_keyboard_interrupt_in_forward,
    "metrics-forward": _fault_metrics_forward,
    "user-hook": _fault_user_hook,
    "backward": _fault_backward,
    "selector": _fault_selector,
    "loss": _fault_loss,
    "after-step": _fault_after_step,
    "transform": _fault_transform,
    "optimizer-step": _fault_optimizer_step,
    "callback": _fault_callback,
    "callback-keyboard-interrupt": _fault_keyboard_interrupt_in_callback,
    "represent-forward": _fault_represent_forward,
    "describe-forward": _fault_describe_forward,
    "capture-block": _fault_capture_block,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fault_leaves_no_hook_and_no_change(name: str, fault: str) -> None:
    family = FAMILIES[name]
    model = decorate(family.model())
    x = _input(family)
    state = State.of(model, x)
    with pytest.raises((Boom, KeyboardInterrupt)):
        FAULTS[fault](family, model, x)
    LEDGER.faults[fault] += 1
    state.check(model)
    # and the model still works normally afterwards
    assert _invert(family, model, x, steps=1).steps_run == 1
    state.check(model)
