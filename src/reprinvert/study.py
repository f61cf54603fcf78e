"""Long studies: many inputs swept chunk by chunk into one folder (:class:`Study`).

A study of many images, or of one slow model, takes hours: a machine restarts, a user presses Ctrl-C, several
processes share the work. A :class:`Study` runs :func:`reprinvert.sweep` on one chunk of inputs at a time and
keeps each chunk in its folder (``part-NNNN/``, a sweep's folder: each layer as soon as it is finished, the whole
chunk when it is done). Run again with the same arguments, it continues where it stopped; a folder that holds
another study's work is refused (``study.json`` holds the study's fingerprint: the model's parameters and
buffers, the inputs and every setting, hashed). Under ``torchrun`` the chunks are shared out across the processes
(with fewer chunks than processes, the chunks' layers are), and process 0 assembles the result.
:func:`reprinvert.load` reads the folder, finished or not (its finished chunks, joined). The command line's
``reprinvert sweep --batch-size N`` is a study.

Example:
    >>> import pathlib, tempfile, torch, torch.nn as nn, reprinvert as ri
    >>> model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "study"
    >>> study = ri.Study(folder, model, torch.rand(5, 6), batch_size=2, layers=["0", "2"], steps=5, progress=False)
    >>> result = study.run()
    >>> len(result.original), sorted(p.name for p in folder.glob("part-*"))
    (5, ['part-0000', 'part-0001', 'part-0002'])
    >>> ri.load(folder).rows == result.rows  # a rerun, or load(), reads what is there
    True
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _archive
from ._feed import Feed
from ._layer_choice import choose_layers
from ._layers import resolve_layer
from ._persist import load
from ._sweep import sweep
from ._sweep_result import Sweep

__all__ = ["Study"]

#: One chunk of a study's inputs: a name per input, and a function that loads the chunk's batch.
Chunk = tuple[Sequence[str], Callable[[], torch.Tensor]]


class Study:
    """A sweep of many inputs, run chunk by chunk into ``folder``, resumable and shareable across processes.

    Args:
        folder: where the study keeps its work (created if missing).
        model: the model (as for :func:`reprinvert.sweep`).
        x: the inputs, batch first (or pass ``chunks``).
        batch_size: inputs per chunk (default: all of them in one chunk); only one chunk is inverted at a time.
        input_names: a name per input of ``x`` (default ``input[i]``), kept in the provenance and the reports.
        chunks: instead of ``x``: a sequence of ``(names, load)`` pairs, a name per input of the chunk and a function
            that returns its batch, so that only one chunk is in memory at a time (the command line loads images
            this way).
        inputs_key: with ``chunks``, what identifies the inputs in the fingerprint (JSON-ready; default: the
            names). With ``x`` the inputs' values are hashed.
        fresh: discard what ``folder`` holds and start over.
        **options: options of :func:`reprinvert.sweep` (``layers``, ``recipe``, ``steps``, ``seed``, ``normalize``,
            ``start``, ``progress``, ...), the same for every chunk.

    Raises:
        ValueError: ``folder`` holds another study's work (the message names what differs: pass another folder,
            or ``fresh=True``), or bad inputs.
    """

    def __init__(
        self, folder: str | Path, model: nn.Module, x: torch.Tensor | None = None, *, batch_size: int | None = None,
        input_names: Sequence[str] | None = None, chunks: Sequence[Chunk] | None = None, inputs_key: Any = None,
        fresh: bool = False, **options: Any,
    ) -> None:
        for reserved in ("input_names", "resume", "x"):
            if reserved in options:
                raise TypeError(f"Study() got {reserved}= among the sweep options; it is the study's own")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int (inputs per chunk) or None")
        self.folder, self.model, self.fresh, self.options = Path(folder), model, fresh, dict(options)
        self.progress = bool(options.get("progress", True))
        if (x is None) == (chunks is None):
            raise TypeError("pass the inputs as x (a tensor) or as chunks, not both and not neither")
        key: Any
        if x is not None:
            self.chunks, key = _tensor_chunks(x, batch_size, input_names), _archive.digest([("x", x)])
        else:
            assert chunks is not None
            self.chunks = list(chunks)
            key = inputs_key if inputs_key is not None else [list(names) for names, _ in self.chunks]
        if not self.chunks:
            raise ValueError("the study has no inputs; pass at least one")
        settings = {k: v for k, v in options.items() if k != "progress"}
        self.fingerprint = _archive.fingerprint(
            model=model, inputs=key, chunks=[len(names) for names, _ in self.chunks], **settings
        )

    def part(self, k: int) -> Path:
        """The folder of chunk ``k`` (0-based)."""
        return self.folder / f"part-{k:04d}"

    def done(self) -> list[int]:
        """The chunks finished so far."""
        return [k for k in range(len(self.chunks)) if (self.part(k) / "sweep.json").is_file()]

    def kept_layers(self) -> int:
        """Finished layers kept in the folders of chunks that are not finished yet."""
        return sum(
            len(list(self.part(k).glob("**/layers/*.npz")))
            for k in range(len(self.chunks)) if not (self.part(k) / "sweep.json").is_file()
        )

    def finished(self) -> Sweep | None:
        """The finished chunks joined into one :class:`~reprinvert.Sweep` (None when none is finished yet)."""
        parts = [load(self.part(k)) for k in self.done()]
        return Sweep.concat([p for p in parts if isinstance(p, Sweep)]) if parts else None

    def run(self) -> Sweep | None:
        """Invert every chunk not finished yet (this process's share under ``torchrun``), keeping each as it ends.

        Returns:
            The whole study as one :class:`~reprinvert.Sweep` (:meth:`Sweep.concat` of the chunks); under
            ``torchrun``, process 0 returns it once every process is done, the others None.

        Raises:
            KeyboardInterrupt: after keeping every finished chunk and layer (:meth:`finished` joins the chunks;
                run again to continue).
        """
        rank, world, owned = _distributed(self.model)
        try:
            if self.fresh and rank == 0 and self.folder.is_dir():
                shutil.rmtree(self.folder)
            _barrier(world)  # rank 0 has cleared the old work (fresh) before anyone looks at it
            self._claim()
            if world > 1 and len(self.chunks) < world:
                if rank == 0:
                    self._say(f"{len(self.chunks)} chunk(s) for {world} processes: their layers are shared out")
                self._share_layers(rank, world)
                _barrier(world)
                mine = [k for k in range(len(self.chunks)) if rank == 0]
            else:
                mine = [k for k in range(len(self.chunks)) if k % world == rank]
            for k in mine:
                self._chunk(k)
            _barrier(world)
            if rank != 0:
                return None
            result = self.finished()
            assert result is not None
            return result
        finally:
            if owned:
                import torch.distributed as dist

                dist.destroy_process_group()

    def _claim(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the study's folder '{self.folder}': {exc.strerror or exc}") from None
        _archive.claim(
            self.folder / "study.json", self.fingerprint,
            holds_work=lambda: any(self.folder.glob("part-*/**/*.npz")),
            what=f"'{self.folder}' holds results of another study",
            fix="give another folder, or start over with fresh=True (the command line's --fresh) to discard them",
        )

    def _where(self, k: int) -> str:
        names = list(self.chunks[k][0])
        span = f"{names[0]}{' ... ' + names[-1] if len(names) > 1 else ''}" if names else ""
        return f"chunk {k + 1}/{len(self.chunks)} ({span})"

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)

    def _chunk(self, k: int) -> None:
        """Chunk ``k`` inverted and saved into its folder (nothing when it is finished already)."""
        folder = self.part(k)
        if (folder / "sweep.json").is_file():
            self._say(f"{self._where(k)}: done in an earlier run, skipped")
            return
        shares = sorted(folder.glob("share-*/layers/*.npz"))
        for path in shares:  # layers other processes inverted (under torchrun): into the chunk's own folder
            (folder / "layers").mkdir(parents=True, exist_ok=True)
            path.replace(folder / "layers" / path.name)
        if len(self.chunks) > 1:
            self._say(f"{self._where(k)} ...")
        names, load_x = self.chunks[k]
        part = sweep(self.model, load_x(), **self.options, input_names=list(names), resume=folder)
        for share in folder.glob("share-*"):
            shutil.rmtree(share, ignore_errors=True)
        resumed = part.provenance.options.get("resumed") or []
        if resumed:
            self._say(f"{self._where(k)}: {len(resumed)} layer(s) already finished (an earlier run, another "
                      "process), loaded")

    def _share_layers(self, rank: int, world: int) -> None:
        """This process's share of the (chunk, layer) pairs, each kept in ``part-NNNN/share-R/``."""
        pair = 0
        for k, (names, load_x) in enumerate(self.chunks):
            if (self.part(k) / "sweep.json").is_file():
                continue
            x = load_x()
            every_layer = self._layer_names(x)
            mine = [name for j, name in enumerate(every_layer) if (pair + j) % world == rank]
            pair += len(every_layer)
            if mine:  # (the spectrum, if asked for, is measured when process 0 assembles the chunk)
                options = {**self.options, "layers": mine, "batched": False, "spectrum": False}
                sweep(self.model, x, **options, input_names=list(names), resume=self.part(k) / f"share-{rank}")

    def _layer_names(self, x: torch.Tensor) -> list[str]:
        """The layers each chunk's sweep inverts."""
        o = self.options
        feed = Feed.of(self.model, normalize=o.get("normalize"), model_kwargs=o.get("model_kwargs"), x=x)
        start = resolve_layer(feed.model, o["start"])[0] if o.get("start") is not None else None
        return choose_layers(feed, x, o.get("layers"), o.get("every"), start)[0]


def _tensor_chunks(x: torch.Tensor, batch_size: int | None, names: Sequence[str] | None) -> list[Chunk]:
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(f"x must be a batch-first torch.Tensor, got {type(x).__name__}")
    if names is not None and len(names) != x.shape[0]:
        raise ValueError(f"input_names has {len(names)} names for {x.shape[0]} inputs; give one name per input")
    all_names = [str(n) for n in names] if names is not None else [f"input[{i}]" for i in range(x.shape[0])]
    size = batch_size or x.shape[0]

    def rows(i: int) -> Callable[[], torch.Tensor]:
        return lambda: x[i:i + size]

    return [(all_names[i:i + size], rows(i)) for i in range(0, x.shape[0], size)]


def _distributed(model: nn.Module) -> tuple[int, int, bool]:
    """``(rank, world size, whether this study started the process group)``: under ``torchrun`` (``WORLD_SIZE`` > 1)
    the process group is used, or started (nccl for a model on a CUDA device, else gloo); else ``(0, 1, False)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    cuda = next((p.device.type == "cuda" for p in model.parameters()), False)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
