"""Private: the metrics against depth, and each search's convergence (matplotlib figures)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._sweep_result import Sweep
from ._common import _PLOT_HINT, _check, _save_figure

__all__ = ["convergence_figure", "metrics_figure", "save_convergence", "save_plot"]


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
