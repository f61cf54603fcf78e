"""Every user mistake gets a message naming the argument, the value and what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reprinvert as ri

from zoo import Shared, SmallCNN, TokenModel, TupleOut


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(1, 3, 8, 8)


def test_unknown_layer(cnn: SmallCNN, x: torch.Tensor) -> None:
    msg = r"layer='conv' is not a layer of SmallCNN; closest: .*'conv1'.*list_layers"
    with pytest.raises(ri.LayerNotFoundError, match=msg):
        ri.invert(cnn, "conv", x)


def test_layer_never_reached(x: torch.Tensor) -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)
            self.b = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x)

    with pytest.raises(ri.LayerCallError, match=r"layer 'b' \(Conv2d\) never ran during the forward pass"):
        ri.invert(Skips(), "b", x)


def test_layer_run_twice() -> None:
    with pytest.raises(ri.LayerCallError, match=r"layer 'lin' \(Linear\) ran 2 times in one forward pass .*call=0..1"):
        ri.invert(Shared(), "lin", torch.rand(2, 4))
    res = ri.invert(Shared(), "lin", torch.rand(2, 4), call=1, steps=3)
    assert res.steps_run == 3


def test_tuple_output_without_selector() -> None:
    msg = r"layer 'lstm' returned tuple\(.*\) with 3 tensors; say which one"
    with pytest.raises(ri.OutputSelectionError, match=msg):
        ri.invert(TupleOut(), "lstm", torch.rand(2, 4, 3))
    res = ri.invert(TupleOut(), "lstm", torch.rand(2, 4, 3), select=0, steps=3)
    assert res.target.shape == (2, 4, 5)


def test_integer_input_without_start() -> None:
    with pytest.raises(TypeError, match=r"x has dtype torch.int64, .* pass start=<name of the embedding layer>"):
        ri.invert(TokenModel(), "act", torch.randint(0, 20, (2, 5)))


def test_empty_batch(cnn: SmallCNN) -> None:
    with pytest.raises(ValueError, match=r"x has shape \(0, 3, 8, 8\): an empty batch"):
        ri.invert(cnn, "conv1", torch.rand(0, 3, 8, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_input(cnn: SmallCNN, x: torch.Tensor, bad: float) -> None:
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or Inf values.*torch.nan_to_num"):
        ri.invert(cnn, "conv1", x)


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_steps(cnn: SmallCNN, x: torch.Tensor, steps: int) -> None:
    with pytest.raises(ValueError, match=rf"steps={steps}: expected a positive int"):
        ri.invert(cnn, "conv1", x, steps=steps)


def test_other_argument_errors(cnn: SmallCNN, x: torch.Tensor) -> None:
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        ri.invert(cnn, "conv1", [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        ri.invert(lambda t: t, "conv1", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"recipe='fast' is unknown; available recipes"):
        ri.invert(cnn, "conv1", x, recipe="fast")
    with pytest.raises(ValueError, match=r"Recipe loss='l3': expected one of"):
        ri.invert(cnn, "conv1", x, loss="l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"init has shape \(1, 3\), but the optimised tensor has shape \(1, 3, 8, 8\)"):
        ri.invert(cnn, "conv1", x, init=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"seed=1 and generator=.* were both given"):
        ri.invert(cnn, "conv1", x, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"callback must be callable"):
        ri.invert(cnn, "conv1", x, callback=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sigma=-1: expected a non-negative"):
        ri.invert(cnn, "conv1", x, steps=1, sigma=-1)
    with pytest.raises(ri.LayerCallError, match=r"start layer 'head' ran 0 times"):
        ri.invert(cnn, "conv1", x, start="head", steps=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_model_runs_eagerly_and_script_is_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(2, 3)
    compiled = torch.compile(model)
    res = ri.invert(compiled, "0", x, steps=3, seed=0)
    assert res.layer == "0"
    assert torch.equal(res.input, ri.invert(model, "0", x, steps=3, seed=0).input)
    assert torch.equal(ri.represent(compiled, "_orig_mod.1", x), ri.represent(model, "1", x))
    with pytest.raises(TypeError, match=r"model is a TorchScript module .* Pass the original nn.Module"):
        ri.invert(torch.jit.script(model), "0", x)


def test_input_on_another_device_than_the_model() -> None:
    # (x on a real second device needs a GPU: tests/test_gpu.py) an input without values, a model without values:
    with pytest.raises(ValueError, match=r"x is on the meta device, which holds shapes but no values"):
        ri.invert(nn.Linear(3, 3), "", torch.empty(2, 3, device="meta"))
    with pytest.raises(TypeError, match=r"meta-device tensors \(weight, bias\)"):  # a model without values
        ri.invert(nn.Linear(3, 3, device="meta"), "", torch.rand(2, 3))


def test_a_missing_batch_dimension_is_named_with_the_fix() -> None:
    """An image without its batch dimension: torch's conv takes (C, H, W) as one unbatched sample, so the
    representation's first dimension is not x's; the error says what is wrong and how to fix it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"not x's batch size 3\. If x is one sample without its batch dimension, "
                                         r"pass x\.unsqueeze\(0\)"):
        ri.invert(model, "1", torch.rand(3, 8, 8), steps=2)
    ri.invert(model, "1", torch.rand(3, 8, 8).unsqueeze(0), steps=2)  # the fix works
