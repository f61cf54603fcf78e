"""Parametrisations of the searched input: exact round trips, write-back, and the search's contracts with them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import reprinvert as ri
from reprinvert import recipes
from reprinvert.parametrizations import COLOR_CORRELATION, Fourier, Pixel, Pyramid, get

from untouched import State
from zoo import SmallCNN

SPECS = [Pixel(), Pyramid(), Pyramid(decorrelate=False, levels=2), Fourier(), Fourier(decorrelate=False, decay=0.5)]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("shape", [(2, 3, 16, 12), (1, 1, 9, 9), (3, 4, 8, 8)])
def test_render_returns_the_start_exactly(spec, shape: tuple[int, ...]) -> None:
    init = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = spec._build(init.clone(), spatial=True)
    torch.testing.assert_close(p.render(), init, rtol=0, atol=1e-12)
    assert all(t.requires_grad and t.is_leaf for t in p.params)
    assert len(p.lr_scales) == len(p.params)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), which=st.integers(0, len(SPECS) - 1), h=st.integers(4, 20), w=st.integers(4, 20))
def test_assign_makes_render_return_the_new_input(seed: int, which: int, h: int, w: int) -> None:
    """After assign(new, render()), render() is new: clamping and blur are written back exactly."""
    g = torch.Generator().manual_seed(seed)
    p = SPECS[which]._build(torch.rand(2, 3, h, w, dtype=torch.float64, generator=g), spatial=True)
    new = torch.rand(2, 3, h, w, dtype=torch.float64, generator=g) * 3 - 1
    with torch.no_grad():
        p.assign(new, p.render())
    torch.testing.assert_close(p.render().detach(), new, rtol=0, atol=1e-11)


def test_render_is_linear_and_its_gradient_is_exact() -> None:
    """Each parametrisation is a linear map: render(a + b) = render(a) + render(b) - render(0), and autograd's
    gradient of <render(), v> along a direction d equals the change of <render(), v> (float64)."""
    g = torch.Generator().manual_seed(4)
    for spec in SPECS[1:]:
        p = spec._build(torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=g), spatial=True)
        v = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=g)
        dirs = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in p.params]
        (grads) = torch.autograd.grad((p.render() * v).sum(), p.params)
        predicted = sum(float((gr * d).sum()) for gr, d in zip(grads, dirs))
        with torch.no_grad():
            base = p.render().clone()
            for t, d in zip(p.params, dirs):
                t.add_(d)
            moved = p.render().clone()
            for t in p.params:
                t.mul_(2)
            doubled = p.render().clone()
        assert float(((moved - base) * v).sum()) == pytest.approx(predicted, rel=1e-10)
        torch.testing.assert_close(doubled, 2 * moved, rtol=0, atol=1e-12)


def test_pyramid_levels_and_fallbacks() -> None:
    spec = Pyramid()
    assert spec.sizes((1, 3, 128, 128)) == [(8, 8), (16, 16), (32, 32), (64, 64)]
    assert spec.sizes((1, 3, 16, 12)) == [(8, 6)]  # 4x3 is below min_size 4
    assert Pyramid(min_size=2).sizes((1, 3, 16, 12)) == [(2, 2), (4, 3), (8, 6)]
    assert spec._build(torch.rand(2, 10), spatial=True).kind == "pixel"  # flat vectors
    assert spec._build(torch.rand(2, 3, 16), spatial=True).kind == "pixel"  # (B, T, D) or a signal: opt-in
    assert Pyramid(spatial_dims=1)._build(torch.rand(2, 3, 16), spatial=True).kind == "pyramid"
    assert spec._build(torch.rand(2, 3, 16, 16), spatial=False).kind == "pixel"  # a start= activation
    assert Fourier()._build(torch.rand(2, 3, 16), spatial=True).kind == "pixel"
    assert spec._build(torch.rand(2, 3, 6, 6), spatial=True).kind == "pixel"  # no coarse level fits


def test_colour_basis_only_for_three_channels() -> None:
    grey = Pyramid()._build(torch.rand(1, 1, 8, 8), spatial=True)
    rgb = Pyramid()._build(torch.rand(1, 3, 8, 8), spatial=True)
    assert grey.color is None and rgb.color is not None  # type: ignore[attr-defined]
    m = torch.tensor(COLOR_CORRELATION, dtype=torch.float64)
    torch.testing.assert_close(rgb.color[0].double(), m / m.norm(dim=0).max(), rtol=0, atol=1e-7)  # type: ignore


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wavelet", r"parametrization='wavelet': expected one of \['fourier', 'pixel', 'pyramid'\]"),
        (Pyramid(levels=2).__class__, "expected one of"),
    ],
)
def test_bad_parametrization_names_the_options(spec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recipes.default(parametrization=spec)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Pyramid(levels=-1), r"Pyramid.levels=-1: expected a non-negative int"),
        (lambda: Pyramid(detail_lr=0), r"Pyramid.detail_lr=0: expected a positive number"),
        (lambda: Pyramid(until=0), r"Pyramid.until=0: expected a fraction of the steps in \(0, 1\]"),
        (lambda: Pyramid(polish_lr=-1), r"Pyramid.polish_lr=-1: expected a positive factor"),
        (lambda: Pyramid(spatial_dims=3), r"Pyramid.spatial_dims=3: expected 2 \(images\) or 1 \(signals\)"),
        (lambda: Fourier(decay=-1), r"Fourier.decay=-1: expected a non-negative number"),
    ],
)
def test_bad_settings_are_refused(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_names_resolve() -> None:
    assert isinstance(get("pyramid"), Pyramid) and isinstance(get("PIXEL"), Pixel)
    assert isinstance(get("fourier"), Fourier)
    spec = Pyramid(levels=2)
    assert get(spec) is spec
    assert recipes.default(parametrization="fourier").to_dict()["parametrization"].startswith("Fourier(")


@pytest.mark.parametrize("spec", SPECS[1:], ids=repr)
def test_identity_layer_inverts_exactly_through_every_parametrisation(spec) -> None:
    """With a pixel phase at the end every parametrisation recovers an identity layer's input."""
    model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    kept = State.of(None, x)
    polished = type(spec)(**{**vars(spec), "until": 2 / 3})
    res = ri.invert(model, "0", x, recipe=recipes.default(parametrization=polished))
    assert float(res.metrics.relative_input_distance.max()) < 1e-3
    assert res.parametrization == f"{spec.name}, then pixel from step 333"
    kept.check(None)


