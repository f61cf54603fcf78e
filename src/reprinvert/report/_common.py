"""Private: what every report shares: checks, paths, verdicts and how figures are rendered."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .._sweep_result import Sweep, SweepRow

__all__ = ["VERDICT_COLOURS", "can_show_images", "verdict"]


_PLOT_HINT = "the metrics plot needs matplotlib: pip install 'reprinvert[plot]'"


#: Colours of the verdicts (:func:`verdict`) in figures and the HTML table.
VERDICT_COLOURS = {"kept": "#1a7f37", "lost": "#c62828", "undecided": "#6e7781"}


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
    """A layer's verdict (:attr:`SweepRow.verdict <reprinvert.SweepRow>`) as a short label and its class, one of
    :data:`VERDICT_COLOURS`' keys.

    * ``"kept"``: every input's search reproduced the representation (m_g < m_r) and landed on x (m_i within the
      faint perturbation's ||x' - x||).
    * ``"lost"``: some input's search reproduced the representation far from x: its reconstruction is a witness,
      an input the layer cannot tell from x.
    * ``"undecided"``: otherwise: a search that did not reproduce the representation says nothing about the layer.

    The label adds the notes that stand beside a verdict, e.g. ``"undecided, at chance level"`` (no closer to x
    than an unrelated input) or ``"lost, farther than the start"``.
    """
    cls = row.verdict if row.verdict in VERDICT_COLOURS else "undecided"
    return ", ".join([cls, *(n.split(":")[0] for n in row.notes)]), cls


def _labels(result: Sweep) -> list[str]:
    return ["original", *(f"{r.layer} ({verdict(r)[0]})" for r in result.rows)]


def _matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    p = _prepare(path)
    try:
        fig.savefig(p, dpi=dpi)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot write '{p}': {exc}") from None
    return p


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
