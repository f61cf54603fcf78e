"""Saved results: Inversion.save / Sweep.save and reprinvert.load round-trip every field exactly, in an open
format (NumPy .npz and JSON), and refuse what they cannot read with a clear message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert import _archive, recipes, regularizers

from zoo import TokenModel


def _same(a: object, b: object) -> None:
    """Field by field: tensors equal in value, dtype and shape; everything else ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.cpu(), b) or (a.is_floating_point() and torch.allclose(a.cpu(), b, rtol=0, atol=0,
                                                                                   equal_nan=True))
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    else:
        assert a == b, (a, b)


@dataclasses.dataclass(frozen=True)
class Nudge(regularizers.Regularizer):
    """A user's own penalty: weight * mean(x)."""

    weight: float = 0.1
    name: str = "nudge"

    def penalty(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.weight * x.flatten(1).mean(1)


def test_an_inversion_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    res = ri.invert(model.double(), "1", x, steps=7, recipe=recipes.badger("cnn", steps=7))
    path = res.save(tmp_path / "inv")
    assert path == tmp_path / "inv.npz" and path.is_file()
    back = ri.load(path)
    assert isinstance(back, ri.Inversion)
    _same(res, back)
    assert back.recipe == res.recipe and back.history.input_distance.shape == (7, 2)
    # the open format: NumPy reads it without reprinvert and without pickle
    with np.load(path, allow_pickle=False) as data:
        assert data["input"].dtype == np.float64 and "history/terms/data" in data.files
        meta = json.loads(str(data["__meta__"]))
    assert meta["schema"] == "reprinvert.inversion/1" and meta["layer"] == "1"


def test_a_token_inversion_with_start_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    res = ri.invert(TokenModel(), "act", torch.tensor([[1, 2, 3]]), start="embed", steps=4)
    _same(res, ri.load(res.save(tmp_path / "tokens.npz")))


def test_a_sweep_round_trips_exactly_and_reports_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    x = ri.data.sample_images(size=8)[:2]
    result = ri.sweep(model, x, layers=["0", "2"], steps=5, progress=False, input_names=["a.png", "b.png"],
                      recipe=recipes.default(regularizers=(regularizers.TotalVariation(weight=0.01),)))
    folder = result.save(tmp_path / "study")
    assert sorted(p.name for p in folder.iterdir()) == ["layers", "original.npz", "sweep.json"]
    back = ri.load(folder)
    assert isinstance(back, ri.Sweep)
    _same(result, back)
    assert ri.report.html_page(back) == ri.report.html_page(result)


def test_bfloat16_and_non_finite_values_survive(tmp_path: Path) -> None:
    t = torch.tensor([1.5, float("inf"), float("nan"), -0.0], dtype=torch.bfloat16)
    path = _archive.write(tmp_path / "a.npz", {"t": t}, {"x": float("nan"), "y": [float("-inf"), (1, 2)]})
    tensors, meta = _archive.read(path)
    assert tensors["t"].dtype == torch.bfloat16 and torch.equal(tensors["t"].isnan(), t.isnan())
    assert torch.equal(tensors["t"].nan_to_num(), t.nan_to_num()) and tensors["t"][3].signbit()
    assert np.isnan(meta["x"]) and meta["y"] == [float("-inf"), [1, 2]]

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    with np.load(path, allow_pickle=False) as data:  # the document itself is standard JSON
        json.loads(str(data["__meta__"]), parse_constant=no_constants)


def test_custom_classes_and_bad_paths_are_clear(tmp_path: Path) -> None:
    torch.manual_seed(0)
    res = ri.invert(nn.Linear(4, 3), "", torch.rand(2, 4), steps=3, regularizers=[Nudge()])
    path = res.save(tmp_path / "custom.npz")
    with pytest.raises(ValueError, match=r"class 'Nudge' is not one of reprinvert's; pass it when loading: "
                                         r"reprinvert.load\(path, classes=\{'Nudge': Nudge\}\)"):
        ri.load(path)
    assert ri.load(path, classes={"Nudge": Nudge}).recipe == res.recipe
    with pytest.raises(ValueError, match="no saved result at"):
        ri.load(tmp_path / "missing.npz")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match=r"has no sweep\.json: not a saved sweep, or a save that did not finish"):
        ri.load(tmp_path / "half")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cannot read .* as a reprinvert result"):
        ri.load(tmp_path / "junk.npz")
    tensors, meta = _archive.read(path)
    _archive.write(tmp_path / "newer.npz", tensors, {**meta, "schema": "reprinvert.inversion/99"})
    with pytest.raises(ValueError, match=r"saved with schema 'reprinvert\.inversion/99'.*upgrade reprinvert"):
        ri.load(tmp_path / "newer.npz")


