"""The result of a token model's inversion in token terms: :class:`TokenInversion` (recovered ids, certificates,
margins, verdicts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._inversion import Inversion
from ._verdict import Verdict

__all__ = ["TokenInversion"]


@dataclass(frozen=True)
class TokenInversion:
    """The result of :func:`reprinvert.invert_tokens`.

    Attributes:
        ids: the recovered token ids ``(B, T)`` (long).
        original: the ids that were inverted ``(B, T)``.
        certified: per sample ``(B,)``: re-embedding ``ids`` reproduces the layer's representation of ``original``
            within ``tolerance`` (relative). A certificate proves that ``ids`` is *a* token sequence the layer
            cannot tell from ``original``; where the layer is injective on token sequences it is ``original``.
        distance: per sample ``(B,)``: ||rep(ids) - rep(original)|| / ||rep(original)||, computed the way the
            target was (0.0 exactly where the ids are right).
        tolerance: the relative distance below which a sample is certified (a few units of the representation
            dtype's rounding, ``8 * torch.finfo(dtype).eps`` by default).
        margin: per position ``(B, T)``: how much worse the best *other* token checked there is than the chosen
            one, as a relative squared distance ||rep' - target||^2 / ||target||^2 (of that position's
            representation for a causal layer, of the whole representation for a bidirectional one; from the
            last sweep that visited the position; 0 where no other candidate was checked). Large margins mean
            the position is pinned down.
        positions: ``(B, T)`` bool: the positions scored in :attr:`accuracy` (``attention_mask`` when one was
            passed, else every position).
        layer: resolved name of the inverted layer.
        embedding: resolved name of the token embedding searched over.
        method: what was run: the continuous start, then ``"position by position"`` (a causal layer: each position's
            representation depends only on the tokens up to it) or ``"coordinate sweeps"`` (a bidirectional one),
            with the candidates checked.
        checked: candidate sequences whose representation was computed.
        seconds: wall time of the whole inversion.
        continuous: the :class:`~reprinvert.Inversion` of the continuous search that gave the start (None when
            ``steps=0``).
    """

    ids: torch.Tensor
    original: torch.Tensor
    certified: torch.Tensor
    distance: torch.Tensor
    tolerance: float
    margin: torch.Tensor
    positions: torch.Tensor
    layer: str
    embedding: str
    method: str
    checked: int
    seconds: float
    continuous: Inversion | None = field(default=None, repr=False)

    @property
    def correct(self) -> torch.Tensor:
        """``(B, T)`` bool: the recovered id equals the original one."""
        return self.ids == self.original

    @property
    def accuracy(self) -> float:
        """The fraction of scored positions (:attr:`positions`) recovered exactly."""
        n = int(self.positions.sum())
        return float((self.correct & self.positions).sum()) / n if n else float("nan")

    @property
    def verdict(self) -> tuple[Verdict, ...]:
        """Per sample, in token terms: ``"kept"`` (certified and the original ids: the sequence is recovered
        exactly), ``"lost"`` (certified but other ids: a witness, another token sequence the layer cannot tell from
        the original) or ``"undecided"`` (not certified: the search found no sequence that reproduces the
        representation, so nothing follows about the layer)."""
        out = []
        for b in range(self.ids.shape[0]):
            d, pos = float(self.distance[b]), self.positions[b]
            right = int((self.correct[b] & pos).sum())
            n = int(pos.sum())
            if bool(self.certified[b]) and right == n:
                out.append(Verdict("kept", f"recovered exactly and certified (relative distance {d:.3g} <= "
                                           f"{self.tolerance:.3g}): all {n} tokens"))
            elif bool(self.certified[b]):
                out.append(Verdict("lost", f"certified (relative distance {d:.3g} <= {self.tolerance:.3g}) with "
                                           f"{n - right} of {n} tokens different: a witness, another token sequence "
                                           "the layer cannot tell from the original"))
            else:
                out.append(Verdict("undecided", f"not certified: the best sequence found is at relative distance "
                                                f"{d:.3g} > {self.tolerance:.3g} ({right} of {n} tokens match the "
                                                "input); no conclusion about the layer; try more steps= or "
                                                "candidates="))
        return tuple(out)

    def __repr__(self) -> str:
        return (
            f"TokenInversion(layer={self.layer!r}, ids={tuple(self.ids.shape)}, certified="
            f"{int(self.certified.sum())}/{self.certified.shape[0]}, accuracy={self.accuracy:.1%}, "
            f"method={self.method!r})"
        )
