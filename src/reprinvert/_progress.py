"""Private: progress that reads well wherever it goes.

On a terminal with tqdm installed: a tqdm bar. Anywhere else (output redirected to a log file, a notebook's
captured stream, tqdm not installed): plain lines on stderr, one per finished unit (or per tenth of the steps),
each with the elapsed time and an estimate of the time left, and never a cursor code.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "fmt_seconds", "use_bars"]


def use_bars() -> bool:
    """Whether progress is drawn as tqdm bars: tqdm is installed and stderr is a terminal."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def fmt_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Progress over ``total`` units of work.

    Args:
        total: units of work (steps, layers).
        desc: what is running (``"invert"``, ``"sweep"``).
        unit: the unit's name for the lines (``"steps"``, ``"layers"``).
        enabled: False shows nothing.
        lines_every: in line mode, print after this many units (None: after every unit; the step loop uses a
            tenth of the steps).
        leave: keep the tqdm bar on screen when done.
    """

    def __init__(
        self, total: int, desc: str, unit: str, *, enabled: bool = True, lines_every: int | None = None,
        leave: bool = True,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled and total > 0
        self.bar: Any = None
        self.done = 0
        self.started = time.perf_counter()
        self.lines_every = max(1, lines_every or 1)
        if self.enabled and use_bars():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit.rstrip("s"), leave=leave)

    @property
    def bars(self) -> bool:
        """Whether this progress is a tqdm bar (nested progress may then draw bars too)."""
        return self.bar is not None

    def note(self, text: str) -> None:
        """Show what is being worked on (the bar's postfix; a line in line mode)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print(f"{self.desc}: [{self.done + 1}/{self.total}] {text} ...", file=sys.stderr, flush=True)

    def update(self, n: int = 1, *, what: str | None = None, postfix: dict[str, str] | None = None) -> None:
        """``n`` more units done; ``what`` names the unit just finished in line mode."""
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        if self.done % self.lines_every and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        finished = f" ({what} done)" if what else ""
        estimate = f", about {fmt_seconds(left)} left" if self.done < self.total else ""
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit}{finished}, {fmt_seconds(elapsed)} elapsed{estimate}",
            file=sys.stderr, flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
