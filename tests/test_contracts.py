"""The contracts of docs/concepts.md ("Contracts"): the caller's model and tensors come back exactly as they were,
whatever happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import reprinvert as ri

from untouched import State, hooks_left
from zoo import Raiser, SmallCNN, TokenModel


def prepared_cnn() -> SmallCNN:
    """Mixed training flags, mixed requires_grad, existing .grad and a user hook: all must survive."""
    m = SmallCNN()
    m.train()
    m.bn1.eval()
    m.conv1.weight.requires_grad_(False)
    m.head.weight.grad = torch.full_like(m.head.weight, 0.25)
    m.head.register_forward_hook(lambda *a: None)
    return m


CALLS: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
    "invert": lambda m, x: ri.invert(m, "conv2", x, steps=3),
    "invert-train": lambda m, x: ri.invert(m, "conv2", x, steps=3, train=True),
    "invert-lbfgs": lambda m, x: ri.invert(m, "relu1", x, steps=2, optimizer="lbfgs"),
    "invert-mv": lambda m, x: ri.invert(m, "conv2", x, recipe="mahendran-vedaldi", steps=3),
    "invert-badger": lambda m, x: ri.invert(m, "conv2", x, recipe="badger", steps=3),
    "represent": lambda m, x: ri.represent(m, "bn1", x),
    "represent-train": lambda m, x: ri.represent(m, "bn1", x, train=True),
    "describe": lambda m, x: ri.describe(m, x),
    "evaluate": lambda m, x: ri.evaluate(m, "conv2", x, x + 0.1),
    "reference": lambda m, x: ri.metrics.reference_distance(m, "conv2", x),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_success_leaves_model_input_rng_and_grad_mode_untouched(name: str) -> None:
    model = prepared_cnn()
    x = torch.rand(2, 3, 8, 8).requires_grad_(True)
    kept = State.of(model, x)
    rng = torch.get_rng_state()
    CALLS[name](model, x)
    kept.check(model)
    assert torch.equal(torch.get_rng_state(), rng), "global RNG state changed"
    assert torch.is_grad_enabled()
    assert x.grad is None


def test_train_mode_batchnorm_statistics_unchanged() -> None:
    model = SmallCNN().train()
    stats = model.bn1.running_mean.clone(), model.bn1.running_var.clone(), model.bn1.num_batches_tracked.clone()
    ri.invert(model, "conv2", torch.rand(2, 3, 8, 8), steps=3, train=True)
    assert torch.equal(model.bn1.running_mean, stats[0]) and torch.equal(model.bn1.running_var, stats[1])
    assert torch.equal(model.bn1.num_batches_tracked, stats[2])
    assert model.training and model.bn1.training


class Boom(Exception):
    pass


def fault_in_model(model: nn.Module, x: torch.Tensor) -> None:
    def bad(*args: Any) -> None:
        raise Boom("raised inside the model")

    h = model.relu2.register_forward_hook(bad)  # downstream of conv1, upstream of head
    try:
        ri.invert(model, "head", x, steps=3)
    finally:
        h.remove()


def keyboard_interrupt_in_callback(model: nn.Module, x: torch.Tensor) -> None:
    def cb(info: ri.StepInfo) -> None:
        if info.step == 1:
            raise KeyboardInterrupt

    ri.invert(model, "conv2", x, steps=5, callback=cb)


def fault_in_loss(model: nn.Module, x: torch.Tensor) -> None:
    class BadPenalty(ri.regularizers.Regularizer):
        name = "bad"

        def penalty(self, x: torch.Tensor, t: float) -> torch.Tensor:
            raise Boom("raised in the loss")

    ri.invert(model, "conv2", x, steps=3, regularizers=[BadPenalty()])


def fault_in_step(model: nn.Module, x: torch.Tensor) -> None:
    class BadStep(ri.regularizers.Regularizer):
        name = "badstep"

        def after_step(self, x: torch.Tensor, t: float) -> torch.Tensor:
            raise Boom("raised after the optimizer step")

    ri.invert(model, "conv2", x, steps=3, regularizers=[BadStep()])


def fault_in_capture(model: nn.Module, x: torch.Tensor) -> None:
    with ri.capture(model, ["conv1", "conv2"]):
        model(x)
        raise Boom("raised inside a capture block")


@pytest.mark.parametrize(
    "fault", [fault_in_model, keyboard_interrupt_in_callback, fault_in_loss, fault_in_step, fault_in_capture]
)
def test_faults_leave_no_hook_and_no_change(fault: Callable[[nn.Module, torch.Tensor], None]) -> None:
    model = prepared_cnn()
    x = torch.rand(2, 3, 8, 8)
    kept = State.of(model, x)
    with pytest.raises((Boom, KeyboardInterrupt)):
        fault(model, x)
    kept.check(model)
    assert torch.is_grad_enabled()


def test_exception_raised_inside_models_forward() -> None:
    model = Raiser()
    x = torch.rand(2, 4)
    kept = State.of(model, x)
    with pytest.raises(RuntimeError, match="boom inside the model"):
        ri.invert(model, "after", x, steps=2)
    kept.check(model)
    # the layer before the failure can still be inverted: the forward stops before the raise
    res = ri.invert(model, "lin", x, steps=2)
    assert res.steps_run == 2 and hooks_left(model) == {}


def test_start_layer_contracts() -> None:
    model = TokenModel().train()
    ids = torch.randint(0, 20, (2, 5))
    kept = State.of(model, ids)
    ri.invert(model, "act", ids, start="embed", steps=3)
    kept.check(model)


def test_parameters_grad_never_touched_even_if_none() -> None:
    model = SmallCNN()
    ri.invert(model, "head", torch.rand(1, 3, 8, 8), steps=3)
    assert all(p.grad is None for p in model.parameters())


def test_two_threads_inverting_one_model() -> None:
    import threading

    model = prepared_cnn()
    xs = [torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)]
    kept = State.of(model, xs)
    alone = [ri.invert(model, "conv2", x, steps=5).input for x in xs]
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        results[i] = ri.invert(model, "conv2", xs[i], steps=5).input

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept.check(model)
    for i in range(2):
        assert torch.equal(results[i], alone[i])
