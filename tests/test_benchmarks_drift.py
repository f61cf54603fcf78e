"""benchmarks/drift.py: the reported iterate's curve read from a history, and a quick run's results and table."""

from __future__ import annotations

import json

import pytest
import torch

import reprinvert as ri

from conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    with benchmark_script("drift") as module:
        yield module


def test_the_reported_iterate_is_the_lowest_loss_so_far(bench) -> None:  # type: ignore[no-untyped-def]
    """Hand-computed: two samples over 20 steps; at each fraction the reported iterate is, per sample, the one with
    the lowest loss among the steps so far, and its m_i is averaged over the samples."""
    steps = 20
    total = torch.stack([torch.linspace(10, 1, steps), torch.full((steps,), 5.0)], 1)
    total[12, 1] = 0.5  # sample 1's best is step 12 from then on
    distance = torch.stack([torch.arange(steps, dtype=torch.float32), 100 + torch.arange(steps)], 1)
    history = ri.History(terms={"data": total, "total": total}, lr=torch.zeros(steps), input_distance=distance)
    rows = bench.reported_curve(history, steps)
    assert [r["step"] for r in rows] == [0, 1, 2, 5, 10, 15, 20]
    # at 50% (10 steps): sample 0's best is step 9 (m_i 9), sample 1's is step 0 (loss ties: the first; m_i 100)
    assert rows[4]["input_distance"] == pytest.approx((9 + 100) / 2)
    # at 75% and 100%: sample 1's best is step 12 (m_i 112); sample 0's the last step seen
    assert rows[5]["input_distance"] == pytest.approx((14 + 112) / 2)
    assert rows[6]["input_distance"] == pytest.approx((19 + 112) / 2)
    assert rows[6]["loss"] == pytest.approx((1.0 + 0.5) / 2)
    rise, at = bench.climb(rows)
    assert at == 0 and rise == pytest.approx(65.5 / 50 - 1)


def test_quick_run_writes_results_and_a_table(bench, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("skimage")  # the photos come from the data extra
    out = tmp_path / "drift.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["budgets"] == [50, 150] and list(data["cases"]) == ["width-relu-0.5x layers.1"]
    for steps, run in data["cases"]["width-relu-0.5x layers.1"].items():
        losses = [r["loss"] for r in run["rows"]]
        assert losses == sorted(losses, reverse=True)  # the reported iterate's loss never rises
        assert run["rows"][-1]["step"] == int(steps) and run["climb"] >= 0 and run["cpu_seconds"] > 0
    capsys.readouterr()
    bench.main(["--table", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| width-relu-0.5x layers.1 | 150 |" in table and "lowest at step" in table
