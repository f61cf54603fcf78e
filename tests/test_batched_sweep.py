"""The batched sweep: every layer inverted in one optimisation gives what one-by-one inversions give, declines
(and falls back) whenever that could be wrong, and keeps the contracts."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert.regularizers import Jitter, TotalVariation

from untouched import State, hooks_left
from zoo import SkipAround, SmallCNN


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(8, 16, 3, padding=1, stride=2), relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
        flat=nn.Flatten(), head=nn.Linear(64, 5),
    ))
    with torch.no_grad():
        model.bn1.running_mean.normal_(0, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _x(batch: int = 2, size: int = 8) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _assert_same(a: ri.Sweep, b: ri.Sweep, *, atol: float = 1e-4) -> None:
    assert a.layers == b.layers
    for inv_a, inv_b in zip(a.inversions, b.inversions):
        torch.testing.assert_close(inv_a.input, inv_b.input, rtol=1e-4, atol=atol)
        torch.testing.assert_close(inv_a.target, inv_b.target)
        torch.testing.assert_close(inv_a.history.total, inv_b.history.total, rtol=1e-3, atol=1e-5)
        assert inv_a.steps_run == inv_b.steps_run and inv_a.stopped == inv_b.stopped
        for key, value in inv_b.metrics.summary().items():
            assert inv_a.metrics.summary()[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (inv_a.layer, key)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"loss": "mse", "optimizer": "sgd", "lr": 0.05},
        {"regularizers": [Jitter(max_shift=1), TotalVariation(weight=0.01)], "clamp": (0.0, 1.0)},
        {"init": "normal", "track_best": False},
    ],
)
def test_batched_equals_one_by_one(options: dict) -> None:
    model, x = _cnn(), _x()
    layers = ["conv1", "relu1", "conv2", "head"]
    batched = ri.sweep(model, x, layers=layers, steps=25, progress=False, batched=True, **options)
    alone = ri.sweep(model, x, layers=layers, steps=25, progress=False, batched=False, **options)
    assert batched.provenance.options["batched"] is True
    assert batched.provenance.options["not_batched_because"] is None
    assert alone.provenance.options["batched"] is False
    _assert_same(batched, alone)


def test_batched_handles_layers_given_out_of_order_and_an_init_tensor() -> None:
    model, x = _cnn(), _x()
    init = torch.full_like(x, 0.5)
    batched = ri.sweep(model, x, layers=["head", "conv1", "conv2"], steps=20, init=init, progress=False,
                       batched=True)
    alone = ri.sweep(model, x, layers=["head", "conv1", "conv2"], steps=20, init=init, progress=False, batched=False)
    assert batched.provenance.options["batched"] is True
    _assert_same(batched, alone)


def test_transformer_blocks_batched() -> None:
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Linear(4, 16), *(type(block)(16, 2, 32, dropout=0.0, batch_first=True)
                                                 for _ in range(3))).eval()
    x = torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(0))
    batched = ri.sweep(model, x, layers=["1", "2", "3"], steps=15, progress=False, batched=True)
    alone = ri.sweep(model, x, layers=["1", "2", "3"], steps=15, progress=False, batched=False)
    assert batched.provenance.options["batched"] is True
    _assert_same(batched, alone)


def test_skip_connection_declines_and_falls_back() -> None:
    torch.manual_seed(0)
    model, x = SkipAround().eval(), _x()
    result = ri.sweep(model, x, layers=["inner", "outer"], steps=5, progress=False)
    assert result.provenance.options["batched"] is False
    assert "skip connection" in result.provenance.options["not_batched_because"]
    _assert_same(result, ri.sweep(model, x, layers=["inner", "outer"], steps=5, progress=False, batched=False),
                 atol=0)
    with pytest.raises(ValueError, match="batched=True, but these layers cannot be inverted as one batch"):
        ri.sweep(model, x, layers=["inner", "outer"], steps=5, progress=False, batched=True)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"optimizer": "lbfgs"}, "L-BFGS"),
        ({"train": True}, "train=True"),
        ({"layers": ["conv1"]}, "only one layer"),
    ],
)
def test_options_a_batch_cannot_share_decline(options: dict, reason: str) -> None:
    model, x = _cnn(), _x()
    kwargs = {"layers": ["conv1", "conv2"], **options}
    result = ri.sweep(model, x, steps=3, progress=False, **kwargs)
    assert result.provenance.options["batched"] is False
    assert reason in result.provenance.options["not_batched_because"]
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        ri.sweep(model, x, steps=3, progress=False, batched=True, **kwargs)


def test_batch_mixing_model_declines() -> None:
    class MixesBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x - x.mean(0, keepdim=True)))  # every sample depends on the others

    torch.manual_seed(0)
    result = ri.sweep(MixesBatch().eval(), torch.rand(3, 4), layers=["a", "b"], steps=3, progress=False)
    assert result.provenance.options["batched"] is False
    assert "samples that interact" in result.provenance.options["not_batched_because"]


def test_batched_sweep_keeps_the_contracts(cnn: SmallCNN, images: torch.Tensor) -> None:
    kept = State.of(cnn, images)
    result = ri.sweep(cnn, images, layers=["conv1", "relu1", "conv2"], steps=4, progress=False, batched=True)
    assert result.provenance.options["batched"] is True
    kept.check(cnn)
    assert hooks_left(cnn) == {}


def test_interrupt_during_a_batched_sweep_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _cnn(), _x()
    kept = State.of(model)
    calls = {"n": 0}
    original = model.conv2.forward

    def forward(t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 12:  # well into the optimisation
            raise KeyboardInterrupt
        return original(t)

    monkeypatch.setattr(model.conv2, "forward", forward)
    with pytest.raises(KeyboardInterrupt):
        ri.sweep(model, x, layers=["conv1", "conv2"], steps=50, progress=False, batched=True)
    monkeypatch.undo()
    assert hooks_left(model) == {}
    kept.check(model)


def test_batched_rows_share_the_time() -> None:
    model, x = _cnn(), _x()
    result = ri.sweep(model, x, layers=["conv1", "conv2"], steps=5, progress=False, batched=True)
    assert result.rows[0].seconds == result.rows[1].seconds > 0
    assert all(math.isfinite(r.input_distance) for r in result.rows)


def _measured(groups, alone, together, kept=None, budget=None):
    return {"groups": groups, "alone_seconds": alone, "batched_seconds": together,
            "kept_bytes": kept or [1] * len(alone), "budget_bytes": budget}


def test_the_automatic_mode_batches_only_what_it_measured_faster() -> None:
    from reprinvert._batched import Declined, _decide

    probe: dict = {}
    assert _decide(_measured([[0, 1, 2]], [1.0, 1.0, 1.0], [2.0]), probe) == [[0, 1, 2]]
    assert probe["batched_over_separate"] == [pytest.approx(2 / 3)]
    with pytest.raises(Declined, match=r"measured: a batched step takes 2.9e\+03 ms, the separate steps 3e\+03 ms"):
        _decide(_measured([[0, 1, 2]], [1.0, 1.0, 1.0], [2.9]), {})  # 0.97x: inside the noise margin
    # two groups that fit in memory, each measured: the slower one decides
    assert _decide(_measured([[0, 1], [2, 3]], [1.0] * 4, [1.5, 1.6]), {}) == [[0, 1], [2, 3]]
    with pytest.raises(Declined, match=r"0.95x"):
        _decide(_measured([[0, 1], [2, 3]], [1.0] * 4, [1.5, 1.9]), {})
    with pytest.raises(Declined, match=r"more than half the free memory .* some layer fits with no neighbour"):
        _decide(_measured([[0, 1], [2]], [1.0] * 3, [1.0], kept=[2**20] * 3, budget=2**21), {})


def test_the_automatic_mode_declines_when_batching_is_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprinvert import _batched

    monkeypatch.setattr(_batched, "_FASTER", 1e-9)  # no batched step can be this fast: measured, then declined
    model, x = _cnn(), _x()
    auto = ri.sweep(model, x, layers=["conv1", "conv2", "head"], steps=10, progress=False)
    assert auto.provenance.options["batched"] is False
    assert auto.provenance.options["not_batched_because"].startswith("measured: a batched step takes")
    probe = auto.provenance.options["batched_probe"]
    assert len(probe["alone_ms"]) == 3 and len(probe["batched_ms"]) == 1 and probe["groups"] == [[0, 1, 2]]
    _assert_same(auto, ri.sweep(model, x, layers=["conv1", "conv2", "head"], steps=10, progress=False, batched=False))


def test_layers_are_grouped_by_the_memory_their_backward_passes_keep() -> None:
    from reprinvert._batched import _groups

    assert _groups([1, 2, 3, 4], None) == [[0, 1, 2, 3]]
    assert _groups([1, 2, 3, 4], 10) == [[0, 1, 2, 3]]
    assert _groups([1, 2, 3, 4], 6) == [[0, 1, 2], [3]]
    assert _groups([1, 2, 3, 4], 5) == [[0, 1], [2], [3]]
    assert _groups([5, 5], 1) == [[0], [1]]  # a layer over the budget still gets a group (then declined)


def test_the_automatic_mode_batches_in_groups_that_fit_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the layers do not fit together they are batched in consecutive groups; each group is the search a
    sweep of only its layers would run, so the result is still what one-by-one inversions give."""
    from reprinvert import _batched

    monkeypatch.setattr(_batched, "_FASTER", 1e9)  # take any measured speed: this test is about the groups
    monkeypatch.setattr(_batched, "_groups", lambda kept, budget: [[0, 1], [2, 3]])
    model, x = _cnn(), _x()
    layers = ["conv1", "relu1", "conv2", "head"]
    grouped = ri.sweep(model, x, layers=layers, steps=25, progress=False)
    assert grouped.provenance.options["batched"] is True
    probe = grouped.provenance.options["batched_probe"]
    assert probe["groups"] == [[0, 1], [2, 3]] and len(probe["batched_ms"]) == 2
    _assert_same(grouped, ri.sweep(model, x, layers=layers, steps=25, progress=False, batched=False))


def test_the_automatic_mode_measures_a_model_that_changes_its_input_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first layer that works in place on the model's input: the probe runs as the search does (on a copy), so
    the automatic mode measures and decides instead of failing over to one by one."""
    from reprinvert import _batched

    monkeypatch.setattr(_batched, "_FASTER", 1e9)  # accept whatever was measured: the probe must have run
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3, padding=1), nn.Tanh()).eval()
    x = _x()
    auto = ri.sweep(model, x, layers=["1", "2"], steps=5, progress=False)
    assert auto.provenance.options["batched"] is True, auto.provenance.options["not_batched_because"]
    assert auto.provenance.options["batched_probe"]["groups"] == [[0, 1]]
