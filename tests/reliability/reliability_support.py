"""Model families, state snapshots and the run ledger of the reliability suite.

Every tiny model states its formula in its docstring. The ledger counts what the suite actually did (families
run, fault points injected, bad inputs tried, hooks leaked, state differences found); ``tests/conftest.py``
prints it at the end of the session.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from conftest import HOOK_DICTS, Shared, SmallCNN, Snapshot, TokenModel, tensor_state

# ----------------------------------------------------------------------------------------------------------------
# Ledger


@dataclass
class Ledger:
    families: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bad_inputs: set[str] = field(default_factory=set)
    checks: int = 0
    hooks_leaked: int = 0
    state_differences: int = 0

    def lines(self) -> list[str]:
        return [
            f"model families covered: {len(self.families)} ({', '.join(sorted(self.families))})",
            f"fault points injected:  {len(self.faults)} ({', '.join(sorted(self.faults))}); "
            f"{sum(self.faults.values())} faulted runs",
            f"bad inputs tried:       {len(self.bad_inputs)}",
            f"untouched checks:       {self.checks}",
            f"hooks leaked:           {self.hooks_leaked}",
            f"state differences:      {self.state_differences}",
        ]


LEDGER = Ledger()


def write_summary(write_line: Callable[[str], Any]) -> None:
    """Called by ``pytest_terminal_summary`` in tests/conftest.py when this module was imported."""
    if not (LEDGER.checks or LEDGER.bad_inputs or LEDGER.families):
        return
    write_line("")
    write_line("reliability summary (computed from this session's runs)", bold=True)
    for line in LEDGER.lines():
        write_line("  " + line)


# ----------------------------------------------------------------------------------------------------------------
# State: everything the library promises to leave alone, hooks compared by identity of every dictionary entry


def hook_keys(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The keys of every hook dictionary of every module, and of torch's global hook dictionaries."""
    keys = {}
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            keys[f"{name}.{attr}"] = tuple(getattr(module, attr, {}) or {})
    from torch.nn.modules import module as module_mod

    for attr in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
        "_global_forward_hooks_always_called",
    ):
        keys[f"global.{attr}"] = tuple(getattr(module_mod, attr, {}) or {})
    return keys


@dataclass
class State:
    model: Snapshot
    hooks: dict[str, tuple[int, ...]]
    inputs: list[tuple[torch.Tensor, tuple[Any, ...]]]
    rng: torch.Tensor
    grad_enabled: bool

    @classmethod
    def of(cls, model: nn.Module, *inputs: Any) -> State:
        tensors = [t for t in _flat(inputs) if isinstance(t, torch.Tensor)]
        return cls(
            Snapshot.of(model),
            hook_keys(model),
            [(t, tensor_state(t)) for t in tensors],
            torch.get_rng_state(),
            torch.is_grad_enabled(),
        )

    def differences(self, model: nn.Module) -> list[str]:
        diffs = self.model.differences(model)
        diffs = [d for d in diffs if not d.startswith("hooks")]  # compared by key below
        now = hook_keys(model)
        leaked = {k: v for k, v in now.items() if v != self.hooks.get(k, ())}
        LEDGER.hooks_leaked += sum(abs(len(v) - len(self.hooks.get(k, ()))) or 1 for k, v in leaked.items())
        diffs += [f"hooks {k}: {self.hooks.get(k)} -> {v}" for k, v in leaked.items()]
        for t, before in self.inputs:
            values, req, version, dtype, device, shape = before
            same = torch.equal(values, t.detach()) or (
                values.is_floating_point() and torch.allclose(values, t.detach(), rtol=0, atol=0, equal_nan=True)
            )
            if not same:
                diffs.append("input values")
            if t.requires_grad != req:
                diffs.append("input requires_grad")
            if t._version != version:
                diffs.append("input version counter")
            if (t.dtype, t.device, t.shape) != (dtype, device, shape):
                diffs.append("input dtype/device/shape")
            if t.grad is not None and not req:
                diffs.append("input .grad")
        if not torch.equal(torch.get_rng_state(), self.rng):
            diffs.append("global RNG state")
        if torch.is_grad_enabled() != self.grad_enabled:
            diffs.append("grad mode")
        return diffs

    def check(self, model: nn.Module) -> None:
        diffs = self.differences(model)
        LEDGER.checks += 1
        LEDGER.state_differences += len(diffs)
        assert not diffs, f"the library changed the caller's state: {diffs}"


