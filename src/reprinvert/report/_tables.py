"""Private: the metrics as CSV and JSON tables."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .._sweep_result import Sweep
from ._common import _check, _write_text

__all__ = ["save_csv", "save_json"]


# ---------------------------------------------------------------------------------------------- tables
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return value


def save_csv(result: Sweep, path: str | Path, *, per_sample: bool = False) -> Path:
    """Write the metrics table as CSV: one row per layer (batch means) or per (layer, input).

    Shapes are written as ``1x16x32x32``; missing or non-finite values as empty cells.
    """
    rows = _check(result).table(per_sample=per_sample)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return _write_text(path, buf.getvalue())


def save_json(result: Sweep, path: str | Path) -> Path:
    """Write :meth:`Sweep.to_dict` (provenance, per-layer and per-sample rows) as strict JSON (no NaN)."""
    data = _check(result).to_dict()
    return _write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
