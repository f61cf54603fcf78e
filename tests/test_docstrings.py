"""Every ``Example:`` in the package's docstrings runs and prints what it shows (doctest), so the examples a
reader copies from the API reference stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import reprinvert

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(reprinvert.__path__, prefix="reprinvert.") if m.name != "reprinvert.__main__"
)


@pytest.mark.parametrize("name", ["reprinvert", *MODULES])
def test_docstring_examples_run(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):  # each example sees its module's names, as doctest.testmod gives
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
