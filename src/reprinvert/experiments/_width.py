"""The width experiment: do fully connected layers narrower than the input lose it?"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .._invert import invert
from .._rng import make_generator
from .._search import StepInfo
from ..data import sample_image
from ..data._io import write_grid as save_grid
from ..models import FCNet, linear_net
from ._common import (
    Device,
    Reporter,
    check_size,
    out_dir,
    plot_curves,
    resolve_device,
    write_json,
)
from ._depth import _dense_spectrum

__all__ = ['WIDTH_SIZES', 'WidthConfig', 'WidthNet', 'WidthResult', 'width']


# ---------------------------------------------------------------------------------------------- width
@dataclass(frozen=True)
class WidthConfig:
    """Sizes of the width study.

    Attributes:
        image: inputs are ``image x image x 3`` (the seed: 29 -> 2523 values).
        nets: ``(label, activation, width)`` of each fully connected net (``layers`` layers of that width).
        layers: layers per net; the last one is inverted.
        steps: inversion steps (the seed: 5000).
        recipe: inversion recipe name.
        every: record the input distance every ``every`` steps.
        linear_depth: layers of the invertible square linear net.
        perturbation: standard deviation of the output perturbation of that net (the seed: 1e-3).
    """

    image: int
    nets: tuple[tuple[str, str, int], ...]
    layers: int
    steps: int
    recipe: str = "default"
    every: int = 10
    linear_depth: int = 3
    perturbation: float = 1e-3


def _nets(n: int) -> tuple[tuple[str, str, int], ...]:
    half, wide = n // 2, (5 * n) // 4
    return (
        (f"linear {half} (< input)", "linear", half),
        (f"linear {wide} (> input)", "linear", wide),
        (f"relu {half} (< input)", "relu", half),
        (f"relu {wide} (> input)", "relu", wide),
        (f"relu {2 * n} (2x input)", "relu", 2 * n),
        (f"relu {3 * n} (3x input)", "relu", 3 * n),  # past the injectivity threshold (issue 14's measurement)
        (f"relu {4 * n} (4x input)", "relu", 4 * n),
    )


WIDTH_SIZES = {
    "tiny": WidthConfig(image=4, nets=_nets(48), layers=2, steps=20, every=5, linear_depth=2),
    "quick": WidthConfig(image=29, nets=_nets(2523), layers=2, steps=1000, every=10),
    "medium": WidthConfig(image=29, nets=_nets(2523), layers=2, steps=5000, every=25),
    "full": WidthConfig(image=29, nets=_nets(2523), layers=3, steps=5000, every=25),
}


@dataclass(frozen=True)
class WidthNet:
    """One net of the width study.

    Attributes:
        label, activation, width: the net.
        final_input_distance: m_i = ||x_g - x|| after the last step.
        embedding_distance, reference_distance: m_g and m_r of the returned inversion.
        steps: step numbers at which ``input_distance`` was recorded.
        input_distance: m_i over the run.
        blind: input directions the inverted layer cannot see at x: singular values of its Jacobian at x below
            1e-6 x the largest (computed exactly from the dense Jacobian; 0 where it is locally injective).
        blind_at_least: ``blind`` is only a lower bound (False here: the count is exact).
        condition: the layer's Jacobian's condition number at x (inf when it has blind directions).
        spectrum_converged: the spectrum is exact (True here).
    """

    label: str
    activation: str
    width: int
    final_input_distance: float
    embedding_distance: float
    reference_distance: float
    steps: tuple[int, ...]
    input_distance: tuple[float, ...]
    blind: int = 0
    blind_at_least: bool = False
    condition: float = float("nan")
    spectrum_converged: bool = True


@dataclass(frozen=True)
class WidthResult:
    """The width study and the invertible linear net.

    Attributes:
        input_features: elements of each input (2523 for 29x29x3).
        nets: one :class:`WidthNet` per net.
        linear_output_perturbation: ||delta||, the output perturbation of the square linear net (float64).
        linear_input_error: ||x(y + delta) - x(y)|| recovered by exact inversion (linalg.solve per layer).
        linear_input_error_max: the largest element of that error.
        linear_amplification: ``linear_input_error / linear_output_perturbation``.
        linear_condition: condition number of the net's matrix (product of the layers).
        orthogonal_amplification: the same amplification for an orthogonal linear net (1 in exact arithmetic).
        size, seconds, figures, notes: as in the other results.
    """

    input_features: int
    nets: tuple[WidthNet, ...]
    linear_output_perturbation: float
    linear_input_error: float
    linear_input_error_max: float
    linear_amplification: float
    linear_condition: float
    orthogonal_amplification: float
    size: str
    seconds: float
    figures: tuple[str, ...]
    notes: tuple[str, ...]


def _amplification(
    n: int, depth_: int, init: str, perturbation: float, seed: int, device: torch.device
) -> tuple[float, ...]:
    """Exact inversion of a square linear net in float64 under an output perturbation: (||d||, ||dx||, max, cond)."""
    net = linear_net(n, depth=depth_, init=init, seed=seed).double().to(device)  # type: ignore[arg-type]
    g = make_generator(seed + 1, None, device)
    x = torch.rand(1, n, generator=g, dtype=torch.float64, device=device)
    mats = [m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.Linear)]
    if init == "orthogonal":  # orthogonal to float64 precision (the float32 draw is orthogonal to ~1e-7 only)
        with torch.no_grad():
            for w in mats:
                q, r = torch.linalg.qr(w)
                w.copy_(q * torch.sign(torch.diagonal(r)))
    with torch.no_grad():
        y = net(x)
        delta = perturbation * torch.randn(y.shape, generator=g, dtype=torch.float64, device=device)
        z = (y + delta).T
        for w in reversed(mats):
            z = torch.linalg.solve(w, z)
        x_rec = z.T
        total = mats[0]
        for w in mats[1:]:
            total = w @ total
        cond = float(torch.linalg.cond(total))
    err = x_rec - x
    dn = float(delta.norm())
    return dn, float(err.norm()), float(err.abs().max()), cond


def width(
    *, size: str | WidthConfig = "quick", out: str | Path | None = None, seed: int = 0, progress: bool = True,
    device: Device = None,
) -> WidthResult:
    """Does a fully connected layer narrower than its input lose the input, and a wider one keep it?

    The seed: on 29x29x3 inputs, nets narrower than the input plateau (input distance stuck near 19 and 11
    after 5000 steps) while wider ones keep improving (1.43 and 0.32); with ReLU about twice the input width is
    needed. And an invertible linear net in float64 amplifies an output perturbation of 1e-3 into input errors
    of order 1e5. Each :class:`~reprinvert.models.FCNet` (default PyTorch initialisation, untrained) is inverted
    at its last layer for a bundled photo, recording ||x_g - x|| over the steps, and the layer's Jacobian
    spectrum at the photo (how many input directions it cannot see, its condition number, as
    :func:`reprinvert.spectrum` defines them, from the dense Jacobian), which says without any optimiser whether
    the layer could keep the input. Writes ``width/curve.png``,
    ``width/grid.png`` and ``width/result.json``.

    Args:
        size: ``"tiny"``, ``"quick"``, ``"medium"`` (the quick nets to the seed's 5000 steps), ``"full"`` or a
            :class:`WidthConfig`.
        out, seed, progress, device: as in :func:`reprinvert.experiments.copy` (the float64 linear-net check
            runs on ``device`` too).

    Raises:
        ValueError: an unknown ``size`` or ``device``, or ``"cuda"`` on a machine without CUDA (before any work).
    """
    cfg: WidthConfig = check_size(size, WIDTH_SIZES)
    dev = resolve_device(device)
    say = Reporter("width", progress)
    folder = out_dir(out, "width")
    x = sample_image("astronaut", size=cfg.image).to(dev)
    n = x.numel()
    nets: list[WidthNet] = []
    inputs = [x]
    for label, act, w in cfg.nets:
        net = FCNet(in_features=n, widths=(w,) * cfg.layers, activation=act, seed=seed)  # type: ignore[arg-type]
        net.to(dev)
        steps_seen: list[int] = []
        dists: list[float] = []

        def record(info: StepInfo, steps_seen: list[int] = steps_seen, dists: list[float] = dists) -> None:
            if info.step % cfg.every == 0 or info.step == info.steps - 1:
                steps_seen.append(info.step + 1)
                dists.append(float((info.input - x).double().norm()))

        layer = f"layers.{cfg.layers - 1}"
        res = invert(net, layer, x, recipe=cfg.recipe, steps=cfg.steps, seed=seed, callback=record)
        s = res.metrics.summary()
        blind, condition = _dense_spectrum(torch.nn.Sequential(torch.nn.Flatten(), net.layers[: cfg.layers]), x)
        nets.append(WidthNet(
            label=label, activation=act, width=w, final_input_distance=dists[-1],
            embedding_distance=s["embedding_distance"], reference_distance=s["reference_distance"],
            steps=tuple(steps_seen), input_distance=tuple(dists), blind=blind, blind_at_least=False,
            condition=condition, spectrum_converged=True,
        ))
        inputs.append(res.input)
        seen = ("blind directions >= " if nets[-1].blind_at_least else "blind directions ") + str(nets[-1].blind)
        say(f"{label:24s} input distance after {cfg.steps} steps {dists[-1]:.4g} (returned x_g: "
            f"{s['input_distance']:.4g}, m_g {s['embedding_distance']:.3g} vs m_r {s['reference_distance']:.3g}); "
            f"Jacobian at x: {seen}, condition number {nets[-1].condition:.3g}"
            + ("" if nets[-1].spectrum_converged else " (not converged: lower bounds)"))
    dn, err, err_max, cond = _amplification(n, cfg.linear_depth, "default", cfg.perturbation, seed, dev)
    o_dn, o_err, _, _ = _amplification(n, cfg.linear_depth, "orthogonal", cfg.perturbation, seed, dev)
    say(f"square linear net ({cfg.linear_depth} x {n}x{n}, float64): output perturbation {dn:.3g} -> input error "
        f"{err:.3g} (max element {err_max:.3g}), condition number {cond:.3g}; orthogonal: x{o_err / o_dn:.6f}")
    figures: list[str] = []
    notes = [f"input: the bundled photo 'astronaut' at {cfg.image}x{cfg.image}x3 = {n} values; nets untrained "
             "(PyTorch's default initialisation), as in the seed's width study",
             "final_input_distance is the last iterate's; the returned x_g is the lowest-loss iterate"]
    if folder is not None:
        figures.append(str(save_grid(inputs, folder / "grid.png", column_labels=["x", *(v.label for v in nets)],
                                     scale=max(1, 96 // cfg.image))))
        note = plot_curves(folder / "curve.png", {v.label: (v.steps, v.input_distance) for v in nets},
                           xlabel="step", ylabel="||x_g - x||", title=f"width study ({n} inputs)", logy=True)
        if note is None:
            figures.append(str(folder / "curve.png"))
        else:
            notes.append(note)
    result = WidthResult(
        input_features=n, nets=tuple(nets), linear_output_perturbation=dn, linear_input_error=err,
        linear_input_error_max=err_max, linear_amplification=err / dn, linear_condition=cond,
        orthogonal_amplification=o_err / o_dn, size=size if isinstance(size, str) else "custom",
        seconds=say.elapsed(), figures=tuple(figures), notes=tuple(notes),
    )
    if folder is not None:
        write_json(folder / "result.json", result, extra={"config": dataclasses.asdict(cfg), "seed": seed},
                   device=dev)
    return result
