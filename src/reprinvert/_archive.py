"""Private: the one on-disk format of reprinvert's results, and the one fingerprint of a call.

One ``.npz`` file (NumPy's zip of ``.npy`` arrays, readable without reprinvert or pickle) holds named tensors and
a JSON document under the key ``__meta__``. Tensors keep their dtype exactly: types NumPy lacks (bfloat16) are
stored widened to float32, which is exact, and narrowed back on reading. Non-finite floats in the JSON are
written as ``{"__float__": "nan" | "inf" | "-inf"}``, so the document stays standard JSON and every value
round-trips exactly. Folders of results (a sweep, a study) add JSON documents, written atomically
(:func:`write_json`).

A *fingerprint* (:func:`fingerprint`) identifies a call whose work is saved to be resumed (a sweep's layers, a
study's chunks, a training checkpoint): the model's class and a digest of its parameters and buffers, digests of
the data, and the settings, as JSON. Digests are SHA-256 of each tensor's bytes, so they do not depend on the
number of threads. :func:`claim` writes a folder's fingerprint or refuses a folder that holds another call's work.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Mismatch", "claim", "decode", "differences", "digest", "encode", "fingerprint", "read", "write", "write_json",
]

_META = "__meta__"
_WIDENED = {torch.bfloat16: torch.float32}


def encode(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``{"__float__": ...}`` and tuples by lists (JSON-ready)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (lists stay lists)."""
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def write(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` (any device; stored from the CPU) and ``meta`` (JSON-ready) to the ``.npz`` file ``path``.

    The file is written next to its final name first and then renamed, so an interrupted save never leaves a
    truncated file under the final name.
    """
    dtypes = {}
    arrays: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        if name == _META:
            raise ValueError(f"the name {_META!r} is reserved")
        t = t.detach().cpu()
        dtypes[name] = str(t.dtype).removeprefix("torch.")
        if t.dtype in _WIDENED:
            t = t.to(_WIDENED[t.dtype])
        arrays[name] = t.resolve_conj().resolve_neg().numpy()
    document = json.dumps(encode({**meta, "dtypes": dtypes}), allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    buffer = io.BytesIO()
    arrays[_META] = np.array(document)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)
    return path


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (on the CPU, in their saved dtypes) and the metadata of a file :func:`write` wrote."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files) if hasattr(data, "files") else []
            document = str(data[_META]) if _META in files else None
            arrays = {name: data[name] for name in files if name != _META}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:  # ValueError: not a .npz (pickle, junk)
        raise ValueError(f"cannot read '{path}' as a reprinvert result: {error}") from None
    if document is None:
        raise ValueError(f"'{path}' is not a reprinvert result (no {_META!r} entry)")
    meta = decode(json.loads(document))
    dtypes = meta.pop("dtypes", {})
    tensors = {}
    for name, array in arrays.items():
        t = torch.from_numpy(array.copy())
        want = getattr(torch, dtypes.get(name, ""), None)
        if isinstance(want, torch.dtype) and t.dtype != want:
            t = t.to(want)
        tensors[name] = t
    return tensors, meta


def write_json(path: Path, document: Any) -> Path:
    """Write ``document`` (encoded, standard JSON) to ``path`` atomically: beside it first (a name of this process's
    own, so that processes sharing the folder never write into one file), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(encode(document), indent=1, allow_nan=False) + "\n")
    partial.replace(path)
    return path


#: The version of :func:`fingerprint`'s format: fingerprints of another version never match.
FINGERPRINT = "reprinvert.fingerprint/1"


def digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes (on the CPU)."""
    h = hashlib.sha256()
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return "tensor " + digest([("", value)])
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def fingerprint(*, model: torch.nn.Module | None = None, **settings: Any) -> dict[str, Any]:
    """What identifies a call: the model (class and a digest of its parameters and buffers) and ``settings``
    (tensors as digests, other objects by their ``repr``), JSON-ready."""
    out: dict[str, Any] = {"format": FINGERPRINT}
    if model is not None:
        out["model"] = type(model).__name__
        out["model_state"] = digest([*model.named_parameters(), *model.named_buffers()])
    out.update({k: _plain(v) for k, v in settings.items()})
    return out


def differences(stored: Any, current: Mapping[str, Any]) -> list[str]:
    """The keys in which a stored fingerprint differs from ``current`` (``["format"]`` for one of another kind)."""
    if not isinstance(stored, Mapping) or stored.get("format") != current.get("format"):
        return ["format"]
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))


class Mismatch(ValueError):
    """A folder holds the work of another call; ``differences`` are the fingerprint's keys that differ."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def claim(file: Path, current: Mapping[str, Any], *, holds_work: Callable[[], bool], what: str, fix: str) -> None:
    """Make ``file`` hold the fingerprint ``current``. Where it holds another one and the folder holds work
    (``holds_work()``), refuse: :class:`Mismatch` saying ``what`` the folder holds, what differs, and ``fix``."""
    if file.is_file():
        try:
            stored = decode(json.loads(file.read_text()))
        except (OSError, ValueError):
            stored = None
        if stored == dict(current):
            return
        if holds_work():
            differ = differences(stored, current)
            raise Mismatch(f"{what} (different {', '.join(differ)}); {fix}", differ)
    write_json(file, current)
