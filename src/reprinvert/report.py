"""Turn a :class:`~reprinvert.Sweep` into things a person can look at and share.

* :func:`save_grid` — a PNG grid: one row per input, the original first, then what each layer keeps.
* :func:`save_plot` — the metrics against depth (needs matplotlib: ``pip install 'reprinvert[plot]'``).
* :func:`save_csv` / :func:`save_json` — the per-layer (or per-sample) table; the JSON adds the provenance.
* :func:`save_html` — one self-contained page (images embedded as ``data:`` URIs, no scripts, no network) that
  opens in any browser.
* :func:`write_report` — all of the above into one folder.

Only :func:`save_plot` and :func:`metrics_figure` need matplotlib, which is imported when they are called;
everything else works without it (the HTML page then says how to add the plot).

Example:
    >>> import tempfile, torch, torch.nn as nn, reprinvert as ri
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    >>> result = ri.sweep(model, ri.data.sample_images(size=16)[:2], steps=5, progress=False)
    >>> paths = ri.report.write_report(result, tempfile.mkdtemp())
    >>> sorted(paths)[:4]
    ['csv', 'grid', 'html', 'json']
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import make_grid
from .sweep import METRICS, Sweep, SweepRow

__all__ = [
    "can_show_images",
    "grid_image",
    "html_page",
    "metrics_figure",
    "save_csv",
    "save_grid",
    "save_html",
    "save_json",
    "save_plot",
    "verdict",
    "write_report",
]

_PLOT_HINT = "the metrics plot needs matplotlib: pip install 'reprinvert[plot]'"


def _check(result: Any) -> Sweep:
    if not isinstance(result, Sweep):
        raise TypeError(
            f"result must be a reprinvert.Sweep (what reprinvert.sweep() returns), got {type(result).__name__}"
        )
    if not result.rows:
        raise ValueError("result holds no layers; nothing to report")
    return result


def _prepare(path: str | Path) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder '{p.parent}': {exc.strerror or exc}") from None
    return p


def _write_text(path: str | Path, text: str) -> Path:
    p = _prepare(path)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot write '{p}': {exc.strerror or exc}") from None
    return p


# ---------------------------------------------------------------------------------------------- grid
def can_show_images(result: Sweep) -> bool:
    """Whether the sweep's inputs and reconstructions are images ``(B, C, H, W)`` with C = 1 or 3.

    False for token models (``start=`` sweeps optimise embeddings), signals and feature vectors.
    """
    cols = _check(result).reconstructions()
    return all(c.dim() == 4 and c.shape[1] in (1, 3) and c.is_floating_point() for c in cols)


def verdict(row: SweepRow) -> tuple[str, str]:
    """What a layer's inversions measured, as a short label and a class (``"yes"``, ``"some"``, ``"no"``).

    * ``"recovered"`` (yes): every inversion lands closer to x than an unrelated input does, and on average
      within the size of the faint reference perturbation (m_i <= ||x' - x||).
    * ``"beats chance"`` (some): every inversion lands closer to x than an unrelated input, but farther than the
      faint perturbation.
    * ``"k% beat chance"`` (some) / ``"chance level"`` (no): some / none of them do. A layer may *represent* x
      (m_g < m_r) and still be here: the search found another input the layer cannot tell from x.
    """
    if row.beats_chance >= 1:
        if row.input_distance <= row.perturbation_distance:
            return "recovered", "yes"
        return "beats chance", "some"
    if row.beats_chance > 0:
        return f"{row.beats_chance:.0%} beat chance", "some"
    return "chance level", "no"


def _labels(result: Sweep) -> list[str]:
    return ["original", *(f"{r.layer} ({verdict(r)[0]})" for r in result.rows)]


def _auto_scale(h: int, w: int) -> int:
    return max(1, min(8, math.ceil(96 / max(h, w, 1))))


def grid_image(result: Sweep, *, scale: int | None = None, max_rows: int | None = 8) -> Any:
    """The grid as a ``PIL.Image``: rows = inputs, columns = the original then each layer's reconstruction.

    Column titles are ``"<layer> (<verdict>)"`` with the measured :func:`verdict`: ``recovered``, ``beats
    chance``, the fraction that beat chance, or ``chance level``.

    Args:
        result: a :class:`~reprinvert.Sweep` of image inputs (see :func:`can_show_images`).
        scale: nearest-neighbour upscaling of each cell (default: enough for cells of about 96 pixels).
        max_rows: show at most this many inputs (None: all).

    Raises:
        ValueError: the sweep's inputs are not images.
    """
    if not can_show_images(result):
        shapes = [tuple(c.shape) for c in result.reconstructions()[:2]]
        raise ValueError(
            f"the sweep's inputs are not images (shapes {shapes}; a grid needs (B, C, H, W) with C = 1 or 3): "
            "use save_csv / save_json / save_html for token, signal or feature inputs"
        )
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows={max_rows!r}: expected a positive int or None")
    cols = [c.detach().cpu()[:max_rows] for c in result.reconstructions()]
    h, w = cols[0].shape[-2:]
    names = result.provenance.inputs
    rows = [names[i] if i < len(names) else f"#{i}" for i in range(cols[0].shape[0])]
    return make_grid(
        cols,
        scale=_auto_scale(h, w) if scale is None else scale,
        column_labels=_labels(result),
        row_labels=rows if len(rows) > 1 else None,
    )


def save_grid(
    result: Sweep, path: str | Path, *, scale: int | None = None, max_rows: int | None = 8
) -> Path:
    """Write :func:`grid_image` as a PNG (missing folders are created) and return its path."""
    img = grid_image(result, scale=scale, max_rows=max_rows)
    p = _prepare(path)
    try:
        img.save(p, format="PNG")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot write '{p}': {exc}") from None
    return p


# ---------------------------------------------------------------------------------------------- plot
def _series(result: Sweep, key: str) -> list[float]:
    values = []
    for r in result.rows:
        v = float(getattr(r, key))
        values.append(v if math.isfinite(v) else float("nan"))
    return values


def metrics_figure(result: Sweep, *, width: float = 11.0) -> Any:
    """The metrics against depth as a matplotlib ``Figure`` (built without pyplot: no global state).

    Three panels over the layers in sweep order: m_g against the reference m_r (the layer represents the
    input below the reference line), m_i against the perturbation size ||x' - x||, and the normalized
    feature error. Log scales where every value is positive.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
    """
    result = _check(result)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_PLOT_HINT) from None
    layers = list(result.layers)
    xs = list(range(len(layers)))
    fig = Figure(figsize=(width, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("embedding distance", (("embedding_distance", "m_g (inversion)", "o-"),
                                ("reference_distance", "m_r (x + N(0, σ²))", "s--"))),
        ("input distance", (("input_distance", "m_i = ||x_g − x||", "o-"),
                            ("perturbation_distance", "||x′ − x||", "s--"))),
        ("normalized feature error", (("normalized_feature_error", "||Δrep||² / ||rep||²", "o-"),)),
    )
    for ax, (title, series) in zip(axes, panels):
        positive = True
        for key, label, style in series:
            ys = _series(result, key)
            positive = positive and all(y > 0 for y in ys if not math.isnan(y))
            ax.plot(xs, ys, style, label=label, markersize=4)
        if positive:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(layers, rotation=45 if len(layers) > 3 else 0, ha="right" if len(layers) > 3 else "center",
                           fontsize=8)
        ax.set_xlabel("layer (depth →)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    prov = result.provenance
    fig.suptitle(
        f"{prov.model}: recipe {prov.recipe.get('name', '?')}, {prov.steps} steps, seed {prov.seed}", fontsize=10
    )
    return fig


def save_plot(result: Sweep, path: str | Path, *, dpi: int = 110) -> Path:
    """Write :func:`metrics_figure` as an image (PNG, SVG or PDF from the suffix) and return its path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
    """
    fig = metrics_figure(result)
    p = _prepare(path)
    try:
        fig.savefig(p, dpi=dpi)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot write '{p}': {exc}") from None
    return p


# ---------------------------------------------------------------------------------------------- tables
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return value


def save_csv(result: Sweep, path: str | Path, *, per_sample: bool = False) -> Path:
    """Write the metrics table as CSV: one row per layer (batch means) or per (layer, input).

    Shapes are written as ``1x16x32x32``; missing or non-finite values as empty cells.
    """
    rows = _check(result).table(per_sample=per_sample)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return _write_text(path, buf.getvalue())


def save_json(result: Sweep, path: str | Path) -> Path:
    """Write :meth:`Sweep.to_dict` (provenance, per-layer and per-sample rows) as strict JSON (no NaN)."""
    data = _check(result).to_dict()
    return _write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------- html
def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _plot_png(result: Sweep) -> bytes | None:
    try:
        fig = metrics_figure(result)
    except ImportError:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.name { text-align: left; font-family: monospace; }
tr.yes td.rep { background: #d9f2d9; } tr.some td.rep { background: #fbefd0; } tr.no td.rep { background: #f8dcdc; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.9em; }
"""


def _table_html(head: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        cells = []
        for j, value in enumerate(row):
            td = ' class="name"' if j == 0 else (' class="rep"' if head[j] == "verdict" else "")
            cells.append(f"<td{td}>{html.escape(str(value))}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def html_page(result: Sweep, *, title: str | None = None, plot: bool = True) -> str:
    """The report as one self-contained HTML document (a string).

    Images (the grid, and the metrics plot when matplotlib is installed and ``plot`` is true) are embedded as
    base64 ``data:`` URIs; the page has no scripts and loads nothing from the network.
    """
    return _html_page(result, title=title, plot=plot, plot_png=None)


def _html_page(result: Sweep, *, title: str | None, plot: bool, plot_png: bytes | None) -> str:
    result = _check(result)
    prov = result.provenance
    title = title or f"reprinvert sweep: {prov.model}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">How much of the input survives at each layer? Each reconstruction x_g is an input the '
        "model maps (almost) to the same representation as the original x. The layer <em>represents</em> x when "
        "m_g = ||rep(x) − rep(x_g)|| is below m_r = ||rep(x) − rep(x′)|| for a faint perturbation "
        "x′ = x + N(0, σ²); m_i = ||x_g − x|| says how far from x the search landed, next to the distance of a "
        "faint perturbation (||x′ − x||) and of an unrelated input (chance: another input of the batch, or a "
        "shuffle of x).</p>",
    ]
    if can_show_images(result):
        png = _png_bytes(grid_image(result))
        parts += [
            "<h2>Reconstructions</h2>",
            '<p class="note">Rows: inputs. Columns: the original, then the inversion of each layer, titled by '
            "what it measured: <em>recovered</em> (closer to x than an unrelated input, and within the faint "
            "perturbation's distance), <em>beats chance</em> (closer than an unrelated input only), or "
            "<em>chance level</em>.</p>",
            f'<img id="grid" alt="grid of reconstructions per layer" src="{_data_uri(png)}">',
        ]
    parts.append("<h2>Metrics against depth</h2>")
    if plot and plot_png is None:
        plot_png = _plot_png(result)
    elif not plot:
        plot_png = None
    if plot_png is not None:
        parts.append(f'<img id="plot" alt="metrics against depth" src="{_data_uri(plot_png)}">')
    else:
        parts.append(f'<p class="note">No plot: {html.escape(_PLOT_HINT if plot else "disabled")}.</p>')
    head = ["layer", "type", "shape", "size/input", *(label for _, label in METRICS), "represents", "verdict",
            "seconds"]
    body, classes = [], []
    for r in result.rows:
        label, cls = verdict(r)
        body.append([
            r.layer, r.type, "x".join(map(str, r.representation_shape)), _num(r.size_ratio),
            *(_num(getattr(r, k)) for k, _ in METRICS), f"{r.represents:.0%}", label, f"{r.seconds:.2f}",
        ])
        classes.append(cls)
    parts += ["<h2>Per layer (means over the inputs)</h2>", _table_html(head, body, classes)]
    per = result.table(per_sample=True)
    keys = ["layer", "sample", *(["input"] if result.provenance.inputs else []), *(k for k, _ in METRICS),
            "represents", "beats_chance"]
    parts += [
        "<details><summary>Per input</summary>",
        _table_html(keys, [[_num(row[k]) for k in keys] for row in per]),
        "</details>",
    ]
    info = [
        ("model", prov.model), ("input", f"{list(prov.input_shape)} {prov.input_dtype}"), ("device", prov.device),
        ("recipe", json.dumps(prov.recipe)), ("steps", prov.steps), ("seed", prov.seed),
        ("options", json.dumps(prov.options)), ("reprinvert", prov.reprinvert), ("torch", prov.torch),
        ("python", prov.python), ("created", prov.created), ("total seconds", f"{result.seconds:.1f}"),
    ]
    parts += ["<h2>Provenance</h2>", _table_html(["field", "value"], info), "</body></html>"]
    return "\n".join(parts) + "\n"


def save_html(result: Sweep, path: str | Path, *, title: str | None = None, plot: bool = True) -> Path:
    """Write :func:`html_page` to ``path`` (UTF-8) and return the path."""
    return _write_text(path, html_page(result, title=title, plot=plot))


# ---------------------------------------------------------------------------------------------- all
def write_report(
    result: Sweep, out: str | Path, *, title: str | None = None, plot: bool | None = None
) -> dict[str, Path]:
    """Write every report of a sweep into the folder ``out``.

    Files: ``grid.png`` (image inputs only), ``plot.png`` (when matplotlib is installed), ``metrics.csv``,
    ``samples.csv`` (per input), ``metrics.json`` and ``report.html``.

    Args:
        result: a :class:`~reprinvert.Sweep`.
        out: the folder (created if missing).
        title: the HTML page's title.
        plot: True requires the plot (an ImportError without matplotlib), False skips it, None (default) writes
            it when matplotlib is importable.

    Returns:
        ``{"grid": path, "plot": path, "csv": path, "samples": path, "json": path, "html": path}`` for the files
        written.
    """
    result = _check(result)
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{folder}': {exc.strerror or exc}") from None
    paths: dict[str, Path] = {}
    if can_show_images(result):
        paths["grid"] = save_grid(result, folder / "grid.png")
    want_plot = plot
    if plot is None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            want_plot = False
        else:
            want_plot = True
    plot_png = None
    if want_plot:
        plot_png = _plot_png(result)
        if plot_png is None:
            raise ImportError(_PLOT_HINT)
        paths["plot"] = _prepare(folder / "plot.png")
        paths["plot"].write_bytes(plot_png)
    paths["csv"] = save_csv(result, folder / "metrics.csv")
    paths["samples"] = save_csv(result, folder / "samples.csv", per_sample=True)
    paths["json"] = save_json(result, folder / "metrics.json")
    page = _html_page(result, title=title, plot=plot is not False, plot_png=plot_png)
    paths["html"] = _write_text(folder / "report.html", page)
    return paths

