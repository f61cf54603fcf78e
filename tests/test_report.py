"""reprinvert.report: grid, plot, CSV, JSON and a self-contained HTML page rendered in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import reprinvert as ri
from reprinvert import report
from reprinvert._sweep_result import METRICS

from zoo import SmallCNN, TokenModel

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)


@pytest.fixture(scope="module")
def result() -> ri.Sweep:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = ri.data.sample_images(size=8)[:3]
    return ri.sweep(model, x, layers=["conv1", "relu1", "conv2"], steps=3, clamp=(0, 1), progress=False)


@pytest.fixture(scope="module")
def token_result() -> ri.Sweep:
    torch.manual_seed(0)
    return ri.sweep(TokenModel(), torch.tensor([[1, 2, 3]]), start="embed", steps=2, progress=False)


def _no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def test_grid_columns_and_rows(result: ri.Sweep) -> None:
    one, two = report.grid_image(result, scale=1), report.grid_image(result, scale=2)
    assert two.size[0] - one.size[0] == 4 * 8  # 4 columns (original + 3 layers) of width 8
    assert two.size[1] - one.size[1] == 3 * 8  # 3 rows of height 8
    assert report.grid_image(result, scale=1, max_rows=1).size[1] < one.size[1]
    # The original column shows the input: the top-left cell of a label-free layout is the first image.
    plain = ri.data.make_grid(result.reconstructions(), padding=0)
    assert plain.getpixel((0, 0)) == tuple(round(float(v) * 255) for v in result.original[0, :, 0, 0])


def test_write_report_files(result: ri.Sweep, tmp_path: Path) -> None:
    paths = report.write_report(result, tmp_path / "out")
    expected = {"grid", "csv", "samples", "json", "html"} | ({"plot", "convergence"} if _has_matplotlib() else set())
    assert set(paths) == expected and all(p.is_file() for p in paths.values())
    with Image.open(paths["grid"]) as grid:
        assert grid.size == Image.open(io.BytesIO(report._grid_png(result))).size
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["layer"] for r in rows] == ["conv1", "relu1", "conv2"]
    assert rows[2]["representation_shape"] == "3x8x4x4"
    for row, sweep_row in zip(rows, result.rows):
        for key, _ in METRICS:
            assert float(row[key]) == pytest.approx(getattr(sweep_row, key), rel=1e-12)
    samples = list(csv.DictReader(paths["samples"].open()))
    assert len(samples) == 9 and samples[4]["sample"] == "1" and samples[4]["represents"] in ("True", "False")

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(paths["json"].read_text(), parse_constant=no_constants)
    assert data["provenance"]["torch"] == torch.__version__ and data["provenance"]["recipe"]["steps"] == 3
    assert [r["layer"] for r in data["layers"]] == ["conv1", "relu1", "conv2"] and len(data["per_sample"]) == 9


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _data_images(page: str) -> list[Image.Image]:
    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.load()
        out.append(img)
    return out


def test_html_is_self_contained(result: ri.Sweep, tmp_path: Path) -> None:
    page = report.html_page(result, title="T <&>")
    assert "<title>T &lt;&amp;&gt;</title>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    images = _data_images(page)
    assert images and images[0].size == Image.open(io.BytesIO(report._grid_png(result))).size
    assert len(images) == (3 if _has_matplotlib() else 1)  # grid, metrics plot, convergence
    for row in result.rows:
        assert f'<td class="name">{row.layer}</td>' in page
    assert ri.__version__ in page and torch.__version__ in page


def test_without_matplotlib(result: ri.Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_matplotlib(monkeypatch)
    with pytest.raises(ImportError, match=r"matplotlib: pip install 'reprinvert\[plot\]'"):
        report.save_plot(result, tmp_path / "p.png")
    with pytest.raises(ImportError, match="matplotlib"):
        report.write_report(result, tmp_path / "forced", plot=True)
    paths = report.write_report(result, tmp_path / "out")
    assert set(paths) == {"grid", "csv", "samples", "json", "html"}
    page = paths["html"].read_text()
    assert "No plot: the metrics plot needs matplotlib" in page and len(_data_images(page)) == 1


def test_plot(result: ri.Sweep, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fig = report.metrics_figure(result)
    assert len(fig.axes) == 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["conv1", "relu1", "conv2"]
    assert list(fig.axes[0].lines[0].get_ydata()) == [r.embedding_distance for r in result.rows]
    with Image.open(report.save_plot(result, tmp_path / "plot.png")) as img:
        assert img.size[0] > 600
    assert report.save_plot(result, tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")


def test_non_image_sweep(token_result: ri.Sweep, tmp_path: Path) -> None:
    assert not report.can_show_images(token_result)
    with pytest.raises(ValueError, match="the sweep's inputs are not images"):
        report.save_grid(token_result, tmp_path / "g.png")
    paths = report.write_report(token_result, tmp_path / "tok", plot=False)
    assert "grid" not in paths and "plot" not in paths
    assert "Reconstructions" not in paths["html"].read_text()


def test_bad_arguments(result: ri.Sweep, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"result must be a reprinvert\.Sweep"):
        report.save_csv(ri.invert(nn.Linear(2, 2), "", torch.rand(1, 2), steps=1), tmp_path / "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rows=0"):
        report.grid_image(result, max_rows=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create the output folder"):
        report.write_report(result, blocker / "sub")


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1200,900", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
def test_html_renders_in_headless_chromium(result: ri.Sweep, tmp_path: Path) -> None:
    page = report.save_html(result, tmp_path / "report.html")
    # 1. Every embedded image decodes in the browser: a probe script (added to a copy) counts loaded images.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => { const i = [...document.images]; "
            "document.body.setAttribute('data-loaded', i.filter(e => e.complete && e.naturalWidth > 0).length "
            "+ '/' + i.length); });</script></body>",
        )
    )
    done = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # No console messages from the page (errors, failed loads): Chromium logs each as a CONSOLE line. The probe
    # script itself writes nothing to the console.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    n = 3 if _has_matplotlib() else 1
    assert f'data-loaded="{n}/{n}"' in done.stdout
    assert "Per layer (means over the inputs)" in done.stdout
    # 2. The page itself renders to a screenshot with real content (the grid's photos: many colours).
    shot = tmp_path / "shot.png"
    done = _chromium([f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 500


@pytest.mark.parametrize(
    ("verdict", "notes", "label"),
    [
        ("kept", (), "kept"),
        ("lost", ("farther than the start: 1 of 2 samples",), "lost, farther than the start"),
        ("undecided", ("at chance level: 2 of 2 samples",), "undecided, at chance level"),
    ],
)
def test_verdict_shows_the_rows_verdict_and_its_notes(result: ri.Sweep, verdict: str, notes: tuple[str, ...],
                                                     label: str) -> None:
    import dataclasses

    row = dataclasses.replace(result.rows[0], verdict=verdict, notes=notes, evidence="because")
    assert report.verdict(row) == (label, verdict)
    assert verdict in report.VERDICT_COLOURS
    relabelled = dataclasses.replace(result, rows=(row, *result.rows[1:]))
    page = report.html_page(relabelled)
    assert f">{label}<" in page and f'<tr class="{verdict}">' in page and "because" in page


def _texts(fig: object) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]  # type: ignore[attr-defined]


@pytest.mark.skipif(not _has_matplotlib(), reason="needs matplotlib (the plot extra)")
def test_grid_figure_names_layers_in_full_with_each_panels_numbers(tmp_path: Path) -> None:
    """Full dotted layer names (a bitmap font used to drop the dots), the verdict in its colour, and each
    reconstruction's m_i and PSNR under it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Conv2d(4, 4, 3, stride=2))
    x = ri.data.sample_images(size=8)[:2]
    sweep = ri.sweep(model, x, layers=["0.0", "1"], steps=3, progress=False)
    fig = report.grid_figure(sweep)
    texts = _texts(fig)
    for row, inv in zip(sweep.rows, sweep.inversions):
        label, cls = report.verdict(row)
        assert f"{row.layer}\n{label}" in texts
        title = next(ax.title for ax in fig.axes if ax.get_title() == f"{row.layer}\n{label}")
        from matplotlib.colors import to_hex

        assert to_hex(title.get_color()) == report.VERDICT_COLOURS[cls]
        for b in range(2):
            m_i, psnr = float(inv.metrics.input_distance[b]), float(inv.metrics.psnr[b])
            assert f"m_i {m_i:.3g} · {psnr:.1f} dB" in texts
    assert "original" in texts
    path = report.save_grid(sweep, tmp_path / "g.png")
    with Image.open(path) as img:
        assert img.size[0] > 300


@pytest.mark.skipif(not _has_matplotlib(), reason="needs matplotlib (the plot extra)")
def test_plots_have_units_plain_log_ticks_and_baselines(result: ri.Sweep) -> None:
    fig = report.metrics_figure(result)
    for ax in fig.axes:
        assert ax.get_ylabel(), ax.get_title()
        fig.canvas.draw()  # tick labels exist once drawn
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and not any("times" in t or "^" in t or "10^" in t for t in labels), labels
    assert "chance (unrelated input)" in _texts(fig)
    conv = report.convergence_figure(result)
    loss_ax, mi_ax = conv.axes[:2]
    assert loss_ax.get_xlabel() == "step" and "m_i" in mi_ax.get_ylabel()
    lines = {line.get_label(): line for line in mi_ax.get_lines()}
    for row, inv in zip(result.rows, result.inversions):
        ys = lines[row.layer].get_ydata()
        assert list(ys) == pytest.approx(inv.history.input_distance.double().mean(1).tolist())
    assert "chance (unrelated input)" in lines and "‖x′ − x‖ (faint noise)" in lines
