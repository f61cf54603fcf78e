"""Private: tensors and metadata in an open format, for saved results.

One ``.npz`` file (NumPy's zip of ``.npy`` arrays, readable without reprinvert or pickle) holds named tensors and
a JSON document under the key ``__meta__``. Tensors keep their dtype exactly: types NumPy lacks (bfloat16) are
stored widened to float32, which is exact, and narrowed back on reading. Non-finite floats in the JSON are
written as ``{"__float__": "nan" | "inf" | "-inf"}``, so the document stays standard JSON and every value
round-trips exactly.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["decode", "encode", "read", "write"]

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
