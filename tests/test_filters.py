"""Tests of the private Gaussian blur against hand-written references (torchvision's algorithm)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprinvert._filters import gaussian_blur, gaussian_kernel1d


def _reflect(i: int, n: int) -> int:
    """Index into a length-n axis after reflect padding (edge not repeated), as torch/numpy 'reflect'."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def _weights3(sigma: float) -> list[float]:
    e = math.exp(-0.5 / sigma**2)
    return [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)]


def _reference_blur2d_3x3(img: list[list[float]], sigma: float) -> list[list[float]]:
    """Non-separable 3x3 weighted sum with manual reflect padding, one output pixel at a time."""
    w = _weights3(sigma)
    h, wd = len(img), len(img[0])
    out = [[0.0] * wd for _ in range(h)]
    for i in range(h):
        for j in range(wd):
            acc = 0.0
            for a in range(3):
                for b in range(3):
                    acc += w[a] * w[b] * img[_reflect(i + a - 1, h)][_reflect(j + b - 1, wd)]
            out[i][j] = acc
    return out


def _reference_blur1d_3(sig: list[float], sigma: float) -> list[float]:
    w = _weights3(sigma)
    n = len(sig)
    return [sum(w[a] * sig[_reflect(i + a - 1, n)] for a in range(3)) for i in range(n)]


def test_kernel_known_values() -> None:
    k = gaussian_kernel1d(3, 1.0, dtype=torch.float64)
    expected = torch.tensor([0.274068619061197, 0.451862761877606, 0.274068619061197], dtype=torch.float64)
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-14)
    k5 = gaussian_kernel1d(5, 2.0, dtype=torch.float64)
    raw = torch.tensor([math.exp(-0.5 * (p / 2.0) ** 2) for p in (-2, -1, 0, 1, 2)], dtype=torch.float64)
    torch.testing.assert_close(k5, raw / raw.sum(), rtol=0, atol=1e-15)
    assert gaussian_kernel1d(1, 0.3, dtype=torch.float32).tolist() == [1.0]


def test_kernel_dtype_device_and_sum() -> None:
    k = gaussian_kernel1d(7, 1.3, dtype=torch.float32, device="cpu")
    assert k.dtype == torch.float32 and k.device.type == "cpu" and k.shape == (7,)
    assert abs(float(k.sum()) - 1.0) < 1e-6
    torch.testing.assert_close(k, k.flip(0))


@pytest.mark.parametrize("sigma", [1.0, 2.4])
def test_blur2d_matches_hand_reference(sigma: float) -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(5, 5, generator=g, dtype=torch.float64)
    ref = torch.tensor(_reference_blur2d_3x3(img.tolist(), sigma), dtype=torch.float64)
    out = gaussian_blur(img.view(1, 1, 5, 5), 3, sigma)
    torch.testing.assert_close(out[0, 0], ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("sigma", [1.0, 2.4])
def test_blur1d_matches_hand_reference(sigma: float) -> None:
    g = torch.Generator().manual_seed(1)
    sig = torch.rand(7, generator=g, dtype=torch.float64)
    ref = torch.tensor(_reference_blur1d_3(sig.tolist(), sigma), dtype=torch.float64)
    out = gaussian_blur(sig.view(1, 1, 7), 3, sigma)
    torch.testing.assert_close(out[0, 0], ref, rtol=0, atol=1e-14)


def test_blur2d_each_channel_separately() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    out = gaussian_blur(x, 3, 1.0)
    for b in range(2):
        for c in range(3):
            ref = torch.tensor(_reference_blur2d_3x3(x[b, c].tolist(), 1.0), dtype=torch.float64)
            torch.testing.assert_close(out[b, c], ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 9), (2, 3, 6, 7)])
def test_blur_of_constant_is_constant(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.full(shape, 0.37, dtype=dtype)
    out = gaussian_blur(x, 5, 1.7)
    assert out.dtype == dtype and out.shape == x.shape
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(out, x, rtol=0, atol=tol)


def test_kernel_size_one_is_identity_and_new_tensor() -> None:
    x = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    out = gaussian_blur(x, 1, 1.0)
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


def test_blur_gradcheck_2d_and_1d() -> None:
    g = torch.Generator().manual_seed(4)
    x2 = torch.rand(2, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 3, 1.2), (x2,))
    x1 = torch.rand(2, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 5, 0.8), (x1,))


def test_blur_does_not_modify_input() -> None:
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(5))
    before = x.clone()
    gaussian_blur(x, 3, 1.0)
    assert torch.equal(x, before)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 3),
    spatial=st.lists(st.integers(3, 6), min_size=1, max_size=2),
    sigma=st.floats(0.3, 3.0),
)
def test_blur_batch_equals_slices(batch: int, channels: int, spatial: list[int], sigma: float) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.rand(batch, channels, *spatial, generator=g, dtype=torch.float64)
    out = gaussian_blur(x, 3, sigma)
    for b in range(batch):
        torch.testing.assert_close(out[b : b + 1], gaussian_blur(x[b : b + 1], 3, sigma), rtol=0, atol=1e-15)
    for c in range(channels):
        torch.testing.assert_close(
            out[:, c : c + 1], gaussian_blur(x[:, c : c + 1], 3, sigma), rtol=0, atol=1e-15
        )


@pytest.mark.parametrize("shape", [(4,), (2, 4), (1, 1, 2, 4, 4)])
def test_blur_bad_layout(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, C, L\).*\(B, C, H, W\)"):
        gaussian_blur(torch.zeros(shape), 3, 1.0)


@pytest.mark.parametrize("kernel_size", [0, 2, 4, -3])
def test_blur_bad_kernel_size(kernel_size: int) -> None:
    with pytest.raises(ValueError, match=rf"kernel_size must be an odd positive int.*got {kernel_size}"):
        gaussian_blur(torch.zeros(1, 1, 5, 5), kernel_size, 1.0)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_kernel1d(kernel_size, 1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_blur_bad_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        gaussian_blur(torch.zeros(1, 1, 5, 5), 3, sigma)


def test_blur_type_errors() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        gaussian_blur(torch.zeros(1, 1, 5, 5, dtype=torch.int64), 3, 1.0)
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        gaussian_blur(torch.zeros(1, 1, 5, 5), 3.0, 1.0)  # type: ignore[arg-type]


def test_blur_kernel_too_large_for_input() -> None:
    with pytest.raises(ValueError, match=r"kernel_size=7 needs reflect padding of 3.*\(1, 1, 3, 8\)"):
        gaussian_blur(torch.zeros(1, 1, 3, 8), 7, 1.0)