def _flat(obj: Any) -> list[Any]:
    if isinstance(obj, (tuple, list)):
        return [y for o in obj for y in _flat(o)]
    return [obj]


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


def mlp(width: int = 16, d_in: int = 6) -> nn.Sequential:
    """linear(d->w) -> ReLU(inplace) -> linear(w->w) -> tanh -> linear(w->3)."""
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(inplace=True), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, 3))


class ResBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) += x) with in-place ReLUs and an in-place residual add."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class ResNetTiny(nn.Module):
    """stem conv(3->c) -> BN -> ReLU(inplace) -> ResBlock(c) -> global mean -> linear(c->2)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.block = ResBlock(c)
        self.fc = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.relu(self.bn(self.stem(x)))).mean((2, 3)))


class UNetTiny(nn.Module):
    """enc conv(3->c) -> pool -> mid conv(c->2c) -> upsample -> cat(skip) -> dec conv(3c->c) -> out conv(c->3)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Sequential(nn.Conv2d(3 * c, c, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        m = self.up(self.mid(self.pool(e)))
        return self.out(self.dec(torch.cat([m, e], 1)))


class LSTMNet(nn.Module):
    """LSTM(3->h) (tuple output) -> linear(h->2) on the last step."""

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class TransformerNet(nn.Module):
    """linear(4->8) -> TransformerEncoder(1 layer, d=8, 2 heads, no dropout) -> linear(8->3)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.inp(x)))


class AttentionNet(nn.Module):
    """MultiheadAttention(8, 2 heads) returning (out, weights) -> linear(8->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x)
        return self.head(out)


class DictBlock(nn.Module):
    """{"feat": tanh(linear(x)), "aux": None, "scale": x.sum()} — a dict output with a None."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"feat": torch.tanh(self.lin(x)), "aux": None, "scale": x.sum(1)}


class DictNet(nn.Module):
    """block(x)["feat"] -> linear(6->2); returns {"logits": ..., "feat": ...}."""

    def __init__(self) -> None:
        super().__init__()
        self.block = DictBlock()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.block(x)["feat"]
        return {"logits": self.head(feat), "feat": feat}


@dataclasses.dataclass
class ModelOutput:
    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    attentions: torch.Tensor | None = None


class DataclassBlock(nn.Module):
    """ModelOutput(last_hidden_state=linear(x), pooled=mean over tokens, attentions=None)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.lin(x)
        return ModelOutput(h, h.mean(1))


class DataclassNet(nn.Module):
    """encoder -> ModelOutput; head(linear 6->2) on pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = DataclassBlock()
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).pooled)


SharedNet = Shared  # y = lin(tanh(lin(x))): one linear(4->4) used twice


class KwargsBlock(nn.Module):
    """y = scale * linear(x) + shift, called with keyword arguments only."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, *, x: torch.Tensor, scale: float, shift: torch.Tensor | None = None) -> torch.Tensor:
        y = scale * self.lin(x)
        return y if shift is None else y + shift


class KwargsNet(nn.Module):
    """block(x=x, scale=2) -> tanh -> block2(x=..., scale=0.5, shift=bias) — every submodule call keyword-only."""

    def __init__(self) -> None:
        super().__init__()
        self.block = KwargsBlock()
        self.act = nn.Tanh()
        self.block2 = KwargsBlock()
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.block(x=x, scale=2.0))
        return self.block2(x=h, scale=0.5, shift=self.bias)


class PaddedEncoderNet(nn.Module):
    """linear(4->8) -> nn.TransformerEncoder (eval fast path) with a padding mask over the last 2 of 5 tokens ->
    linear(8->3); the mask is built inside, so the fast path is taken without model_kwargs."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        mask[1:, 3:] = True
        return self.head(self.encoder(self.inp(x), src_key_padding_mask=mask).nan_to_num())


class Spectrum(nn.Module):
    """x -> rfft along the last dimension (complex output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x)


class ComplexNet(nn.Module):
    """linear(6->8) -> rfft (complex, 5 bins) -> |.| -> linear(5->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 8)
        self.fft = Spectrum()
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fft(self.lin(x)).abs())


class MaxNormTokens(TokenModel):
    """TokenModel whose embedding renormalises looked-up rows to norm <= 1 in place (nn.Embedding max_norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8, max_norm=1.0)


class SamplingNet(nn.Module):
    """linear(4->6) -> dropout(0.3) -> + 0.05 * N(0, 1) from torch's global RNG (a VAE's sampling) -> linear(6->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.3)
        self.dec = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.enc(x))
        return self.dec(h + 0.05 * torch.randn_like(h))


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
