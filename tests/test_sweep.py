"""reprinvert.sweep: layer choice, the per-layer table, provenance, contracts."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert._sweep_result import METRICS

from untouched import State
from zoo import SmallCNN, TokenModel


def test_default_layers_table_and_provenance(cnn: SmallCNN, images: torch.Tensor) -> None:
    result = ri.sweep(cnn, images, steps=3, seed=2, progress=False)
    assert result.layers == ("conv1", "bn1", "relu1", "conv2", "relu2", "head")
    assert [r.index for r in result.rows] == list(range(6))
    assert [r.type for r in result.rows] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "ReLU", "Linear"]
    assert result.rows[3].representation_shape == (2, 8, 4, 4)
    assert result.rows[3].size_ratio == pytest.approx(128 / 192)
    assert result.rows[-1].representation_shape == (2, 5)
    for row in result.rows:
        for key, _ in METRICS:
            assert math.isfinite(getattr(row, key)), (row.layer, key)
        assert row.represents in (0.0, 0.5, 1.0)
        assert row.seconds > 0 and row.steps_run == 3 and row.stopped is None
    prov = result.provenance
    assert (prov.reprinvert, prov.torch) == (ri.__version__, torch.__version__)
    assert (prov.seed, prov.steps, prov.device, prov.model) == (2, 3, "cpu", "SmallCNN")
    assert prov.input_shape == (2, 3, 8, 8) and prov.input_dtype == "torch.float32"
    assert prov.recipe["name"] == "default" and prov.recipe["steps"] == 3
    assert result.seconds >= sum(r.seconds for r in result.rows)
    assert [inv.input.shape for inv in result.inversions] == [images.shape] * 6
    assert result["conv2"] is result.inversions[3] and result[0] is result.inversions[0]
    with pytest.raises(KeyError, match="'nope' is not part of this sweep; layers: \\['conv1'"):
        result["nope"]
    text = str(result)
    assert text.splitlines()[0].split()[:4] == ["layer", "shape", "size", "m_g"] and "head" in text


def test_rows_equal_single_inversions(cnn: SmallCNN, images: torch.Tensor) -> None:
    """A sweep is exactly the independent inversions with the same options."""
    result = ri.sweep(cnn, images, layers=["conv2", "relu1"], steps=4, seed=5, clamp=(0, 1), progress=False,
                      batched=False)  # (batched: equal up to rounding, tests/test_batched_sweep.py)
    assert result.layers == ("conv2", "relu1")  # the order given
    for row, inv in zip(result.rows, result.inversions):
        alone = ri.invert(cnn, row.layer, images, steps=4, seed=5, clamp=(0, 1))
        assert torch.equal(alone.input, inv.input)
        summary = alone.metrics.summary()
        for key, _ in METRICS:
            assert getattr(row, key) == summary[key]
        assert row.represents == summary["represents"]


def test_layer_modes_every_and_specs(cnn: SmallCNN, images: torch.Tensor) -> None:
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Conv2d(4, 2, 1))
    x = images
    run = dict(steps=1, progress=False)
    assert ri.sweep(model, x, **run).layers == ("0", "1")
    assert ri.sweep(model, x, layers="leaves", **run).layers == ("0.0", "0.1", "1")
    assert ri.sweep(model, x, layers="all", **run).layers == ("0.0", "0.1", "0", "1")
    assert ri.sweep(model, x, layers="all", every=2, **run).layers == ("0.1", "1")
    assert ri.sweep(model, x, layers=[1, "0.0", model[1]], **run).layers == ("1", "0.0")  # deduplicated
    assert ri.sweep(model, x, layers="0.1", **run).layers == ("0.1",)
    wrapped = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))
    assert ri.sweep(wrapped, x, **run).layers == ("0.0", "0.1", "0.2")  # a single wrapper is looked through
    assert ri.sweep(cnn, x, every=3, **run).layers == ("relu1", "head")


def test_token_model_with_start() -> None:
    model = TokenModel()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    result = ri.sweep(model, ids, start="embed", steps=3, progress=False)
    assert result.layers == ("proj", "act", "head")
    assert result.provenance.options["start"] == "embed"
    assert result.inversions[0].input.shape == (2, 4, 8)
    assert torch.equal(result.reconstructions()[0], model.embed(ids).detach())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(every=0), ValueError, r"every=0: expected a positive int"),
        (dict(every=7), ValueError, r"every=7 is larger than the number of layers chosen \(6"),
        (dict(layers=[]), ValueError, "layers is an empty list"),
        (dict(layers=["conv3"]), ri.LayerNotFoundError, "layer='conv3' is not a layer of SmallCNN"),
        (dict(recipe="fancy"), ValueError, "recipe='fancy' is unknown"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
    ],
)
def test_bad_arguments(cnn: SmallCNN, images: torch.Tensor, kwargs: dict, error: type, match: str) -> None:
    kept = State.of(cnn)
    with pytest.raises(error, match=match):
        ri.sweep(cnn, images, steps=1, progress=False, **kwargs)
    kept.check(cnn)


def test_no_automatic_layer() -> None:
    with pytest.raises(ValueError, match="no 'top' layer of Sequential ran exactly once"):
        ri.sweep(nn.Sequential(nn.LSTM(3, 2, batch_first=True)), torch.rand(1, 4, 3), progress=False)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        ri.sweep(nn.Linear(2, 2), [[1.0, 2.0]], progress=False)  # type: ignore[arg-type]


def test_contracts_model_input_and_rng(cnn: SmallCNN, images: torch.Tensor) -> None:
    cnn.train()
    cnn.conv1.weight.requires_grad_(False)
    cnn.head.weight.grad = torch.ones_like(cnn.head.weight)
    x = images.clone().requires_grad_(True)
    kept = State.of(cnn, x)
    ri.sweep(cnn, x, layers="all", steps=2, progress=False)
    kept.check(cnn)


def test_contracts_after_an_error(cnn: SmallCNN, images: torch.Tensor) -> None:
    lstm, seq = nn.Sequential(nn.LSTM(3, 2, batch_first=True)), torch.rand(1, 4, 3)
    kept = State.of(cnn, images)
    with pytest.raises(ri.OutputSelectionError):  # an LSTM layer inside a sweep list fails cleanly
        ri.sweep(lstm, seq, layers=["0"], progress=False)
    with pytest.raises(ValueError):
        ri.sweep(cnn, images, layers=["conv1", "head"], steps=1, sigma=-1.0, progress=False)
    kept.check(cnn)


def test_tables_json_ready(cnn: SmallCNN, images: torch.Tensor) -> None:
    result = ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=2, progress=False)
    rows = result.table()
    assert [r["layer"] for r in rows] == ["conv1", "conv2"] and rows[0]["representation_shape"] == [2, 8, 8, 8]
    per = result.table(per_sample=True)
    assert [(r["layer"], r["sample"]) for r in per] == [("conv1", 0), ("conv1", 1), ("conv2", 0), ("conv2", 1)]
    assert all(isinstance(r["represents"], bool) for r in per)
    assert per[2]["input_distance"] == pytest.approx(float(result.inversions[1].metrics.input_distance[0]))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert set(data) == {"provenance", "seconds", "layers", "per_sample"}
    assert data["provenance"]["input_shape"] == [2, 3, 8, 8]


def test_progress_without_tqdm(cnn: SmallCNN, images: torch.Tensor, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=1, progress=True, batched=False)
    err = capsys.readouterr().err
    assert "sweep: [1/2] conv1 ..." in err and "sweep: [2/2] conv2 ..." in err
    assert re.search(r"sweep: 1/2 layers \(conv1 done\), [\d.]+ s elapsed, about [\d.]+ s left", err), err
    assert re.search(r"sweep: 2/2 layers \(conv2 done\), [\d.]+ s elapsed\n", err), err
    ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=20, progress=True, batched=True)
    err = capsys.readouterr().err
    assert err.startswith("sweep: 2 layers as one batch (conv1, conv2) ...\n")
    assert "invert: 2/20 steps" in err and "invert: 20/20 steps" in err  # the batched search: a line per tenth
    ri.sweep(cnn, images, layers=["conv1"], steps=1, progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_in_a_log_file_has_lines_not_cursor_codes(cnn: SmallCNN, images: torch.Tensor, capsys) -> None:
    """With tqdm installed but stderr not a terminal (a log file, pytest's capture), progress is plain lines."""
    pytest.importorskip("tqdm")
    ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=30, progress=True, batched=False)
    ri.invert(cnn, "conv1", images, steps=30, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert "sweep: 2/2 layers (conv2 done)" in err and "invert: 30/30 steps" in err


def test_progress_with_tqdm(cnn: SmallCNN, images: torch.Tensor, capsys, monkeypatch) -> None:
    pytest.importorskip("tqdm")
    from reprinvert import _progress

    monkeypatch.setattr(_progress, "use_bars", lambda: True)  # as on a terminal
    ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=2, progress=True, batched=False)
    err = capsys.readouterr().err
    assert "sweep" in err and "2/2" in err
    ri.sweep(cnn, images, layers=["conv1", "conv2"], steps=2, progress=True, batched=True)
    err = capsys.readouterr().err
    assert "2 layers as one batch" in err and "invert" in err
