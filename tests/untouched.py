"""The one state checker of the test suite: everything of the caller's that reprinvert promises to leave alone.

``State.of(model, *inputs)`` before a call, ``state.check(model)`` after it: the model's parameters and buffers
(values, dtypes, shapes), their ``.grad`` and ``requires_grad``, every module's training flag, every hook
dictionary of every module and torch's global ones (compared by key, so that a hook removed and another added is
caught), each input tensor (values, ``requires_grad``, version counter, dtype, device, shape, ``.grad``), torch's
global RNG and the grad mode. ``COUNTS`` tallies the checks for the reliability suite's summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_forward_hooks_always_called",
)

#: checks run, hooks leaked and state differences found, over the session
COUNTS: Counter[str] = Counter()


def hook_keys(model: nn.Module | None) -> dict[str, tuple[int, ...]]:
    """The keys of every hook dictionary of every module of ``model``, and of torch's global hook dictionaries."""
    keys = {}
    for name, module in model.named_modules() if model is not None else ():
        for attr in HOOK_DICTS:
            keys[f"{name or '(model)'}.{attr}"] = tuple(getattr(module, attr, {}) or {})
    for attr in _GLOBAL_HOOK_DICTS:
        keys[f"global.{attr}"] = tuple(getattr(_module, attr, {}) or {})
    return keys


def hooks_left(model: nn.Module) -> dict[str, int]:
    """How many entries every non-empty hook dictionary holds (the model's modules' and torch's global ones)."""
    return {k: len(v) for k, v in hook_keys(model).items() if v}


def _flat(obj: Any) -> list[Any]:
    if isinstance(obj, (tuple, list)):
        return [y for o in obj for y in _flat(o)]
    if isinstance(obj, dict):
        return [y for o in obj.values() for y in _flat(o)]
    return [obj]


def _tensor(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.detach().clone(), t.requires_grad, t._version, t.dtype, t.device, t.shape)


@dataclass
class State:
    """A snapshot of what a call must leave as it was (see the module's docstring)."""

    tensors: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor | None]
    requires_grad: dict[str, bool]
    training: dict[str, bool]
    hooks: dict[str, tuple[int, ...]]
    inputs: list[tuple[torch.Tensor, tuple[Any, ...]]]
    rng: torch.Tensor
    grad_enabled: bool

    @classmethod
    def of(cls, model: nn.Module | None, *inputs: Any) -> State:
        """The state of ``model`` (None: inputs only) and of every tensor in ``inputs`` (nested tuples, lists and
        dicts are searched)."""
        params = dict(model.named_parameters()) if model is not None else {}
        return cls(
            tensors={k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
            if model is not None else {},
            grads={k: None if p.grad is None else p.grad.clone() for k, p in params.items()},
            requires_grad={k: p.requires_grad for k, p in params.items()},
            training={k: m.training for k, m in model.named_modules()} if model is not None else {},
            hooks=hook_keys(model),
            inputs=[(t, _tensor(t)) for t in _flat(inputs) if isinstance(t, torch.Tensor)],
            rng=torch.get_rng_state(),
            grad_enabled=torch.is_grad_enabled(),
        )

    def differences(self, model: nn.Module | None) -> list[str]:
        """What changed since the snapshot, by name (empty: nothing)."""
        now = State.of(model)
        diffs = []
        for k, v in self.tensors.items():
            w = now.tensors.get(k)
            if w is None or v.dtype != w.dtype or v.shape != w.shape or not torch.equal(v, w):
                diffs.append(f"tensor {k}")
        for k, g in self.grads.items():
            h = now.grads.get(k)
            if (g is None) != (h is None) or (g is not None and h is not None and not torch.equal(g, h)):
                diffs.append(f"grad {k}")
        diffs += [f"requires_grad {k}" for k, v in self.requires_grad.items() if now.requires_grad.get(k) != v]
        diffs += [f"training {k}" for k, v in self.training.items() if now.training.get(k) != v]
        leaked = {k: v for k, v in now.hooks.items() if v != self.hooks.get(k, ())}
        COUNTS["hooks leaked"] += sum(abs(len(v) - len(self.hooks.get(k, ()))) or 1 for k, v in leaked.items())
        diffs += [f"hooks {k}: {self.hooks.get(k)} -> {v}" for k, v in leaked.items()]
        for t, (values, req, version, dtype, device, shape) in self.inputs:
            if not torch.equal(values, t.detach()) and not (
                values.is_floating_point() and torch.allclose(values, t.detach(), rtol=0, atol=0, equal_nan=True)
            ):
                diffs.append("input values")
            if t.requires_grad != req:
                diffs.append("input requires_grad")
            if t._version != version:
                diffs.append("input version counter (modified in place)")
            if (t.dtype, t.device, t.shape) != (dtype, device, shape):
                diffs.append("input dtype/device/shape")
            if t.grad is not None and not req:
                diffs.append("input .grad")
        if not torch.equal(torch.get_rng_state(), self.rng):
            diffs.append("global RNG state")
        if torch.is_grad_enabled() != self.grad_enabled:
            diffs.append("grad mode")
        return diffs

    def check(self, model: nn.Module | None) -> None:
        """Assert that nothing changed since the snapshot."""
        diffs = self.differences(model)
        COUNTS["checks"] += 1
        COUNTS["state differences"] += len(diffs)
        assert not diffs, f"the library changed the caller's state: {diffs}"