def test_inversions_and_sweeps_of_chunks_join_in_order() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    x = torch.rand(3, 4)
    a = ri.invert(model, "1", x[:2], steps=6)
    b = ri.invert(model, "1", x[2:], steps=6, callback=lambda info: info.step == 2)  # stopped after 3 steps
    joined = ri.Inversion.concat([a, b])
    assert torch.equal(joined.input, torch.cat([a.input, b.input])) and joined.steps_run == 6
    assert joined.history["data"].shape == (6, 3) and joined.history["data"][3:, 2].isnan().all()
    assert torch.equal(joined.metrics.psnr, torch.cat([a.metrics.psnr, b.metrics.psnr]))
    assert joined.stopped == b.stopped and joined.seconds == pytest.approx(a.seconds + b.seconds)
    with pytest.raises(ValueError, match="different layers or recipes"):
        ri.Inversion.concat([a, ri.invert(model, "0", x[:1], steps=6)])
    s1 = ri.sweep(model, x[:2], layers=["0", "1"], steps=4, progress=False, input_names=["a", "b"])
    s2 = ri.sweep(model, x[2:], layers=["0", "1"], steps=4, progress=False, input_names=["c"])
    both = ri.Sweep.concat([s1, s2])
    assert both.provenance.inputs == ("a", "b", "c") and both.provenance.input_shape == (3, 4)
    for row, inv in zip(both.rows, both.inversions):
        assert row.input_distance == pytest.approx(float(inv.metrics.input_distance.mean()))
    with pytest.raises(ValueError, match="different layers"):
        ri.Sweep.concat([s1, ri.sweep(model, x[2:], layers=["1"], steps=4, progress=False)])


def test_a_sweep_with_resume_saves_each_layer_and_an_interrupted_one_does_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each finished layer is saved at once; after an interruption the same call loads those and inverts only the
    rest, and the result equals an uninterrupted sweep's; another call into the same folder is refused."""
    import importlib

    sweep_module = importlib.import_module("reprinvert._sweep")  # where a sweep inverts each layer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    layers = ["0", "1", "2", "3"]
    whole = ri.sweep(model, x, layers=layers, steps=12, progress=False, batched=False)

    calls: list[str] = []
    real_invert = sweep_module.run_inversion
    interrupt = [True]

    def invert(feed: Any, layer: str, *args: Any, **kwargs: Any) -> ri.Inversion:
        calls.append(layer)
        if layer == "2" and interrupt:
            interrupt.clear()
            raise KeyboardInterrupt  # Ctrl-C during the third layer, once
        return real_invert(feed, layer, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_inversion", invert)
    folder = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        ri.sweep(model, x, layers=layers, steps=12, progress=False, batched=False, resume=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["fingerprint.json", "layers"]
    assert sorted(p.name for p in (folder / "layers").iterdir()) == ["0.npz", "1.npz"]
    calls.clear()
    resumed = ri.sweep(model, x, layers=layers, steps=12, progress=False, batched=False, resume=folder)
    assert calls == ["2", "3"]  # only what was not finished
    assert resumed.provenance.options["resumed"] == ["0", "1"]
    for a, b in zip(resumed.inversions, whole.inversions):
        assert torch.equal(a.input, b.input) and a.layer == b.layer
    assert [r.input_distance for r in resumed.rows] == [r.input_distance for r in whole.rows]
    saved = ri.load(folder)  # the finished sweep is saved into its resume folder
    assert isinstance(saved, ri.Sweep) and saved.rows == resumed.rows
    calls.clear()
    again = ri.sweep(model, x, layers=layers, steps=12, progress=False, batched=False, resume=folder)
    assert calls == [] and again.provenance.options["resumed"] == layers
    # a different call into the same folder: refused, naming what differs
    with pytest.raises(ValueError, match=r"holds layers of another call \(different recipe\.steps\)"):
        ri.sweep(model, x, layers=layers, steps=13, progress=False, batched=False, resume=folder)
    with pytest.raises(ValueError, match=r"different x\)"):
        ri.sweep(model, x + 0.01, layers=layers, steps=12, progress=False, batched=False, resume=folder)
    with torch.no_grad():
        model[0].bias.add_(0.1)
    with pytest.raises(ValueError, match=r"different model_state\)"):
        ri.sweep(model, x, layers=layers, steps=12, progress=False, batched=False, resume=folder)


def test_a_batched_sweep_with_resume_saves_its_layers_when_it_ends(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    first = ri.sweep(model, x, layers=["0", "2"], steps=8, progress=False, batched=True, resume=tmp_path)
    assert first.provenance.options["batched"] is True and first.provenance.options["resumed"] == []
    second = ri.sweep(model, x, layers=["0", "2"], steps=8, progress=False, resume=tmp_path, batched=True)
    assert second.provenance.options["resumed"] == ["0", "2"]  # batched=True with nothing left to batch: no error
    assert all(torch.equal(a.input, b.input) for a, b in zip(first.inversions, second.inversions))
