"""Shared helpers of the performance benchmarks: side-by-side timing, machine description, tables, JSON.

Every figure a benchmark reports is a ratio of two things timed in the same run, interleaved (A, B, A, B, ...)
so that load from other users of a shared machine falls on both, with the median over repeats.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every performance benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads add noise, not speed)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default per benchmark)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and steps (a smoke run; noisier figures)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (default benchmarks/results/NAME.json)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for, but torch.cuda.is_available() is False on this machine")
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import reprinvert

        info["reprinvert"] = reprinvert.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Run each variant ``warmup`` times, then ``repeats`` rounds of all variants in turn; seconds per call.

    ``clock="cpu"`` reads the calling thread's CPU time instead of wall time: with one torch thread on the CPU all
    compute runs in that thread, and time a shared machine gives to other processes is not counted.
    """
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:  # alternate the order so neither variant always runs first
            order.reverse()
        for name, fn in order:
            if device is not None:
                sync(device)
            t0 = now()
            fn()
            if device is not None:
                sync(device)
            times[name].append(now() - t0)
    return times


def clock_for(device: torch.device) -> str:
    """The clock a ratio uses: the thread's CPU time on the CPU, wall time (synchronised) on a GPU."""
    return "cpu" if device.type == "cpu" else "wall"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio_of_medians(times: Mapping[str, Sequence[float]], num: str, den: str) -> float:
    return median(times[num]) / median(times[den])


def paired_ratio(times: Mapping[str, Sequence[float]], num: str, den: str) -> float:
    """Median of the per-round ratios num/den: each round's two timings ran back to back."""
    return median([a / b for a, b in zip(times[num], times[den])])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a plain-text table; floats with 4 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[k]) for r in cells)) if cells else len(h) for k, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(headers, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path
