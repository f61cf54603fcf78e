"""Known-answer, gradient and property tests of the regularizers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reprinvert as ri
from reprinvert._filters import gaussian_blur
from reprinvert.regularizers import AlphaNorm, GaussianBlur, Jitter, Regularizer, TotalVariation


def _tv_loops_2d(img: list[list[list[float]]], beta: float) -> float:
    """Sum over channels and the common (H-1, W-1) region of (dx^2 + dy^2)^(beta/2), by loops."""
    total = 0.0
    for ch in img:
        h, w = len(ch), len(ch[0])
        for i in range(h - 1):
            for j in range(w - 1):
                dx = ch[i][j + 1] - ch[i][j]
                dy = ch[i + 1][j] - ch[i][j]
                total += (dx * dx + dy * dy) ** (beta / 2)
    return total


# ----------------------------------------------------------------------------------------------- base class


def test_base_class_hooks_are_noops() -> None:
    r = Regularizer()
    x = torch.ones(2, 3)
    assert r.penalty(x, 0.0) is None
    assert r.transform(x, 0.0, torch.Generator()) is x
    assert r.after_step(x, 0.5) is None


def test_names() -> None:
    assert TotalVariation.name == "tv"
    assert AlphaNorm.name == "alpha_norm"
    assert GaussianBlur.name == "blur"
    assert Jitter.name == "jitter"
    assert TotalVariation().name == "tv"
    assert all(issubclass(c, Regularizer) for c in (TotalVariation, AlphaNorm, GaussianBlur, Jitter))


def test_frozen_and_keyword_only() -> None:
    tv = TotalVariation(weight=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tv.weight = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        TotalVariation(2.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        AlphaNorm(1.0, 6.0)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------- total variation


def test_tv_known_value_2x2() -> None:
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]], dtype=torch.float64)
    # dx = 1, dy = 3 at the single common position; 4 spatial positions.
    assert TotalVariation().penalty(x, 0.0).tolist() == [2.5]
    value = TotalVariation(weight=2.0, beta=1.0, scale=2.0).penalty(x, 0.0)
    assert value.tolist() == pytest.approx([2.0 * math.sqrt(10.0) / (4 * 2.0)], rel=1e-15)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
def test_tv_known_value_random_3x4(beta: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    tv = TotalVariation(weight=0.7, beta=beta, scale=1.5)
    got = tv.penalty(x, 0.3)
    expected = [0.7 * _tv_loops_2d(x[b].tolist(), beta) / (12 * 1.5**beta) for b in range(2)]
    assert got.shape == (2,) and got.dtype == torch.float64
    assert got.tolist() == pytest.approx(expected, rel=1e-13)


def test_tv_known_value_1d() -> None:
    x = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 2.0, -1.0]]], dtype=torch.float64)  # (1, 2, 3)
    # beta = 2: (1 + 4) + (0 + 9) over 3 positions; beta = 1: (1 + 2) + (0 + 3) over 3 positions.
    assert TotalVariation().penalty(x, 0.0).tolist() == pytest.approx([14.0 / 3], rel=1e-15)
    assert TotalVariation(beta=1.0).penalty(x, 0.0).tolist() == pytest.approx([6.0 / 3], rel=1e-15)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5)])
def test_tv_of_constant_is_zero_with_finite_gradient(beta: float, shape: tuple[int, ...]) -> None:
    for fill in (0.0, 0.42):
        x = torch.full(shape, fill, dtype=torch.float64, requires_grad=True)
        value = TotalVariation(beta=beta).penalty(x, 0.0)
        assert value.tolist() == [0.0, 0.0]
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert torch.isfinite(grad).all()
        assert torch.equal(grad, torch.zeros_like(grad))


def test_tv_gradient_finite_with_partly_flat_input() -> None:
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[..., 2:, 2:] = 1.0  # some differences are 0, some are not
    x.requires_grad_(True)
    for beta in (0.5, 1.0):
        (grad,) = torch.autograd.grad(TotalVariation(beta=beta).penalty(x, 0.0).sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_tv_gradcheck(beta: float) -> None:
    g = torch.Generator().manual_seed(1)
    x2 = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    tv = TotalVariation(weight=1.3, beta=beta, scale=0.8)
    assert torch.autograd.gradcheck(lambda t: tv.penalty(t, 0.0), (x2,))
    x1 = torch.randn(2, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tv.penalty(t, 0.0), (x1,))


@pytest.mark.parametrize("shape", [(4, 6), (4,), (1, 2, 3, 4, 5)])
def test_tv_bad_layout(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"TotalVariation needs \(B, C, L\) or \(B, C, H, W\)"):
        TotalVariation().penalty(torch.zeros(shape), 0.0)


def test_tv_too_short_spatial_dim() -> None:
    with pytest.raises(ValueError, match="at least 2 positions"):
        TotalVariation().penalty(torch.zeros(1, 1, 1, 5), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"weight": -1.0}, r"TotalVariation\.weight must be >= 0, got -1\.0"),
        ({"beta": 0.0}, r"TotalVariation\.beta must be > 0, got 0\.0"),
        ({"scale": -2.0}, r"TotalVariation\.scale must be > 0, got -2\.0"),
        ({"weight": float("nan")}, r"TotalVariation\.weight must be finite"),
    ],
)
def test_tv_validation(kwargs: dict[str, float], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TotalVariation(**kwargs)


def test_tv_type_validation() -> None:
    with pytest.raises(TypeError, match=r"TotalVariation\.beta must be a real number"):
        TotalVariation(beta="2")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- alpha norm


def test_alpha_norm_known_value() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    an = AlphaNorm(weight=3.0, alpha=3.0, center=0.5, scale=2.0)
    # |x - 0.5|^3: 0.125 + 15.625 + 0 + 15.625 = 31.375; divided by 4 * 2^3 = 32, times 3.
    assert an.penalty(x, 0.0).tolist() == pytest.approx([3.0 * 31.375 / 32.0, 0.0], rel=1e-15)
    x6 = torch.tensor([[[1.0, -1.0], [2.0, 0.0]]], dtype=torch.float64)  # (1, 2, 2)
    assert AlphaNorm().penalty(x6, 0.0).tolist() == pytest.approx([(1 + 1 + 64 + 0) / 4], rel=1e-15)


def test_alpha_norm_any_shape() -> None:
    for shape in [(3,), (3, 5), (3, 2, 5), (3, 2, 4, 5)]:
        x = torch.full(shape, 2.0, dtype=torch.float64)
        assert AlphaNorm(alpha=2.0).penalty(x, 0.0).tolist() == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 6.0])
def test_alpha_norm_gradient_finite_at_center(alpha: float) -> None:
    x = torch.full((2, 3, 4), 0.5, dtype=torch.float64, requires_grad=True)
    value = AlphaNorm(alpha=alpha, center=0.5).penalty(x, 0.0)
    assert value.tolist() == [0.0, 0.0]
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("alpha", [1.0, 2.5, 6.0])
def test_alpha_norm_gradcheck(alpha: float) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    an = AlphaNorm(weight=0.5, alpha=alpha, center=0.1, scale=1.3)
    assert torch.autograd.gradcheck(lambda t: an.penalty(t, 0.0), (x,))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"alpha": 0.5}, r"AlphaNorm\.alpha must be >= 1, got 0\.5"),
        ({"weight": -0.1}, r"AlphaNorm\.weight must be >= 0, got -0\.1"),
        ({"scale": 0.0}, r"AlphaNorm\.scale must be > 0, got 0\.0"),
        ({"center": float("inf")}, r"AlphaNorm\.center must be finite"),
    ],
)
def test_alpha_norm_validation(kwargs: dict[str, float], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        AlphaNorm(**kwargs)


# ------------------------------------------------------------------------------------------ batch = slices


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    spatial=st.lists(st.integers(2, 5), min_size=1, max_size=2),
    beta=st.sampled_from([1.0, 2.0, 3.0]),
    alpha=st.sampled_from([1.0, 2.0, 6.0]),
)
def test_penalties_batch_equals_slices(
    batch: int, channels: int, spatial: list[int], beta: float, alpha: float
) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, channels, *spatial, generator=g, dtype=torch.float64)
    for reg in (TotalVariation(beta=beta, weight=0.3), AlphaNorm(alpha=alpha, center=0.2)):
        whole = reg.penalty(x, 0.0)
        assert whole.shape == (batch,)
        for b in range(batch):
            torch.testing.assert_close(whole[b : b + 1], reg.penalty(x[b : b + 1], 0.0), rtol=1e-14, atol=0)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    spatial=st.lists(st.integers(3, 6), min_size=1, max_size=2),
    t=st.floats(0.0, 0.99),
    seed=st.integers(0, 1000),
)
def test_blur_and_jitter_batch_equal_slices(batch: int, spatial: list[int], t: float, seed: int) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(batch, 2, *spatial, generator=g, dtype=torch.float64)
    blur = GaussianBlur()
    jitter = Jitter(max_shift=2)
    whole_blur = blur.after_step(x, t)
    whole_jitter = jitter.transform(x, t, torch.Generator().manual_seed(seed))
    for b in range(batch):
        part = x[b : b + 1]
        torch.testing.assert_close(whole_blur[b : b + 1], blur.after_step(part, t), rtol=0, atol=1e-15)
        assert torch.equal(
            whole_jitter[b : b + 1], jitter.transform(part, t, torch.Generator().manual_seed(seed))
        )


# --------------------------------------------------------------------------------------------------- blur


def test_gaussian_blur_schedule() -> None:
    blur = GaussianBlur()
    assert blur.sigma(0.0) == 2.4
    assert blur.sigma(0.5) == pytest.approx(1.4, abs=1e-15)
    assert blur.sigma(1.0) == pytest.approx(0.4, abs=1e-15)
    custom = GaussianBlur(sigma_start=1.0, sigma_end=3.0, kernel_size=5)
    assert custom.sigma(0.25) == 1.5
    with pytest.raises(ValueError, match=r"t is the progress fraction.*\[0, 1\], got 1\.5"):
        blur.sigma(1.5)


def test_gaussian_blur_after_step_uses_scheduled_sigma() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    blur = GaussianBlur(kernel_size=5)
    out = blur.after_step(x, 0.25)
    assert out is not None
    torch.testing.assert_close(out, gaussian_blur(x, 5, 2.4 - 2.0 * 0.25), rtol=0, atol=0)
    assert blur.penalty(x, 0.0) is None and blur.transform(x, 0.0, g) is x


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"sigma_start": 0.0}, ValueError, r"GaussianBlur\.sigma_start must be > 0, got 0\.0"),
        ({"sigma_end": -1.0}, ValueError, r"GaussianBlur\.sigma_end must be > 0, got -1\.0"),
        ({"kernel_size": 4}, ValueError, r"GaussianBlur\.kernel_size must be an odd positive int.*got 4"),
        ({"kernel_size": 3.0}, TypeError, r"GaussianBlur\.kernel_size must be an int"),
    ],
)
def test_gaussian_blur_validation(kwargs: dict[str, float], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        GaussianBlur(**kwargs)


# ------------------------------------------------------------------------------------------------- jitter


def test_jitter_rolls_within_range_and_is_differentiable() -> None:
    x = torch.arange(30.0, dtype=torch.float64).view(1, 1, 5, 6).requires_grad_(True)
    jitter = Jitter(max_shift=2)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        y = jitter.transform(x, 0.0, g)
        matches = [
            (a, b)
            for a in range(-2, 3)
            for b in range(-2, 3)
            if torch.equal(y, torch.roll(x, (a, b), (2, 3)))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # shifts vary from call to call and cover both dims
    (grad,) = torch.autograd.grad((y * torch.arange(30.0, dtype=torch.float64).view(1, 1, 5, 6)).sum(), x)
    assert sorted(grad.flatten().tolist()) == list(range(30))


def test_jitter_deterministic_given_generator_and_leaves_global_rng() -> None:
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    a = Jitter(max_shift=3).transform(x, 0.0, torch.Generator().manual_seed(7))
    b = Jitter(max_shift=3).transform(x, 0.0, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_jitter_noop_cases() -> None:
    x = torch.randn(2, 5)
    assert Jitter(max_shift=3).transform(x, 0.0, torch.Generator()) is x
    y = torch.randn(1, 2, 4, 4)
    assert Jitter(max_shift=0).transform(y, 0.0, torch.Generator()) is y


def test_jitter_validation() -> None:
    with pytest.raises(ValueError, match=r"Jitter\.max_shift must be >= 0, got -1"):
        Jitter(max_shift=-1)
    with pytest.raises(TypeError, match=r"Jitter\.max_shift must be an int, got 1\.5"):
        Jitter(max_shift=1.5)  # type: ignore[arg-type]


def test_annealed_jitter_schedule_by_hand() -> None:
    """round(max_shift * (1 - t / until)) until ``until``, 0 after; None keeps max_shift for the whole run."""
    annealed = Jitter(max_shift=4, until=0.5)
    assert [annealed.shift(t) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.99)] == [4, 3, 2, 2, 1, 0, 0, 0]
    assert [Jitter(max_shift=2).shift(t) for t in (0.0, 0.5, 0.99)] == [2, 2, 2]
    assert [Jitter(max_shift=2, until=1).shift(t) for t in (0.0, 0.5, 0.8)] == [2, 1, 0]


def test_annealed_jitter_draws_within_the_shift_of_its_time_and_none_after() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8)
    jitter = Jitter(max_shift=4, until=0.5)
    g = torch.Generator().manual_seed(0)
    allowed = {(a, b) for a in range(-1, 2) for b in range(-1, 2)}  # shift(0.4) == 1
    seen = set()
    for _ in range(60):
        y = jitter.transform(x, 0.4, g)
        match = [s for s in allowed if torch.equal(y, torch.roll(x, shifts=s, dims=(2, 3)))]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 4
    state = g.get_state()
    assert jitter.transform(x, 0.5, g) is x and jitter.transform(x, 0.9, g) is x
    assert torch.equal(g.get_state(), state)  # no draw once the shift is 0
    # before it anneals, the same draws as a constant jitter of the same size
    a = Jitter(max_shift=1, until=0.5).transform(x, 0.0, torch.Generator().manual_seed(3))
    b = Jitter(max_shift=1).transform(x, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_annealed_jitter_validation_and_saved_recipe_round_trip() -> None:
    with pytest.raises(ValueError, match=r"Jitter\.until must be in \(0, 1\].*got 0; use None"):
        Jitter(max_shift=2, until=0)
    with pytest.raises(ValueError, match=r"Jitter\.until must be in \(0, 1\].*got 1\.5"):
        Jitter(max_shift=2, until=1.5)
    with pytest.raises(TypeError, match=r"Jitter\.until must be None or a fraction of the run, got '0\.5'"):
        Jitter(max_shift=2, until="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Jitter\.shift: t is the progress fraction .* got 1\.5"):
        Jitter(max_shift=2, until=0.5).shift(1.5)
    recipe = ri.recipes.default(regularizers=(Jitter(max_shift=2, until=0.75),))
    rebuilt = ri.recipes.from_dict(recipe.to_dict())
    assert rebuilt.regularizers == (Jitter(max_shift=2, until=0.75),)
