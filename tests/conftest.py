"""Shared tiny models and state snapshots for the test suite.

Each tiny model states its formula in its docstring.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

# Test models are tiny: one thread avoids oversubscribing the 2-core CI machine and keeps timings stable.
torch.set_num_threads(1)

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


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


def hooks_left(model: nn.Module) -> dict[str, int]:
    """Number of entries in every hook dictionary of every module (and torch's global ones), non-zero only."""
    left = {}
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            d = getattr(module, attr, None)
            if d:
                left[f"{name or '(model)'}.{attr}"] = len(d)
    from torch.nn.modules import module as module_mod

    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        d = getattr(module_mod, attr, None)
        if d:
            left[f"global.{attr}"] = len(d)
    return left


@dataclass
class Snapshot:
    """Everything of a model that the library promises to leave untouched."""

    tensors: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor | None]
    requires_grad: dict[str, bool]
    training: dict[str, bool]
    hooks: dict[str, int]

    @classmethod
    def of(cls, model: nn.Module) -> Snapshot:
        return cls(
            tensors={k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
            grads={k: (None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()},
            requires_grad={k: p.requires_grad for k, p in model.named_parameters()},
            training={k: m.training for k, m in model.named_modules()},
            hooks=hooks_left(model),
        )

    def differences(self, model: nn.Module) -> list[str]:
        now = Snapshot.of(model)
        diffs = []
        for k, v in self.tensors.items():
            w = now.tensors[k]
            if v.dtype != w.dtype or v.shape != w.shape or not torch.equal(v, w):
                diffs.append(f"tensor {k}")
        for k, g in self.grads.items():
            h = now.grads[k]
            if (g is None) != (h is None) or (g is not None and not torch.equal(g, h)):
                diffs.append(f"grad {k}")
        diffs += [f"requires_grad {k}" for k, v in self.requires_grad.items() if now.requires_grad[k] != v]
        diffs += [f"training {k}" for k, v in self.training.items() if now.training[k] != v]
        if now.hooks != self.hooks:
            diffs.append(f"hooks {now.hooks}")
        return diffs


def assert_untouched(snapshot: Snapshot, model: nn.Module) -> None:
    diffs = snapshot.differences(model)
    assert not diffs, f"model changed: {diffs}"


def tensor_state(x: torch.Tensor) -> tuple[Any, ...]:
    return (x.detach().clone(), x.requires_grad, x._version, x.dtype, x.device, x.shape)


def assert_tensor_untouched(before: tuple[Any, ...], x: torch.Tensor) -> None:
    values, req, version, dtype, device, shape = before
    assert torch.equal(values, x.detach()), "input values changed"
    assert x.requires_grad == req, "input requires_grad changed"
    assert x._version == version, "input was modified in place (version counter moved)"
    assert (x.dtype, x.device, x.shape) == (dtype, device, shape)


class SmallCNN(nn.Module):
    """conv(3->8) -> BN -> ReLU(inplace) -> conv(8->8, stride 2) -> ReLU -> flatten -> linear(8*4*4 -> 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.head(x.flatten(1))


class Signal1D(nn.Module):
    """conv1d(2->6, k=5) -> tanh -> conv1d(6->4, k=3, stride 2) on (B, 2, L) signals."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.act = nn.Tanh()
        self.conv2 = nn.Conv1d(6, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class TokenModel(nn.Module):
    """embed(V=20, D=8) -> linear(8->16) -> tanh -> mean over tokens -> linear(16->3) on (B, T) token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 16)
        self.act = nn.Tanh()
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.act(self.proj(self.embed(ids)))
        return self.head(h.mean(1))


class Shared(nn.Module):
    """The same linear(4->4) applied twice: y = lin(tanh(lin(x)))."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.act(self.lin(x)))


class TupleOut(nn.Module):
    """An LSTM(3->5) followed by linear(5->2) on its last output."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Raiser(nn.Module):
    """linear(4->4), then raises RuntimeError (a model whose forward fails after the first layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if getattr(self, "fail", True):
            raise RuntimeError("boom inside the model")
        return self.after(y)


class Swallower(nn.Module):
    """linear(4->4) inside `try: ... except Exception`, then linear(4->4) counted in `self.after_calls`."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)
        self.after_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            y = self.lin(x)
        except Exception:  # a model that swallows everything
            y = x
        self.after_calls += 1
        return self.after(y)


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
