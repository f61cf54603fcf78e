"""What an inversion shows about a layer: :class:`Verdict` (``"kept"``, ``"lost"`` or ``"undecided"``, with its
evidence in plain words), per sample and per layer.

The three verdicts separate the layer's loss from the search's failure:

* ``"kept"``: the search reproduced the representation (m_g < m_r) and landed on x (m_i within the faint reference
  perturbation's distance ||x' - x||): x is shown to be recoverable from the layer.
* ``"lost"``: the search reproduced the representation yet landed farther from x than the perturbation: the
  reconstruction is a *witness*, an input that the layer cannot tell from x better than it tells x from a slightly
  noisy x.
* ``"undecided"``: the search did not reproduce the representation (m_g >= m_r): nothing follows about the layer.

"Lost" is never said where the search failed. Two notes may stand beside any verdict: a reconstruction no closer
to x than an unrelated input (chance level), and one farther from x than the search's own start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Label", "Verdict", "judge", "layer_verdict"]

#: The three verdicts.
Label = Literal["kept", "lost", "undecided"]

_UNDECIDED_ADVICE = (
    "no conclusion about the layer; try more steps, another recipe (docs: recipes), or reprinvert.spectrum for "
    "the directions the layer cannot see"
)


@dataclass(frozen=True)
class Verdict:
    """What one inversion (or a layer's inversions) shows.

    Attributes:
        label: ``"kept"``, ``"lost"`` or ``"undecided"`` (the docs' "Verdicts" page explains each).
        evidence: the measurements behind the label, in plain words.
        notes: remarks that stand beside any label: ``"at chance level"`` (no closer to x than an unrelated input)
            and ``"farther than the start"`` (farther from x than the search's starting point), with their figures.
    """

    label: Label
    evidence: str
    notes: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """The label with its notes' short forms, e.g. ``"undecided, at chance level"`` (for tables and figures)."""
        return ", ".join([self.label, *(n.split(":")[0] for n in self.notes)])

    def __str__(self) -> str:
        return "; ".join([f"{self.label}: {self.evidence}", *self.notes])


def _g(value: float) -> str:
    return f"{value:.3g}"


def _one(m_g: float, m_r: float, m_i: float, pert: float, chance: float, start: float) -> Verdict:
    if not m_g < m_r:
        label: Label = "undecided"
        evidence = (
            f"the search did not reproduce the representation (m_g {_g(m_g)} >= m_r {_g(m_r)}): {_UNDECIDED_ADVICE}"
        )
    elif m_i <= pert:
        label = "kept"
        evidence = (
            f"the search reproduced the representation (m_g {_g(m_g)} < m_r {_g(m_r)}) and landed on x "
            f"(m_i {_g(m_i)} <= ||x'-x|| {_g(pert)})"
        )
    else:
        label = "lost"
        evidence = (
            f"the search reproduced the representation (m_g {_g(m_g)} < m_r {_g(m_r)}) yet landed far from x "
            f"(m_i {_g(m_i)} > ||x'-x|| {_g(pert)}): the reconstruction is a witness, an input the layer cannot "
            "tell from x"
        )
    notes = []
    if math.isfinite(chance) and not m_i < chance:
        notes.append(f"at chance level: no closer to x than an unrelated input (m_i {_g(m_i)} >= {_g(chance)})")
    if math.isfinite(start) and m_i > start:
        notes.append(f"farther than the start: the search ended farther from x than it began (m_i {_g(m_i)} > "
                     f"{_g(start)})")
    return Verdict(label, evidence, tuple(notes))


def judge(
    embedding_distance: torch.Tensor,
    reference_distance: torch.Tensor,
    input_distance: torch.Tensor,
    perturbation_distance: torch.Tensor,
    chance_input_distance: torch.Tensor,
    start_input_distance: torch.Tensor | None = None,
) -> tuple[Verdict, ...]:
    """The verdict of each sample from its distances (each ``(B,)``; ``start_input_distance``: m_i of the search's
    starting point, or None when unknown)."""
    columns = [embedding_distance, reference_distance, input_distance, perturbation_distance, chance_input_distance]
    b = input_distance.shape[0]
    start = start_input_distance if start_input_distance is not None else torch.full((b,), float("nan"))
    rows = zip(*(c.double().cpu().tolist() for c in [*columns, start]))
    return tuple(_one(*row) for row in rows)


def layer_verdict(samples: Sequence[Verdict], *, blind: float | None = None) -> Verdict:
    """One layer's verdict from its samples': ``"lost"`` when any sample has a witness (the layer cannot tell that
    input from another), ``"kept"`` when every sample is kept, else ``"undecided"``. ``blind``: the mean number of
    blind directions from :func:`reprinvert.spectrum`, when computed, set beside a ``"lost"``."""
    n = len(samples)
    if n == 0:
        return Verdict("undecided", "no samples")
    counts = {lab: sum(v.label == lab for v in samples) for lab in ("kept", "lost", "undecided")}
    spread = ", ".join(f"{counts[lab]} of {n} {lab}" for lab in ("kept", "lost", "undecided") if counts[lab])
    label: Label
    if counts["lost"]:
        first = next(i for i, v in enumerate(samples) if v.label == "lost")
        label, evidence = "lost", f"{spread}; sample {first} has a witness: {samples[first].evidence}"
        if blind is not None and math.isfinite(blind):
            evidence += (f"; the spectrum agrees ({blind:.3g} blind directions at x)" if blind > 0 else
                         "; the spectrum finds no blind direction at x: the witness lies beyond its local view")
    elif counts["kept"] == n:
        label, evidence = "kept", f"{spread}: every sample's search reproduced the representation and landed on x"
    else:
        label, evidence = "undecided", f"{spread}: {_UNDECIDED_ADVICE}"
    notes = []
    for key, words in (("at chance level", "at chance level"), ("farther than the start", "farther than the start")):
        k = sum(any(n_.startswith(key) for n_ in v.notes) for v in samples)
        if k:
            notes.append(f"{words}: {k} of {n} samples")
    return Verdict(label, evidence, tuple(notes))
