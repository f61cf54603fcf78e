from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

import reprinvert
from reprinvert._demo import LAYERS, DemoCNN, run_demo
from reprinvert.cli import main

METRIC_KEYS = (
    "embedding_distance",
    "reference_distance",
    "input_distance",
    "perturbation_distance",
    "normalized_feature_error",
    "psnr",
)


def _one_error_line(err: str) -> str:
    assert err.startswith("reprinvert: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--out", "--steps", "--size", "--seed", "--image", "--quiet", "astronaut, chelsea"):
        assert option in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"reprinvert {reprinvert.__version__}\n"
    assert main([]) == 0  # no command: the help
    assert "usage: reprinvert" in capsys.readouterr().out


def test_demo_writes_grid_and_metrics(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "3", "--size", "32", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "UNTRAINED" in printed and "m_g" in printed and str(out.resolve()) in printed
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] > 5 * 32  # original + 4 layers
    result = json.loads((out / "metrics.json").read_text())
    # the sweep's schema (what `reprinvert sweep` writes), plus what the demo ran
    assert {"provenance", "seconds", "layers", "per_sample", "demo"} <= set(result)
    assert [row["layer"] for row in result["layers"]] == list(LAYERS)
    for row in result["layers"]:
        for key in (*METRIC_KEYS, "size_ratio", "seconds", "represents", "beats_chance"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
    assert [row["representation_shape"] for row in result["layers"]] == [
        [1, 16, 32, 32],
        [1, 32, 16, 16],
        [1, 64, 8, 8],
        [1, 64, 4, 4],
    ]
    demo = result["demo"]
    assert (demo["steps"], demo["seed"], demo["size"], demo["image"]) == (3, 1, 32, "astronaut")
    prov = result["provenance"]
    assert prov["recipe"]["steps"] == 3 and prov["recipe"]["clamp"] == [0.0, 1.0] and prov["inputs"] == ["astronaut"]
    assert "untrained" in demo["model"] and "random" in demo["note"]
    assert prov["torch"] == torch.__version__ and prov["reprinvert"] == reprinvert.__version__
    # the same self-contained report as `reprinvert sweep`, with the same numbers
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="grid.png"' not in html
    for row in result["layers"]:
        assert f"{row['layer']}" in html
    assert "report.html" in printed


def test_demo_quiet_and_return_value(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_demo(tmp_path, steps=2, size=16, image="rocket", quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert result == json.loads((tmp_path / "metrics.json").read_text())


def test_user_mistakes_one_line_exit_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--image", "lena", "--out", str(tmp_path), "--quiet"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "image='lena' is not a bundled image; available: astronaut, chelsea, coffee, rocket" in err
    assert main(["demo", "--steps", "0"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "argument --steps: expected a positive integer, got 0 (see 'reprinvert demo --help')" in err
    assert main(["demo", "--size", "big"]) == 2
    assert "expected a positive integer, got 'big'" in _one_error_line(capsys.readouterr().err)
    assert main(["invent"]) == 2
    assert "invalid choice: 'invent'" in _one_error_line(capsys.readouterr().err)
    assert main(["demo", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in _one_error_line(capsys.readouterr().err)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["demo", "--out", str(blocker / "sub"), "--steps", "1", "--size", "8", "--quiet"]) == 2
    assert "cannot create the output folder" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.png"))


def test_demo_cnn_seeded_without_global_rng() -> None:
    state = torch.get_rng_state()
    a, b, c = DemoCNN(seed=3), DemoCNN(seed=3), DemoCNN(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.stage1[0].weight, c.stage1[0].weight)
    assert a.eval()(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    assert reprinvert.list_layers(a)[:4] == ["stage1", "stage1.0", "stage1.1", "stage1.2"]


def test_python_dash_m_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reprinvert", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: reprinvert") and "demo" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "reprinvert", "demo", "--steps", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    _one_error_line(bad.stderr)
