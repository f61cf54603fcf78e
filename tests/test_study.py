"""ri.Study from Python: chunks kept as they finish, resumed without redoing a chunk, equal to one sweep, and a
folder holding another study's work refused by what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import reprinvert as ri
from reprinvert import _archive

from untouched import State
from zoo import SmallCNN

OPTIONS = dict(layers=["conv1", "conv2"], steps=3, seed=1, progress=False)


def _setup() -> tuple[SmallCNN, torch.Tensor]:
    model = SmallCNN().eval()
    return model, torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def test_a_study_in_chunks_equals_one_sweep_and_resumes_without_redoing_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = _setup()
    kept = State.of(model, x)
    study = ri.Study(tmp_path / "s", model, x, batch_size=2, **OPTIONS)
    whole = study.run()
    kept.check(model)
    assert whole is not None and study.done() == [0, 1, 2] and len(study.chunks) == 3
    alone = ri.sweep(model, x, batched=False, **OPTIONS)
    for a, b in zip(whole.inversions, alone.inversions):
        assert a.layer == b.layer and a.input.shape == b.input.shape == x.shape
    # Inverting a chunk is per-sample independent: the study's inputs equal one sweep's of each chunk.
    first = ri.sweep(model, x[:2], **OPTIONS)
    assert all(torch.equal(a.input[:2], b.input) for a, b in zip(whole.inversions, first.inversions))
    # A second run of the same study redoes nothing; its result is the saved one.
    from reprinvert import _sweep

    def no_sweep(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished chunk was inverted again")

    monkeypatch.setattr(_sweep, "run_sweep", no_sweep)
    again = ri.Study(tmp_path / "s", model, x, batch_size=2, **OPTIONS).run()
    assert again is not None
    assert all(torch.equal(a.input, b.input) for a, b in zip(again.inversions, whole.inversions))


def test_a_folder_with_another_studys_work_is_refused_by_what_differs(tmp_path: Path) -> None:
    model, x = _setup()
    ri.Study(tmp_path / "s", model, x, batch_size=3, **OPTIONS).run()
    with pytest.raises(_archive.Mismatch, match=r"different .*steps") as info:
        ri.Study(tmp_path / "s", model, x, batch_size=3, **{**OPTIONS, "steps": 4}).run()
    assert "steps" in info.value.differences
    with pytest.raises(ValueError, match="different inputs"):
        ri.Study(tmp_path / "s", model, x + 0.5, batch_size=3, **OPTIONS).run()
    fresh = ri.Study(tmp_path / "s", model, x, batch_size=3, fresh=True, **{**OPTIONS, "steps": 4}).run()
    assert fresh is not None and fresh.provenance.steps == 4


def test_the_old_module_paths_still_import_and_warn() -> None:
    """``from reprinvert.sweep import Sweep`` (a module the function shadowed) still works, with a warning that
    says what to import instead; the function ``ri.sweep`` itself is untouched."""
    import importlib

    module = importlib.import_module("reprinvert.sweep")
    assert callable(ri.sweep) and ri.sweep is not module  # the function is not rebound
    with pytest.warns(DeprecationWarning, match=r"reprinvert\.sweep\.Sweep moved: use reprinvert\.Sweep"):
        from reprinvert.sweep import Sweep
    assert Sweep is ri.Sweep
    with pytest.warns(DeprecationWarning, match=r"it is private now \(reprinvert\._hooks\.Hooks\)"):
        from reprinvert.capture import Hooks  # noqa: F401
    with pytest.raises(ImportError):
        from reprinvert.invert import no_such_name  # noqa: F401
