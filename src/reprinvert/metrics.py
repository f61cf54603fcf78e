"""The quantities of reprinvert's vocabulary, per sample.

Every function treats the first dimension as the batch and returns one value per sample with
``reduction="none"`` (the default), or their ``"mean"`` / ``"sum"``. Norms are gradient-safe: the norm of a
zero tensor is 0 with gradient 0, never NaN.

* embedding distance  m_g = ||rep(x) - rep(x_g)||_2
* reference distance  m_r = ||rep(x) - rep(x')||_2 with x' = x + N(0, sigma^2), sigma = 1/25
* input distance      m_i = ||x_g - x||_2, compared with the perturbation distance ||x' - x||_2
* normalized feature error ||rep(x_g) - rep(x)||^2 / ||rep(x)||^2 (Mahendran & Vedaldi 2015)
* corruption distance ||x~ - x||^2: the loss of a perfect copier on a denoising task
* denoising gain      ||x~ - x||^2 / ||O(x~) - x||^2
* copy tendency       how much of added noise an autoencoder passes through (1: identity, 0: ignores it)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from ._domain import DEFAULT_SIGMA, NormalizeSpec, chance_input, resolve_sigma  # noqa: F401 (DEFAULT_SIGMA: re-exported)
from ._feed import Feed
from ._hooks import Hooks
from ._layers import LayerSpec
from ._outputs import Selector
from ._rng import make_generator
from ._tensors import flatten_batch

__all__ = [
    "CopyTendency",
    "InversionMetrics",
    "Reduction",
    "copy_tendency",
    "corruption_distance",
    "denoising_gain",
    "embedding_distance",
    "evaluate",
    "input_distance",
    "normalized_feature_error",
    "psnr",
    "reference_distance",
    "safe_norm",
]

Reduction = Literal["none", "mean", "sum"]


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    raise ValueError(f"reduction={reduction!r}: expected 'none', 'mean' or 'sum'")


def _squared_norm(t: torch.Tensor) -> torch.Tensor:
    return flatten_batch(t).pow(2).sum(dim=1)


def safe_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm over all but the first dimension, with gradient 0 (not NaN) at 0.

    Args:
        t: tensor of shape ``(B, ...)``.

    Returns:
        Tensor of shape ``(B,)``.
    """
    sq = _squared_norm(t)
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def embedding_distance(
    rep: torch.Tensor, rep_g: torch.Tensor, *, reduction: Reduction = "none"
) -> torch.Tensor:
    """m_g = ||rep - rep_g||_2 per sample. Shapes ``(B, ...)``; returns ``(B,)`` unless reduced."""
    _check_pair(rep, rep_g, "rep and rep_g")
    return _reduce(safe_norm(rep - rep_g), reduction)


def input_distance(x_g: torch.Tensor, x: torch.Tensor, *, reduction: Reduction = "none") -> torch.Tensor:
    """m_i = ||x_g - x||_2 per sample (the representation accuracy in input space)."""
    _check_pair(x_g, x, "x_g and x")
    return _reduce(safe_norm(x_g - x), reduction)


def normalized_feature_error(
    rep_g: torch.Tensor, rep: torch.Tensor, *, reduction: Reduction = "none"
) -> torch.Tensor:
    """||rep_g - rep||^2 / ||rep||^2 per sample (0 when both are 0, inf when only ``rep`` is 0)."""
    _check_pair(rep_g, rep, "rep_g and rep")
    num = _squared_norm(rep_g - rep)
    den = _squared_norm(rep)
    safe_den = torch.where(den > 0, den, torch.ones_like(den))
    value = torch.where(den > 0, num / safe_den, torch.where(num > 0, torch.full_like(num, float("inf")), num))
    return _reduce(value, reduction)


