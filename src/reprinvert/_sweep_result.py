"""The result of a sweep: :class:`Sweep` (one :class:`SweepRow` of batch means per layer, the inversions, the
:class:`Provenance`), its tables, how chunks join and how it is saved."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import _archive
from ._inversion import Inversion
from ._verdict import Verdict, layer_verdict

__all__ = ["METRICS", "SWEEP_SCHEMA", "Provenance", "Sweep", "SweepRow", "layer_file", "row_of"]

#: The schema of a saved :class:`Sweep` (``Sweep.save``); bumped when the format changes.
SWEEP_SCHEMA = "reprinvert.sweep/1"

#: The metric columns of a sweep table, in order: (field of :class:`SweepRow`, short label).
METRICS: tuple[tuple[str, str], ...] = (
    ("embedding_distance", "m_g"),
    ("reference_distance", "m_r"),
    ("input_distance", "m_i"),
    ("perturbation_distance", "||x'-x||"),
    ("chance_input_distance", "chance"),
    ("normalized_feature_error", "nfe"),
    ("psnr", "psnr dB"),
)

@dataclass(frozen=True)
class Provenance:
    """Everything needed to regenerate a sweep.

    Attributes:
        reprinvert: library version.
        torch: torch version.
        python: Python version.
        model: the model's class name.
        input_shape: shape of ``x``.
        input_dtype: dtype of ``x`` (e.g. ``"torch.float32"``).
        device: device of ``x`` and the model (e.g. ``"cpu"``).
        recipe: the recipe with every override applied, as :meth:`Recipe.to_dict` gives it.
        seed: the seed of every inversion.
        steps: optimisation steps per layer.
        options: the other options passed to :func:`reprinvert.invert` (JSON-ready ``repr`` where needed), how
            the layers were inverted (``batched``) and what ``SweepRow.seconds`` means (``layer_seconds``).
        created: UTC time the sweep finished, ISO 8601.
        skipped_layers: with an automatic layer choice, ``(name, reason)`` of each candidate left out (shared
            modules, outputs that are not one batch-first tensor, layers that do not depend on ``start=``,
            thinning).
        inputs: a name per input sample (file names from the command line), or empty.
        model_source: where the model came from (the command line's model spec, weights file and its sha256), or
            empty.
    """

    reprinvert: str
    torch: str
    python: str
    model: str
    input_shape: tuple[int, ...]
    input_dtype: str
    device: str
    recipe: dict[str, Any]
    seed: int
    steps: int
    options: dict[str, Any]
    created: str
    skipped_layers: tuple[tuple[str, str], ...] = ()
    inputs: tuple[str, ...] = ()
    model_source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRow:
    """One layer of a sweep: batch means of :class:`~reprinvert.metrics.InversionMetrics`.

    Attributes:
        layer: resolved dotted name.
        index: position in the sweep (0 = first layer inverted, in the model's execution order when the
            layers were chosen automatically, else in the order given).
        type: the module's class name.
        representation_shape: shape of rep(x) at this layer, batch included.
        size_ratio: elements of the representation per sample / elements of the optimised input per sample.
        embedding_distance: mean m_g = ||rep(x) - rep(x_g)||.
        reference_distance: mean m_r = ||rep(x) - rep(x')||, x' = x + N(0, sigma^2).
        input_distance: mean m_i = ||x_g - x||.
        perturbation_distance: mean ||x' - x||.
        normalized_feature_error: mean ||rep(x_g) - rep(x)||^2 / ||rep(x)||^2.
        psnr: mean PSNR of x_g against x in dB.
        chance_input_distance: mean ||x_u - x|| for an unrelated input x_u (another sample of the batch, or a
            fixed shuffle of x): the input distance of a guess that knows nothing about x.
        represents: fraction of the inputs with m_g < m_r (1.0: the layer represents every input).
        beats_chance: fraction of the inputs whose inversion lands closer to x than the unrelated input does.
        seconds: wall time of this layer's inversion; in a batched sweep (``provenance.options["batched"]``) the
            layers were optimised together, and this is the total divided by the number of layers.
        steps_run: optimisation steps actually taken.
        stopped: why the inversion ended early, or None.
        blind: with ``sweep(spectrum=...)``: the mean number of input directions the layer cannot see at the inputs
            (:func:`reprinvert.spectrum`: its blind directions and those of known invariances it set apart), NaN
            where its iterations did not converge for some input and found fewer than k blind directions there
            (no count stands; a warning says so), else None.
        condition: with ``sweep(spectrum=...)``: the median condition number of the layer's Jacobian, else None
            (a lower bound where the iterations did not converge).
        verdict: what the layer's inversions show (:func:`~reprinvert.Inversion.verdict`, joined over the samples):
            ``"lost"`` when some sample's search reproduced the representation far from x (a witness), ``"kept"``
            when every sample's reproduced it on x, else ``"undecided"``.
        evidence: the verdict's evidence in plain words.
        notes: what stands beside the verdict: how many samples are at chance level, or farther from x than the
            search's start.
    """

    layer: str
    index: int
    type: str
    representation_shape: tuple[int, ...]
    size_ratio: float
    embedding_distance: float
    reference_distance: float
    input_distance: float
    perturbation_distance: float
    chance_input_distance: float
    normalized_feature_error: float
    psnr: float
    represents: float
    beats_chance: float
    seconds: float
    steps_run: int
    stopped: str | None
    blind: float | None = None
    condition: float | None = None
    verdict: str = "undecided"
    evidence: str = ""
    notes: tuple[str, ...] = ()

    def judged(self, inv: Inversion) -> SweepRow:
        """This row with its verdict and evidence from ``inv`` (and its spectrum, when computed)."""
        v = layer_verdict(inv.verdict, blind=self.blind)
        return replace(self, verdict=v.label, evidence=v.evidence, notes=v.notes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (shapes as lists, non-finite floats as None)."""
        out = asdict(self)
        out["representation_shape"] = list(self.representation_shape)
        out["notes"] = list(self.notes)
        return {k: _finite(v) for k, v in out.items()}


@dataclass(frozen=True)
class Sweep:
    """The result of :func:`sweep`.

    Attributes:
        rows: one :class:`SweepRow` per layer, in sweep order.
        inversions: the :class:`~reprinvert.Inversion` of each layer (same order): reconstructions, per-sample
            metrics, loss histories.
        original: the input ``x`` (a detached copy).
        provenance: versions, recipe, seed, device, options.
        seconds: wall time of the whole sweep (layer choice included).
    """

    rows: tuple[SweepRow, ...]
    inversions: tuple[Inversion, ...] = field(repr=False)
    original: torch.Tensor = field(repr=False)
    provenance: Provenance = field(repr=False)
    seconds: float = 0.0

    @property
    def layers(self) -> tuple[str, ...]:
        """The layer names, in sweep order."""
        return tuple(r.layer for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SweepRow]:
        return iter(self.rows)

    def __getitem__(self, layer: str | int) -> Inversion:
        """The inversion of a layer, by name or by position."""
        if isinstance(layer, int) and not isinstance(layer, bool):
            return self.inversions[layer]
        for row, inv in zip(self.rows, self.inversions):
            if row.layer == layer:
                return inv
        raise KeyError(f"layer {layer!r} is not part of this sweep; layers: {list(self.layers)}")

    def reconstructions(self) -> list[torch.Tensor]:
        """``[original, x_g at layer 1, x_g at layer 2, ...]``: the columns of a report grid, each ``(B, ...)``."""
        originals = self.inversions[0].original if self.inversions else self.original
        return [originals, *(inv.input for inv in self.inversions)]

    def table(self, *, per_sample: bool = False) -> list[dict[str, Any]]:
        """The metrics as JSON-ready rows.

        Args:
            per_sample: one row per (layer, input) with that input's metrics, ``represents`` and
                ``beats_chance`` as bools, and the input's name (``provenance.inputs``) when there is one,
                instead of one row per layer with batch means.

        Returns:
            A list of dicts; non-finite values are None.
        """
        if not per_sample:
            return [r.as_dict() for r in self.rows]
        out = []
        names = self.provenance.inputs
        for row, inv in zip(self.rows, self.inversions):
            verdicts = inv.verdict
            for i, values in enumerate(inv.metrics.per_sample()):
                named = {"input": names[i]} if i < len(names) else {}
                out.append(
                    {"layer": row.layer, "index": row.index, "sample": i, **named,
                     **{k: _finite(v) for k, v in values.items()}, **_verdict_columns(verdicts[i])}
                )
        return out

    @classmethod
    def concat(cls, parts: Sequence[Sweep]) -> Sweep:
        """One sweep of the inputs of ``parts``, in order: the same layers, recipe and seed, run on chunks of a
        larger set of inputs (``reprinvert sweep --batch-size``). Per-layer rows are recomputed from the joined
        per-input metrics; times add up.

        Each part's chance baseline is another input of *its* chunk (or, for a chunk of one, a fixed shuffle),
        so the chance figures depend on the chunking; everything else is as one sweep of all the inputs gives.

        Raises:
            ValueError: no parts, or parts of different studies (layers, recipe, seed or options differ).
        """
        if not parts:
            raise ValueError("Sweep.concat needs at least one sweep")
        first = parts[0]
        for part in parts[1:]:
            for what, a, b in (
                ("layers", first.layers, part.layers), ("recipe", first.provenance.recipe, part.provenance.recipe),
                ("seed", first.provenance.seed, part.provenance.seed),
                ("model", first.provenance.model, part.provenance.model),
            ):
                if a != b:
                    raise ValueError(f"cannot join sweeps with different {what}: {a!r} and {b!r}")
        if len(parts) == 1:
            return first
        inversions = tuple(Inversion.concat([p.inversions[k] for p in parts]) for k in range(len(first.rows)))
        rows = tuple(row_of(k, inv, first.rows[k].type) for k, inv in enumerate(inversions))
        original = torch.cat([p.original.to(first.original.device) for p in parts])  # (loaded parts: on the CPU)
        provenance = replace(
            first.provenance, input_shape=tuple(original.shape),
            inputs=tuple(name for p in parts for name in p.provenance.inputs),
            created=max(p.provenance.created for p in parts),
        )
        return cls(rows=rows, inversions=inversions, original=original, provenance=provenance,
                   seconds=sum(p.seconds for p in parts))

    def save(self, folder: str | Path) -> Path:
        """Write this sweep into ``folder`` (created if missing); read it back with :func:`reprinvert.load`.

        Files: ``sweep.json`` (the schema version, the provenance, the per-layer rows and the timing),
        ``original.npz`` (the input) and ``layers/<layer>.npz``, one :meth:`Inversion.save` file per layer (the
        order is in ``sweep.json``). An open format (JSON and NumPy's ``.npz``); every field round-trips exactly,
        tensors come back on the CPU. ``sweep.json`` is written last, so a folder without it is an incomplete save.

        Returns:
            The folder.
        """
        out = Path(folder)
        try:
            out.mkdir(parents=True, exist_ok=True)
            files = []
            for inv in self.inversions:
                files.append(inv.save(out / layer_file(inv.layer)).relative_to(out).as_posix())
            _archive.write(out / "original.npz", {"original": self.original}, {"schema": SWEEP_SCHEMA})
            document = {
                "schema": SWEEP_SCHEMA,
                "provenance": asdict(self.provenance),
                "rows": [asdict(r) for r in self.rows],
                "seconds": self.seconds,
                "inversions": files,
            }
            _archive.write_json(out / "sweep.json", document)
        except OSError as exc:
            raise ValueError(f"cannot write the sweep into '{out}': {exc.strerror or exc}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-ready: provenance, per-layer rows and per-sample rows."""
        prov = asdict(self.provenance)
        prov["input_shape"] = list(self.provenance.input_shape)
        return {
            "provenance": prov,
            "seconds": self.seconds,
            "layers": self.table(),
            "per_sample": self.table(per_sample=True),
        }

    def __str__(self) -> str:
        head = ["layer", "shape", "size", *(label for _, label in METRICS), "represents", "verdict", "s"]
        body = []
        for r in self.rows:
            shape = "x".join(str(v) for v in r.representation_shape[1:]) or "-"
            values = [_fmt(getattr(r, key)) for key, _ in METRICS]
            body.append([r.layer, shape, _fmt(r.size_ratio), *values, f"{r.represents:.0%}", r.verdict,
                         f"{r.seconds:.1f}"])
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines = ["  ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
                 for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


def _verdict_columns(v: Verdict) -> dict[str, str]:
    return {"verdict": v.label, "evidence": v.evidence, "notes": "; ".join(v.notes)}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def row_of(index: int, inv: Inversion, type_name: str) -> SweepRow:
    """The table row of one layer's inversion (batch means)."""
    s = inv.metrics.summary()
    per_sample_in = inv.original[0].numel()
    metrics: dict[str, Any] = {key: s[key] for key, _ in METRICS}
    row = SweepRow(
        layer=inv.layer,
        index=index,
        type=type_name,
        representation_shape=tuple(inv.target.shape),
        size_ratio=(inv.target[0].numel() if inv.target.dim() else 1) / max(per_sample_in, 1),
        **metrics,
        represents=s["represents"],
        beats_chance=s["beats_chance"],
        seconds=inv.seconds,
        steps_run=inv.steps_run,
        stopped=inv.stopped,
    )
    return row.judged(inv)


def layer_file(name: str) -> str:
    """Where a sweep's folder keeps the inversion of layer ``name``: ``layers/<name>.npz`` (characters other than
    letters, digits, ``.``, ``_`` and ``-`` as ``_``; the model itself, ``""``, as ``_``)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"
    return f"layers/{safe}.npz"
