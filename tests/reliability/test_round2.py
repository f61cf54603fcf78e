"""Reliability, round 2: models whose inference path differs from their gradient path, results that must be
snapshots. (Issue "Reliability, round 2"; the rest of its list is not covered here yet.)"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import reprinvert as ri


def _encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, 2).eval()


def test_transformer_fast_path_target_is_the_function_the_search_minimises() -> None:
    """In eval mode with a padding mask, nn.TransformerEncoder takes a nested-tensor fast path when nothing needs
    gradients. The target, the metrics and the final scoring are computed on the search's path: at z = x the loss
    is exactly 0, and describe reports the dense outputs the search sees."""
    enc = _encoder()
    x = torch.rand(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    kwargs = {"src_key_padding_mask": mask}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's prototype warning about nested tensors
        at_x = ri.invert(enc, "layers.0", x, init=x.clone(), steps=1, model_kwargs=kwargs, track_best=False,
                         clamp=False)
        assert at_x.history["data"][0].tolist() == [0.0, 0.0]
        assert at_x.metrics.embedding_distance.tolist() == [0.0, 0.0]
        desc = ri.describe(enc, x, model_kwargs=kwargs)
        res = ri.invert(enc, "layers.0", x, model_kwargs=kwargs, steps=100)
    assert desc["layers.0"].shape == (2, 5, 8)
    assert bool(res.metrics.represents.all())


def test_complex_outputs_keep_their_imaginary_part() -> None:
    """A layer with complex output: distances, the loss and the metrics use real and imaginary parts."""

    class Spectrum(nn.Module):
        """fft(lin(x)): complex, and invertible."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(8, 8)
            self.fft = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fft(torch.fft.fft(self.lin(x)))

    model, x = Spectrum().eval(), torch.rand(2, 8)
    moved = x.clone()
    moved[:, 0] += 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a cast drops an imaginary part
        m = ri.evaluate(model, "fft", x, moved)
        res = ri.invert(model, "fft", x)
    with torch.no_grad():
        expected = (model(x) - model(moved)).abs().pow(2).sum(1).sqrt().double()
    torch.testing.assert_close(m.embedding_distance, expected)
    assert float(res.metrics.relative_input_distance.max()) < 1e-2


def test_evaluate_and_reference_distance_refuse_a_reused_layer_without_call() -> None:
    """As invert does: a shared module's 'output' is ambiguous, so call= must say which."""
    from conftest import Shared

    model, x = Shared(), torch.randn(2, 4)
    with pytest.raises(ri.LayerCallError, match=r"ran 2 times .* pass call=0..1"):
        ri.evaluate(model, "lin", x, x)
    with pytest.raises(ri.LayerCallError, match=r"ran 2 times .* pass call=0..1"):
        ri.metrics.reference_distance(model, "lin", x)
    assert ri.evaluate(model, "lin", x, x, call=1).embedding_distance.tolist() == [0.0, 0.0]
