"""Progress lines (no tqdm, or not a terminal): elapsed time and an estimate, formatted for people."""

from __future__ import annotations

import pytest

from reprinvert._progress import Progress, fmt_seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.04, "0.0 s"), (4.26, "4.3 s"), (42.4, "42 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")]
)
def test_seconds_read_as_people_write_them(seconds: float, text: str) -> None:
    assert fmt_seconds(seconds) == text


def test_lines_every_tenth_with_an_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress(100, "invert", "steps", lines_every=10)
    assert not p.bars  # pytest's captured stderr is not a terminal
    for _ in range(100):
        p.update()
    p.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("invert: 10/100 steps, ") and "left" in lines[0]
    assert lines[-1].startswith("invert: 100/100 steps, ") and "left" not in lines[-1]
    quiet = Progress(5, "sweep", "layers", enabled=False)
    quiet.note("a")
    quiet.update(what="a")
    assert capsys.readouterr() == ("", "")
