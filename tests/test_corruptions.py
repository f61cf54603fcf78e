"""Tests of the input corruptions: determinism, contracts, statistics and errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprinvert import corruptions
from reprinvert._filters import gaussian_blur

Corruption = Callable[..., torch.Tensor]

RANDOM: dict[str, tuple[Corruption, dict[str, float]]] = {
    "gaussian": (corruptions.gaussian, {"sigma": 0.3}),
    "noise_mix": (corruptions.noise_mix, {"alpha": 0.3}),
    "salt_and_pepper": (corruptions.salt_and_pepper, {"p": 0.4}),
    "mask": (corruptions.mask, {"p": 0.4}),
}
ALL: dict[str, tuple[Corruption, dict[str, float]]] = {**RANDOM, "blur": (corruptions.blur, {"sigma": 0.8})}


def _image(shape: tuple[int, ...] = (2, 3, 8, 8), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(123), dtype=dtype)


# -------------------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_new_tensor(name: str, dtype: torch.dtype) -> None:
    fn, kwargs = ALL[name]
    x = _image(dtype=dtype)
    y = fn(x, **kwargs)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.data_ptr() != x.data_ptr()
    assert not torch.equal(y, x)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_input_unchanged(name: str, requires_grad: bool) -> None:
    fn, kwargs = ALL[name]
    x = _image().requires_grad_(requires_grad)
    before = x.detach().clone()
    fn(x, **kwargs)
    assert torch.equal(x, before)
    assert x.requires_grad is requires_grad
    assert x.grad is None


@pytest.mark.parametrize("name", sorted(ALL))
def test_global_rng_state_unchanged(name: str) -> None:
    fn, kwargs = ALL[name]
    x = _image()
    state = torch.get_rng_state()
    fn(x, **kwargs)
    if name in RANDOM:
        fn(x, **kwargs, seed=5)
        fn(x, **kwargs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_determinism(name: str) -> None:
    fn, kwargs = RANDOM[name]
    x = _image()
    assert torch.equal(fn(x, **kwargs), fn(x, **kwargs))  # unseeded means seed 0
    assert torch.equal(fn(x, **kwargs), fn(x, **kwargs, seed=0))
    assert torch.equal(fn(x, **kwargs, seed=11), fn(x, **kwargs, seed=11))
    assert not torch.equal(fn(x, **kwargs, seed=11), fn(x, **kwargs, seed=12))


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_generator_accepted_and_advanced(name: str) -> None:
    fn, kwargs = RANDOM[name]
    x = _image()
    g = torch.Generator().manual_seed(9)
    first = fn(x, **kwargs, generator=g)
    second = fn(x, **kwargs, generator=g)
    assert not torch.equal(first, second)  # the generator advanced
    assert torch.equal(first, fn(x, **kwargs, seed=9))  # a fresh generator with the same seed agrees


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_seed_and_generator_together_raise(name: str) -> None:
    fn, kwargs = RANDOM[name]
    with pytest.raises(ValueError, match="were both given; pass only one"):
        fn(_image(), **kwargs, seed=1, generator=torch.Generator())


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), seed=st.integers(0, 2**31))
def test_random_draws_depend_on_shape_not_values(shape: list[int], seed: int) -> None:
    """One stream for the whole tensor, so a batch does not equal its slices; but the noise is the same for
    any two inputs of one shape, which is what makes paired comparisons possible."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    z = torch.rand(shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        corruptions.gaussian(x, sigma=0.5, seed=seed) - x, corruptions.gaussian(z, sigma=0.5, seed=seed) - z
    )
    # noise_mix: alpha * x + (1 - alpha) * eps; the eps recovered from two inputs agrees.
    eps_x = (corruptions.noise_mix(x, alpha=0.25, seed=seed) - 0.25 * x) / 0.75
    eps_z = (corruptions.noise_mix(z, alpha=0.25, seed=seed) - 0.25 * z) / 0.75
    torch.testing.assert_close(eps_x, eps_z)
    for fn in (corruptions.salt_and_pepper, corruptions.mask):
        assert torch.equal(fn(x, p=0.5, seed=seed) == x, fn(z, p=0.5, seed=seed) == z)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    spatial=st.lists(st.integers(5, 8), min_size=1, max_size=2),
    sigma=st.floats(0.2, 1.2),
)
def test_blur_batch_equals_slices(batch: int, spatial: list[int], sigma: float) -> None:
    # sigma <= 1.2 gives the default kernel_size <= 9, whose reflect padding 4 needs every dim >= 5.
    x = torch.rand(batch, 2, *spatial, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = corruptions.blur(x, sigma=sigma)
    for b in range(batch):
        torch.testing.assert_close(
            whole[b : b + 1], corruptions.blur(x[b : b + 1], sigma=sigma), rtol=0, atol=1e-15
        )


# ----------------------------------------------------------------------------------------- the features


def test_gaussian_statistics_and_zero_sigma() -> None:
    x = torch.zeros(200_000, dtype=torch.float64)
    y = corruptions.gaussian(x, sigma=0.5, seed=3)
    assert abs(float(y.mean())) < 0.005
    assert abs(float(y.std()) - 0.5) < 0.005
    z = _image()
    assert torch.equal(corruptions.gaussian(z, sigma=0.0), z)


def test_noise_mix_alpha_one_is_exact_and_eps_statistics() -> None:
    x = _image(dtype=torch.float64)
    assert torch.equal(corruptions.noise_mix(x, alpha=1.0, seed=4), x)
    eps = corruptions.noise_mix(torch.zeros(200_000), alpha=0.0, seed=5)
    assert abs(float(eps.mean()) - 0.7) < 0.003
    assert abs(float(eps.std()) - 0.2) < 0.003
    eps2 = corruptions.noise_mix(torch.zeros(200_000), alpha=0.0, mean=-1.0, std=0.05, seed=5)
    assert abs(float(eps2.mean()) + 1.0) < 0.001 and abs(float(eps2.std()) - 0.05) < 0.001


def test_noise_mix_formula() -> None:
    x = _image(dtype=torch.float64)
    eps = corruptions.noise_mix(torch.zeros_like(x), alpha=0.0, seed=6)
    torch.testing.assert_close(corruptions.noise_mix(x, alpha=0.3, seed=6), 0.3 * x + 0.7 * eps)


def test_salt_and_pepper_proportions() -> None:
    x = torch.full((400_000,), 0.5)
    y = corruptions.salt_and_pepper(x, p=0.3, low=-1.0, high=2.0, seed=7)
    n = x.numel()
    assert abs(float((y == -1.0).sum()) / n - 0.15) < 0.003
    assert abs(float((y == 2.0).sum()) / n - 0.15) < 0.003
    assert abs(float((y == 0.5).sum()) / n - 0.70) < 0.003
    assert torch.equal(corruptions.salt_and_pepper(x, p=0.0), x)
    all_replaced = corruptions.salt_and_pepper(x, p=1.0)
    assert bool(((all_replaced == 0.0) | (all_replaced == 1.0)).all())


def test_mask_zeroes_whole_spatial_positions() -> None:
    x = torch.rand(4, 3, 50, 60, generator=torch.Generator().manual_seed(8)) + 1.0  # never 0 before masking
    y = corruptions.mask(x, p=0.25, seed=9)
    hit = y == 0.0
    assert torch.equal(hit.all(dim=1), hit.any(dim=1))  # a position is masked in all channels or none
    assert abs(float(hit[:, 0].float().mean()) - 0.25) < 0.01
    assert torch.equal(y[~hit], x[~hit])
    # 1-D signals (B, C, L): positions along L; flat (B, D): each element.
    s = corruptions.mask(torch.ones(2, 3, 1000), p=0.5, value=-2.0, seed=1)
    assert torch.equal((s == -2.0).all(dim=1), (s == -2.0).any(dim=1))
    flat = corruptions.mask(torch.ones(2, 100_000), p=0.1, value=7.0, seed=1)
    assert abs(float((flat == 7.0).float().mean()) - 0.1) < 0.005
    assert torch.equal(corruptions.mask(x, p=0.0), x)
    assert bool((corruptions.mask(x, p=1.0) == 0.0).all())


def test_blur_default_kernel_size_and_explicit() -> None:
    x = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    torch.testing.assert_close(corruptions.blur(x, sigma=0.8), gaussian_blur(x, 2 * math.ceil(2.4) + 1, 0.8))
    torch.testing.assert_close(corruptions.blur(x, sigma=1.0, kernel_size=3), gaussian_blur(x, 3, 1.0))
    const = torch.full((1, 1, 10, 10), 0.25, dtype=torch.float64)
    torch.testing.assert_close(corruptions.blur(const, sigma=1.5), const, rtol=0, atol=1e-15)


def test_corruptions_keep_autograd_connection() -> None:
    x = _image(dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(corruptions.noise_mix(x, alpha=0.3).sum(), x)
    torch.testing.assert_close(grad, torch.full_like(x, 0.3))


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda x: corruptions.gaussian(x, sigma=-0.1), r"gaussian: sigma must be >= 0, got -0\.1"),
        (lambda x: corruptions.noise_mix(x, alpha=1.5), r"noise_mix: alpha must lie in \[0, 1\], got 1\.5"),
        (lambda x: corruptions.noise_mix(x, alpha=0.5, std=-1.0), r"noise_mix: std must be >= 0, got -1\.0"),
        (
            lambda x: corruptions.salt_and_pepper(x, p=-0.2),
            r"salt_and_pepper: p must lie in \[0, 1\], got -0\.2",
        ),
        (lambda x: corruptions.mask(x, p=2), r"mask: p must lie in \[0, 1\], got 2"),
        (lambda x: corruptions.blur(x, sigma=0.0), r"blur: sigma must be > 0, got 0\.0"),
        (lambda x: corruptions.blur(x, sigma=1.0, kernel_size=4), r"kernel_size must be an odd positive int"),
        (lambda x: corruptions.gaussian(x, sigma=float("nan")), r"gaussian: sigma must be finite"),
    ],
)
def test_argument_errors(call: Callable[[torch.Tensor], torch.Tensor], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call(_image())


@pytest.mark.parametrize("name", sorted(ALL))
def test_integer_input_rejected(name: str) -> None:
    fn, kwargs = ALL[name]
    with pytest.raises(
        TypeError, match=rf"{name}: x must be a floating-point tensor, got dtype torch\.int64"
    ):
        fn(torch.zeros(1, 1, 5, 5, dtype=torch.int64), **kwargs)


def test_other_type_errors() -> None:
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        corruptions.gaussian([1.0, 2.0], sigma=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int or None"):
        corruptions.gaussian(_image(), sigma=0.1, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="alpha must be a real number"):
        corruptions.noise_mix(_image(), alpha="0.3")  # type: ignore[arg-type]


def test_mask_needs_batched_input() -> None:
    with pytest.raises(
        ValueError, match=r"mask: x must be \(B, D\) or \(B, C, \*spatial\), got shape \(5,\)"
    ):
        corruptions.mask(torch.ones(5), p=0.5)


def test_blur_layout_error() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, L\).*\(B, C, H, W\)"):
        corruptions.blur(torch.ones(2, 5), sigma=1.0)
