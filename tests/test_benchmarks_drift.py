"""benchmarks/drift.py: the reported iterate's curve read from a history, and a quick run's results and table."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import reprinvert as ri

from conftest import benchmark_script

# forward-mode differentiation loads torch's decompositions for it once, which scripts them with torch.jit (a
# DeprecationWarning from inside torch, nothing of ours)
_TORCH_JIT = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning")


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


@_TORCH_JIT
def test_gauss_newton_inverts_the_identity_in_one_step(bench) -> None:  # type: ignore[no-untyped-def]
    """The known answer: J = I, so the first minimum-norm step lands on x exactly."""
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Conv2d(3, 2, 3)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    xg, curve = bench.gauss_newton(model, "0", x, steps=2)
    assert torch.equal(xg, x)
    assert curve[0][1] > 0 and curve[1] == (0.0, 0.0) and curve[2] == (0.0, 0.0)


@_TORCH_JIT
def test_gauss_newton_on_a_narrow_linear_layer_is_the_projection_of_the_start(bench) -> None:  # type: ignore[no-untyped-def]
    """Hand-computed in float64: on y = W z + b with 5 outputs for 12 inputs, the search from the grey image 0.5
    converges to 0.5 + W^+ W (x - 0.5), the input with x's representation closest to the start; m_i never rises
    on the way, because each step leaves the part of the error the layer does not see as it is."""
    g = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(12, 5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 12, generator=g, dtype=torch.float64))
    x = 0.5 + 0.05 * torch.randn(3, 12, generator=g, dtype=torch.float64)  # the projection stays inside [0, 1]
    model = torch.nn.Sequential(layer).eval()
    xg, curve = bench.gauss_newton(model, "0", x, steps=4)
    w = layer.weight.detach()
    expected = 0.5 + (x - 0.5) @ (torch.linalg.pinv(w) @ w).T
    torch.testing.assert_close(xg, expected, rtol=0, atol=1e-10)
    distances = [d for _, d in curve]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(distances))
    assert distances[-1] < distances[0]
    # and its error is only the part of x - 0.5 the layer does not see
    null = (x - 0.5) - (x - 0.5) @ (torch.linalg.pinv(w) @ w).T
    assert distances[-1] == pytest.approx(float(null.norm(dim=1).mean()), rel=1e-9)


@_TORCH_JIT
def test_gauss_newton_only_accepts_steps_that_lower_the_error(bench) -> None:  # type: ignore[no-untyped-def]
    """On a nonlinear layer (ReLU, narrower than its input) the squared error never rises along the run, and the
    curve has one entry per step and one for the start."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6)).eval()
    x = torch.rand(4, 20, generator=torch.Generator().manual_seed(2))
    xg, curve = bench.gauss_newton(model, "2", x, steps=5)
    errors = [e for e, _ in curve]
    assert len(curve) == 6 and all(b <= a for a, b in itertools.pairwise(errors)) and errors[-1] < errors[0]
    assert xg.min() >= 0 and xg.max() <= 1 and xg.shape == x.shape


@_TORCH_JIT
def test_quick_bound_run_is_kept_beside_the_budgets(bench, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("skimage")
    out = tmp_path / "drift.json"
    out.write_text(json.dumps({"cases": {}, "command": "earlier", "finished": "then"}))
    bench.main(["--bound", "--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["command"] == "earlier"  # the budgets' results are kept
    runs = data["bound"]["width-relu-0.5x layers.1"]
    assert list(runs) == ["2", "6"]
    for steps, run in runs.items():
        losses = [r["loss"] for r in run["rows"]]
        assert losses == sorted(losses, reverse=True) and run["rows"][-1]["step"] == int(steps)
        assert len(run["psnr"]) == 3 and run["cpu_seconds"] > 0
    capsys.readouterr()
    bench.main(["--table", "--out", str(out)])
    assert "| width-relu-0.5x layers.1 | 6 |" in capsys.readouterr().out.split("minimum-norm Gauss-Newton")[1]


def test_rule_runs_its_recipes_on_smaller_layers_the_default_elsewhere(bench, monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 2, 3, stride=2, padding=1)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    entry = dict(name="tiny", model=model, x=x, layers=["1", "2"], normalize=None)  # 512 and 32 numbers for 192
    monkeypatch.setattr(bench, "RULE_CASES", ("tiny",))
    monkeypatch.setattr(bench.iq, "cases", lambda quick: {"tiny": lambda: [entry]})
    out = tmp_path / "drift.json"
    bench.main(["--rule", "--out", str(out)])
    rule = json.loads(out.read_text())["rule"]
    assert list(rule) == ["tiny 1", "tiny 2"]
    assert list(rule["tiny 1"]) == ["output_over_input", "default"]  # more numbers than the input: the default only
    row = rule["tiny 2"]
    assert row["output_over_input"] == pytest.approx(32 / 192)
    for label in bench.RULE:
        assert len(row[label]["psnr"]) == 2 and row[label]["climb"] >= 0 and row[label]["cpu_seconds"] > 0
    capsys.readouterr()
    bench.main(["--table", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| tiny 2 | 0.17 |" in table and "| tiny 1 | 2.67 |" in table and " | - |" in table
