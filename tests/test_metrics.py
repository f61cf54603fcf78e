from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import reprinvert as ri
from reprinvert import metrics

from untouched import State
from zoo import SmallCNN


def test_hand_computed_values_float64() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # torch's float64 sqrt may differ from math.sqrt in the last bit (vectorised CPU kernels): 1 ulp allowed
    assert metrics.embedding_distance(a, b).tolist() == pytest.approx([5.0, math.sqrt(2)], rel=4e-16, abs=0)
    assert metrics.input_distance(a, b, reduction="sum").item() == pytest.approx(5 + math.sqrt(2))
    assert metrics.corruption_distance(a, b).tolist() == [25.0, 2.0]
    nfe = metrics.normalized_feature_error(b, a)  # ||b - a||^2 / ||a||^2
    assert nfe[0].item() == 1.0 and math.isinf(nfe[1].item())
    assert metrics.normalized_feature_error(a, a).tolist() == [0.0, 0.0]
    zero = torch.zeros(1, 2, dtype=torch.float64)
    assert metrics.normalized_feature_error(zero, zero).tolist() == [0.0]
    # psnr: mse = (9 + 16) / 2 = 12.5 -> 10 log10(1 / 12.5)
    assert metrics.psnr(a, b)[0].item() == pytest.approx(10 * math.log10(1 / 12.5))
    assert math.isinf(metrics.psnr(a, a)[0].item())
    assert metrics.psnr(a, b, data_range=2.0)[0].item() == pytest.approx(10 * math.log10(4 / 12.5))
    # denoising gain ||x~ - x||^2 / ||O - x||^2
    x = torch.zeros(1, 2, dtype=torch.float64)
    x_t = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    out = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert metrics.denoising_gain(out, x_t, x).item() == 4.0
    assert metrics.embedding_distance(a, b, reduction="mean").item() == pytest.approx((5 + math.sqrt(2)) / 2)


def test_norms_are_gradient_safe_at_zero() -> None:
    z = torch.zeros(2, 3, requires_grad=True)
    for fn in (lambda t: metrics.safe_norm(t), lambda t: metrics.embedding_distance(t, torch.zeros(2, 3)),
               lambda t: metrics.input_distance(t, torch.zeros(2, 3))):
        (g,) = torch.autograd.grad(fn(z).sum(), z)
        assert torch.equal(g, torch.zeros(2, 3))
    t = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: metrics.safe_norm(u), (t,))


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_batch_equals_its_slices_and_reductions(batch: int, width: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, width, 2, generator=g, dtype=torch.float64)
    b = torch.randn(batch, width, 2, generator=g, dtype=torch.float64)
    for fn in (metrics.embedding_distance, metrics.input_distance, metrics.corruption_distance,
               metrics.normalized_feature_error, metrics.psnr):
        full = fn(a, b)
        assert full.shape == (batch,)
        for i in range(batch):
            torch.testing.assert_close(fn(a[i : i + 1], b[i : i + 1]), full[i : i + 1])
        torch.testing.assert_close(fn(a, b, reduction="mean"), full.mean())
        torch.testing.assert_close(fn(a, b, reduction="sum"), full.sum())
    # triangle inequality and symmetry of the distance
    c = torch.randn(batch, width, 2, generator=g, dtype=torch.float64)
    ab, bc, ac = (metrics.embedding_distance(p, q) for p, q in ((a, b), (b, c), (a, c)))
    assert bool((ac <= ab + bc + 1e-12).all())
    torch.testing.assert_close(ab, metrics.embedding_distance(b, a))


