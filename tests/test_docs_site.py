"""The documentation as a reader meets it: the getting-started page's examples run as written, and the built
site shows cross-references as links, never as raw Sphinx roles."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj):(?:`|<code>)")  # rendered: `x` -> <code>


def test_getting_started_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of docs/index.md, in order, in one namespace (later blocks use earlier names)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "index.md").read_text(), re.S)
    assert len(blocks) >= 2
    assert not any(re.search(r"=\s*\.\.\.", b) for b in blocks), "a placeholder instead of runnable code"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/index.md", "exec"), namespace)
    assert (tmp_path / "layer2.png").is_file()
    assert (tmp_path / "my-report" / "report.html").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="needs the docs extra (mkdocs)")
def test_built_site_has_links_not_raw_roles(tmp_path: Path) -> None:
    site = tmp_path / "site"
    mkdocs = shutil.which("mkdocs") or f"{sys.executable} -m mkdocs"
    done = subprocess.run(
        [*mkdocs.split(), "build", "--strict", "-d", str(site)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    raw = {
        str(page.relative_to(site)): ROLE.findall(page.read_text(errors="replace"))
        for page in site.rglob("*.html")
    }
    raw = {k: v for k, v in raw.items() if v}
    assert not raw, f"raw Sphinx roles in the built site: {raw}"
    api = (site / "api" / "index.html").read_text()
    # Cross-references became links: e.g. Recipe's docstring points at invert, sweep's at invert's options.
    assert len(re.findall(r'<a class="autorefs autorefs-internal"', api)) >= 100
    assert 'href="#reprinvert.invert"' in api  # the public path, reprinvert.invert


def test_verdicts_page_examples_print_what_the_page_says(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/verdicts.md's Python blocks run as written and print the verdicts the page shows after them."""
    page = (ROOT / "docs" / "verdicts.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/verdicts.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    shown = re.search(r"prints\n\n```text\n(.*?)```", page, re.S)
    assert shown is not None
    labels = [line.split(":")[0] for line in shown.group(1).splitlines()]
    assert [line.split(":")[0] for line in printed[:3]] == labels == [
        "wide -> kept", "wide, 2 steps -> undecided", "narrow -> lost"]
    assert printed[3] == "[[3, 1, 4, 1, 5, 9]] True kept" and "prints `[[3, 1, 4, 1, 5, 9]] True kept`" in page
