"""Smoke test of benchmarks/training.py: its quickest mode runs and writes the expected JSON (no speed claims)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import benchmark_script


def test_training_benchmark_quick_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    with benchmark_script("training") as module:
        payload = module.main(["--quick", "--no-bar", "--repeats", "1", "--device", "cpu", "--out", str(out)])
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
