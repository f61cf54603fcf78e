from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from reprinvert.cli import main


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--steps" in capsys.readouterr().out
    assert main([]) == 0  # no command: prints help


def test_demo_writes_grid_and_metrics(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "3", "--size", "16", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert (out / "grid.png").stat().st_size > 0
    result = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in result["layers"]] == ["stage1", "stage2", "stage3", "stage4"]
    for row in result["layers"]:
        for key in ("embedding_distance", "reference_distance", "input_distance", "perturbation_distance",
                    "normalized_feature_error", "psnr"):
            assert math.isfinite(row[key]), key
        assert isinstance(row["represents"], bool)
    assert result["steps"] == 3 and result["versions"]["torch"]


def test_user_mistakes_give_one_line_and_exit_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--image", "lena", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reprinvert: error: image='lena' is not a bundled image") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--steps", "0"])
    assert exc.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def test_python_dash_m() -> None:
    out = subprocess.run([sys.executable, "-m", "reprinvert", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("reprinvert ")
