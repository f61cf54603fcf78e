"""Nothing outside image-only regularizers assumes (B, C, H, W)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert.regularizers import GaussianBlur, TotalVariation

from zoo import Signal1D, TokenModel


def test_1d_signal_model_inverts_first_layer() -> None:
    model = Signal1D()
    t = torch.linspace(0, 6.28, 32)
    x = torch.stack([torch.stack([torch.sin(t * k), torch.cos(t * k)]) for k in (1, 2)]) * 0.5 + 0.5
    assert ri.describe(model, x)["conv1"].shape == (2, 6, 32)
    res = ri.invert(model, "conv1", x, steps=300)
    assert res.input.shape == x.shape
    assert float(res.metrics.relative_input_distance.max()) < 0.05
    assert bool(res.metrics.represents.all())
    # image regularizers that make sense in 1-D work there too
    res = ri.invert(model, "conv2", x, steps=5, regularizers=[TotalVariation(weight=0.01), GaussianBlur()])
    assert set(res.history.terms) == {"data", "tv", "total"}


def test_token_model_inverts_in_embedding_space() -> None:
    torch.manual_seed(0)
    model = TokenModel()
    ids = torch.tensor([[1, 5, 7, 3], [0, 19, 2, 2]])
    res = ri.invert(model, "proj", ids, start="embed", steps=400, init="zeros")
    emb = model.embed(ids).detach()
    assert res.start == "embed" and res.input.shape == emb.shape == res.original.shape
    assert torch.allclose(res.original, emb)
    # proj: 8 -> 16 is injective, so the embeddings and then the tokens come back
    assert float(res.metrics.relative_input_distance.max()) < 0.05
    assert torch.equal(ri.nearest_tokens(model.embed, res.input), ids)
    assert torch.equal(ri.nearest_tokens(model.embed.weight, res.input, metric="cosine"), ids)


def test_nearest_tokens_errors() -> None:
    emb = nn.Embedding(5, 3)
    with pytest.raises(ValueError, match=r"z has last dimension 4, but the embedding has dimension 3"):
        ri.nearest_tokens(emb, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"metric='dot'"):
        ri.nearest_tokens(emb, torch.zeros(1, 2, 3), metric="dot")
    with pytest.raises(TypeError, match=r"embedding must be an nn.Embedding"):
        ri.nearest_tokens(torch.zeros(3), torch.zeros(1, 3))


def test_transformer_tokens() -> None:
    """A post-LayerNorm encoder layer discards each token's mean and scale: matched, but not recovered."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True, dropout=0.0), 2,
        enable_nested_tensor=False,
    )
    x = torch.rand(2, 5, 8)
    res = ri.invert(enc, "layers.0", x, steps=200)
    assert res.input.shape == (2, 5, 8)
    m = res.metrics
    assert bool(m.represents.all())
    assert float(m.normalized_feature_error.max()) < 1e-6
    assert float(m.relative_input_distance.min()) > 0.05
