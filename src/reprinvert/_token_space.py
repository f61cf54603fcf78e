"""Where :func:`reprinvert.invert_tokens` compares a continuous embedding with the vocabulary's tokens.

A continuous search over a token embedding's output is free along every direction the model ignores. BERT-like
models put the word embedding, plus position and type embeddings, through a LayerNorm, which ignores a shift of
each position's vector along the all-ones direction and its scale: the optimised vectors drift there, and the
nearest token in the embedding table is then often the wrong one (on the trained all-MiniLM-L6-v2 at layer 5: 49%
of tokens right by the table, 88% after the LayerNorm). So tokens are compared after the first module that is
*position-wise*: its output at a position depends only on the token there (found by measurement: changing the
last token must change that position's output and no other); where there is none (GPT-2 adds its position
embedding inside the forward), in the embedding table itself.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ._feed import Feed, rows_of
from ._hooks import Hooks
from ._layers import LayerSpec, resolve_layer

__all__ = ["TokenSpace"]


class TokenSpace:
    """Per-position distances between continuous embeddings and every token, in the space described above."""

    def __init__(
        self, feed: Feed, embedding: str, weight: torch.Tensor, ids: torch.Tensor, match: LayerSpec | None,
        batch_size: int,
    ) -> None:
        self.feed, self.embedding, self.weight, self.batch = feed, embedding, weight, batch_size
        self.b, self.t = ids.shape
        self.device = ids.device
        if match is not None:
            self.name = resolve_layer(feed.model, match, argument="match")[0]
            if not self._position_wise(ids):
                raise ValueError(
                    f"match={self.name!r}: its output at a position must depend only on the token there (changing "
                    "the last token changed other positions, or its output has no position axis); pass the module "
                    "right after the token embedding (BERT: 'embeddings') or the embedding itself"
                )
        else:
            parent = embedding.rpartition(".")[0]
            self.name = parent if parent and self._position_wise(ids, parent) else embedding

    def _position_wise(self, ids: torch.Tensor, name: str | None = None) -> bool:
        name = name or self.name
        if name == self.embedding:
            return True
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % self.weight.shape[0]
        try:
            a, b = self._outputs(ids, name), self._outputs(changed, name)
        except Exception:  # a module this probe cannot run alone is no place to compare tokens (the search proper
            # runs the model whole and reports its errors)
            return False
        if a.dim() < 3 or a.shape[:2] != ids.shape or a.shape != b.shape:
            return False
        return bool(torch.equal(a[:, :-1], b[:, :-1])) and not bool(torch.equal(a[:, -1], b[:, -1]))

    def _outputs(self, seqs: torch.Tensor, name: str, z: torch.Tensor | None = None) -> torch.Tensor:
        """The output of module ``name`` for token sequences ``seqs`` ``(N, T)``: with ``z`` (one row per sample),
        the embedding's output replaced by it and each sample's keyword tensors; without (a table of tokens), the
        keyword tensors of sample 0 for every row (the module is position-wise: an ``attention_mask`` does not
        reach it; per-sample ``token_type_ids`` that differ would, and are not supported here)."""
        out = []
        for i in range(0, seqs.shape[0], self.batch):
            part = seqs[i : i + self.batch]
            rows = torch.zeros(part.shape[0], dtype=torch.long) if z is None else torch.arange(i, i + part.shape[0])
            feed = replace(self.feed, model_kwargs=rows_of(self.feed.model_kwargs, rows, self.b))
            start = self.embedding if z is not None and name != self.embedding else None
            with Hooks(self.feed.model, name, stop=True, start=start) as hooks:
                if hooks.start is not None and z is not None:
                    hooks.start.replacement = z[i : i + part.shape[0]]
                rep = hooks.run(feed, part.to(self.device, copy=True))[name]
            out.append(rep if z is None or name != self.embedding else z[i : i + part.shape[0]])
        return (out[0] if len(out) == 1 else torch.cat(out)).detach().cpu()  # compared on the CPU

    def ranked(self, ids: torch.Tensor, z: torch.Tensor, k: int) -> torch.Tensor:
        """``(B, T, k)``: per position, the ``k`` tokens nearest to ``z`` (the embedding's output, ``(B, T, D)``),
        nearest first; ``k`` at most the vocabulary."""
        v = self.weight.shape[0]
        k = min(k, v)
        if self.name == self.embedding:
            d = torch.cdist(z.reshape(-1, z.shape[-1]).double(), self.weight.double())
            return d.topk(k, dim=1, largest=False).indices.reshape(self.b, self.t, k).cpu()
        here = self._outputs(ids, self.name, z.to(self.weight.dtype)).double().reshape(self.b, self.t, -1)
        best_d = torch.full((self.b, self.t, 0), 0.0, dtype=torch.float64)
        best_i = torch.zeros((self.b, self.t, 0), dtype=torch.long)
        for first in range(0, v, self.batch):
            tokens = torch.arange(first, min(v, first + self.batch))
            table = self._outputs(tokens[:, None].expand(-1, self.t), self.name).double()
            table = table.reshape(tokens.numel(), self.t, -1)
            # ||a - b||^2 per sample, position and token, as |a|^2 + |b|^2 - 2 a.b (one batched product)
            d = (here.pow(2).sum(-1, keepdim=True) + table.pow(2).sum(-1).T[None]
                 - 2 * torch.einsum("btd,ntd->btn", here, table))  # (B, T, n)
            best_d = torch.cat([best_d, d], dim=2)
            best_i = torch.cat([best_i, tokens.expand(self.b, self.t, -1)], dim=2)
            if k < v:  # a running top k; the whole vocabulary is sorted once at the end
                keep = best_d.topk(min(k, best_d.shape[2]), dim=2, largest=False).indices
                best_d, best_i = best_d.gather(2, keep), best_i.gather(2, keep)
        order = best_d.argsort(dim=2)
        return best_i.gather(2, order)