def test_clamp_and_blur_act_on_the_input() -> None:
    from reprinvert.regularizers import GaussianBlur

    cnn = SmallCNN().eval()
    x = 0.2 + 0.6 * torch.rand(2, 3, 16, 16)
    seen: list[torch.Tensor] = []
    ri.invert(cnn, "conv2", x, steps=12, lr=0.5, clamp=(0.2, 0.8), regularizers=[GaussianBlur()],
              callback=lambda info: seen.append(info.input))
    assert all(float(t.min()) >= 0.2 - 1e-6 and float(t.max()) <= 0.8 + 1e-6 for t in seen)
    assert len({float(t.sum()) for t in seen}) == len(seen)  # StepInfo.input is a copy per step, not a live view


def test_best_iterate_is_never_worse_than_a_recorded_step(cnn: SmallCNN) -> None:
    """The returned input's loss is at most every loss the run recorded (the pyramid phase included)."""
    x = torch.rand(3, 3, 16, 16)
    rcp = recipes.default(steps=60, parametrization=Pyramid(until=2 / 3))
    res = ri.invert(cnn, "conv2", x, recipe=rcp)
    assert res.parametrization == "pyramid, then pixel from step 40"
    final = ri.invert(cnn, "conv2", x, recipe=rcp, track_best=False)
    recorded = res.history.total.min(0).values

    def loss_of(inp: torch.Tensor) -> torch.Tensor:
        return (ri.represent(cnn, "conv2", inp) - ri.represent(cnn, "conv2", x)).abs().flatten(1).sum(1)

    assert bool((loss_of(res.input) <= recorded * (1 + 1e-5)).all())
    assert bool((loss_of(res.input) <= loss_of(final.input) * (1 + 1e-5)).all())


def test_replayed_schedule_in_each_phase(cnn: SmallCNN) -> None:
    rcp = recipes.default(steps=30, parametrization=Pyramid(until=0.5, polish_lr=0.5))
    res = ri.invert(cnn, "conv2", torch.rand(1, 3, 16, 16), recipe=rcp)
    lr = res.history.lr
    assert lr[0] == pytest.approx(0.03) and lr[15] == pytest.approx(0.015)
    assert lr[14] < lr[15] and lr[29] < lr[15]


def test_batched_sweep_equals_separate_inversions_with_a_pyramid(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    layers = ["relu1", "conv2"]
    batched = ri.sweep(cnn, x, layers=layers, steps=20, batched=True, progress=False)
    alone = ri.sweep(cnn, x, layers=layers, steps=20, batched=False, progress=False)
    assert batched.provenance.options["batched"]
    for a, b in zip(batched.inversions, alone.inversions):
        assert a.parametrization == b.parametrization == "pyramid"
        torch.testing.assert_close(a.input, b.input, rtol=1e-4, atol=1e-5)


def test_contracts_hold_with_every_parametrisation(cnn: SmallCNN) -> None:
    cnn.train()
    x = torch.rand(2, 3, 16, 16).requires_grad_(True)
    kept = State.of(cnn, x)
    for spec in SPECS:
        ri.invert(cnn, "conv2", x, steps=5, recipe=recipes.default(parametrization=spec))
    kept.check(cnn)


def test_lbfgs_searches_pixels(cnn: SmallCNN) -> None:
    res = ri.invert(cnn, "conv2", torch.rand(1, 3, 16, 16), steps=5, optimizer="lbfgs", lr=1.0)
    assert res.parametrization == "pixel"
