"""The reliability suite's model families (built from tests/zoo.py), how a user's model is decorated, and the
run ledger.

The ledger counts what the suite actually did (families run, fault points injected, bad inputs tried; and, from
tests/untouched.py, the state checks, hooks leaked and state differences found); ``tests/conftest.py`` prints it
at the end of the session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from untouched import COUNTS
from zoo import (
    AttentionNet,
    ComplexNet,
    DataclassNet,
    DictNet,
    KwargsNet,
    LSTMNet,
    MaxNormTokens,
    PaddedEncoderNet,
    ResNetTiny,
    SamplingNet,
    SharedNet,
    SmallCNN,
    TokenModel,
    TransformerNet,
    UNetTiny,
    mlp,
)

# ----------------------------------------------------------------------------------------------------------------
# Ledger


@dataclass
class Ledger:
    families: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bad_inputs: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [
            f"model families covered: {len(self.families)} ({', '.join(sorted(self.families))})",
            f"fault points injected:  {len(self.faults)} ({', '.join(sorted(self.faults))}); "
            f"{sum(self.faults.values())} faulted runs",
            f"bad inputs tried:       {len(self.bad_inputs)}",
            f"untouched checks:       {COUNTS['checks']}",
            f"hooks leaked:           {COUNTS['hooks leaked']}",
            f"state differences:      {COUNTS['state differences']}",
        ]


LEDGER = Ledger()


def write_summary(write_line: Callable[[str], Any]) -> None:
    """Called by ``pytest_terminal_summary`` in tests/conftest.py when this module was imported."""
    if not (COUNTS['checks'] or LEDGER.bad_inputs or LEDGER.families):
        return
    write_line("")
    write_line("reliability summary (computed from this session's runs)", bold=True)
    for line in LEDGER.lines():
        write_line("  " + line)


def decorate(model: nn.Module) -> nn.Module:
    """Give the model what a user's model may carry: mixed training flags, mixed requires_grad, existing .grad,
    and user hooks of every kind (forward, pre-forward, with-kwargs, always-called, backward). All must survive."""
    model.train()
    modules = [m for _, m in model.named_modules()]
    for i, m in enumerate(modules):
        if i % 2:
            m.eval()
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i % 3 == 1:
            p.requires_grad_(False)
        if i % 3 == 2:
            p.grad = torch.full_like(p, 0.5)
    top = model
    top.register_forward_hook(lambda *a: None)
    top.register_forward_pre_hook(lambda *a: None)
    top.register_forward_hook(lambda m, a, k, o: None, with_kwargs=True)
    top.register_forward_pre_hook(lambda m, a, k: None, with_kwargs=True)
    top.register_forward_hook(lambda *a: None, always_call=True)
    leaf = next(m for m in reversed(modules) if not list(m.children()))
    leaf.register_full_backward_hook(lambda *a: None)
    leaf.register_full_backward_pre_hook(lambda *a: None)
    return model


# ----------------------------------------------------------------------------------------------------------------
# Model families


@dataclass(frozen=True)
class Family:
    """One model family: how to build it, an input, and a layer to invert (with its selector)."""

    name: str
    build: Callable[[], nn.Module]
    make_input: Callable[[torch.Generator], torch.Tensor]
    layer: str
    select: Any = None
    start: str | None = None
    call: int | None = None
    downstream: str | None = None  # a layer after ``layer`` (for faults raised downstream)

    def model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        m = self.build()
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for mod in m.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
        LEDGER.families[self.name] += 1
        return m


def _compiled_mlp() -> nn.Module:
    return torch.compile(mlp())  # type: ignore[return-value]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("mlp", mlp, lambda g: torch.rand(2, 6, generator=g), "2", downstream="4"),
        Family("cnn-bn-inplace", SmallCNN, lambda g: torch.rand(2, 3, 8, 8, generator=g), "bn1", downstream="head"),
        Family("residual", ResNetTiny, lambda g: torch.rand(2, 3, 6, 6, generator=g), "block.bn2", downstream="fc"),
        Family("unet", UNetTiny, lambda g: torch.rand(2, 3, 8, 8, generator=g), "dec", downstream="out"),
        Family("lstm", LSTMNet, lambda g: torch.rand(2, 4, 3, generator=g), "lstm", select=0, downstream="head"),
        Family("transformer", TransformerNet, lambda g: torch.rand(2, 5, 4, generator=g), "encoder.layers.0",
               downstream="head"),
        Family("attention", AttentionNet, lambda g: torch.rand(2, 5, 8, generator=g), "attn", select=0,
               downstream="head"),
        Family("token", TokenModel, lambda g: torch.randint(0, 20, (2, 5), generator=g), "act", start="embed",
               downstream="head"),
        Family("dict-output", DictNet, lambda g: torch.rand(2, 4, generator=g), "block", select="feat",
               downstream="head"),
        Family("dataclass-output", DataclassNet, lambda g: torch.rand(2, 3, 4, generator=g), "encoder",
               select="last_hidden_state", downstream="head"),
        Family("shared-module", SharedNet, lambda g: torch.rand(2, 4, generator=g), "lin", call=1),
        Family("kwargs-only", KwargsNet, lambda g: torch.rand(2, 4, generator=g), "block", downstream="block2"),
        Family("compiled", _compiled_mlp, lambda g: torch.rand(2, 6, generator=g), "2", downstream="4"),
        Family("transformer-padded", PaddedEncoderNet, lambda g: torch.rand(2, 5, 4, generator=g),
               "encoder.layers.0", downstream="head"),
        Family("complex-output", ComplexNet, lambda g: torch.rand(2, 6, generator=g), "fft", downstream="head"),
        Family("embedding-max-norm", MaxNormTokens, lambda g: torch.randint(0, 20, (2, 5), generator=g), "act",
               start="embed", downstream="head"),
        Family("sampling", SamplingNet, lambda g: torch.rand(2, 4, generator=g), "dec"),
        Family("dataparallel", lambda: nn.DataParallel(SmallCNN()), lambda g: torch.rand(2, 3, 8, 8, generator=g),
               "module.conv2", downstream="module.head"),
    ]
}
