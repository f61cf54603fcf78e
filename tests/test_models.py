"""Reference models: shapes, preset parameter counts, gradients reach every parameter, skip='none' has no skip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reprinvert.models import (
    ConvAutoencoder,
    ConvClassifier,
    FCNet,
    MLPAutoencoder,
    UNet,
    count_parameters,
    linear_net,
)


def _small_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    x16 = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return {
        "mlp": (MLPAutoencoder(in_features=3 * 16 * 16, hidden=(64, 32, 64)), x16),
        "mlp-layernorm": (MLPAutoencoder(in_features=3 * 16 * 16, hidden=(64,), norm="layer", output="sigmoid"), x16),
        "unet-concat": (UNet(base=4, depth=2, skip="concat"), x16),
        "unet-none": (UNet(base=4, depth=2, skip="none"), x16),
        "unet-add": (UNet(base=4, depth=3, skip="add"), x16),
        "unet-attention": (UNet(base=4, depth=2, skip="none", attention=True, heads=2), x16),
        "conv-ae": (ConvAutoencoder(channels=(4, 8)), x16),
        "classifier": (ConvClassifier(widths=(4, 8, 8), strides=(1, 2, 2), classes=5), x16),
        "fcnet": (FCNet(in_features=3 * 16 * 16, widths=(20, 30)), x16),
    }


EXPECTED_OUT = {"classifier": (3, 5), "fcnet": (3, 30)}


@pytest.mark.parametrize("name", list(_small_models()))
def test_shapes(name: str) -> None:
    model, x = _small_models()[name]
    assert model(x).shape == EXPECTED_OUT.get(name, x.shape)


@pytest.mark.parametrize("skip", ["concat", "none", "add"])
def test_unet_odd_sizes_and_channels(skip: str) -> None:
    model = UNet(in_channels=1, out_channels=2, base=4, depth=2, skip=skip)  # type: ignore[arg-type]
    assert model(torch.rand(2, 1, 13, 18)).shape == (2, 2, 13, 18)


def test_seed_unet_preset_has_31_0m_parameters() -> None:
    with torch.device("meta"):
        none = UNet.preset("seed")
        concat = UNet.preset("seed", skip="concat")
        add = UNet.preset("seed", skip="add")
    # The classic UNet (n_channels=3, n_classes=3, transposed-conv upsampling) has 31,037,763 parameters; the
    # no-skip variant concatenates the upsampled tensor with itself, so its decoder convolutions are as wide.
    assert count_parameters(none) == 31_037_763
    assert count_parameters(concat) == 31_037_763
    assert count_parameters(add) < count_parameters(concat)
    assert none.skip == "none" and round(count_parameters(none) / 1e6, 1) == 31.0


def test_seed_mlp_preset_parameter_count() -> None:
    with torch.device("meta"):
        model = MLPAutoencoder.preset("seed")
    linear = (3072 * 4000 + 4000) + 5 * (4000 * 4000 + 4000) + (4000 * 3072 + 3072)
    batchnorm = 6 * 2 * 4000
    assert count_parameters(model) == linear + batchnorm
    assert all(isinstance(m[1], nn.GELU) and isinstance(m[2], nn.BatchNorm1d) for m in model.blocks)
    assert len(model.blocks) == 6 and model.head.out_features == 3072


def test_presets_are_overcomplete_and_reject_unknown_names() -> None:
    for name in ("quick", "tiny"):
        m = MLPAutoencoder.preset(name)
        assert min(m.hidden) > m.in_features
    with pytest.raises(ValueError, match="preset='nope'"):
        UNet.preset("nope")
    with pytest.raises(ValueError, match="skip='sideways'"):
        UNet(skip="sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(_small_models()))
def test_every_parameter_receives_a_gradient(name: str) -> None:
    model, x = _small_models()[name]
    model.train()
    out = model(x)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    ((out - target) ** 2).mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"
    # the layers are registered: the parameter count sees every Linear/Conv weight reachable as a submodule
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert count_parameters(model) >= weights > 0


def test_a_plain_list_of_layers_would_be_caught() -> None:
    """The classic bug: layers kept in a Python list are not parameters; the count test above would fail."""

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(4, 4), nn.Linear(4, 4)]  # not registered

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    assert count_parameters(Broken()) == 0


def _bottleneck_only_check(model: UNet, x: torch.Tensor) -> torch.Tensor:
    """Max change of the output when every encoder feature map is perturbed but the bottleneck is held fixed."""
    model.eval()
    bottleneck = model.downs[-1]
    with torch.no_grad():
        clean_out = model(x)
        captured: dict[str, torch.Tensor] = {}
        h = bottleneck.register_forward_hook(lambda m, i, o: captured.__setitem__("b", o.clone()))
        model(x)
        h.remove()
        g = torch.Generator().manual_seed(5)
        encoder = [model.inc, *model.downs[:-1]]
        handles = [
            m.register_forward_hook(lambda m, i, o: o + torch.randn(o.shape, generator=g)) for m in encoder
        ]
        handles.append(bottleneck.register_forward_hook(lambda m, i, o: captured["b"]))
        try:
            perturbed = model(x)
        finally:
            for handle in handles:
                handle.remove()
    return (perturbed - clean_out).abs().max()


def test_skip_none_has_no_path_from_encoder_to_decoder() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for depth in (1, 2, 3):
        none = UNet(base=4, depth=depth, skip="none", seed=depth)
        assert float(_bottleneck_only_check(none, x)) == 0.0
        with_attention = UNet(base=4, depth=depth, skip="none", attention=True, heads=2, seed=depth)
        assert float(_bottleneck_only_check(with_attention, x)) == 0.0
        # the check is real: with skips, the same perturbation reaches the output
        for skip in ("concat", "add"):
            model = UNet(base=4, depth=depth, skip=skip, seed=depth)  # type: ignore[arg-type]
            assert float(_bottleneck_only_check(model, x)) > 1e-3


def _output_depends_on_encoder_map(skip: str) -> bool:
    """With parameters frozen and the bottleneck output detached: does the output still need d/d(inc output)?"""
    model = UNet(base=4, depth=2, skip=skip).eval().requires_grad_(False)  # type: ignore[arg-type]
    feats: dict[str, torch.Tensor] = {}

    def keep(m: nn.Module, i: object, o: torch.Tensor) -> torch.Tensor:
        feats["inc"] = o.detach().requires_grad_(True)
        return feats["inc"]

    h1 = model.inc.register_forward_hook(keep)
    h2 = model.downs[-1].register_forward_hook(lambda m, i, o: o.detach())
    try:
        out = model(torch.rand(1, 3, 8, 8))
    finally:
        h1.remove()
        h2.remove()
    return out.requires_grad


def test_skip_none_output_gradient_flows_only_through_the_bottleneck() -> None:
    assert not _output_depends_on_encoder_map("none")
    assert _output_depends_on_encoder_map("concat") and _output_depends_on_encoder_map("add")


def test_construction_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = UNet(base=4, depth=2, seed=3), UNet(base=4, depth=2, seed=3)
    c = MLPAutoencoder(in_features=12, hidden=(16,), seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(c.head.weight, MLPAutoencoder(in_features=12, hidden=(16,), seed=5).head.weight)


def test_orthogonal_linear_fcnet_is_an_isometry() -> None:
    net = FCNet(in_features=10, widths=(10, 16), activation="linear", init="orthogonal")
    x = torch.rand(4, 10)
    assert torch.allclose(net(x).norm(dim=1), x.norm(dim=1), rtol=1e-5, atol=0)
    sq = linear_net(6, depth=2)
    assert all(layer[0].bias is None for layer in sq.layers)


def test_mlp_rejects_wrong_input_size() -> None:
    with pytest.raises(ValueError, match="expects 48 elements per sample"):
        MLPAutoencoder(in_features=48, hidden=(8,))(torch.rand(2, 3, 5, 5))
