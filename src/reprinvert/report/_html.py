"""Private: one self-contained HTML page (images embedded as ``data:`` URIs, no scripts, no network)."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._sweep_result import METRICS, Sweep
from ._common import (
    _PLOT_HINT,
    _check,
    _figure_png,
    _matplotlib,
    _write_text,
    can_show_images,
    verdict,
)
from ._grid import _grid_png
from ._plots import convergence_figure, metrics_figure

__all__ = ["html_page", "save_html"]


# ---------------------------------------------------------------------------------------------- html
def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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
tr.kept td.rep { background: #d9f2d9; } tr.undecided td.rep { background: #e8eaed; }
tr.lost td.rep { background: #f8dcdc; }
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


def _blind(value: float | None) -> str:
    """A row's blind directions: the count, or "not converged" where the spectrum has none it can stand behind."""
    return "not converged" if isinstance(value, float) and math.isnan(value) else _num(value)


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
            "its verdict: <em>kept</em> (the search reproduced the representation, m_g &lt; m_r, and landed on x, "
            "within the faint perturbation's distance), <em>lost</em> (it reproduced the representation far from "
            "x: the reconstruction is a witness, an input the layer cannot tell from x) or <em>undecided</em> (it "
            "did not reproduce the representation: no conclusion about the layer), with a note where it is at "
            "chance level or farther from x than the search's start; under each reconstruction its m_i and "
            "PSNR.</p>",
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
            *(["blind dirs", "condition"] if spectral else []), "seconds", "evidence"]
    body, classes = [], []
    for r in result.rows:
        label, cls = verdict(r)
        body.append([
            r.layer, r.type, "x".join(map(str, r.representation_shape)), _num(r.size_ratio),
            *(_num(getattr(r, k)) for k, _ in METRICS), f"{r.represents:.0%}", label,
            *([_blind(r.blind), _num(r.condition)] if spectral else []), f"{r.seconds:.2f}",
            "; ".join([r.evidence, *r.notes]),
        ])
        classes.append(cls)
    parts += ["<h2>Per layer (means over the inputs)</h2>", _table_html(head, body, classes)]
    per = result.table(per_sample=True)
    keys = ["layer", "sample", *(["input"] if result.provenance.inputs else []), *(k for k, _ in METRICS),
            "represents", "beats_chance", "verdict", "notes"]
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
