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
from ._sweep_result import METRICS, Sweep, SweepRow

__all__ = [
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

_PLOT_HINT = "the metrics plot needs matplotlib: pip install 'reprinvert[plot]'"
#: Colours of the verdict classes (:func:`verdict`) in figures and the HTML table.
VERDICT_COLOURS = {"yes": "#1a7f37", "some": "#b35900", "no": "#c62828"}


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


def _matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _grid_png(result: Sweep, *, scale: int | None = None, max_rows: int | None = 8) -> bytes:
    """The grid as PNG bytes: :func:`grid_figure` when matplotlib is installed, else :func:`grid_image`."""
    if _matplotlib() and scale is None:
        return _figure_png(grid_figure(result, max_rows=max_rows), dpi=110)
    return _png_bytes(grid_image(result, scale=scale, max_rows=max_rows))


def save_grid(
    result: Sweep, path: str | Path, *, scale: int | None = None, max_rows: int | None = 8
) -> Path:
    """Write the grid as a PNG (missing folders are created) and return its path.

    With matplotlib installed (and no ``scale``) the grid is :func:`grid_figure`: full layer names in a real
    font, each panel's m_i and PSNR, each column coloured by its verdict. Otherwise it is Pillow's
    :func:`grid_image`, with the verdict in the column titles.
    """
    png = _grid_png(result, scale=scale, max_rows=max_rows)
    p = _prepare(path)
    try:
        p.write_bytes(png)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot write '{p}': {exc}") from None
    return p


def grid_figure(result: Sweep, *, max_rows: int | None = 8, cell: float = 1.45) -> Any:
    """The reconstructions as a matplotlib ``Figure`` (built without pyplot): rows = inputs, columns = the
    original, then each layer's reconstruction.

    Each column is titled with the layer's full name and its measured :func:`verdict`, in the verdict's colour
    (green: recovered; orange: beats chance; red: chance level), and framed in that colour; under each
    reconstruction, that input's m_i = ||x_g - x|| and PSNR.

    Args:
        result: a :class:`~reprinvert.Sweep` of image inputs (see :func:`can_show_images`).
        max_rows: show at most this many inputs (None: all).
        cell: the size of one panel in inches.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
        ValueError: the sweep's inputs are not images.
    """
    result = _check(result)
    if not can_show_images(result):
        grid_image(result)  # raises the explanatory ValueError
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows={max_rows!r}: expected a positive int or None")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_PLOT_HINT) from None
    cols = [c.detach().cpu().float().clamp(0, 1)[:max_rows] for c in result.reconstructions()]
    n_rows, n_cols = cols[0].shape[0], len(cols)
    names = result.provenance.inputs
    fig = Figure(figsize=(n_cols * cell + 0.3, n_rows * (cell + 0.3) + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for j, col in enumerate(cols):
        if j:
            row = result.rows[j - 1]
            label, cls = verdict(row)
            colour = VERDICT_COLOURS[cls]
            metrics = result.inversions[j - 1].metrics
        for i in range(n_rows):
            ax = axes[i][j]
            img = col[i].permute(1, 2, 0).numpy()
            if img.shape[2] == 1:
                ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j:
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2)
                ax.set_xlabel(
                    f"m_i {float(metrics.input_distance[i]):.3g} · {float(metrics.psnr[i]):.1f} dB", fontsize=7
                )
            if i == 0:
                if j:
                    ax.set_title(f"{row.layer}\n{label}", fontsize=8, color=colour)
                else:
                    ax.set_title("original", fontsize=8)
            if j == 0 and n_rows > 1:
                ax.set_ylabel(names[i] if i < len(names) else f"#{i}", fontsize=7)
    return fig


def _figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


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
    units = "start-layer units" if result.provenance.options.get("start") else "input units"
    fig = Figure(figsize=(width, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("embedding distance", "‖rep(·) − rep(x)‖ (L2, the layer's units)",
         (("embedding_distance", "m_g (inversion)", "o-"), ("reference_distance", "m_r (x + N(0, σ²))", "s--"))),
        ("input distance", f"‖· − x‖ (L2, {units})",
         (("input_distance", "m_i = ‖x_g − x‖", "o-"), ("perturbation_distance", "‖x′ − x‖ (faint noise)", "s--"),
          ("chance_input_distance", "chance (unrelated input)", "^:"))),
        ("normalized feature error", "‖Δrep‖² / ‖rep‖² (no unit)",
         (("normalized_feature_error", "‖rep(x_g) − rep(x)‖² / ‖rep(x)‖²", "o-"),)),
    )
    for ax, (title, ylabel, series) in zip(axes, panels):
        positive = True
        for key, label, style in series:
            ys = _series(result, key)
            positive = positive and all(y > 0 for y in ys if not math.isnan(y))
            ax.plot(xs, ys, style, label=label, markersize=4)
        if positive:
            ax.set_yscale("log")
            _plain_log_ticks(ax)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
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


def _plain_log_ticks(ax: Any) -> None:
    """Log-axis ticks as plain numbers (0.01, 0.1, 1, 10), never mixed with 2x10^1-style minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    # Within a few decades label 1-2-5 steps, so a narrow range still gets labelled ticks; beyond, decades only.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="y", labelsize=8)


def convergence_figure(result: Sweep, *, width: float = 11.0) -> Any:
    """The search against steps as a matplotlib ``Figure``: one curve per layer (means over the inputs).

    Left: the data loss relative to its value at step 0 (log scale), the other loss terms dashed when the
    recipe has them. Right: m_i = ||x_i - x|| of each step's iterate (``History.input_distance``), with the faint
    perturbation's distance ||x' - x|| and the chance distance drawn as baselines. A curve still falling at the
    last step means more steps would help; m_i rising while the loss falls means the layer does not pin the input
    down (the search finds other inputs with the same representation).

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
    """
    result = _check(result)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_PLOT_HINT) from None
    fig = Figure(figsize=(width, 3.8), layout="constrained")
    loss_ax, mi_ax = fig.subplots(1, 2)
    colours = [f"C{k % 10}" for k in range(len(result.rows))]
    positive = True
    for row, inv, colour in zip(result.rows, result.inversions, colours):
        hist = inv.history
        if not hist.terms or hist["data"].numel() == 0:
            continue
        steps = list(range(hist["data"].shape[0]))
        data = hist["data"].double().mean(1)
        start = float(data[0]) if float(data[0]) > 0 else 1.0
        loss_ax.plot(steps, (data / start).tolist(), "-", color=colour, label=row.layer, linewidth=1.2)
        for term in hist.terms:
            if term not in ("data", "total"):
                loss_ax.plot(steps, (hist[term].double().mean(1) / start).tolist(), "--", color=colour, linewidth=0.8)
        if hist.input_distance.numel():
            mi = hist.input_distance.double().mean(1)
            positive = positive and bool((mi > 0).all())
            mi_ax.plot(steps, mi.tolist(), "-", color=colour, label=row.layer, linewidth=1.2)
    loss_ax.set_yscale("log")
    _plain_log_ticks(loss_ax)
    loss_ax.set_title("data loss (dashed: other terms)", fontsize=10)
    loss_ax.set_ylabel("loss / data loss at step 0", fontsize=8)
    mean = sum(r.perturbation_distance for r in result.rows) / max(len(result.rows), 1)
    chance = sum(r.chance_input_distance for r in result.rows) / max(len(result.rows), 1)
    mi_ax.axhline(mean, color="0.4", linestyle="--", linewidth=1, label="‖x′ − x‖ (faint noise)")
    mi_ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label="chance (unrelated input)")
    if positive and mean > 0 and chance > 0:
        mi_ax.set_yscale("log")
        _plain_log_ticks(mi_ax)
    units = "start-layer units" if result.provenance.options.get("start") else "input units"
    mi_ax.set_title("input distance of the iterate", fontsize=10)
    mi_ax.set_ylabel(f"m_i = ‖x_i − x‖ (L2, {units})", fontsize=8)
    for ax in (loss_ax, mi_ax):
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, alpha=0.3)
    mi_ax.legend(fontsize=7, ncol=2 if len(result.rows) > 6 else 1)
    prov = result.provenance
    fig.suptitle(f"{prov.model}: convergence of the search ({prov.steps} steps, seed {prov.seed})", fontsize=10)
    return fig


def save_convergence(result: Sweep, path: str | Path, *, dpi: int = 110) -> Path:
    """Write :func:`convergence_figure` as an image (PNG, SVG or PDF from the suffix) and return its path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
    """
    return _save_figure(convergence_figure(result), path, dpi)


def save_plot(result: Sweep, path: str | Path, *, dpi: int = 110) -> Path:
    """Write :func:`metrics_figure` as an image (PNG, SVG or PDF from the suffix) and return its path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'reprinvert[plot]'``).
    """
    return _save_figure(metrics_figure(result), path, dpi)


def _save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
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


def _plot_png(result: Sweep, figure: Any = None) -> bytes | None:
    """``figure(result)`` (default :func:`metrics_figure`) as PNG bytes, or None without matplotlib."""
    try:
        fig = (figure or metrics_figure)(result)
    except ImportError:
        return None
    return _figure_png(fig)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.name { text-align: left; font-family: monospace; }
tr.yes td.rep { background: #d9f2d9; } tr.some td.rep { background: #fbefd0; } tr.no td.rep { background: #f8dcdc; }
img { max-width: 100%; border: 1px solid #ddd; } img.pixels { image-rendering: pixelated; }
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
    return _html_page(result, title=title, plot=plot, pngs={})


def _html_page(result: Sweep, *, title: str | None, plot: bool, pngs: dict[str, bytes | None]) -> str:
    """The page; ``pngs`` holds figures already rendered (``"grid"``, ``"plot"``, ``"convergence"``), the others
    are rendered here."""
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
        png = pngs.get("grid") or _grid_png(result)
        pixels = "" if _matplotlib() else ' class="pixels"'  # Pillow's grid: keep its pixels sharp when scaled
        parts += [
            "<h2>Reconstructions</h2>",
            '<p class="note">Rows: inputs. Columns: the original, then the inversion of each layer, titled by '
            "what it measured: <em>recovered</em> (closer to x than an unrelated input, and within the faint "
            "perturbation's distance), <em>beats chance</em> (closer than an unrelated input only), or "
            "<em>chance level</em>; under each reconstruction its m_i and PSNR.</p>",
            f'<img id="grid"{pixels} alt="grid of reconstructions per layer" src="{_data_uri(png)}">',
        ]
    parts.append("<h2>Metrics against depth</h2>")
    plot_png = (pngs.get("plot") or _plot_png(result)) if plot else None
    if plot_png is not None:
        parts.append(f'<img id="plot" alt="metrics against depth" src="{_data_uri(plot_png)}">')
    else:
        parts.append(f'<p class="note">No plot: {html.escape(_PLOT_HINT if plot else "disabled")}.</p>')
    convergence_png = (pngs.get("convergence") or _plot_png(result, convergence_figure)) if plot else None
    if convergence_png is not None:
        parts += [
            "<h2>Convergence of the search</h2>",
            '<p class="note">Per layer, the data loss relative to step 0 and the input distance m_i of each '
            "step's iterate: a curve still falling at the end means more steps would help; m_i rising while the "
            "loss falls means the layer does not pin the input down.</p>",
            f'<img id="convergence" alt="loss and input distance against steps" src="{_data_uri(convergence_png)}">',
        ]
    spectral = any(r.blind is not None for r in result.rows)
    head = ["layer", "type", "shape", "size/input", *(label for _, label in METRICS), "represents", "verdict",
            *(["blind dirs", "condition"] if spectral else []), "seconds"]
    body, classes = [], []
    for r in result.rows:
        label, cls = verdict(r)
        body.append([
            r.layer, r.type, "x".join(map(str, r.representation_shape)), _num(r.size_ratio),
            *(_num(getattr(r, k)) for k, _ in METRICS), f"{r.represents:.0%}", label,
            *([_num(r.blind), _num(r.condition)] if spectral else []), f"{r.seconds:.2f}",
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

