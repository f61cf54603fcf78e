"""benchmarks/performance.py: the loops it compares do the same work, and a tiny run writes sane JSON.

Nothing here is about speed (no timing thresholds in unit tests); the figures come from running the script.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import reprinvert as ri

from conftest import benchmark_script

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def perf():
    with benchmark_script("performance") as module:
        yield module


@pytest.mark.parametrize("which", [0, 1])
def test_truncated_copy_computes_the_layer(perf, which: int) -> None:
    case = perf.cases(True, CPU)[which]
    for layer in case["targets"]:
        trunc = perf.truncated(case["net"], layer)
        # On the path the loops run (gradients on, the input requiring them), as represent measures it: attention
        # has a separate inference path whose numbers differ in the last bits.
        got = trunc(case["x"].clone().requires_grad_(True)).detach()
        want = ri.represent(case["net"], layer, case["x"])
        # Bit-equal on Intel CPUs; AMD ones take other kernels for the two calls (seen: 3 units of float32 rounding
        # at the largest entries), so the bound is a few units of rounding of the representation's scale: a wrong
        # layer or a missing module is off by many orders of magnitude more.
        atol = 16 * torch.finfo(want.dtype).eps * float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=0, atol=atol)


def test_floor_and_user_loops_do_the_library_s_work(perf) -> None:
    """The floor, the hook loop and reprinvert.invert (the pixel Adam recipe they mirror, last iterate) reach the
    same input."""
    case = perf.cases(True, CPU)[0]
    net, x, layer = case["net"], case["x"], case["targets"][-1]
    floor = perf.floor_loop(perf.frozen_copy(perf.truncated(net, layer)), x, 6)
    frozen = perf.frozen_copy(net)
    hook = perf.user_loop(frozen, dict(frozen.named_modules())[layer], x, 6)
    lib = ri.invert(net, layer, x, recipe=perf.PIXEL_RECIPE, steps=6, track_best=False).input
    torch.testing.assert_close(hook, floor, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lib, floor, rtol=1e-5, atol=1e-5)


def test_batched_sweep_prototypes_equal_separate_inversions(perf) -> None:
    case = perf.cases(True, CPU)[0]
    net, x = perf.frozen_copy(case["net"]), case["x"]
    layers = ["stem", "layer1", "layer2"]
    batched = perf.batched_sweep(net, layers, x, 4)
    progressive = perf.progressive_sweep(net, layers, x, 4)
    b = x.shape[0]
    for k, layer in enumerate(layers):
        alone = perf.floor_loop(perf.frozen_copy(perf.truncated(net, layer)), x, 4)
        torch.testing.assert_close(batched[k * b:(k + 1) * b], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(progressive[k * b:(k + 1) * b], alone, rtol=1e-5, atol=1e-5)


def test_flop_counts_see_the_truncation(perf) -> None:
    case = perf.cases(True, CPU)[0]
    net, x = perf.frozen_copy(case["net"]), case["x"]
    shallow, deep = case["targets"]
    modules = dict(net.named_modules())
    full = perf.step_flops(lambda: perf._one_step_full(net, modules[shallow], x))
    full_deep = perf.step_flops(lambda: perf._one_step_full(net, modules[deep], x))
    trunc = perf.step_flops(lambda: perf._one_step_truncated(perf.truncated(net, shallow), x))
    trunc_deep = perf.step_flops(lambda: perf._one_step_truncated(perf.truncated(net, deep), x))
    assert 0 < trunc < full < full_deep
    assert trunc_deep <= full_deep  # only the head is skipped


def test_memory_child_reports_a_peak(perf) -> None:
    spec = dict(model="resnet", layer="layer2.0", device="cpu", quick=True)
    fb = perf.memory_child({**spec, "what": "forward-backward"})
    inv = perf.memory_child({**spec, "what": "invert", "steps": 200, "marks": True})
    assert fb["peak_bytes"] >= 0 and inv["peak_bytes"] >= 0
    assert sorted(inv["marks"]) == [100, 200]


def test_quick_run_writes_json(perf, tmp_path: Path) -> None:
    out = tmp_path / "perf.json"
    payload = perf.main(["--quick", "--only", "overhead", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    run = saved["overhead_truncation"]["run"]
    assert run["machine"]["device"] == "cpu" and run["quick"] is True
    rows = saved["overhead_truncation"]["rows"]
    assert [r["layer"] for r in rows] == [t for c in perf.cases(True, CPU) for t in c["targets"]] + ["0"]
    for row in rows:
        assert math.isfinite(row["overhead_end_to_end"]) and row["overhead_end_to_end"] > 0
        assert set(row["seconds_per_step"]) == {"floor", "reprinvert"}
    assert payload["overhead_truncation"]["table_overhead"].startswith("model")
    assert saved["cold_start"]["floor_over_reprinvert"] > 0
