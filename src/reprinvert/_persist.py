"""Results on disk: :func:`load` reads any of them; :class:`LayerStore` keeps a running sweep's finished layers.

There is one format (``_archive``): an inversion is one ``.npz`` file; a sweep is a folder (``sweep.json``,
``original.npz``, ``layers/<layer>.npz``); a study is a folder of sweeps (``study.json``, ``part-NNNN/``). A sweep
that runs with ``resume=`` writes its layers into its folder as they finish, with the call's fingerprint in
``fingerprint.json``, and the finished sweep into the same folder: a resumed folder and a saved one are the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _archive
from ._inversion import INVERSION_SCHEMA, Inversion
from ._sweep_result import SWEEP_SCHEMA, Provenance, Sweep, SweepRow, layer_file

__all__ = ["LayerStore", "check_schema", "load"]


def load(path: str | Path, *, classes: Mapping[str, type] | None = None) -> Sweep | Inversion:
    """Read a result saved by :meth:`Sweep.save` (a folder) or :meth:`Inversion.save` (a ``.npz`` file), or the
    ``result`` folder the command line writes (its finished chunks joined, see :meth:`Sweep.concat`).

    Args:
        path: the folder of a saved sweep or study, or the file of a saved inversion.
        classes: your own regularizer or parametrisation classes by name, when the saved recipe uses them
            (reprinvert's are found by themselves).

    Returns:
        The :class:`Sweep` or :class:`~reprinvert.Inversion`, equal field by field to the one saved (tensors on
        the CPU).

    Raises:
        ValueError: no saved result at ``path``, an incomplete save, or one written by a newer reprinvert.

    Example:
        >>> import tempfile, pathlib, torch, torch.nn as nn, reprinvert as ri
        >>> res = ri.invert(nn.Linear(4, 3), "", torch.rand(2, 4), steps=5)
        >>> back = ri.load(res.save(pathlib.Path(tempfile.mkdtemp()) / "linear"))
        >>> torch.equal(back.input, res.input), back.recipe == res.recipe
        (True, True)
    """
    p = Path(path)
    if p.is_dir() and not (p / "sweep.json").is_file() and list(p.glob("part-*/sweep.json")):
        # A study saved chunk by chunk (reprinvert.Study, the command line's --batch-size): its finished parts,
        # joined in order.
        parts = [load(f.parent, classes=classes) for f in sorted(p.glob("part-*/sweep.json"))]
        return Sweep.concat([part for part in parts if isinstance(part, Sweep)])
    if p.is_dir():
        return _load_sweep(p, classes)
    if not p.is_file():
        raise ValueError(f"no saved result at '{p}' (a folder written by Sweep.save, or a .npz by Inversion.save)")
    tensors, meta = _archive.read(p)
    check_schema(meta.get("schema"), INVERSION_SCHEMA, p)
    return Inversion._from_archive(tensors, meta, classes)


def _load_sweep(p: Path, classes: Mapping[str, type] | None) -> Sweep:
    if not (p / "sweep.json").is_file():
        raise ValueError(
            f"'{p}' has no sweep.json: not a saved sweep, or a save that did not finish (Sweep.save writes "
            "sweep.json last)"
        )
    document = _archive.decode(json.loads((p / "sweep.json").read_text()))
    check_schema(document.get("schema"), SWEEP_SCHEMA, p / "sweep.json")
    prov = dict(document["provenance"])
    prov["input_shape"] = tuple(prov["input_shape"])
    prov["skipped_layers"] = tuple(tuple(pair) for pair in prov.get("skipped_layers", ()))
    prov["inputs"] = tuple(prov.get("inputs", ()))
    inversions = []
    for name in document["inversions"]:
        inv = load(p / name, classes=classes)
        assert isinstance(inv, Inversion)
        inversions.append(inv)
    rows = []
    for row, inv in zip(document["rows"], inversions):
        loaded = SweepRow(**{**row, "representation_shape": tuple(row["representation_shape"]),
                             "notes": tuple(row.get("notes", ()))})
        # a sweep saved before rows had verdicts gets them from its inversions
        rows.append(loaded if "verdict" in row else loaded.judged(inv))
    original, _ = _archive.read(p / "original.npz")
    return Sweep(
        rows=tuple(rows), inversions=tuple(inversions), original=original["original"],
        provenance=Provenance(**prov), seconds=document["seconds"],
    )


def check_schema(found: Any, expected: str, path: Path) -> None:
    """``found`` is the schema ``expected`` (a clear error for another kind of file, or a newer version)."""
    kind = expected.partition("/")[0]
    if not isinstance(found, str) or found.partition("/")[0] != kind:
        raise ValueError(f"'{path}' is not a saved {kind.split('.')[-1]} (schema {found!r}, expected {expected!r})")
    if found != expected:
        raise ValueError(
            f"'{path}' was saved with schema {found!r}; this reprinvert reads {expected!r}: upgrade reprinvert "
            "to read it"
        )


class LayerStore:
    """A sweep's folder while it runs (``sweep(resume=folder)``): the call's fingerprint, and one file per finished
    layer, under the name :meth:`Sweep.save` gives it. A folder that holds layers of another call is refused."""

    def __init__(self, folder: Path, fingerprint: Mapping[str, Any]) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"resume={str(folder)!r}: cannot create the folder ({exc.strerror or exc})") from None
        _archive.claim(
            folder / "fingerprint.json", fingerprint, holds_work=lambda: any((folder / "layers").glob("*.npz")),
            what=f"resume={str(folder)!r} holds layers of another call",
            fix="pass another folder, or delete this one to start over",
        )

    def load(self, names: Sequence[str]) -> dict[str, Inversion]:
        """The finished layers among ``names``."""
        out: dict[str, Inversion] = {}
        for name in names:
            path = self.folder / layer_file(name)
            if path.is_file():
                inv = load(path)
                if isinstance(inv, Inversion) and inv.layer == name:
                    out[name] = inv
        return out

    def save(self, inv: Inversion) -> None:
        inv.save(self.folder / layer_file(inv.layer))
