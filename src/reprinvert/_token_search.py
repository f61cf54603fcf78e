"""Token models: recover the token ids behind a layer's representation, with a certificate
(:func:`invert_tokens`).

The continuous search (:func:`reprinvert.invert` with ``start=<the token embedding>``) gives a start: embeddings
that reproduce the representation, mostly near the right tokens. A discrete search then checks whole token
sequences against the representation itself:

* a *causal* layer (each position's representation depends only on the tokens up to it, as in GPT-2) is searched
  position by position: at each position the candidate tokens, nearest to the continuous start first, then the
  rest of the vocabulary, until one reproduces that position's representation (SipIt, Nikolaou et al. 2025);
* a *bidirectional* one (BERT, a pooled sentence embedding) by coordinate sweeps: at each position the tokens
  nearest to the continuous start and those the gradient favours (HotFlip, Ebrahimi et al. 2018) are each put in
  place and the whole sequence scored; the best is kept; sweeps repeat until the sequence is certified or nothing
  changes.

A sample is *certified* when its recovered ids reproduce the representation to within a few units of rounding:
re-embedding right ids gives exactly the target.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ._feed import Feed, rows_of
from ._hooks import Hooks
from ._inversion import Inversion
from ._invert import invert
from ._layers import LayerSpec, resolve_layer
from ._outputs import Selector
from ._progress import Progress
from ._token_inversion import TokenInversion
from ._token_space import TokenSpace
from .recipes import Recipe

__all__ = ["invert_tokens"]


def invert_tokens(
    model: nn.Module,
    layer: LayerSpec,
    ids: torch.Tensor,
    *,
    embedding: LayerSpec | None = None,
    steps: int | None = None,
    recipe: Recipe | str = "default",
    candidates: int = 32,
    sweeps: int = 6,
    rounds: int = 3,
    causal: bool | None = None,
    match: LayerSpec | None = None,
    select: Selector = None,
    call: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> TokenInversion:
    """Recover the token ids ``ids`` from ``layer``'s representation of them, and certify the result.

    Args:
        model: a token model (Hugging Face, sentence-transformers' transformer, any ``nn.Module`` whose forward
            takes ids); it runs in eval mode and comes back untouched.
        layer: the layer whose representation is inverted (name, index or module).
        ids: ``(B, T)`` token ids (long); never modified.
        embedding: the token embedding (an ``nn.Embedding`` of the model, by name, index or module). Default: the
            model's ``get_input_embeddings()`` where it has one, else its largest ``nn.Embedding``.
        steps: steps of the continuous search that gives the start (None: the recipe's; 0: no continuous search,
            the discrete search starts from token 0 everywhere and uses the gradient's candidates only).
        recipe: the continuous search's recipe, as in :func:`reprinvert.invert`.
        candidates: tokens tried per position and sweep from each source (nearest to the continuous start, and the
            gradient's best), so up to twice this many sequences per position.
        sweeps: at most this many coordinate sweeps over the positions (bidirectional layers).
        rounds: bidirectional layers: while a sample is not certified after its sweeps, run the continuous search
            again from the ids found and sweep over its new candidates, up to this many rounds in all.
        causal: search position by position (True), by coordinate sweeps (False), or decide by measuring whether
            changing the last token changes the representation of the others (None, default).
        match: the module after the embedding where tokens are compared with the continuous search's result; its
            output at a position must depend only on the token there (BERT's ``embeddings``: word, position and type
            embeddings and their LayerNorm, which ignores directions the continuous search drifts along). Default:
            the embedding's parent module where it is position-wise (measured), else the embedding itself.
        select, call, model_kwargs, seed: as in :func:`reprinvert.invert` (tensors in ``model_kwargs`` with ``B``
            rows, an ``attention_mask`` say, are taken row by row for the candidates).
        tolerance: the relative distance ||rep(ids') - rep(ids)|| / ||rep(ids)|| below which a sample is certified
            (None: 8 units of rounding of the representation's dtype).
        batch_size: candidate sequences per forward pass.
        progress: show progress over the positions.

    Returns:
        A :class:`~reprinvert.TokenInversion`: the ids, a certificate per sample, margins per position, verdicts in
        token terms.

    Example:
        >>> import torch, torch.nn as nn, reprinvert as ri
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 8))
        >>> found = ri.invert_tokens(model, "1", torch.tensor([[3, 1, 4, 1, 5]]), steps=50)
        >>> found.ids.tolist(), bool(found.certified[0]), found.verdict[0].label
        ([[3, 1, 4, 1, 5]], True, 'kept')
    """
    started = time.perf_counter()
    _check_arguments(ids, candidates, sweeps, rounds, batch_size, tolerance, steps)
    feed = Feed.of(model, model_kwargs=model_kwargs)
    name = resolve_layer(feed.model, layer)[0]
    emb_name, weight = _embedding(feed.model, embedding, ids)
    continuous: dict[str, Any] = dict(recipe=recipe, steps=steps, start=emb_name, select=select, call=call, seed=seed,
                      progress=progress)
    start = invert(model, name, ids, model_kwargs=model_kwargs, **continuous) if steps != 0 else None
    again = functools.partial(_again, model, name, ids, model_kwargs, weight, continuous)
    settings = _Settings(select, call, batch_size, match, candidates, sweeps, rounds, tolerance, causal, progress)
    with feed.session(seed), torch.no_grad():
        search, space, cur, margin, tol, method = _discrete(feed, name, emb_name, weight, ids, start, again, settings)
        distance = search.relative_distance(cur)
    mask = (model_kwargs or {}).get("attention_mask")
    positions = (mask != 0) if isinstance(mask, torch.Tensor) and mask.shape == ids.shape else torch.ones_like(
        ids, dtype=torch.bool)
    source = f"continuous search ({start.steps_run} steps), then " if start is not None else ""
    where = f", tokens compared at {space.name!r}" if start is not None else ""
    return TokenInversion(
        ids=cur.cpu(), original=ids.detach().clone().cpu(), certified=(distance <= tol).cpu(), distance=distance.cpu(),
        tolerance=float(tol), margin=margin.cpu(), positions=positions.cpu(), layer=name, embedding=emb_name,
        method=f"{source}{method}{where}", checked=search.checked, seconds=time.perf_counter() - started,
        continuous=start,
    )


# The continuous start of the sweeps: the space tokens are compared in, the continuous result, its nearest
# candidates, and the continuous search again (samples, ids found) -> new continuous results.
_Start = tuple[TokenSpace, "torch.Tensor | None", "torch.Tensor | None", Callable[..., torch.Tensor]]


@dataclass(frozen=True)
class _Settings:
    select: Selector
    call: int | None
    batch_size: int
    match: LayerSpec | None
    candidates: int
    sweeps: int
    rounds: int
    tolerance: float | None
    causal: bool | None
    progress: bool


def _discrete(
    feed: Feed, name: str, emb_name: str, weight: torch.Tensor, ids: torch.Tensor, start: Inversion | None,
    again: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], o: _Settings,
) -> tuple[_Search, TokenSpace, torch.Tensor, torch.Tensor, float, str]:
    """The discrete search from the continuous one's result ``start``: the search, the space tokens were compared
    in, the ids, the margins, the tolerance and what was run."""
    search = _Search(feed, name, emb_name, weight, ids, o.select, o.call, o.batch_size)
    space = TokenSpace(feed, emb_name, weight, ids, o.match, o.batch_size)
    z = start.input.detach().to(weight.dtype) if start is not None else None
    tol = o.tolerance if o.tolerance is not None else 8 * torch.finfo(search.target.dtype).eps
    is_causal = search.causal() if o.causal is None else bool(o.causal)
    # Tokens ranked by nearness to the continuous start: the whole vocabulary for a causal layer, else the first
    # `candidates`; the nearest is where the discrete search starts.
    near = space.ranked(ids, z, weight.shape[0] if is_causal else o.candidates) if z is not None else None
    cur = near[..., 0] if near is not None else torch.zeros(ids.shape, dtype=torch.long)  # ids found: on the CPU
    bar = Progress(ids.shape[1] * (1 if is_causal else o.sweeps * o.rounds), "invert tokens", "positions",
                   enabled=o.progress, lines_every=max(1, ids.shape[1]))
    try:
        if is_causal:
            cur, margin = search.by_position(cur, near, o.candidates, bar)
            return search, space, cur, margin, tol, "position by position over the whole vocabulary, nearest first"
        cur, margin, rounds = search.by_rounds(cur, (space, z, near, again), o.candidates, o.sweeps, o.rounds, tol,
                                               bar)
        sources = 2 * o.candidates if z is not None else o.candidates  # nearest and the gradient's, or its alone
        return search, space, cur, margin, tol, (f"coordinate sweeps over up to {sources} candidates a position, "
                                                 f"{rounds} round(s)")
    finally:
        bar.close()


def _again(
    model: nn.Module, name: str, ids: torch.Tensor, model_kwargs: Mapping[str, Any] | None, weight: torch.Tensor,
    continuous: dict[str, Any], todo: torch.Tensor, cur: torch.Tensor,
) -> torch.Tensor:
    """The continuous search again for samples ``todo``, from the ids ``cur`` found: its embeddings."""
    with torch.enable_grad():
        found = invert(model, name, ids[todo], model_kwargs=rows_of(model_kwargs, todo, ids.shape[0]),
                       init=weight[cur[todo].to(weight.device)].clone(), **continuous)
    return found.input.detach().to(weight.dtype)


def _check_arguments(
    ids: Any, candidates: int, sweeps: int, rounds: int, batch_size: int, tolerance: float | None, steps: int | None
) -> None:
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dim() != 2:
        what = f"a {ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else \
            type(ids).__name__
        raise TypeError(
            f"ids must be a (B, T) tensor of token ids (long), got {what}; e.g. tokenizer(...)['input_ids']"
        )
    if ids.numel() == 0:
        raise ValueError(f"ids is empty (shape {tuple(ids.shape)}); pass at least one token")
    counts = (("candidates", candidates), ("sweeps", sweeps), ("rounds", rounds), ("batch_size", batch_size))
    for arg, value, least in ((a, v, 1) for a, v in counts):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{arg}={value!r}: expected an int >= {least}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps={steps!r}: expected a non-negative int (0: no continuous start) or None")
    if tolerance is not None and not tolerance >= 0:
        raise ValueError(f"tolerance={tolerance!r}: expected a non-negative relative distance, e.g. 1e-6")


def _embedding(model: nn.Module, spec: LayerSpec | None, ids: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The token embedding's name and weight ``(V, D)``."""
    names = {m: n for n, m in model.named_modules()}
    module: Any
    if spec is not None:
        name, module = resolve_layer(model, spec, argument="embedding")
    else:
        getter = getattr(model, "get_input_embeddings", None)
        module = getter() if callable(getter) else None
        if not isinstance(module, nn.Embedding) or module not in names:
            tables = [m for m in names if isinstance(m, nn.Embedding)]
            if not tables:
                raise TypeError(
                    f"{type(model).__name__} has no nn.Embedding to search over; pass embedding=<the token embedding "
                    "layer> (reprinvert.list_layers(model) lists them)"
                )
            module = max(tables, key=lambda m: m.num_embeddings)
        name = names[module]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(f"embedding={name!r} is a {type(module).__name__} without a (vocabulary, width) weight; pass "
                        "the model's token embedding (an nn.Embedding)")
    if int(ids.max()) >= weight.shape[0] or int(ids.min()) < 0:
        raise ValueError(f"ids hold tokens outside 0..{weight.shape[0] - 1}, the vocabulary of embedding {name!r}")
    return name, weight.detach()


class _Search:
    """The discrete search's scoring: representations of candidate sequences, losses, gradients."""

    def __init__(
        self, feed: Feed, layer: str, emb_name: str, weight: torch.Tensor, ids: torch.Tensor, select: Selector,
        call: int | None, batch_size: int,
    ) -> None:
        self.feed, self.layer, self.weight, self.batch = feed, layer, weight, batch_size
        self.emb_name, self.select, self.call = emb_name, select, call
        self.ids = ids.detach().clone()
        self.b = ids.shape[0]
        self.checked = 0
        # The call counts are checked on one full forward (an error after the layer does not matter) ...
        with Hooks(feed.model, layer, select=select, call=call) as probe:
            probe.run(feed, feed.input(self.ids, grad=False), tolerant=True)
        self.hooks = Hooks(feed.model, layer, select=select, call=call, stop=True)
        # ... the target as every candidate is scored (and the certificate computed): stopping at the layer.
        self.target = self.reps(self.ids, torch.arange(self.b)).clone()
        self.flat_target = self.target.reshape(self.b, -1).double()
        self.target_sq = self.flat_target.pow(2).sum(1).clamp_min(torch.finfo(torch.float64).tiny)
        self.positional = self.target.dim() >= 3 and self.target.shape[1] == ids.shape[1]

    def reps(self, seqs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """rep(layer) of ``seqs`` ``(N, T)``, row ``i`` fed with sample ``rows[i]``'s keyword tensors."""
        out = []
        for i in range(0, seqs.shape[0], self.batch):
            part, which = seqs[i : i + self.batch], rows[i : i + self.batch]
            feed = replace(self.feed, model_kwargs=rows_of(self.feed.model_kwargs, which, self.b))
            with self.hooks:
                out.append(self.hooks.run(feed, part.to(self.ids.device, copy=True))[self.layer])
            self.checked += part.shape[0]
        return out[0] if len(out) == 1 else torch.cat(out)

    def losses(self, seqs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """||rep(seq) - target||^2 / ||target||^2 per sequence (float64)."""
        flat = self.reps(seqs, rows).reshape(seqs.shape[0], -1).double()
        return (flat - self.flat_target[rows]).pow(2).sum(1) / self.target_sq[rows]

    def relative_distance(self, seqs: torch.Tensor) -> torch.Tensor:
        """The certificate's distance, computed exactly as the target was (the whole batch at once)."""
        return self.losses(seqs, torch.arange(self.b)).sqrt()

    def causal(self) -> bool:
        """Whether changing the last token leaves every earlier position's representation exactly as it was."""
        if not self.positional or self.ids.shape[1] < 2:
            return False
        changed = self.ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % self.weight.shape[0]
        rep = self.reps(changed, torch.arange(self.b))
        return bool(torch.equal(rep[:, :-1], self.target[:, :-1]))

    def gradient_candidates(self, cur: torch.Tensor, k: int) -> torch.Tensor:
        """``(B, T, k)``: per position, the tokens whose swap the gradient at ``cur`` favours most."""
        e = self.weight[cur].clone().requires_grad_(True)
        with torch.enable_grad(), Hooks(self.feed.model, self.layer, select=self.select, call=self.call, grad=True,
                                        stop=True, start=self.emb_name) as hooks:
            assert hooks.start is not None
            hooks.start.replacement = e.to(self.weight.dtype)
            rep = hooks.run(self.feed, self.feed.input(self.ids, grad=False))[self.layer]
            hooks.start.replacement = None
            loss = (rep.reshape(self.b, -1).double() - self.flat_target).pow(2).sum()
            (g,) = torch.autograd.grad(loss, e)
        scores = torch.einsum("btd,vd->btv", g.float(), self.weight.float())  # first-order change, up to a constant
        return scores.topk(min(k, self.weight.shape[0]), dim=2, largest=False).indices.cpu()

    def by_sweeps(
        self, cur: torch.Tensor, near: torch.Tensor | None, k: int, sweeps: int, bar: Progress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinate sweeps from ``cur`` over the candidates ``near`` ``(B, T, k')`` and the gradient's ``k``
        best: the recovered ids and the margins."""
        cur = cur.clone()
        b, t_len = cur.shape
        loss = self.losses(cur, torch.arange(b))
        margin = torch.zeros(b, t_len, dtype=torch.float64)
        done = loss.sqrt() <= _MATCH
        for _ in range(sweeps):
            if bool(done.all()):
                break
            grad = self.gradient_candidates(cur, k)
            pool = grad if near is None else torch.cat([near, grad], dim=2)
            changed = False
            for t in self._order(cur):
                active = [i for i in range(b) if not done[i]]
                seqs, rows, spans = [], [], []
                for i in active:
                    options = [v for v in dict.fromkeys(pool[i, t].tolist()) if v != int(cur[i, t])]
                    batch = cur[i].repeat(len(options), 1)
                    batch[:, t] = torch.tensor(options, dtype=cur.dtype)
                    seqs.append(batch)
                    rows += [i] * len(options)
                    spans.append(options)
                bar.update(1)
                if not rows:
                    continue
                scored = self.losses(torch.cat(seqs), torch.tensor(rows)).split([len(o) for o in spans])
                for i, options, values in zip(active, spans, scored):
                    j = int(values.argmin())
                    if float(values[j]) < float(loss[i]):
                        others = torch.cat([values[:j], values[j + 1 :], loss[i : i + 1]])
                        cur[i, t], loss[i], changed = options[j], values[j], True
                    else:
                        others = values
                    margin[i, t] = float(others.min() - loss[i]) if others.numel() else 0.0
                    done[i] = bool(loss[i].sqrt() <= _MATCH)
            if not changed:
                break
        return cur, margin

    def by_rounds(
        self, cur: torch.Tensor, start: _Start, k: int, sweeps: int, rounds: int, tol: float, bar: Progress,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Rounds of coordinate sweeps from ``cur``: ``start`` holds the space tokens are compared in, the continuous
        start, its nearest candidates and a callable that runs the continuous search again; while a sample is not
        certified, the search runs again from the ids found (most of them right) for a new list of candidates."""
        space, z, near, again = start
        margin = torch.zeros(cur.shape, dtype=torch.float64)
        for done in range(1, rounds + 1):
            if done > 1 and z is not None:
                near = space.ranked(self.ids, z, k)
            cur, margin = self.by_sweeps(cur, near, k, sweeps, bar)
            todo = (self.relative_distance(cur) > tol).nonzero().flatten().cpu()
            if not todo.numel() or done == rounds or z is None:
                return cur, margin, done
            z = z.clone()
            z[todo] = again(todo, cur)
        return cur, margin, rounds

    def _order(self, cur: torch.Tensor) -> list[int]:
        """Positions, worst-matched first where the representation has one per position."""
        t_len = cur.shape[1]
        if not self.positional:
            return list(range(t_len))
        rep = self.reps(cur, torch.arange(self.b)).double()
        residual = (rep - self.target.double()).pow(2).reshape(self.b, t_len, -1).sum((0, 2))
        return residual.argsort(descending=True).tolist()

    def by_position(
        self, cur: torch.Tensor, ranked: torch.Tensor | None, k: int, bar: Progress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Position by position over the whole vocabulary (causal layers), in the order ``ranked`` ``(B, T, V)``
        (nearest to the continuous start first; None: by id), ``k`` first and then batches: the ids and the
        margins."""
        cur = cur.clone()
        b, t_len = cur.shape
        v = self.weight.shape[0]
        margin = torch.zeros(b, t_len, dtype=torch.float64)
        target = self.target.double()
        target_sq = target.pow(2).reshape(b, t_len, -1).sum(2).clamp_min(torch.finfo(torch.float64).tiny)
        for t in range(t_len):
            for i in range(b):
                order = ranked[i, t] if ranked is not None else torch.arange(v)
                best, best_value, seen = int(cur[i, t]), float("inf"), []
                first = 0
                for size in (k, *([self.batch] * ((v - k) // self.batch + 1))):
                    chunk = order[first : first + size]
                    first += size
                    if chunk.numel() == 0:
                        break
                    seqs = cur[i].repeat(chunk.numel(), 1)
                    seqs[:, t] = chunk
                    rep = self.reps(seqs, torch.full((chunk.numel(),), i)).double()
                    d = (rep[:, t] - target[i, t]).pow(2).reshape(chunk.numel(), -1).sum(1) / target_sq[i, t]
                    seen.append(d)
                    j = int(d.argmin())
                    if float(d[j]) < best_value:
                        best, best_value = int(chunk[j]), float(d[j])
                    if best_value ** 0.5 <= _MATCH:
                        break
                cur[i, t] = best
                values = torch.cat(seen)
                margin[i, t] = float(values.sort().values[1] - values.min()) if values.numel() > 1 else 0.0
            bar.update(1)
        return cur, margin


# The relative distance below which the search takes a sequence (a position, for causal layers) as matched and
# stops looking: far above rounding (candidates are scored in batches of other shapes than the target), far below
# what a wrong token does (0.05 to 1.5 on a trained MiniLM). The certificate itself uses ``tolerance``.
_MATCH = 1e-3
