"""benchmarks/inversion_quality.py: a quick run writes the results the docs tables are printed from."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    with benchmark_script("inversion_quality") as module:
        yield module


def test_quick_run_writes_results_and_tables(bench, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("skimage")  # the identity case's photos come from the data extra
    out = tmp_path / "q.json"
    monkeypatch.setattr(sys, "argv", ["inversion_quality.py", "--quick", "--only", "identity", "--recipes",
                                      "default,pixel", "--out", str(out)])
    bench.main()
    data = json.loads(out.read_text())
    assert data["finished"] is not None and data["steps"] == bench.STEPS // 10
    rows = data["cases"]["identity-random"]["0"]
    assert set(rows) == {"default", "pixel"}
    for row in rows.values():
        assert len(row["psnr"]) == len(row["input_distance"]) == len(row["mg_over_mr"])
        assert row["cpu_seconds"] > 0 and row["curve_reported"]
        assert "at_default_time" in row
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["inversion_quality.py", "--table", "--out", str(out)])
    bench.main()
    table = capsys.readouterr().out
    assert "identity-random: mean PSNR (dB), equal steps" in table and "| 0 |" in table
    assert "how far the returned input's m_i climbs back" in table
