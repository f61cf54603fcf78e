"""The experiments on a CUDA GPU at tiny sizes (skipped without one): they run there and record it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reprinvert import experiments as E

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_corruption_distance_on_cuda(tmp_path: Path) -> None:
    r = E.run("corruption-distance", size="tiny", out=tmp_path, progress=False, device="cuda")
    j = _json(tmp_path / "corruption-distance" / "result.json")
    assert j["device"].startswith("cuda") and j["machine"]["gpu"]
    assert r.max_abs_difference <= 1e-12  # float64 on the GPU too
    assert all(math.isfinite(v) for v in (*r.copier_loss, *r.corruption_distance, *r.copier_gain))
    assert all(g == pytest.approx(1.0, abs=1e-12) for g in r.copier_gain)


def test_copy_on_cuda(tmp_path: Path) -> None:
    r = E.copy(size="tiny", out=tmp_path, progress=False, device=torch.device("cuda"))
    j = _json(tmp_path / "copy" / "result.json")
    assert j["device"].startswith("cuda")
    assert set(r.models) == {"identity", "mlp", "unet_skip"}
    for name, stats in r.models.items():
        values = (stats.copy_tendency, stats.jacobian_trace, stats.output_to_input, stats.output_to_clean,
                  stats.corrupted_to_clean, stats.denoising_gain, stats.copy_mse)
        assert all(math.isfinite(v) for v in values), name
        assert stats.train_loss is None or math.isfinite(stats.train_loss), name
    assert r.models["identity"].copy_tendency == pytest.approx(1.0, abs=1e-6)
    assert r.models["identity"].output_to_input == 0.0
    assert all(Path(f).is_file() for f in r.figures)
