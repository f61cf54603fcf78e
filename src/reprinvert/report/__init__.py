"""Turn a :class:`~reprinvert.Sweep` into things a person can look at and share.

* :func:`save_grid` — a PNG grid: one row per input, the original first, then what each layer keeps, each
  panel with its m_i and PSNR and each column coloured by its verdict (drawn with matplotlib when it is
  installed, with Pillow otherwise).
* :func:`save_plot` — the metrics against depth (needs matplotlib: ``pip install 'reprinvert[plot]'``).
* :func:`save_convergence` — the data loss and m_i against steps, per layer (needs matplotlib).
* :func:`save_csv` / :func:`save_json` — the per-layer (or per-sample) table; the JSON adds the provenance.
* :func:`save_html` — one self-contained page (images embedded as ``data:`` URIs, no scripts, no network) that
  opens in any browser.
* :func:`write_report` — all of the above into one folder.

Only the figures (:func:`grid_figure`, :func:`metrics_figure`, :func:`convergence_figure`) need matplotlib,
which is imported when they are called; everything else works without it (the grid then comes from Pillow and
the HTML page says how to add the plots).

Example:
    >>> import tempfile, torch, torch.nn as nn, reprinvert as ri
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    >>> result = ri.sweep(model, ri.data.sample_images(size=16)[:2], steps=5, progress=False)
    >>> paths = ri.report.write_report(result, tempfile.mkdtemp())
    >>> {"grid", "csv", "json", "html"} <= set(paths)  # plus plot and convergence with matplotlib
    True
"""

from __future__ import annotations

from pathlib import Path

from .._sweep_result import Sweep
from ._common import _PLOT_HINT, VERDICT_COLOURS, _check, _prepare, _write_text, can_show_images, verdict
from ._grid import _grid_png, grid_figure, grid_image, save_grid
from ._html import _html_page, _plot_png, html_page, save_html
from ._plots import convergence_figure, metrics_figure, save_convergence, save_plot
from ._tables import save_csv, save_json

__all__ = [
    "VERDICT_COLOURS",
    "can_show_images",
    "convergence_figure",
    "grid_figure",
    "grid_image",
    "html_page",
    "metrics_figure",
    "save_convergence",
    "save_csv",
    "save_grid",
    "save_html",
    "save_json",
    "save_plot",
    "verdict",
    "write_report",
]


# ---------------------------------------------------------------------------------------------- all
def write_report(
    result: Sweep, out: str | Path, *, title: str | None = None, plot: bool | None = None
) -> dict[str, Path]:
    """Write every report of a sweep into the folder ``out``.

    Files: ``grid.png`` (image inputs only), ``plot.png`` and ``convergence.png`` (when matplotlib is
    installed), ``metrics.csv``, ``samples.csv`` (per input), ``metrics.json`` and ``report.html``.

    Args:
        result: a :class:`~reprinvert.Sweep`.
        out: the folder (created if missing).
        title: the HTML page's title.
        plot: True requires the plot (an ImportError without matplotlib), False skips it, None (default) writes
            it when matplotlib is importable.

    Returns:
        ``{"grid": path, "plot": path, "convergence": path, "csv": path, "samples": path, "json": path,
        "html": path}`` for the files written.
    """
    result = _check(result)
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{folder}': {exc.strerror or exc}") from None
    paths: dict[str, Path] = {}
    pngs: dict[str, bytes | None] = {}  # each figure rendered once, for its file and for the page
    if can_show_images(result):
        pngs["grid"] = grid = _grid_png(result)
        paths["grid"] = _prepare(folder / "grid.png")
        paths["grid"].write_bytes(grid)
    want_plot = plot
    if plot is None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            want_plot = False
        else:
            want_plot = True
    if want_plot:
        for name, figure in (("plot", metrics_figure), ("convergence", convergence_figure)):
            png = _plot_png(result, figure)
            if png is None:
                raise ImportError(_PLOT_HINT)
            pngs[name] = png
            paths[name] = _prepare(folder / f"{name}.png")
            paths[name].write_bytes(png)
    paths["csv"] = save_csv(result, folder / "metrics.csv")
    paths["samples"] = save_csv(result, folder / "samples.csv", per_sample=True)
    paths["json"] = save_json(result, folder / "metrics.json")
    page = _html_page(result, title=title, plot=plot is not False, pngs=pngs)
    paths["html"] = _write_text(folder / "report.html", page)
    return paths