def psnr(
    x_g: torch.Tensor, x: torch.Tensor, *, data_range: float = 1.0, reduction: Reduction = "none"
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample: 10 log10(data_range^2 / mean squared error); inf if equal."""
    _check_pair(x_g, x, "x_g and x")
    if not data_range > 0:
        raise ValueError(f"data_range={data_range!r}: expected a positive number (1.0 for images in [0, 1])")
    diff = flatten_batch(x_g - x)
    mse = diff.pow(2).mean(dim=1)
    safe = torch.where(mse > 0, mse, torch.ones_like(mse))
    value = torch.where(mse > 0, 10 * torch.log10(data_range**2 / safe), torch.full_like(mse, float("inf")))
    return _reduce(value, reduction)


def corruption_distance(
    x_tilde: torch.Tensor, x: torch.Tensor, *, reduction: Reduction = "none"
) -> torch.Tensor:
    """||x~ - x||^2 per sample: the squared-error loss a perfect copier scores when asked to denoise x~."""
    _check_pair(x_tilde, x, "x_tilde and x")
    return _reduce(_squared_norm(x_tilde - x), reduction)


def denoising_gain(
    output: torch.Tensor, x_tilde: torch.Tensor, x: torch.Tensor, *, reduction: Reduction = "none"
) -> torch.Tensor:
    """||x~ - x||^2 / ||O(x~) - x||^2 per sample: above 1 when the output is closer to x than its input was."""
    _check_pair(output, x, "output and x")
    num = corruption_distance(x_tilde, x)
    den = _squared_norm(output - x)
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return _reduce(torch.where(den > 0, num / safe, torch.full_like(den, float("inf"))), reduction)


def _perturb(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    if not sigma >= 0:
        raise ValueError(f"sigma={sigma!r}: expected a non-negative standard deviation (default 1/25)")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * noise


def _representations(
    model: nn.Module,
    layer: LayerSpec,
    inputs: list[torch.Tensor],
    select: Selector,
    call: int | None,
    model_kwargs: Mapping[str, Any] | None,
    normalize: NormalizeSpec,
    seed: int = 0,
) -> list[torch.Tensor]:
    """rep(layer) of each input, in eval mode, on the path an inversion takes. The first forward pass runs the
    whole model (an error after the layer does not matter), so a layer that runs more than once is an error unless
    ``call`` picks the call, as in :func:`reprinvert.invert`; the others stop right after the layer."""
    feed = Feed.of(model, normalize=normalize, model_kwargs=model_kwargs, x=inputs[0])
    out = []
    with feed.session(seed), torch.enable_grad():
        for k, t in enumerate(inputs):
            with Hooks(feed.model, layer, select=select, call=call, stop=k > 0) as hooks:
                out.append(hooks.run(feed, feed.input(t), tolerant=k == 0)[hooks.targets[0].name])
    return out


def reference_distance(
    model: nn.Module,
    layer: LayerSpec,
    x: torch.Tensor,
    *,
    sigma: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    select: Selector = None,
    call: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    reduction: Reduction = "none",
    data_range: float = 1.0,
    normalize: NormalizeSpec = None,
) -> torch.Tensor:
    """m_r = ||rep(x) - rep(x + N(0, sigma^2))||_2 per sample, in eval mode; the model is left untouched.

    A layer *represents* x when an inversion's embedding distance m_g is below this reference. ``sigma=None``
    is 1/25 of ``data_range``; ``normalize`` feeds the model ``(x - mean) / std`` (the perturbation is added in
    pixel space).
    """
    g = make_generator(seed, generator, x.device)
    sigma = resolve_sigma(sigma, data_range)
    x_ref = _perturb(x, sigma, g)
    rep, rep_ref = _representations(model, layer, [x, x_ref], select, call, model_kwargs, normalize, g.initial_seed())
    return _reduce(safe_norm(flatten_batch(rep, x.shape[0]) - flatten_batch(rep_ref, x.shape[0])), reduction)


# The per-sample verdicts (booleans) among InversionMetrics' fields.
_VERDICTS = ("represents", "beats_chance")

# Values per tensor (per float64 copy) that InversionMetrics.from_tensors handles at once.
_CHUNK_VALUES = 2**14


@dataclass(frozen=True)
class InversionMetrics:
    """Per-sample measurements of one inversion (each a tensor of shape ``(B,)`` on the CPU).

    Attributes:
        embedding_distance: m_g = ||rep(x) - rep(x_g)||.
        reference_distance: m_r = ||rep(x) - rep(x')||, x' = x + N(0, sigma^2).
        input_distance: m_i = ||x_g - x||.
        perturbation_distance: ||x' - x||, the input-space size of the reference perturbation.
        normalized_feature_error: ||rep(x_g) - rep(x)||^2 / ||rep(x)||^2.
        psnr: of x_g against x, in dB, for data in a range of ``data_range`` (1 for images in [0, 1]).
        represents: m_g < m_r, the layer cannot tell x_g from x better than from a slightly noisy x.
        relative_input_distance: m_i / ||x||.
        chance_distance: m_c = ||rep(x) - rep(x_u)|| for an unrelated input x_u (the previous sample of the batch,
            cyclically, or a fixed shuffle of x's entries for a batch of one): how far apart unrelated inputs lie at
            the layer.
        chance_input_distance: ||x_u - x||, the input distance of a guess that knows nothing about x.
        beats_chance: m_i < ||x_u - x||: the inversion lands closer to x than an unrelated input does. A layer
            can represent x (m_g < m_r) while its inversion does not beat chance: the search found another input
            the layer cannot tell apart from x.
    """

    embedding_distance: torch.Tensor
    reference_distance: torch.Tensor
    input_distance: torch.Tensor
    perturbation_distance: torch.Tensor
    normalized_feature_error: torch.Tensor
    psnr: torch.Tensor
    represents: torch.Tensor
    relative_input_distance: torch.Tensor
    chance_distance: torch.Tensor
    chance_input_distance: torch.Tensor
    beats_chance: torch.Tensor

    @classmethod
    def from_tensors(
        cls,
        *,
        x: torch.Tensor,
        x_g: torch.Tensor,
        x_ref: torch.Tensor,
        rep: torch.Tensor,
        rep_g: torch.Tensor,
        rep_ref: torch.Tensor,
        x_chance: torch.Tensor | None = None,
        rep_chance: torch.Tensor | None = None,
        data_range: float = 1.0,
    ) -> InversionMetrics:
        """Compute every metric from an input, its inversion, its perturbed copy, an unrelated input and their
        representations (without ``x_chance`` / ``rep_chance`` the chance fields are NaN and ``beats_chance``
        False).

        The metrics are computed in float64, a few samples at a time (each sample's metrics are its own), so the
        float64 copies never exceed about 2**16 values per tensor whatever the batch and layer size.
        """
        b = x.shape[0]
        if x_chance is None or rep_chance is None:
            x_chance = torch.full_like(x, float("nan"))
            rep_chance = torch.full_like(rep, float("nan"))
        flat = [flatten_batch(t.detach(), b) for t in (x, x_g, x_ref, rep, rep_g, rep_ref, x_chance, rep_chance)]
        per_sample = max(max(t.shape[1] for t in flat), 1)
        chunk = max(1, _CHUNK_VALUES // per_sample)
        if chunk >= b:
            return cls._from_flat(*flat, data_range=data_range)
        parts = [
            cls._from_flat(*(t[i : i + chunk] for t in flat), data_range=data_range) for i in range(0, b, chunk)
        ]
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def _from_flat(
        cls,
        x: torch.Tensor,
        x_g: torch.Tensor,
        x_ref: torch.Tensor,
        rep: torch.Tensor,
        rep_g: torch.Tensor,
        rep_ref: torch.Tensor,
        x_u: torch.Tensor,
        rep_u: torch.Tensor,
        *,
        data_range: float,
    ) -> InversionMetrics:
        with torch.no_grad():
            x, x_g, x_ref, rep, rep_g, rep_ref, x_u, rep_u = (
                t.double() for t in (x, x_g, x_ref, rep, rep_g, rep_ref, x_u, rep_u)
            )
            m_g = embedding_distance(rep, rep_g)
            m_r = embedding_distance(rep, rep_ref)
            m_i = input_distance(x_g, x)
            norm_x = safe_norm(x)
            values = dict(
                embedding_distance=m_g,
                reference_distance=m_r,
                input_distance=m_i,
                perturbation_distance=input_distance(x_ref, x),
                normalized_feature_error=normalized_feature_error(rep_g, rep),
                psnr=psnr(x_g, x, data_range=data_range),
                represents=m_g < m_r,
                relative_input_distance=m_i / torch.where(norm_x > 0, norm_x, torch.ones_like(norm_x)),
                chance_distance=embedding_distance(rep, rep_u),
                chance_input_distance=(chance_in := input_distance(x_u, x)),
                beats_chance=m_i < chance_in,
            )
        return cls(**{k: v.cpu() for k, v in values.items()})

    def summary(self) -> dict[str, float]:
        """Means over the batch (``represents``, ``beats_chance``: the fraction of samples)."""
        return {f.name: float(getattr(self, f.name).double().mean()) for f in fields(self)}

    def per_sample(self) -> list[dict[str, float | bool]]:
        """One dict per sample, JSON-ready."""
        n = self.input_distance.shape[0]
        return [
            {f.name: (bool if f.name in _VERDICTS else float)(getattr(self, f.name)[i]) for f in fields(self)}
            for i in range(n)
        ]

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"m_g={s['embedding_distance']:.4g} m_r={s['reference_distance']:.4g} "
            f"m_i={s['input_distance']:.4g} (||x'-x||={s['perturbation_distance']:.4g}, "
            f"chance={s['chance_input_distance']:.4g}) nfe={s['normalized_feature_error']:.3g} "
            f"psnr={s['psnr']:.2f}dB represents={s['represents']:.0%} beats_chance={s['beats_chance']:.0%}"
        )


def evaluate(
    model: nn.Module,
    layer: LayerSpec,
    x: torch.Tensor,
    x_g: torch.Tensor,
    *,
    sigma: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    select: Selector = None,
    call: int | None = None,
    data_range: float = 1.0,
    model_kwargs: Mapping[str, Any] | None = None,
    normalize: NormalizeSpec = None,
) -> InversionMetrics:
    """Measure any candidate ``x_g`` against ``x`` at ``layer`` (what :func:`reprinvert.invert` reports).

    Args:
        model: the model (run in eval mode, restored afterwards).
        layer: the layer whose representation is compared.
        x: the original input, ``(B, ...)``.
        x_g: the candidate, same shape as ``x``.
        sigma: standard deviation of the reference perturbation x' = x + N(0, sigma^2); None: 1/25 of
            ``data_range``.
        seed, generator: randomness of the perturbation.
        select, call: as in :func:`reprinvert.capture`.
        data_range: the range of the data, for PSNR and the default ``sigma``.
        model_kwargs: extra keyword arguments of the forward call.
        normalize: feed the model ``(x - mean) / std`` (``"imagenet"``, ``"inception"`` or ``(mean, std)``); x,
            x_g and the perturbation stay in pixel space.
    """
    _check_pair(x_g, x, "x_g and x")
    g = make_generator(seed, generator, x.device)
    x_ref = _perturb(x, resolve_sigma(sigma, data_range), g)
    x_u = chance_input(x)
    rep, rep_g, rep_ref, rep_u = _representations(
        model, layer, [t.to(x.dtype) for t in (x, x_g, x_ref, x_u)], select, call, model_kwargs, normalize,
        g.initial_seed(),
    )
    return InversionMetrics.from_tensors(
        x=x, x_g=x_g, x_ref=x_ref, x_chance=x_u, rep=rep, rep_g=rep_g, rep_ref=rep_ref, rep_chance=rep_u,
        data_range=data_range,
    )


@dataclass(frozen=True)
class CopyTendency:
    """How much of a perturbation an autoencoder passes to its output, per sample ``(B,)``.

    Attributes:
        finite: <O(x~) - O(x), x~ - x> / ||x~ - x||^2 for the given corruption x~: 1 for the identity map,
            0 for a map that ignores the perturbation.
        jacobian_trace: Hutchinson estimate of tr(J)/n of O's Jacobian at x (the infinitesimal form).
        jacobian_trace_stderr: standard error of that estimate over the probes.
        output_to_input: ||O(x~) - x~||, how far the output is from what it was given.
        output_to_clean: ||O(x~) - x||, how far the output is from the clean input.
    """

    finite: torch.Tensor
    jacobian_trace: torch.Tensor
    jacobian_trace_stderr: torch.Tensor
    output_to_input: torch.Tensor
    output_to_clean: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Means over the batch."""
        return {f.name: float(getattr(self, f.name).double().mean()) for f in fields(self)}


def copy_tendency(
    autoencoder: nn.Module,
    x: torch.Tensor,
    *,
    corrupt: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    sigma: float = 0.1,
    probes: int = 8,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> CopyTendency:
    """Measure how much an autoencoder copies a perturbation of its input (finite and Jacobian forms).

    The model runs in eval mode and comes back untouched; parameters receive no gradient.

    Args:
        autoencoder: a module whose output has the input's shape.
        x: clean inputs ``(B, ...)``.
        corrupt: ``(x, generator) -> x~``; default Gaussian noise of standard deviation ``sigma``. For the
            seed's mix use ``lambda x, g: reprinvert.corruptions.noise_mix(x, alpha=0.3, generator=g)``.
        sigma: noise level of the default corruption.
        probes: Rademacher probe vectors of the Hutchinson trace estimator (each one vector-Jacobian product).
        seed, generator: all randomness (corruption and probes).
        model_kwargs: extra keyword arguments of the forward call.

    Returns:
        A :class:`CopyTendency`.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> ct = ri.metrics.copy_tendency(nn.Identity(), torch.rand(2, 3, 4, 4))
        >>> [round(v, 4) for v in ct.finite.tolist()], [round(v, 4) for v in ct.jacobian_trace.tolist()]
        ([1.0, 1.0], [1.0, 1.0])
    """
    if probes < 1:
        raise ValueError(f"probes={probes!r}: expected at least 1 probe vector")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}); pass at least one sample")
    g = make_generator(seed, generator, x.device)
    x = x.detach()
    if corrupt is None:
        x_tilde = _perturb(x, sigma, g)
    else:
        x_tilde = corrupt(x, g).detach()
    feed = Feed.of(autoencoder, model_kwargs=model_kwargs, hooked=False)
    with feed.session(g.initial_seed()):
        with torch.no_grad():  # the model gets copies: an in-place first operation cannot change x
            out = feed(feed.input(x, grad=False))
            out_tilde = feed(feed.input(x_tilde, grad=False))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(
                f"copy_tendency needs an autoencoder whose output has the input's shape {tuple(x.shape)}, got "
                f"{out.shape if isinstance(out, torch.Tensor) else type(out).__name__}"
            )
        # (a view of a parameter made under no_grad still requires grad: detached, the results hold no graph)
        out, out_tilde = out.detach(), out_tilde.detach()
        delta = flatten_batch(x_tilde - x).double()
        change = flatten_batch(out_tilde - out).double()
        dd = (delta * delta).sum(1)
        finite = (change * delta).sum(1) / torch.where(dd > 0, dd, torch.ones_like(dd))
        n = delta.shape[1]
        estimates = []
        with torch.enable_grad():
            xg = feed.input(x, grad=False).requires_grad_(True)
            y = feed(xg)
            for k in range(probes):
                v = torch.randint(0, 2, x.shape, generator=g, device=x.device).to(y.dtype) * 2 - 1
                # An output that does not depend on x (a constant model) has Jacobian 0: it copies nothing.
                vjp = torch.autograd.grad(y, xg, v, retain_graph=k < probes - 1, allow_unused=True)[0] \
                    if y.requires_grad else None
                if vjp is None:
                    vjp = torch.zeros_like(xg)
                estimates.append((flatten_batch(vjp).double() * flatten_batch(v).double()).sum(1) / n)
    est = torch.stack(estimates)
    stderr = est.std(0, unbiased=True) / probes**0.5 if probes > 1 else torch.full_like(est[0], float("nan"))
    return CopyTendency(
        finite=finite.cpu(),
        jacobian_trace=est.mean(0).cpu(),
        jacobian_trace_stderr=stderr.cpu(),
        output_to_input=safe_norm(out_tilde - x_tilde).double().cpu(),
        output_to_clean=safe_norm(out_tilde - x).double().cpu(),
    )