def test_reduction_and_shape_errors() -> None:
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"reduction='avg': expected 'none', 'mean' or 'sum'"):
        metrics.embedding_distance(a, a, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must have the same shape, got \(2, 3\) and \(2, 4\)"):
        metrics.input_distance(a, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"data_range=0: expected a positive number"):
        metrics.psnr(a, a, data_range=0)


def test_reference_distance_and_evaluate(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 8, 8)
    kept = State.of(cnn)
    rng = torch.get_rng_state()
    m_r = metrics.reference_distance(cnn, "conv2", x, seed=0)
    assert m_r.shape == (2,) and bool((m_r > 0).all())
    assert torch.equal(m_r, metrics.reference_distance(cnn, "conv2", x, seed=0))
    assert torch.equal(metrics.reference_distance(cnn, "conv2", x, sigma=0.0), torch.zeros(2))
    m = ri.evaluate(cnn, "conv2", x, x.clone(), seed=0)
    assert torch.equal(m.embedding_distance, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(m.reference_distance, m_r.double(), rtol=1e-5)
    assert bool(m.represents.all()) and m.input_distance.tolist() == [0.0, 0.0]
    assert torch.equal(torch.get_rng_state(), rng)
    kept.check(cnn)
    rows = m.per_sample()
    assert len(rows) == 2 and rows[0]["represents"] is True


def test_copy_tendency_identity_zero_and_scaling() -> None:
    x = torch.rand(3, 2, 4, 4)
    ident = metrics.copy_tendency(nn.Identity(), x, seed=0)
    assert torch.allclose(ident.finite, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ident.jacobian_trace, torch.ones(3, dtype=torch.float64))

    class Const(nn.Module):
        """O(x) = 0 * x + 0.5: ignores the input."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0 * x + 0.5

    const = metrics.copy_tendency(Const(), x, seed=0)
    assert torch.equal(const.finite, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(const.jacobian_trace, torch.zeros(3, dtype=torch.float64))

    class Half(nn.Module):
        """O(x) = x / 2."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 2

    half = metrics.copy_tendency(Half(), x, seed=0)
    assert torch.allclose(half.finite, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(half.jacobian_trace, torch.full((3,), 0.5, dtype=torch.float64))


def test_copy_tendency_hutchinson_matches_exact_trace() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 6).double()
    x = torch.rand(1, 6, dtype=torch.float64)
    est = metrics.copy_tendency(lin, x, probes=4000, seed=1)
    exact = torch.trace(lin.weight).item() / 6
    assert est.jacobian_trace.item() == pytest.approx(exact, abs=4 * est.jacobian_trace_stderr.item() + 1e-9)
    assert est.jacobian_trace_stderr.item() < 0.05


def test_copy_tendency_with_seed_noise_mix_and_contracts(cnn: SmallCNN) -> None:
    ae = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Sigmoid())
    ae.train()
    x = torch.rand(2, 3, 8, 8)
    kept = State.of(ae, x)
    ct = metrics.copy_tendency(
        ae, x, corrupt=lambda t, g: ri.corruptions.noise_mix(t, alpha=0.3, generator=g), seed=0
    )
    kept.check(ae)
    assert all(p.grad is None for p in ae.parameters())
    assert ct.finite.shape == (2,) and bool(torch.isfinite(ct.finite).all())
    assert set(ct.summary()) == {"finite", "jacobian_trace", "jacobian_trace_stderr", "output_to_input",
                                 "output_to_clean"}
    with pytest.raises(ValueError, match="output has the input's shape"):
        metrics.copy_tendency(cnn, x)
    with pytest.raises(ValueError, match="probes=0"):
        metrics.copy_tendency(ae, x, probes=0)


def test_inversion_metrics_in_chunks_equal_all_at_once(monkeypatch) -> None:
    """from_tensors works a few samples at a time to bound its float64 copies; the numbers do not change."""
    import reprinvert.metrics as metrics_module

    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 4, 4, generator=g)
    tensors = dict(
        x=x, x_g=x + 0.1 * torch.randn(x.shape, generator=g), x_ref=x + 0.04 * torch.randn(x.shape, generator=g),
        rep=torch.randn(7, 50, generator=g), rep_g=torch.randn(7, 50, generator=g),
        rep_ref=torch.randn(7, 50, generator=g),
    )
    whole = ri.metrics.InversionMetrics.from_tensors(**tensors)
    monkeypatch.setattr(metrics_module, "_CHUNK_VALUES", 100)  # 2 samples per chunk
    chunked = ri.metrics.InversionMetrics.from_tensors(**tensors)
    for name, value in vars(whole).items():
        assert torch.equal(value, getattr(chunked, name)), name


def test_copy_tendency_of_a_constant_model_is_zero_copying() -> None:
    """A model whose output does not depend on x copies nothing: Jacobian trace 0 (not an autograd error), and the
    results hold no graph even though the output is a view of a parameter."""

    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1, 3, 4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w.expand(x.shape[0], -1, -1, -1)

    found = metrics.copy_tendency(Constant(), torch.rand(2, 3, 4, 4), probes=3)
    assert found.jacobian_trace.tolist() == [0.0, 0.0] and found.finite.tolist() == [0.0, 0.0]
    assert not found.output_to_input.requires_grad and not found.output_to_clean.requires_grad
