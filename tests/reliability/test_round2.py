"""Reliability, round 2: models whose inference path differs from their gradient path, results that must be
snapshots. (Issue "Reliability, round 2"; the rest of its list is not covered here yet.)"""

from __future__ import annotations

import warnings

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
