from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert._outputs import select_output

from untouched import State, hooks_left
from zoo import Shared, SmallCNN, Swallower, TupleOut


def test_capture_clones_against_inplace_relu(cnn: SmallCNN) -> None:
    """bn1's output is overwritten by ReLU(inplace=True); the capture must hold the pre-ReLU values."""
    cnn.eval()
    x = torch.randn(2, 3, 8, 8)
    with ri.capture(cnn, ["bn1", "relu1"]) as reps:
        cnn(x)
    expected = cnn.bn1(cnn.conv1(x))  # truncated recompute
    assert torch.equal(reps["bn1"], expected)
    assert (reps["bn1"] < 0).any()
    assert torch.equal(reps["relu1"], torch.relu(expected))
    assert not reps["bn1"].requires_grad
    assert hooks_left(cnn) == {}


def test_capture_inplace_add_after_module() -> None:
    class Res(nn.Module):
        """y = conv(x); y += x (in place) -> the capture of conv must not see the addition."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv(x)
            out += x
            return out

    m = Res()
    x = torch.randn(1, 2, 3, 3)
    with ri.capture(m, "conv") as reps:
        m(x)
    assert torch.equal(reps["conv"], m.conv(x).detach())


def test_capture_grad_keeps_graph() -> None:
    m = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    x = torch.randn(2, 3, requires_grad=True)
    with ri.capture(m, "0", grad=True) as reps:
        m(x)
    (g,) = torch.autograd.grad(reps["0"].sum(), x)
    assert torch.allclose(g, m[0].weight.sum(0).expand(2, 3))


def test_capture_stop_skips_downstream() -> None:
    m = Swallower()  # catches Exception around self.lin: the stop signal must not be swallowed
    with ri.capture(m, "lin", stop=True) as reps:
        m(torch.randn(2, 4))
    assert m.after_calls == 0
    assert reps["lin"].shape == (2, 4)


def test_represent_matches_truncated_forward_and_stops(cnn: SmallCNN) -> None:
    cnn.train()
    kept = State.of(cnn)
    x = torch.randn(2, 3, 8, 8)
    calls = []
    cnn.head.register_forward_pre_hook(lambda *a: calls.append(1))
    kept = State.of(cnn)
    rep = ri.represent(cnn, "conv2", x, stop=True)
    kept.check(cnn)
    assert calls == []  # the head never ran
    assert torch.equal(ri.represent(cnn, "conv2", x), rep)  # the default runs the whole model (a reuse is seen)
    assert calls == [1]
    cnn.eval()
    with torch.no_grad():
        expected = cnn.conv2(cnn.relu1(cnn.bn1(cnn.conv1(x))))
    assert torch.equal(rep, expected)


def test_represent_by_index_and_module(cnn: SmallCNN) -> None:
    x = torch.randn(1, 3, 8, 8)
    a = ri.represent(cnn, "conv1", x)
    assert torch.equal(a, ri.represent(cnn, cnn.conv1, x))
    assert torch.equal(a, ri.represent(cnn, 0, x))


def test_reused_layer_is_an_error_unless_call_given() -> None:
    m = Shared()
    x = torch.randn(2, 4)
    with pytest.raises(ri.LayerCallError, match=r"layer 'lin' \(Linear\) ran 2 times .* pass call=0..1"):
        ri.represent(m, "lin", x, stop=False)
    first = ri.represent(m, "lin", x, call=0)
    second = ri.represent(m, "lin", x, call=1)
    with torch.no_grad():
        assert torch.equal(first, m.lin(x))
        assert torch.equal(second, m.lin(torch.tanh(m.lin(x))))
    with pytest.raises(ri.LayerCallError, match=r"ran 2 time\(s\), but call=5 was requested"):
        ri.represent(m, "lin", x, call=5)


def test_layer_never_ran_is_an_error() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(ri.LayerCallError, match=r"layer 'unused' \(Linear\) never ran .*reprinvert.describe"):
        ri.represent(M(), "unused", torch.zeros(1, 2))


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


def test_output_selectors() -> None:
    t = torch.zeros(2, 3)
    u = torch.ones(2, 5)
    assert select_output((t, None), None) is t
    assert select_output({"a": t, "b": u}, "b") is u
    assert select_output(Output(t, u), "hidden") is u
    assert select_output((t, (u, t)), (1, 0)) is u
    assert select_output((t, u), lambda o: o[1]) is u
    msg = r"returned tuple\(Tensor\[2, 3\], Tensor\[2, 5\]\) with 2 tensors.*select=0, select=1"
    with pytest.raises(ri.OutputSelectionError, match=msg):
        select_output((t, u), None, layer="x")
    with pytest.raises(ri.OutputSelectionError, match=r"select='missing' does not lead to a tensor"):
        select_output({"a": t}, "missing")
    with pytest.raises(ri.OutputSelectionError, match="contains no tensor"):
        select_output((None,), None)


def test_tuple_output_without_selector_errors_and_with_selector_works() -> None:
    m = TupleOut()
    x = torch.randn(2, 6, 3)
    msg = r"layer 'lstm' returned tuple\(Tensor\[2, 6, 5\], tuple\(Tensor\[1, 2, 5\], Tensor\[1, 2, 5\]\)\) with 3"
    with pytest.raises(ri.OutputSelectionError, match=msg):
        ri.represent(m, "lstm", x)
    out = ri.represent(m, "lstm", x, select=0)
    assert out.shape == (2, 6, 5)
    h = ri.represent(m, "lstm", x, select=(1, 0))
    assert torch.allclose(h[0], out[:, -1])
    assert hooks_left(m) == {}


def test_capture_accessors_and_errors() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with ri.capture(m, ["0", m[1]]) as reps:
        with pytest.raises(ri.LayerCallError, match="has not run yet"):
            reps["0"]
        m(torch.randn(1, 2))
        assert list(reps) == ["0", "1"] and len(reps) == 2
        assert reps[m[1]] is reps["1"]
        assert reps.calls() == {"0": 1, "1": 1}
        with pytest.raises(KeyError, match="was not captured"):
            reps["2"]
    with pytest.raises(ValueError, match="layers is empty"), ri.capture(m, []):
        pass
    with pytest.raises(ValueError, match="requested twice"), ri.capture(m, ["0", 0]):
        pass


def test_capture_only_sees_its_own_thread() -> None:
    m = nn.Sequential(nn.Linear(2, 2))
    other_done = threading.Event()

    def other() -> None:
        m(torch.ones(1, 2))
        other_done.set()

    with ri.capture(m, "0") as reps:
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert other_done.is_set()
        assert reps.calls() == {"0": 0}  # the other thread's forward was not recorded
        m(torch.zeros(1, 2))
    assert torch.equal(reps["0"], m[0].bias.detach().unsqueeze(0))
