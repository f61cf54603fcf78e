"""Smoke test of benchmarks/training.py: its quickest mode runs and writes the expected JSON (no speed claims)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training.py"


def test_training_benchmark_quick_run_writes_json(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("reprinvert_benchmark_training", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    saved_path = list(sys.path)
    out = tmp_path / "training.json"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        payload = module.main(["--quick", "--no-bar", "--repeats", "1", "--device", "cpu", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
        sys.path[:] = saved_path
        sys.modules.pop(spec.name, None)
    written = json.loads(out.read_text())
    assert written["quick"] is True and payload["quick"] is True
    assert {"machine", "results", "table", "what"} <= set(written)
    assert written["machine"]["device"] == "cpu"
    assert len(written["results"]) >= 3
    for row in written["results"]:
        for key in ("model", "parameters", "input_shape", "batch_size", "steps", "device", "library_s_per_step",
                    "hand_s_per_step", "ratio", "library_samples_per_s", "hand_samples_per_s",
                    "library_final_loss", "hand_final_loss", "final_loss_rel_diff"):
            assert key in row, key
        positive = ("ratio", "ratio_of_minimums", "library_s_per_step", "hand_s_per_step", "library_samples_per_s",
                    "hand_samples_per_s")
        for key in positive:
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
        assert math.isclose(row["library_final_loss"], row["hand_final_loss"], rel_tol=1e-4)
