"""Fixtures and session hooks of the test suite. The shared models are in ``tests/zoo.py``, the one state checker
in ``tests/untouched.py``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from zoo import SmallCNN

# Test models are tiny: one thread avoids oversubscribing the 2-core CI machine and keeps timings stable.
torch.set_num_threads(1)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as a module; torch's thread count, ``sys.path`` and ``sys.modules`` (which
    the scripts change) are put back afterwards."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    threads, saved_path = torch.get_num_threads(), list(sys.path)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        torch.set_num_threads(threads)
        sys.path[:] = saved_path
        sys.modules.pop(spec.name, None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Tests may use the global RNG to build models; the library itself must not."""
    torch.manual_seed(0)


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    m = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.bn1.running_mean.uniform_(-0.1, 0.1)
        m.bn1.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 8, 8, generator=g)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the reliability suite's ledger (tests/reliability) when it ran."""
    import sys

    support = sys.modules.get("reliability_support")
    if support is not None:
        support.write_summary(terminalreporter.write_line)
