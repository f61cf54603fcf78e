"""Private: the grid of reconstructions (rows: inputs; columns: the original, then each layer)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._sweep_result import Sweep
from ..data import make_grid
from ..data._io import write_grid
from ._common import (
    _PLOT_HINT,
    VERDICT_COLOURS,
    _check,
    _figure_png,
    _labels,
    _matplotlib,
    _png_bytes,
    _prepare,
    can_show_images,
    verdict,
)

__all__ = ["grid_figure", "grid_image", "save_grid"]


def _auto_scale(h: int, w: int) -> int:
    return max(1, min(8, math.ceil(96 / max(h, w, 1))))


def grid_image(result: Sweep, *, scale: int | None = None, max_rows: int | None = 8) -> Any:
    """The grid as a ``PIL.Image``: rows = inputs, columns = the original then each layer's reconstruction.

    Column titles are ``"<layer> (<verdict>)"`` with the layer's :func:`verdict`: ``kept``, ``lost`` or
    ``undecided``, with its notes (``at chance level``, ``farther than the start``).

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


def _grid_png(result: Sweep, *, scale: int | None = None, max_rows: int | None = 8) -> bytes:
    """The grid as PNG bytes: :func:`grid_figure` when matplotlib is installed, else :func:`grid_image`."""
    if _matplotlib() and scale is None:
        return _figure_png(grid_figure(result, max_rows=max_rows), dpi=110)
    return _png_bytes(grid_image(result, scale=scale, max_rows=max_rows))


def save_grid(
    result: Sweep | Sequence[torch.Tensor] | torch.Tensor, path: str | Path, *, scale: int | None = None,
    max_rows: int | None = 8, column_labels: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
) -> Path:
    """Write a grid as a PNG (missing folders are created) and return its path.

    For a :class:`~reprinvert.Sweep`: with matplotlib installed (and no ``scale``) the grid is :func:`grid_figure`:
    full layer names in a real font, each panel's m_i and PSNR, each column coloured by its verdict. Otherwise it
    is Pillow's :func:`grid_image`, with the verdict in the column titles. For image tensors (a list of ``(B, C, H,
    W)`` columns, or one ``(B, K, C, H, W)`` tensor, as :func:`reprinvert.data.make_grid` takes them): Pillow's
    grid with ``column_labels`` and ``row_labels``, each cell upscaled ``scale`` times (default 4).

    Example:
        >>> import tempfile, pathlib, reprinvert as ri
        >>> x = ri.data.sample_image(size=16)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "g.png"
        >>> ri.report.save_grid([x, 1 - x], path, column_labels=["x", "1-x"]).suffix
        '.png'
    """
    if not isinstance(result, Sweep):
        return write_grid(
            result, path, column_labels=column_labels, row_labels=row_labels, scale=4 if scale is None else scale
        )
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
