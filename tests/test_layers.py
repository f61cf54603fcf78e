from __future__ import annotations

import pytest
import torch
from torch import nn

import reprinvert as ri

from untouched import State
from zoo import SmallCNN


def nested() -> nn.Module:
    """features = Sequential(conv, relu, Sequential(conv, relu)); head = Linear."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 2),
    )


def test_list_layers_registration_order() -> None:
    assert ri.list_layers(nested()) == ["0", "0.0", "0.1", "0.2", "0.2.0", "0.2.1", "1", "2"]
    assert ri.list_layers(nested(), leaves_only=True) == ["0.0", "0.1", "0.2.0", "0.2.1", "1", "2"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0.2.0", "0.2.0"),
        ("0[2][0]", "0.2.0"),
        ("0[2].1", "0.2.1"),
        ("0.-1", "0.2"),
        ("0[-1][-1]", "0.2.1"),
        ("module.0.1", "0.1"),
        ("_orig_mod.module.2", "2"),
        (0, "0"),
        (-1, "2"),
        ("", ""),
    ],
)
def test_resolve_layer_forms(spec: str | int, expected: str) -> None:
    model = nested()
    name, module = ri.resolve_layer(model, spec)
    assert name == expected
    assert module is dict(model.named_modules())[expected]


def test_resolve_by_module_object_and_wrapper() -> None:
    model = nested()
    target = model[0][2][1]
    assert ri.resolve_layer(model, target) == ("0.2.1", target)
    wrapped = nn.DataParallel(model)  # names gain a "module." prefix
    assert ri.resolve_layer(wrapped, "0.2.1") == ("module.0.2.1", target)


def test_unknown_layer_lists_closest_and_points_at_list_layers() -> None:
    msg = r"'conv3' is not a layer of SmallCNN; closest: 'conv2', 'conv1'; see reprinvert.list_layers"
    with pytest.raises(ri.LayerNotFoundError, match=msg):
        ri.resolve_layer(SmallCNN(), "conv3")
    with pytest.raises(ri.LayerNotFoundError, match=r"layer=7: index out of range .* 3 top-level children"):
        ri.resolve_layer(nested(), 7)
    with pytest.raises(ri.LayerNotFoundError, match=r"not a submodule"):
        ri.resolve_layer(nested(), nn.ReLU())
    with pytest.raises(TypeError, match=r"layer must be a str, int or nn\.Module"):
        ri.resolve_layer(nested(), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        ri.list_layers(lambda x: x)  # type: ignore[arg-type]


def test_describe_shapes_calls_and_order(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 8, 8)
    cnn.train()  # describe must not update BatchNorm statistics nor change flags
    kept = State.of(cnn)
    d = ri.describe(cnn, x)
    kept.check(cnn)
    names = [r.name for r in d]
    assert names == ["conv1", "bn1", "relu1", "conv2", "relu2", "head", ""]  # forward (first-call) order
    assert d["conv2"].shape == (2, 8, 4, 4)
    assert d["conv2"].numel == 8 * 4 * 4
    assert d["head"].calls == 1
    assert d["conv1"].parameters == 3 * 8 * 9 + 8
    text = str(d)
    assert "conv2" in text and "Tensor[2, 8, 4, 4]" in text


def test_describe_reports_reuse_and_unused() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.lin(self.lin(x)), None

    d = ri.describe(M(), torch.zeros(1, 3))
    assert d["lin"].calls == 2
    assert d["unused"].calls == 0 and d["unused"].output == "(never ran)"
    assert d[""].output == "tuple(Tensor[1, 3], None)" and d[""].shape is None
